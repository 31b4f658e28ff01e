"""Curvature operators on models beyond in-memory classifiers, against dense float64 ground truth.

A tiny decoder-only transformer on token ids with padded (-100) targets, an MLP and a CNN: the Hessian,
the Gauss-Newton matrix and the empirical Fisher as operators over streamed batches, blocks of them,
every loss, and the exact weighting of tokens across batches of unequal padding.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import landscape_cli as ls
from landscape_cli.problem import ParamLayout, Problem

VOCAB, WIDTH, LENGTH = 7, 6, 5


class TinyGPT(nn.Module):
    """Token and position embeddings, one causal self-attention layer written out (no fused kernel), a
    LayerNorm and a tied-free head: logits (B, T, V)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, WIDTH)
        self.positions = nn.Embedding(LENGTH, WIDTH)
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.proj = nn.Linear(WIDTH, WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        h = self.tokens(ids) + self.positions(torch.arange(t, device=ids.device))
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(WIDTH)
        causal = torch.ones(t, t, dtype=torch.bool, device=ids.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        h = h + self.proj(scores.softmax(-1) @ v)
        return self.head(torch.tanh(self.norm(h)))


def token_data(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and next-token targets, the tail of each sequence padded with -100 (unequal lengths)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    targets = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
    lengths = [LENGTH, 1, 4, 2, LENGTH, 3, 1, LENGTH][:n]
    for i, keep in enumerate(lengths):
        targets[i, keep:] = -100
    return ids, targets


def tiny_gpt(seed: int = 0) -> TinyGPT:
    torch.manual_seed(seed)
    return TinyGPT().double()


def dense(model: nn.Module, mean_loss) -> tuple[torch.Tensor, ParamLayout, torch.Tensor]:
    """The dense Hessian row by row (reverse over reverse). torch.func.hessian (vmapped forward over
    reverse) is 2% off on TinyGPT in torch 2.13, as it is for train-mode BatchNorm."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    layout = ParamLayout.of(params)
    w = layout.flatten(params).clone()
    return torch.autograd.functional.hessian(lambda flat: mean_loss(layout.unflatten(flat)), w), layout, w


def gpt_loss(model: nn.Module, ids: torch.Tensor, targets: torch.Tensor):
    def mean_loss(params: dict) -> torch.Tensor:
        logits = functional_call(model, params, (ids,))
        return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)

    return mean_loss


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def gpt():
    model, (ids, targets) = tiny_gpt(), token_data()
    hessian, layout, w = dense(model, gpt_loss(model, ids, targets))
    return model, ids, targets, hessian, layout


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_token_level_hessian_of_a_transformer_equals_the_dense_one(gpt, batch_size) -> None:
    """HVPs and top-3 / bottom-2 eigenvalues of the token-mean loss, batches of unequal padding (tokens are
    weighted exactly: the mean of per-batch means would miss by the margin asserted below)."""
    model, ids, targets, hessian, _ = gpt
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, targets), batch_size=batch_size)
    op = ls.hessian(model, loader, "cross_entropy", device="cpu", dtype="float64")
    assert op.shape == hessian.shape
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert relative(op @ v, hessian @ v) < 1e-10
    exact = torch.linalg.eigvalsh(hessian)
    result = ls.lanczos_extremal(op, top_k=3, bottom_k=2, tol=1e-10, max_iter=op.size)
    assert np.allclose(result.top.values, exact[-3:].flip(0).numpy(), rtol=1e-8, atol=1e-10)
    assert np.allclose(result.bottom.values, exact[:2].numpy(), rtol=1e-8, atol=1e-10)
    if batch_size == 3:  # averaging the batches' own means weighs tokens unequally: a different matrix
        sizes = [(targets[i : i + 3] != -100).sum() for i in range(0, 8, 3)]
        assert len(set(int(s) for s in sizes)) > 1
        w = ParamLayout.of(dict(model.named_parameters())).flatten(dict(model.named_parameters())).detach()
        batch_mean = (
            sum(
                torch.autograd.functional.hessian(
                    lambda flat, i=i: _batch_mean(model, ids[i : i + 3], targets[i : i + 3], flat), w
                )
                for i in range(0, 8, 3)
            )
            / 3
        )
        assert relative(batch_mean @ v, hessian @ v) > 1e-2


def _batch_mean(model, ids, targets, flat):
    layout = ParamLayout.of({k: p.detach() for k, p in model.named_parameters()})
    return gpt_loss(model, ids, targets)(layout.unflatten(flat))


def test_dict_batches_and_the_model_loss_give_the_same_operator(gpt) -> None:
    """HF-style dict batches ({'input_ids', 'labels'}) and a model computing its own token-mean loss (weighted
    by its count of targets) give the same Hessian as cross_entropy on logits."""
    model, ids, targets, hessian, _ = gpt

    class OwnLoss(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
            logits = self.inner(input_ids)
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100)
            return out

    batches = [{"input_ids": ids[i : i + 3], "labels": targets[i : i + 3]} for i in range(0, 8, 3)]
    v = torch.randn(hessian.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    wrapped = OwnLoss(model)
    own = ls.hessian(wrapped, batches, "model", device="cpu", dtype="float64")
    on_logits = ls.hessian(wrapped, batches, "cross_entropy", device="cpu", dtype="float64")
    assert relative(own @ v, hessian @ v) < 1e-10
    assert relative(on_logits @ v, hessian @ v) < 1e-10
    scape = ls.wrap(wrapped, batches, "model", device="cpu", dtype="float64")
    expected = float(gpt_loss(model, ids, targets)({k: p.detach() for k, p in model.named_parameters()}))
    assert scape.loss() == pytest.approx(expected, rel=1e-12)


def test_a_users_loss_function_with_exact_token_counts(gpt) -> None:
    model, ids, targets, hessian, _ = gpt

    def token_sum(output: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
        _, y = batch
        total = F.cross_entropy(output.reshape(-1, VOCAB), y.reshape(-1), ignore_index=-100, reduction="sum")
        return total, (y != -100).sum()

    data = torch.utils.data.TensorDataset(ids, targets)
    op = ls.hessian(model, data, token_sum, batch_size=3, device="cpu", dtype="float64")
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert relative(op @ v, hessian @ v) < 1e-10


def test_label_smoothing_and_a_torch_loss_module(gpt) -> None:
    model, ids, targets, _, _ = gpt
    smoothing = nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1)

    def mean_loss(params: dict) -> torch.Tensor:
        logits = functional_call(model, params, (ids,))
        return smoothing(logits.reshape(-1, VOCAB), targets.reshape(-1))

    hessian, _, _ = dense(model, mean_loss)
    op = ls.hessian(model, (ids, targets), smoothing, batch_size=3, device="cpu", dtype="float64")
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert relative(op @ v, hessian @ v) < 1e-10


def test_a_parameter_block_is_a_slice_of_the_dense_hessian(gpt) -> None:
    model, ids, targets, hessian, layout = gpt
    op = ls.hessian(model, (ids, targets), params="qkv.*,head.bias", device="cpu", dtype="float64")
    names = ["qkv.weight", "qkv.bias", "head.bias"]
    assert op.names == names
    index = torch.cat([torch.arange(layout.offsets[layout.names.index(n)], layout.offsets[layout.names.index(n) + 1])
                       for n in names])  # fmt: skip
    block = hessian[index][:, index]
    v = torch.randn(op.size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert relative(op @ v, block @ v) < 1e-10
    top = ls.lanczos_extremal(op, top_k=1, tol=1e-10, max_iter=op.size).top.values[0]
    assert top == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]), rel=1e-8)
    with pytest.raises(ls.LandscapeError, match="^params nothing.* matches no parameter"):
        ls.hessian(model, (ids, targets), params="nothing.*", device="cpu")


# -- Gauss-Newton and Fisher ----------------------------------------------------------------------------


def mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def cnn() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()


def classification(shape: tuple[int, ...], n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def dense_ggn(model: nn.Module, inputs, targets, loss_of_output) -> torch.Tensor:
    """J^T H_L J with J the Jacobian of all outputs and H_L the Hessian of the mean loss in the outputs."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    layout = ParamLayout.of(params)
    w = layout.flatten(params)
    out = functional_call(model, params, (inputs,))
    jac = torch.func.jacrev(lambda flat: functional_call(model, layout.unflatten(flat), (inputs,)).reshape(-1))(w)
    h_out = torch.autograd.functional.hessian(lambda o: loss_of_output(o.reshape(out.shape), targets),
                                              out.reshape(-1).detach())  # fmt: skip
    return jac.T @ h_out @ jac


def dense_fisher(model: nn.Module, inputs, targets, sample_loss, scale: float) -> torch.Tensor:
    """(1/N) sum_i g_i g_i^T with g_i the gradient of `scale` x sample i's loss."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    layout = ParamLayout.of(params)
    w = layout.flatten(params)
    rows = []
    for i in range(len(inputs)):
        g = torch.func.grad(
            lambda flat, i=i: (
                scale
                * sample_loss(functional_call(model, layout.unflatten(flat), (inputs[i : i + 1],)), targets[i : i + 1])
            )  # fmt: skip
        )(w)
        rows.append(g)
    grads = torch.stack(rows)
    return grads.T @ grads / len(inputs)


def _ce_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=-100, reduction="sum")


CASES = {
    "mlp cross_entropy": (mlp, (4,), "cross_entropy"),
    "mlp mse": (mlp, (4,), "mse"),
    "cnn cross_entropy": (cnn, (1, 6, 6), "cross_entropy"),
    "cnn half_sse": (cnn, (1, 6, 6), "half_sse"),
}


def _mean_loss_of_output(name: str, n: int):
    if name == "cross_entropy":
        return lambda o, y: F.cross_entropy(o, y)
    if name == "mse":
        return lambda o, y: F.mse_loss(o, F.one_hot(y, 3).double())
    return lambda o, y: 0.5 * (o - F.one_hot(y, 3).double()).pow(2).sum() / n


@pytest.mark.parametrize("case", CASES)
def test_ggn_and_fisher_equal_their_dense_definitions(case) -> None:
    build, shape, loss = CASES[case]
    model = build()
    x, y = classification(shape)
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)  # fmt: skip
    ggn = dense_ggn(model, x, y, _mean_loss_of_output(loss, len(x)))
    op = ls.ggn(model, (x, y), loss, batch_size=4, device="cpu", dtype="float64")
    assert relative(op @ v, ggn @ v) < 1e-10
    assert float(torch.linalg.eigvalsh(ggn)[0]) > -1e-10  # PSD for a convex loss
    per_sample = {
        "cross_entropy": _ce_sum,
        "mse": lambda o, t: F.mse_loss(o, F.one_hot(t, 3).double(), reduction="sum") / 3,
        "half_sse": lambda o, t: 0.5 * (o - F.one_hot(t, 3).double()).pow(2).sum(),
    }[loss]
    fisher = dense_fisher(model, x, y, per_sample, 1.0)
    op = ls.fisher(model, (x, y), loss, batch_size=4, device="cpu", dtype="float64")
    assert relative(op @ v, fisher @ v) < 1e-10


def test_ggn_and_fisher_of_the_transformer(gpt) -> None:
    """Token-level: the GGN of the token mean, and the Fisher of each sequence's share (its token sum x
    N / total tokens), whose mean is the gradient."""
    model, ids, targets, _, _ = gpt
    count = int((targets != -100).sum())
    ggn = dense_ggn(model, ids, targets, lambda o, t: _ce_sum(o, t) / count)
    v = torch.randn(ggn.shape[0], generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    op = ls.ggn(model, (ids, targets), batch_size=3, device="cpu", dtype="float64")
    assert relative(op @ v, ggn @ v) < 1e-10
    fisher = dense_fisher(model, ids, targets, _ce_sum, len(ids) / count)
    op = ls.fisher(model, (ids, targets), batch_size=3, device="cpu", dtype="float64")
    assert relative(op @ v, fisher @ v) < 1e-10


def test_ggn_equals_the_hessian_of_a_linear_model_and_works_with_scipy() -> None:
    from scipy.sparse.linalg import eigsh

    torch.manual_seed(0)
    model = nn.Linear(6, 3).double()
    x, y = classification((6,), n=20)
    h = ls.hessian(model, (x, y), device="cpu", dtype="float64")
    g = ls.ggn(model, (x, y), device="cpu", dtype="float64")
    v = torch.randn(h.size, dtype=torch.float64)
    assert relative(g @ v, h @ v) < 1e-12
    top = eigsh(g.to_scipy(), k=2, which="LA", return_eigenvectors=False)
    lanczos = ls.lanczos_extremal(h, top_k=2, tol=1e-10, max_iter=h.size).top.values
    assert np.allclose(sorted(top, reverse=True), lanczos, rtol=1e-8)


def test_the_model_loss_has_no_gauss_newton() -> None:
    model = nn.Linear(3, 2)

    def own(x: torch.Tensor, labels: torch.Tensor) -> dict:
        return {"loss": F.cross_entropy(model(x), labels), "logits": model(x)}

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
            return own(x, labels)

    batches = [{"x": torch.randn(4, 3), "labels": torch.randint(0, 2, (4,))}]
    with pytest.raises(ls.LandscapeError, match="Gauss-Newton matrix needs a loss of the model's output"):
        ls.ggn(Wrapped(), batches, "model", device="cpu")


def test_problem_batches_stream_one_at_a_time() -> None:
    """A streamed source is read batch by batch, each pass, in the same order."""
    reads: list[int] = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int):
            reads.append(i)
            g = torch.Generator().manual_seed(i)
            return torch.randn(4, generator=g, dtype=torch.float64), i % 3

    problem = Problem(mlp(), Counting(), "cross_entropy", batch_size=4, device="cpu", dtype=torch.float64)
    reads.clear()
    sizes = [batch.size for _, batch in problem.batches()]
    assert sizes == [4, 4, 2] and reads == list(range(10))


# -- finite differences -------------------------------------------------------------------------------------


class OnceDifferentiableTanh(torch.autograd.Function):
    """tanh whose backward cannot itself be differentiated and which has no forward-mode rule, as fused
    attention kernels are: neither exact HVP method works through it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class Fused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(OnceDifferentiableTanh.apply(self.a(x)))


class Plain(Fused):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


@pytest.mark.parametrize(("dtype", "tolerance"), [("float64", 1e-8), ("float32", 1.5e-4)])
def test_finite_differences_agree_with_exact_hvps(dtype, tolerance) -> None:
    x, y = classification((4,), n=40)
    exact = ls.hessian(Plain(), (x, y), device="cpu", dtype=dtype, hvp="double-backward")
    approx = ls.hessian(Plain(), (x, y), device="cpu", dtype=dtype, hvp="finite-difference", batch_size=16)
    v = torch.randn(exact.size, generator=torch.Generator().manual_seed(0), dtype=exact.dtype)
    assert relative(approx @ v, exact @ v) < tolerance
    top_exact = ls.lanczos_extremal(exact, top_k=2, tol=1e-6, max_iter=exact.size).top.values
    top_approx = ls.lanczos_extremal(approx, top_k=2, tol=1e-6, max_iter=exact.size).top.values
    assert np.allclose(top_approx, top_exact, rtol=tolerance)


def test_auto_falls_back_to_finite_differences_with_a_warning() -> None:
    x, y = classification((4,), n=40)
    with pytest.warns(ls.LandscapeWarning, match="neither exact HVP method.*finite differences"):
        fused = ls.hessian(Fused(), (x, y), device="cpu", dtype="float64")
        v = torch.randn(fused.size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        approx = fused @ v
    assert fused.problem.hvp_method == "finite-difference"
    exact = ls.hessian(Plain(), (x, y), device="cpu", dtype="float64") @ v
    assert relative(approx, exact) < 1e-8
    scape = ls.wrap(Fused(), (x, y), device="cpu", dtype="float64")
    gate = scape.check(max_top_eig=1e9)  # a gate picks the first method that works, without timing
    assert scape.problem.first_working_method() == "finite-difference" and gate.passed


@pytest.mark.parametrize("by", ["tensor", "module"])
def test_per_layer_blocks_are_slices_of_the_dense_hessian(by) -> None:
    from landscape_cli.layers import per_layer_spectrum

    model = mlp()
    x, y = classification((4,), n=30)
    scape = ls.wrap(model, (x, y), device="cpu", dtype="float64")
    layout = scape.problem.layout
    hessian = torch.autograd.functional.hessian(
        lambda flat: F.cross_entropy(functional_call(model, layout.unflatten(flat), (x,)), y), scape.problem.w
    )
    layers = per_layer_spectrum(scape.problem, by=by, tol=1e-10, max_iter=100)
    groups = {"tensor": [[n] for n in layout.names], "module": [["0.weight", "0.bias"], ["2.weight", "2.bias"]]}[by]
    assert layers.names == ([n for n in layout.names] if by == "tensor" else ["0", "2"])
    for row, members in zip(layers.rows(), groups, strict=True):
        positions = [layout.names.index(m) for m in members]
        index = torch.cat([torch.arange(layout.offsets[i], layout.offsets[i + 1]) for i in positions])
        block = hessian[index][:, index]
        assert row["size"] == len(index)
        assert row["top"] == pytest.approx(float(torch.linalg.eigvalsh(block)[-1]), rel=1e-8)
        assert row["trace"] == pytest.approx(float(block.trace()), rel=1e-10) and row["trace_stderr"] == 0
    assert sum(r["trace"] for r in layers.rows()) == pytest.approx(float(hessian.trace()), rel=1e-10)


def test_spectrum_per_layer_on_the_command_line(cli, local_mlp) -> None:
    import h5py

    result = cli("spectrum", local_mlp, "--per-layer", "--top-k", "1", "--samples", "200", "--device", "cpu", "--json")
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    blocks = payload["layers"]["blocks"]
    assert [b["name"] for b in blocks] == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"]
    assert all(b["top"] <= payload["top"][0]["eigenvalue"] * (1 + 1e-3) for b in blocks)  # a block's top <= H's
    with h5py.File(payload["outputs"]["results"]) as f:
        assert list(f["layers"]["top"][()]) == pytest.approx([b["top"] for b in blocks])
    ggn = cli("spectrum", local_mlp, "--per-layer", "module", "--curvature", "ggn", "--params", "layers.2.*",
              "--top-k", "1", "--samples", "200", "--device", "cpu", "--json", "--overwrite")  # fmt: skip
    assert ggn.code == 0, ggn.err
    payload = json.loads(ggn.out)
    assert [b["name"] for b in payload["layers"]["blocks"]] == ["layers.2"]
    assert payload["problem"]["curvature"] == "ggn" and payload["problem"]["block_size"] == 330
    # one block = the --params block itself: its top eigenvalue is the spectrum's
    assert payload["layers"]["blocks"][0]["top"] == pytest.approx(payload["top"][0]["eigenvalue"], rel=1e-3)
