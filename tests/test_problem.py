"""Problem (loss, gradient, HVPs over chunked data) and the spectrum against dense float64 Hessians."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape_cli import SpectrumOptions, compute_spectrum, load_checkpoint, problem_from_checkpoint
from landscape_cli.errors import LandscapeError
from landscape_cli.problem import Problem
from landscape_cli.zoo.data import Dataset

from .helpers import dense_hessian, tiny_data, tiny_models

MODELS = tiny_models()


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request):
    name = request.param
    model, data = MODELS[name], tiny_data(name)
    return name, model, data, dense_hessian(model, data)


def make_problem(model, data, **kw) -> Problem:
    kw.setdefault("dtype", torch.float64)
    return Problem(model, data, kw.pop("loss", "cross_entropy"), **kw)


def test_hvp_methods_match_dense_hessian(case) -> None:
    name, model, data, hessian = case
    problem = make_problem(model, data, batch_size=16)  # 50 samples: chunks of 16, 16, 16, 2
    assert problem.n_params == hessian.shape[0]
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        v = torch.randn(problem.n_params, generator=g, dtype=torch.float64)
        exact = hessian @ v
        for method in ("jvp", "double-backward"):
            hv = problem.hvp(v, method=method)
            assert float((hv - exact).norm() / exact.norm()) < 1e-10, (name, method)


def test_operator_does_not_depend_on_chunk_size(case) -> None:
    _, model, data, _ = case
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(1)).double()
    results = [make_problem(model, data, batch_size=b).hvp(v) for b in (1, 7, 50, 4096)]
    for hv in results[1:]:
        assert float((hv - results[0]).norm() / results[0].norm()) < 1e-12
    losses = [make_problem(model, data, batch_size=b).loss_and_gradient() for b in (3, 50)]
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-13)
    assert float((losses[0][1] - losses[1][1]).norm()) < 1e-13


def test_top_and_bottom_eigenvalues_match_dense(case) -> None:
    name, model, data, hessian = case
    truth = np.linalg.eigvalsh(hessian.numpy())
    problem = make_problem(model, data, batch_size=20)
    result = compute_spectrum(problem, SpectrumOptions(top_k=5, bottom_k=3, tol=1e-10, max_iter=problem.n_params))
    lz = result.lanczos
    assert lz.converged, name
    np.testing.assert_allclose(lz.top.values, truth[::-1][:5], rtol=1e-8, err_msg=name)
    scale = np.abs(truth).max()
    # Bottom eigenvalues can be tiny; compare relative to themselves when they are not.
    np.testing.assert_allclose(lz.bottom.values, truth[:3], rtol=1e-8, atol=1e-10 * scale, err_msg=name)


def test_trace_within_three_standard_errors(case) -> None:
    name, model, data, hessian = case
    problem = make_problem(model, data)
    result = compute_spectrum(problem, SpectrumOptions(top_k=0, trace=True, trace_hvps=60))
    exact = float(torch.trace(hessian))
    assert result.trace.matvecs == 60
    assert abs(result.trace.estimate - exact) <= 3 * result.trace.stderr + 1e-9 * abs(exact), name


@pytest.mark.parametrize("name", ["mlp-tanh", "resnet-bn"])
def test_density_integrates_to_one_and_mean_is_trace_over_n(name: str) -> None:
    model, data = MODELS[name], tiny_data(name)
    hessian = dense_hessian(model, data)
    problem = make_problem(model, data)
    result = compute_spectrum(problem, SpectrumOptions(top_k=1, density=True, density_runs=10, density_steps=20))
    d = result.density
    assert np.trapezoid(d.density, d.grid) == pytest.approx(1.0, abs=2e-3)
    n = hessian.shape[0]
    exact_mean = float(torch.trace(hessian)) / n
    off = hessian - torch.diag(torch.diag(hessian))
    sd = float(np.sqrt(2 * float((off**2).sum())) / n / np.sqrt(10))  # Rademacher quadratic-form spread
    assert abs(d.mean - exact_mean) <= 4 * sd, name
    truth = np.linalg.eigvalsh(hessian.numpy())
    assert float(np.nanmax(d.nodes)) == pytest.approx(truth[-1], rel=1e-6)


def test_train_mode_uses_batch_statistics() -> None:
    model, data = MODELS["resnet-bn"], tiny_data("resnet-bn")
    hessian = dense_hessian(model, data, train_mode=True)
    problem = make_problem(model, data, batch_size=50, train_mode=True)
    assert problem.mode == "train"
    v = torch.randn(problem.n_params, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert float((problem.hvp(v) - hessian @ v).norm() / (hessian @ v).norm()) < 1e-10
    # ... and differs from eval mode (running statistics), so the mode really matters.
    eval_hv = make_problem(model, data, batch_size=50).hvp(v)
    assert float((eval_hv - hessian @ v).norm() / (hessian @ v).norm()) > 1e-3
    # Running statistics are not touched by train-mode evaluation.
    stored = dict(model.named_buffers())["stem.1.running_mean"].double()
    problem.evaluate()
    assert torch.equal(problem.buffers["stem.1.running_mean"], stored)


def test_half_sse_is_half_squared_error_summed_over_outputs() -> None:
    model, data = MODELS["mlp-tanh"], tiny_data("mlp-tanh")
    problem = make_problem(model, data, loss="half_sse", batch_size=9)
    with torch.no_grad():
        out = model.double()(data.x.double())
    expected = 0.5 * (out - F.one_hot(data.y, 4).double()).pow(2).sum(dim=1).mean()
    assert problem.evaluate()["loss"] == pytest.approx(float(expected), rel=1e-13)
    hessian = dense_hessian(model, data, loss="half_sse")
    v = torch.ones(problem.n_params, dtype=torch.float64)
    assert float((problem.hvp(v) - hessian @ v).norm() / (hessian @ v).norm()) < 1e-10


def test_mse_is_torch_mse_loss_and_half_sse_its_scaled_hessian() -> None:
    """mse is nn.MSELoss (mean over all elements); half_sse's Hessian is C/2 times it for C outputs."""
    model, data = MODELS["mlp-tanh"], tiny_data("mlp-tanh")
    problem = make_problem(model, data, loss="mse", batch_size=9)
    with torch.no_grad():
        out = model.double()(data.x.double())
    expected = torch.nn.MSELoss()(out, F.one_hot(data.y, 4).double())
    assert problem.evaluate()["loss"] == pytest.approx(float(expected), rel=1e-13)
    hessian = dense_hessian(model, data, loss="mse")
    v = torch.ones(problem.n_params, dtype=torch.float64)
    assert float((problem.hvp(v) - hessian @ v).norm() / (hessian @ v).norm()) < 1e-10
    half = make_problem(model, data, loss="half_sse", batch_size=9)
    assert torch.allclose(half.hvp(v), 2.0 * problem.hvp(v), rtol=1e-12, atol=0)  # C/2 = 4/2


def test_regression_targets_with_mse() -> None:
    torch.manual_seed(3)
    model = torch.nn.Linear(3, 2).double()
    x = torch.randn(40, 3)
    y = torch.randn(40, 2)
    problem = Problem(model, Dataset(x, y), "mse", dtype=torch.float64, batch_size=11)
    # For a linear model the Hessian of 0.5 ||W x + b - y||^2 (mean over samples) is I_2 kron E[[x,1][x,1]^T].
    xa = torch.cat([x.double(), torch.ones(40, 1, dtype=torch.float64)], dim=1)
    second_moment = xa.T @ xa / 40
    top = compute_spectrum(problem, SpectrumOptions(top_k=1, tol=1e-12, max_iter=8)).lanczos.top.values[0]
    assert top == pytest.approx(float(torch.linalg.eigvalsh(second_moment)[-1]), rel=1e-10)


def test_hvp_method_is_measured_and_recorded() -> None:
    model, data = MODELS["mlp-tanh"], tiny_data("mlp-tanh")
    problem = make_problem(model, data)
    chosen = problem.choose_hvp_method()
    assert set(problem.hvp_timings) == {"jvp", "double-backward"}
    assert chosen == min(problem.hvp_timings, key=problem.hvp_timings.get)
    assert problem.describe()["hvp_method"] == chosen
    forced = make_problem(model, data, hvp="jvp")
    assert forced.choose_hvp_method() == "jvp" and forced.hvp_timings == {}


def test_nan_parameters_are_refused() -> None:
    model = MLP_with_nan()
    with pytest.raises(LandscapeError, match="NaN or inf"):
        make_problem(model, tiny_data("mlp-tanh"))


def MLP_with_nan() -> torch.nn.Module:  # noqa: N802 - reads as a constructor
    from landscape_cli.zoo.models import MLP

    model = MLP([6, 4, 4])
    with torch.no_grad():
        model.layers[0].weight[0, 0] = float("nan")
    return model


def test_nan_loss_is_refused_before_any_hvp() -> None:
    model, data = MODELS["mlp-tanh"], tiny_data("mlp-tanh")
    bad = Dataset(data.x.clone(), data.y)
    bad.x[3, 0] = float("inf")
    problem = make_problem(model, bad)
    with pytest.raises(LandscapeError, match="not finite"):
        compute_spectrum(problem, SpectrumOptions(top_k=2))
    assert problem.hvp_calls == 0


def test_sample_checkpoint_problem_reproduces_recorded_metrics() -> None:
    """The BatchNorm sample evaluated in eval mode gives exactly the loss its trainer recorded."""
    ckpt = load_checkpoint("sample_checkpoints/resnet_digits.pt")
    problem = problem_from_checkpoint(ckpt, device="cpu", batch_size=500)
    metrics = problem.evaluate()
    assert metrics["loss"] == pytest.approx(ckpt.metrics["train_loss"], rel=1e-5)
    assert metrics["accuracy"] == pytest.approx(ckpt.metrics["train_accuracy"])


def test_subset_is_fixed_by_seed_and_size() -> None:
    ckpt = load_checkpoint("sample_checkpoints/mlp_digits.pt")
    a = problem_from_checkpoint(ckpt, device="cpu", samples=300, seed=1)
    b = problem_from_checkpoint(ckpt, device="cpu", samples=300, seed=1)
    c = problem_from_checkpoint(ckpt, device="cpu", samples=300, seed=2)
    assert a.n_samples == 300 and torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    with pytest.raises(LandscapeError, match="^samples must be at least 1"):
        problem_from_checkpoint(ckpt, device="cpu", samples=0)


def test_same_seed_identical_spectrum() -> None:
    ckpt = load_checkpoint("sample_checkpoints/mlp_digits.pt")
    opts = SpectrumOptions(top_k=3, trace=True, trace_hvps=12, seed=7)
    runs = [compute_spectrum(problem_from_checkpoint(ckpt, device="cpu", samples=400), opts) for _ in range(2)]
    assert np.array_equal(runs[0].lanczos.top.values, runs[1].lanczos.top.values)
    assert runs[0].trace.estimate == runs[1].trace.estimate


def test_single_chunk_reuses_the_gradient_graph_and_stays_exact(case) -> None:
    name, model, data, hessian = case
    problem = make_problem(model, data, batch_size=4096, hvp="double-backward")
    assert problem._caches_graph("double-backward", None)
    g = torch.Generator().manual_seed(9)
    for _ in range(3):  # repeated products through the one retained graph
        v = torch.randn(problem.n_params, generator=g, dtype=torch.float64)
        assert float((problem.hvp(v) - hessian @ v).norm() / (hessian @ v).norm()) < 1e-10, name
    graph = problem._graph
    problem.hvp(v)
    assert problem._graph is graph  # built once
    # Moving the weights in place invalidates the graph: the product is taken at the new point.
    moved = problem.w.clone() + 0.01
    problem.w.copy_(moved)
    fresh = make_problem(model, data, batch_size=4096, hvp="double-backward")
    assert torch.allclose(problem.hvp(v), fresh.hvp(v, w=moved), rtol=1e-10, atol=1e-12)
    assert problem._graph is not graph
    # Replacing the tensor (not only changing it in place) is noticed too.
    problem.w = problem.w * 1.5
    assert torch.allclose(problem.hvp(v), fresh.hvp(v, w=problem.w), rtol=1e-10, atol=1e-12)
