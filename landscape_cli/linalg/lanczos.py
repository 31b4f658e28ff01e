"""Extremal eigenvalues of a symmetric operator by Lanczos, stopping on Ritz error bounds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

from .process import LanczosProcess, Matvec, dims_of, random_vector

#: Eigenvalues below this fraction of the largest |Ritz value| are judged on an absolute scale.
RELATIVE_FLOOR = 1e-3


@dataclass
class RitzValues:
    """Requested Ritz values, largest first (top) or most negative first (bottom)."""

    values: np.ndarray
    residual_bounds: np.ndarray  # ||A y - theta y||: some eigenvalue lies within this of theta
    error_bounds: np.ndarray  # min(r, r^2 / gap): the usual a-posteriori error estimate
    converged: np.ndarray
    vectors: torch.Tensor | None = None  # (k, n) unit Ritz vectors when asked for


@dataclass
class LanczosResult:
    top: RitzValues
    bottom: RitzValues
    matvecs: int
    iterations: int
    converged: bool
    restarts: int


def _tridiagonal_eigs(alphas: list[float], betas: list[float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(alphas, dtype=np.float64)
    if len(a) == 1:
        return a.copy(), np.ones((1, 1))
    return eigh_tridiagonal(a, np.asarray(betas[: len(a) - 1], dtype=np.float64))


def _bounds(theta: np.ndarray, last_row: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    residual = np.abs(beta * last_row)
    if len(theta) > 1:
        diffs = np.abs(theta[:, None] - theta[None, :])
        np.fill_diagonal(diffs, np.inf)
        gap = diffs.min(axis=1)
    else:
        gap = np.full_like(theta, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        quadratic = np.where(gap > 0, residual**2 / gap, np.inf)
    # r^2/gap is only meaningful once the residual is below a known gap.
    error = np.where(np.isfinite(gap) & (residual < gap), np.minimum(residual, quadratic), residual)
    return residual, error


def _select(theta: np.ndarray, idx: np.ndarray, residual: np.ndarray, error: np.ndarray, tol: float) -> RitzValues:
    scale = max(float(np.abs(theta).max()), 1e-300) * RELATIVE_FLOOR
    limit = tol * np.maximum(np.abs(theta[idx]), scale)
    return RitzValues(theta[idx].copy(), residual[idx].copy(), error[idx].copy(), error[idx] <= limit)


def lanczos_extremal(
    matvec: Matvec,
    n: int | None = None,
    *,
    top_k: int = 5,
    bottom_k: int = 0,
    tol: float = 1e-4,
    max_iter: int = 200,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    want_vectors: bool = False,
    on_step: Callable[[int, int], None] | None = None,
    start: torch.Tensor | None = None,
) -> LanczosResult:
    """The `top_k` largest and `bottom_k` smallest eigenvalues of the operator `matvec`.

    Stops when every requested Ritz value's error bound is below `tol` relative to its size
    (sizes under 1e-3 of the largest are measured against that instead), at `max_iter`
    matvecs, or when the Krylov space is the whole space. `start` (default: a seeded Gaussian vector)
    warm-starts the Krylov sequence, e.g. from the last eigenvector of a slowly changing operator.
    An eigenvalue of multiplicity m > 1 is seen once: a single Krylov sequence only reaches one direction
    of its eigenspace.
    """
    n, device, dtype = dims_of(matvec, n, device, dtype)
    if top_k < 0 or bottom_k < 0 or top_k + bottom_k == 0:
        raise ValueError("ask for at least one eigenvalue")
    if top_k + bottom_k > n:
        raise ValueError(f"asked for {top_k + bottom_k} eigenvalues of a {n}-dimensional operator")
    generator = torch.Generator().manual_seed(seed)
    if start is None:
        start = random_vector(n, generator)
    elif start.shape != (n,) or not torch.isfinite(start).all() or not bool(start.abs().sum() > 0):
        raise ValueError(f"start must be a finite, nonzero vector of {n} entries")
    process = LanczosProcess(matvec, start.to(device, dtype), max_iter, generator)
    wanted = top_k + bottom_k
    top = bottom = None
    while process.step():
        if on_step is not None:
            on_step(process.steps, process.matvecs)
        if process.steps < min(wanted, process.max_steps):
            continue  # fewer Ritz values than asked for: nothing to judge yet
        theta, vecs = _tridiagonal_eigs(process.alphas, process.betas)
        residual, error = _bounds(theta, vecs[-1, :], process.last_beta())
        # The bounds hold in exact arithmetic; no answer is better than the matvec's own rounding.
        rounding = float(torch.finfo(dtype).eps) * float(np.abs(theta).max())
        residual, error = np.maximum(residual, rounding), np.maximum(error, rounding)
        order = np.argsort(theta)
        top = _select(theta, order[::-1][:top_k], residual, error, tol)
        bottom = _select(theta, order[:bottom_k], residual, error, tol)
        exhausted = process.steps >= process.max_steps
        if top.converged.all() and bottom.converged.all():
            break
        if exhausted:
            break
    assert top is not None and bottom is not None
    if want_vectors:
        basis = process.basis[: process.steps]
        for sel, count in ((top, top_k), (bottom, bottom_k)):
            if count:
                idx = [int(np.where(theta == val)[0][0]) for val in sel.values]
                coeffs = torch.from_numpy(vecs[:, idx]).to(device, dtype)
                ritz = (basis.T @ coeffs).T
                sel.vectors = ritz / ritz.norm(dim=1, keepdim=True)
    return LanczosResult(
        top=top,
        bottom=bottom,
        matvecs=process.matvecs,
        iterations=process.steps,
        converged=bool(top.converged.all() and bottom.converged.all()),
        restarts=process.restarts,
    )
