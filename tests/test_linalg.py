"""Lanczos, Hutch++ and SLQ on explicit symmetric matrices with known spectra (float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from landscape_cli.linalg import hutchpp_trace, lanczos_extremal, power_iteration, slq_density

from .helpers import symmetric_with_spectrum

F64 = {"dtype": torch.float64}


def spectrum(kind: str, n: int = 400) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    bulk = torch.rand(n, generator=g, dtype=torch.float64) * 0.5
    if kind == "separated":
        head = torch.tensor([10.0, 7.0, 5.0, 4.0, 3.0, -2.0, -1.5])
    elif kind == "clustered":  # top four within 1e-3 relative of each other
        head = torch.tensor([10.0, 9.998, 9.996, 9.994, 4.0, -3.0, -2.999])
    elif kind == "negative":  # indefinite, most of the mass below zero
        head = torch.tensor([1.0, 0.9, -8.0, -7.5, -7.0, -6.0, -5.0])
        bulk = -bulk
    else:
        raise ValueError(kind)
    return torch.cat([head.double(), bulk[: n - len(head)]])


@pytest.mark.parametrize("kind", ["separated", "clustered", "negative"])
def test_lanczos_finds_top_and_bottom_of_known_spectra(kind: str) -> None:
    eig = spectrum(kind)
    a = symmetric_with_spectrum(eig)
    truth = np.sort(eig.numpy())
    res = lanczos_extremal(lambda v: a @ v, a.shape[0], top_k=5, bottom_k=3, tol=1e-10, max_iter=400, **F64)
    assert res.converged
    np.testing.assert_allclose(res.top.values, truth[::-1][:5], rtol=1e-8)
    np.testing.assert_allclose(res.bottom.values, truth[:3], rtol=1e-8)
    # Error bounds are honest: the true error never exceeds the reported bound (plus rounding).
    assert np.all(np.abs(res.top.values - truth[::-1][:5]) <= res.top.error_bounds + 1e-12)
    assert res.matvecs < 400


def test_no_ghost_copies_after_many_iterations() -> None:
    """Run far past convergence: without reorthogonalization the top eigenvalue would reappear."""
    eig = spectrum("separated")
    a = symmetric_with_spectrum(eig)
    res = lanczos_extremal(lambda v: a @ v, a.shape[0], top_k=5, tol=1e-300, max_iter=150, **F64)
    assert res.iterations == 150
    np.testing.assert_allclose(res.top.values, [10.0, 7.0, 5.0, 4.0, 3.0], rtol=1e-10)


def test_float32_operator_reaches_tolerance_and_bounds_respect_rounding() -> None:
    eig = spectrum("separated")
    a = symmetric_with_spectrum(eig).float()
    res = lanczos_extremal(lambda v: a @ v, a.shape[0], top_k=5, tol=1e-4, max_iter=200, dtype=torch.float32)
    assert res.converged
    np.testing.assert_allclose(res.top.values, [10.0, 7.0, 5.0, 4.0, 3.0], rtol=1e-4)
    assert np.all(res.top.error_bounds >= np.finfo(np.float32).eps * 10.0 * 0.99)


def test_repeated_eigenvalue_reported_once_in_a_large_space() -> None:
    """One Krylov sequence reaches one direction of a repeated eigenspace: no spurious copies."""
    eig = torch.cat([torch.tensor([6.0, 6.0, 6.0, 4.0, 3.0]), torch.linspace(-1, 1, 295)])
    a = symmetric_with_spectrum(eig.double())
    res = lanczos_extremal(lambda v: a @ v, 300, top_k=3, tol=1e-10, max_iter=300, **F64)
    np.testing.assert_allclose(res.top.values, [6.0, 4.0, 3.0], rtol=1e-9)


def test_repeated_eigenvalues_all_found_when_krylov_space_is_exhausted() -> None:
    """In a small space the solver restarts after an invariant subspace and finds every copy."""
    a = torch.diag(torch.tensor([5.0, 5.0, 3.0, 1.0, 1.0, 0.0, -1.0, -2.0], dtype=torch.float64))
    res = lanczos_extremal(lambda v: a @ v, 8, top_k=8, tol=1e-12, max_iter=50, **F64)
    np.testing.assert_allclose(res.top.values, [5, 5, 3, 1, 1, 0, -1, -2], atol=1e-12)
    assert res.restarts >= 1


def test_stops_at_max_iter_unconverged() -> None:
    eig = spectrum("clustered")
    a = symmetric_with_spectrum(eig)
    res = lanczos_extremal(lambda v: a @ v, a.shape[0], top_k=4, tol=1e-12, max_iter=8, **F64)
    assert res.matvecs == 8 and not res.converged
    assert not res.top.converged.all()


def test_ritz_vectors_satisfy_residual_bounds() -> None:
    eig = spectrum("separated")
    a = symmetric_with_spectrum(eig)
    res = lanczos_extremal(lambda v: a @ v, a.shape[0], top_k=3, bottom_k=1, tol=1e-8, want_vectors=True, **F64)
    for ritz in (res.top, res.bottom):
        assert ritz.vectors is not None
        for value, vec, bound in zip(ritz.values, ritz.vectors, ritz.residual_bounds, strict=True):
            assert abs(float(vec.norm()) - 1.0) < 1e-12
            assert float((a @ vec - value * vec).norm()) <= bound * 1.01 + 1e-12


def test_same_seed_same_numbers_other_seed_other_path() -> None:
    a = symmetric_with_spectrum(spectrum("clustered"))
    runs = [lanczos_extremal(lambda v: a @ v, 400, top_k=2, tol=1e-6, seed=s, **F64) for s in (3, 3, 4)]
    assert np.array_equal(runs[0].top.values, runs[1].top.values) and runs[0].matvecs == runs[1].matvecs
    assert not np.array_equal(runs[0].top.error_bounds, runs[2].top.error_bounds)


def test_bad_requests_raise() -> None:
    a = torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError):
        lanczos_extremal(lambda v: a @ v, 4, top_k=3, bottom_k=2, **F64)
    with pytest.raises(ValueError):
        lanczos_extremal(lambda v: a @ v, 4, top_k=0, bottom_k=0, **F64)


def test_hutchpp_within_three_standard_errors() -> None:
    eig = spectrum("separated", n=300)
    a = symmetric_with_spectrum(eig)
    exact = float(eig.sum())
    for seed in range(3):
        res = hutchpp_trace(lambda v: a @ v, 300, matvecs=60, seed=seed, **F64)
        assert res.matvecs == 60
        assert res.stderr > 0
        assert abs(res.estimate - exact) <= 3 * res.stderr


def test_hutchpp_is_exact_on_low_rank_operators() -> None:
    eig = torch.zeros(200, dtype=torch.float64)
    eig[:5] = torch.tensor([9.0, 4.0, 2.0, -1.0, 0.5])
    a = symmetric_with_spectrum(eig)
    res = hutchpp_trace(lambda v: a @ v, 200, matvecs=30, **F64)
    assert res.estimate == pytest.approx(14.5, abs=1e-9)
    assert res.stderr < 1e-9


def test_slq_density_integrates_to_one_and_mean_matches_trace() -> None:
    eig = spectrum("negative", n=300)
    a = symmetric_with_spectrum(eig)
    res = slq_density(lambda v: a @ v, 300, runs=8, steps=40, **F64)
    assert np.trapezoid(res.density, res.grid) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)
    # For Rademacher v, v^T A v / n has variance 2 sum_{i!=j} A_ij^2 / n^2.
    off = a - torch.diag(torch.diag(a))
    sd = math.sqrt(2 * float((off**2).sum())) / 300 / math.sqrt(8)
    assert abs(res.mean - float(eig.mean())) <= 4 * sd
    # Extreme nodes converge to the extreme eigenvalues.
    assert float(np.nanmax(res.nodes)) == pytest.approx(1.0, rel=1e-6)
    assert float(np.nanmin(res.nodes)) == pytest.approx(-8.0, rel=1e-6)
    assert res.matvecs == 8 * 40


def test_power_iteration_converges_at_the_eigengap_rate() -> None:
    """Top eigenvalue 10 and the next 7 (separated spectrum): the angle to the top eigenvector shrinks by
    7/10 per product, and a warm start from the answer stays there."""
    eig = spectrum("separated")
    a = symmetric_with_spectrum(eig)
    top = torch.linalg.eigh(a).eigenvectors[:, -1]
    start = torch.randn(a.shape[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    errors = []
    for iterations in (20, 40):
        v, rayleigh = power_iteration(lambda x: a @ x, start, iterations)
        errors.append(float(torch.linalg.vector_norm(v - torch.sign(v @ top) * top)))
    assert errors[1] < errors[0] * 0.7**20 * 1.5 and errors[1] < 1e-5
    assert abs(rayleigh - 10.0) < 1e-9
    warm, value = power_iteration(lambda x: a @ x, top, 1)
    assert float(torch.linalg.vector_norm(warm - top)) < 1e-12 and value == pytest.approx(10.0, rel=1e-12)
    with pytest.raises(ValueError, match="at least 1"):
        power_iteration(lambda x: a @ x, start, 0)
