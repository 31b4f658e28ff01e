"""Sharpness measures against their closed forms on a quadratic loss (a linear model with half the squared
error): at the minimum worst L2 = 0.5 rho^2 lambda_max, average = 0.5 rho^2 trace(H), the adaptive ones the same
with diag|w| H diag|w|; away from it the worst case is the trust-region solution; m-sharpness with m = N is the
full-batch measure; and the command's table, JSON, file and refusals."""

from __future__ import annotations

import itertools
import json

import h5py
import numpy as np
import pytest
import torch

import landscape_cli as ls
from landscape_cli.errors import ParameterError
from landscape_cli.sharpness import SharpnessSettings, measure_sharpness

from .conftest import SAMPLE_DIR, assert_user_error

N, D, RHO = 200, 6, 0.1


def quadratic(at_minimum: bool = True):
    """L(w) = (1/2N) ||X w - y||^2: Hessian X^T X / N, minimum at w*."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.5, 1.0, 0.5, 0.2])
    w_star = torch.randn(D, 1, generator=g, dtype=torch.float64)
    y = x @ w_star
    model = torch.nn.Linear(D, 1, bias=False).double()
    w = w_star.T if at_minimum else w_star.T + 0.3 * torch.randn(1, D, generator=g, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(w)
    scape = ls.wrap(model, (x, y), "half_sse", dtype=torch.float64, device="cpu")
    return scape, x.T @ x / N, w.reshape(-1), (x @ w.T - y).reshape(-1) @ x / N


def test_closed_forms_at_the_minimum() -> None:
    scape, h, w, _ = quadratic()
    scaled = torch.diag(w.abs()) @ h @ torch.diag(w.abs())
    for adaptive, matrix in ((False, h), (True, scaled)):
        worst = scape.measure("worst", RHO, adaptive=adaptive, steps=40)
        assert worst.value == pytest.approx(0.5 * RHO**2 * float(torch.linalg.eigvalsh(matrix)[-1]), rel=1e-8)
        assert worst.lower_bound and worst.value > 0
        average = scape.measure("average", RHO, adaptive=adaptive, perturbations=400)
        expected = 0.5 * RHO**2 * float(matrix.trace())
        assert abs(average.value - expected) <= 4 * average.stderr and average.stderr < 0.15 * expected
    # L-inf: the maximum of a convex quadratic over the box is at a corner: 0.5 rho^2 max_s s^T H s
    corners = max(float(torch.tensor(s, dtype=torch.float64) @ h @ torch.tensor(s, dtype=torch.float64))
                  for s in itertools.product((-1.0, 1.0), repeat=D))  # fmt: skip
    linf = scape.measure("worst", RHO, norm="linf", steps=40, restarts=8)
    assert 0.97 * 0.5 * RHO**2 * corners <= linf.value <= 0.5 * RHO**2 * corners * (1 + 1e-9)


def _trust_region(g: torch.Tensor, h: torch.Tensor, rho: float) -> float:
    """max g.d + 0.5 d^T H d over ||d|| <= rho: on the sphere, d = (mu I - H)^-1 g with mu > lambda_max where
    ||d|| = rho (bisection on the secular equation)."""
    values, vectors = torch.linalg.eigh(h)
    c = vectors.T @ g
    lo, hi = float(values[-1]) + 1e-12, float(values[-1]) + float(g.norm()) / rho + 10

    def radius(mu: float) -> float:
        return float((c / (mu - values)).norm())

    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if radius(mid) > rho else (lo, mid)
    d = vectors @ (c / (hi - values))
    return float(g @ d + 0.5 * d @ h @ d)


def test_worst_case_away_from_the_minimum_is_the_trust_region_solution() -> None:
    scape, h, _, g = quadratic(at_minimum=False)
    worst = scape.measure("worst", RHO, steps=60)
    assert worst.value == pytest.approx(_trust_region(g, h, RHO), rel=1e-7)
    assert worst.value > RHO * float(g.norm())  # more than the first-order (SAM) step alone


def test_m_sharpness_with_m_equal_to_n_is_the_full_measure_and_smaller_m_averages_batches() -> None:
    scape, _, _, _ = quadratic(at_minimum=False)
    full = scape.measure("worst", RHO, steps=30)
    whole = scape.measure("worst", RHO, steps=30, m=N)
    assert whole.value == pytest.approx(full.value, rel=1e-10) and whole.per_batch == [pytest.approx(full.value)]
    parts = scape.measure("worst", RHO, steps=30, m=50)
    assert len(parts.per_batch) == 4 and parts.value == pytest.approx(np.mean(parts.per_batch), rel=1e-12)
    assert parts.stderr == pytest.approx(np.std(parts.per_batch, ddof=1) / 2, rel=1e-9)
    # each part is its own problem: the value of part 0 equals the measure on those 50 samples alone
    order = torch.randperm(N, generator=torch.Generator().manual_seed(0))[:50]
    alone = measure_sharpness(scape.problem.restricted(order), SharpnessSettings("worst", RHO, steps=30))
    assert parts.per_batch[0] == pytest.approx(alone.value, rel=1e-12)


def test_keskar_is_the_relative_increase_in_the_scaled_box() -> None:
    scape, h, w, _ = quadratic()
    eps = 1e-3
    keskar = scape.measure("keskar", eps, steps=40, restarts=8)
    scale = torch.diag(w.abs() + 1)
    corners = max(float(torch.tensor(s, dtype=torch.float64) @ scale @ h @ scale @ torch.tensor(s, dtype=torch.float64))
                  for s in itertools.product((-1.0, 1.0), repeat=D))  # fmt: skip
    bound = 100 * 0.5 * eps**2 * corners / (1 + 0.0)  # the loss at the minimum is 0
    assert 0.97 * bound <= keskar.value <= bound * (1 + 1e-6)


@pytest.mark.parametrize(
    ("options", "name"),
    [({"rho": 0.0}, "rho"), ({"rho": float("nan")}, "rho"), ({"measure": "sharpest"}, "measure"),
     ({"norm": "l1"}, "norm"), ({"m": 7}, "m"), ({"m": 0}, "m"), ({"perturbations": 1}, "perturbations"),
     ({"measure": "keskar", "adaptive": True}, "measure")],
)  # fmt: skip
def test_bad_settings_name_their_parameter(options, name) -> None:
    scape, _, _, _ = quadratic()
    settings = {"measure": "worst", "rho": RHO, **options}
    with pytest.raises(ParameterError) as raised:
        scape.measure(settings.pop("measure"), settings.pop("rho"), **settings)
    assert raised.value.param == name


def test_the_command_writes_a_table_json_and_a_file(cli, tmp_path) -> None:
    ckpt = SAMPLE_DIR / "mlp_digits.pt"
    out = tmp_path / "s.h5"
    result = cli("sharpness", ckpt, "--measure", "worst,average", "--norm", "l2,linf", "--rho", "0.05",
                 "--rho", "0.1", "--samples", "300", "--steps", "8", "--perturbations", "16", "--out", out, "--json",
                 "--quiet", "--device", "cpu")  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(result.out)
    names = [m["name"] for m in report["measures"]]
    assert names == ["worst-l2 rho=0.05", "worst-linf rho=0.05", "worst-l2 rho=0.1", "worst-linf rho=0.1",
                     "average rho=0.05", "average rho=0.1"]  # fmt: skip
    by_name = {m["name"]: m["value"] for m in report["measures"]}
    assert 0 < by_name["worst-l2 rho=0.05"] < by_name["worst-l2 rho=0.1"]  # a larger ball holds more
    assert by_name["worst-l2 rho=0.05"] < by_name["worst-linf rho=0.05"]  # the L-inf ball holds the L2 ball
    scape = ls.load(ckpt, samples=300, device="cpu")
    assert report["top_eigenvalue"] == pytest.approx(scape.sharpness(), rel=1e-3)
    with h5py.File(out) as f:
        assert f.attrs["kind"] == "sharpness" and f.attrs["checkpoint_sha256"]
        assert f["measures/0"].attrs["value"] == pytest.approx(by_name["worst-l2 rho=0.05"], rel=1e-12)
    table = cli("sharpness", ckpt, "--measure", "average", "--adaptive", "--samples", "300", "--perturbations", "8",
                "--no-spectrum", "--out", tmp_path / "t.h5", "--quiet", "--device", "cpu")  # fmt: skip
    assert table.code == 0 and "average-adaptive rho=0.05" in table.out and "±" in table.out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--rho", "0"], "--rho"), (["--measure", "sharpest"], "--measure"), (["--m", "7"], "--m"),
     (["--norm", "l1"], "--norm")],
)  # fmt: skip
def test_bad_options_exit_2_and_write_nothing(cli, tmp_path, args, fragment) -> None:
    out = tmp_path / "s.h5"
    result = cli("sharpness", SAMPLE_DIR / "mlp_digits.pt", "--samples", "300", "--out", out, "--quiet", *args)
    assert_user_error(result, fragment)
    assert not out.exists()


def test_average_and_worst_follow_the_definitions_on_a_small_network() -> None:
    """A tanh MLP with cross-entropy, against a separate plain implementation: the average increase under
    N(0, rho^2 I) (and scaled by |w|) from 4000 independent draws agrees within the two standard errors; the
    worst case is at least the loss increase at SAM's step rho g/||g|| and at least every random point of the
    ball tried here."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    x, y = torch.randn(60, 5, dtype=torch.float64), torch.randint(0, 3, (60,))
    scape = ls.wrap(model, (x, y), dtype=torch.float64, device="cpu")
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_at(flat: torch.Tensor) -> torch.Tensor:
        params, i = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            params[name] = flat[i : i + shape.numel()].reshape(shape)
            i += shape.numel()
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)

    base = float(loss_at(w))
    draws = torch.randn(4000, w.numel(), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    rho = 0.05
    for adaptive in (False, True):
        deltas = rho * draws * (w.abs() if adaptive else 1)
        increases = torch.func.vmap(loss_at)(w + deltas) - base
        mine = float(increases.mean())
        mine_err = float(increases.std() / np.sqrt(len(increases)))
        ours = scape.measure("average", rho, adaptive=adaptive, perturbations=400)
        assert abs(ours.value - mine) <= 3 * np.hypot(ours.stderr, mine_err), (adaptive, ours.value, mine)
    worst = scape.measure("worst", rho)
    loss, gradient = scape.problem.loss_and_gradient()
    sam_step = float(loss_at(w + rho * gradient / gradient.norm())) - loss
    sphere = draws[:200] / draws[:200].norm(dim=1, keepdim=True) * rho
    random_best = float((torch.func.vmap(loss_at)(w + sphere) - base).max())
    assert worst.value >= sam_step - 1e-12 and worst.value >= random_best


def test_check_gates_and_compare_take_the_measures(cli, tmp_path) -> None:
    """`check --max-sharpness-worst/--max-sharpness-avg` judge the values `sharpness` reports (same seed, same
    samples); `compare` takes them from checkpoints and from two sharpness files alike."""
    base, new = SAMPLE_DIR / "mlp_digits.pt", SAMPLE_DIR / "mlp_digits_sam.pt"
    common = ["--samples", "300", "--device", "cpu", "--quiet"]
    files = []
    for ckpt in (base, new):
        out = tmp_path / f"{ckpt.stem}.h5"
        result = cli("sharpness", ckpt, "--no-spectrum", "--out", out, "--json", *common)
        assert result.code == 0, result.err
        files.append((out, {m["settings"]["measure"]: m["value"] for m in json.loads(result.out)["measures"]}))
    worst, average = files[0][1]["worst"], files[0][1]["average"]
    passing = cli("check", base, "--max-sharpness-worst", worst * 1.01, "--max-sharpness-avg", average * 1.01, "--json",
                  *common)  # fmt: skip
    assert passing.code == 0, passing.err
    gates = {g["name"]: g for g in json.loads(passing.out)["gates"]}
    assert gates["max_sharpness_worst"]["value"] == pytest.approx(worst, rel=1e-12)
    assert gates["max_sharpness_avg"]["value"] == pytest.approx(average, rel=1e-12)
    assert gates["max_sharpness_avg"]["uncertainty"] > 0
    failing = cli("check", base, "--max-sharpness-avg", average * 0.99, *common)
    assert failing.code == 1 and "FAIL" in failing.out
    live = cli("compare", base, new, "--what", "worst,average", "--json", *common)
    saved = cli("compare", files[0][0], files[1][0], "--json", "--quiet")
    for result in (live, saved):
        assert result.code == 0, result.err
        deltas = {d["measure"]: d for d in json.loads(result.out)["deltas"]}
        assert deltas["worst"]["base"] == pytest.approx(worst, rel=1e-12)
        assert deltas["average"]["new"] == pytest.approx(files[1][1]["average"], rel=1e-12)
