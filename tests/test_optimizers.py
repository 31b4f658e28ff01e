"""SAM-family steps against by-hand formulas, on small models and analytic quadratics."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from landscape_cli import optim
from landscape_cli.train.optimizers import ASAM_ETA
from landscape_cli.zoo.models import MLP, SmallResNet

from .helpers import sam_step

CLASSES = {"sam": optim.SAM, "asam": optim.ASAM, "ssam": optim.SSAM, "usam": optim.USAM, "msam": optim.MSAM,
           "eigensam": optim.EigenSAM}  # fmt: skip


def setup(seed: int = 0, n: int = 32):
    torch.manual_seed(seed)
    model = MLP([5, 7, 3], activation="tanh").double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    return model, x, y


def step(opt, model, x, y) -> None:
    """One step on the batch (x, y): mSAM cuts it itself; the others take the two-step convention."""
    if isinstance(opt, optim.MSAM):

        def on_part(part):
            loss = F.cross_entropy(model(part[0]), part[1])
            loss.backward()
            return loss

        opt.step(on_part, (x, y))
    else:
        sam_step(opt, lambda: F.cross_entropy(model(x), y))


def flat_grad(model, x, y, params=None) -> list[torch.Tensor]:
    """Gradient of the batch loss at `params` (default: the model's own), computed independently."""
    names = [k for k, _ in model.named_parameters()]
    current = dict(model.named_parameters()) if params is None else dict(zip(names, params, strict=True))
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in current.items()}
    loss = F.cross_entropy(torch.func.functional_call(model, leaves, (x,)), y)
    return list(torch.autograd.grad(loss, list(leaves.values())))


def norm(ts):
    return math.sqrt(sum(float((t * t).sum()) for t in ts))


def sgd_step(model, variant, lr=0.1, **kw):
    if variant == "usam":
        kw.pop("ascent", None)  # USAM's ascent is unnormalized by definition
    return CLASSES[variant](model.parameters(), torch.optim.SGD, lr=lr, model=model, **kw)


def test_sam_step_matches_by_hand() -> None:
    model, x, y = setup()
    w = [p.detach().clone() for p in model.parameters()]
    g = flat_grad(model, x, y)
    rho, lr = 0.05, 0.1
    eps = [rho * t / norm(g) for t in g]
    g_sam = flat_grad(model, x, y, [a + e for a, e in zip(w, eps, strict=True)])
    expected = [a - lr * t for a, t in zip(w, g_sam, strict=True)]
    opt = sgd_step(model, "sam", lr=lr, rho=rho)
    step(opt, model, x, y)
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)


def test_asam_step_matches_by_hand() -> None:
    model, x, y = setup(1)
    w = [p.detach().clone() for p in model.parameters()]
    g = flat_grad(model, x, y)
    rho, lr = 0.5, 0.05
    t = [a.abs() + ASAM_ETA for a in w]
    denom = norm([ti * gi for ti, gi in zip(t, g, strict=True)])
    eps = [rho * ti * ti * gi / denom for ti, gi in zip(t, g, strict=True)]
    g_sam = flat_grad(model, x, y, [a + e for a, e in zip(w, eps, strict=True)])
    opt = sgd_step(model, "asam", lr=lr, rho=rho)
    step(opt, model, x, y)
    for p, a, gs in zip(model.parameters(), w, g_sam, strict=True):
        torch.testing.assert_close(p.detach(), a - lr * gs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("variant", ["usam", "ssam"])
def test_unnormalized_ascent_matches_by_hand(variant: str) -> None:
    model, x, y = setup(2)
    w = [p.detach().clone() for p in model.parameters()]
    g = flat_grad(model, x, y)
    rho, lr = 0.1, 0.1
    g_sam = flat_grad(model, x, y, [a + rho * t for a, t in zip(w, g, strict=True)])
    scale = norm(g) / norm(g_sam) if variant == "ssam" else 1.0
    opt = sgd_step(model, variant, lr=lr, rho=rho, ascent="unnormalized")
    step(opt, model, x, y)
    for p, a, gs in zip(model.parameters(), w, g_sam, strict=True):
        torch.testing.assert_close(p.detach(), a - lr * scale * gs, rtol=1e-12, atol=1e-14)


def test_ssam_descent_gradient_has_the_ascent_gradient_norm() -> None:
    model, x, y = setup(3)
    g = flat_grad(model, x, y)
    opt = sgd_step(model, "ssam", rho=0.2)
    step(opt, model, x, y)
    assert opt.last_descent_grad_norm == pytest.approx(norm(g), rel=1e-12)
    assert opt.last_ascent_grad_norm == pytest.approx(norm(g), rel=1e-12)


def test_ssam_equals_gd_on_a_one_dimensional_quadratic() -> None:
    lam, lr, rho = 3.0, 0.1, 0.3
    w_ssam = torch.nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    opt = optim.SSAM([w_ssam], torch.optim.SGD, rho=rho, lr=lr)
    w_gd = 2.0
    for _ in range(25):
        sam_step(opt, lambda: 0.5 * lam * (w_ssam**2).sum())
        w_gd -= lr * lam * w_gd
        assert float(w_ssam.detach()) == pytest.approx(w_gd, rel=1e-12, abs=1e-300)
    # ... while SAM's iterates differ (its step is lr * lam * (w + rho sign w)).
    w_sam = torch.nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    sam = optim.SAM([w_sam], torch.optim.SGD, rho=rho, lr=lr)
    sam_step(sam, lambda: 0.5 * lam * (w_sam**2).sum())
    assert float(w_sam.detach()) == pytest.approx(2.0 - lr * lam * (2.0 + rho))


def test_msam_with_one_micro_batch_is_sam() -> None:
    model_a, x, y = setup(4)
    model_b, _, _ = setup(4)
    step(sgd_step(model_a, "sam", rho=0.07), model_a, x, y)
    step(sgd_step(model_b, "msam", rho=0.07, micro_batches=1), model_b, x, y)
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)


def test_msam_is_the_mean_of_micro_batch_gradients_at_their_own_perturbations() -> None:
    model, x, y = setup(5, n=30)
    w = [p.detach().clone() for p in model.parameters()]
    rho, lr, m = 0.05, 0.1, 3
    parts = torch.arange(30).chunk(m)
    descent = [torch.zeros_like(a) for a in w]
    for part in parts:
        g_j = flat_grad(model, x[part], y[part])
        eps_j = [rho * t / norm(g_j) for t in g_j]
        g_sam_j = flat_grad(model, x[part], y[part], [a + e for a, e in zip(w, eps_j, strict=True)])
        descent = [d + t / m for d, t in zip(descent, g_sam_j, strict=True)]
    step(sgd_step(model, "msam", lr=lr, rho=rho, micro_batches=m), model, x, y)
    for p, a, d in zip(model.parameters(), w, descent, strict=True):
        torch.testing.assert_close(p.detach(), a - lr * d, rtol=1e-12, atol=1e-14)


def quadratic(seed: int = 0, n: int = 20):
    """0.5 w^T A w with a known top eigenvector (eigenvalues 10, 3, ..., 0.1)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.cat([torch.tensor([10.0], dtype=torch.float64), torch.linspace(3.0, 0.1, n - 1, dtype=torch.float64)])
    return (q * eig) @ q.T, q[:, 0]


def test_eigensam_estimate_converges_to_the_top_eigenvector_and_aligns_better_than_sam() -> None:
    a, top = quadratic()
    w0 = torch.randn(20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    alignments = {}
    for variant in ("sam", "eigensam"):
        w = torch.nn.Parameter(w0.clone())
        extra = {"eigen_every": 1, "eigen_iters": 5, "alpha": 0.5} if variant == "eigensam" else {}
        opt = CLASSES[variant]([w], torch.optim.SGD, rho=0.05, lr=0.01, **extra)
        cosines = []
        for _ in range(20):
            sam_step(opt, lambda w=w: 0.5 * w @ a @ w)
            eps = opt.last_perturbation[0]
            cosines.append(abs(float(eps @ top / eps.norm())))
        alignments[variant] = sum(cosines) / len(cosines)
        if variant == "eigensam":
            v = opt.eigenvector[0]
            assert abs(float(v @ top)) == pytest.approx(1.0, abs=1e-8)
    assert alignments["eigensam"] > alignments["sam"] + 0.1


def test_batchnorm_statistics_move_only_on_the_first_pass() -> None:
    torch.manual_seed(0)
    model = SmallResNet(in_channels=1, image_size=4, width=2, blocks=[1], num_classes=3).double().train()
    x = torch.randn(16, 16, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    reference = SmallResNet(in_channels=1, image_size=4, width=2, blocks=[1], num_classes=3).double().train()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference(x)  # one unperturbed forward pass in train mode
    for variant in ("sam", "eigensam"):
        m = SmallResNet(in_channels=1, image_size=4, width=2, blocks=[1], num_classes=3).double().train()
        m.load_state_dict(model.state_dict())
        opt = CLASSES[variant](m.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, model=m)
        sam_step(opt, lambda m=m: F.cross_entropy(m(x), y))
        for (name, buf), (_, ref) in zip(m.named_buffers(), reference.named_buffers(), strict=True):
            assert torch.equal(buf, ref), (variant, name)


def test_state_dict_round_trip_continues_identically() -> None:
    model_a, x, y = setup(6)
    opt_a = optim.EigenSAM(model_a.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, eigen_every=2, model=model_a)
    for _ in range(3):
        step(opt_a, model_a, x, y)
    model_b, _, _ = setup(6)
    model_b.load_state_dict(model_a.state_dict())
    opt_b = optim.EigenSAM(model_b.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9, eigen_every=2, model=model_b)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as if read back from a checkpoint
    for _ in range(3):
        step(opt_a, model_a, x, y)
        step(opt_b, model_b, x, y)
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("variant", "kw", "message"),
    [
        ("sam", {"base_optimizer": "adam"}, "^base_optimizer must be"),
        ("sam", {"rho": 0.0}, "^rho must be positive"),
        ("asam", {"rho": -1.0}, "^rho must be positive"),
        ("ssam", {"ascent": "sideways"}, "^ascent"),
        ("msam", {"micro_batches": 0}, "^micro_batches"),
        ("sam", {"clip_grad_norm": 0.0}, "^clip_grad_norm"),
        ("eigensam", {"eigen_every": 0}, "^eigen_every"),
    ],
)
def test_bad_hyper_parameters(variant, kw, message) -> None:
    model, _, _ = setup()
    with pytest.raises(ValueError, match=message):
        CLASSES[variant](model.parameters(), **{"base_optimizer": torch.optim.SGD, "lr": 0.1, **kw})
