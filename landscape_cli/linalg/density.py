"""Spectral density by stochastic Lanczos quadrature (Golub-Welsch nodes and weights).

For a unit start vector v, m Lanczos steps give nodes theta_i and weights tau_i (squared first
components of T's eigenvectors) with sum_i tau_i f(theta_i) = v^T f(A) v exactly for polynomials
of degree < 2m. Averaged over random v this estimates (1/n) tr f(A): the spectral density when
f is a Gaussian bump.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal

from .process import LanczosProcess, Matvec, dims_of, random_vector


@dataclass
class DensityResult:
    nodes: np.ndarray  # (runs, steps), NaN-padded where a run ended early
    weights: np.ndarray  # (runs, steps), each row sums to 1
    grid: np.ndarray
    density: np.ndarray  # averaged over runs, integrates to 1 over the grid
    sigma: float
    matvecs: int

    @property
    def mean(self) -> float:
        """sum_i tau_i theta_i averaged over runs: an unbiased estimate of trace / n."""
        return float(np.nanmean(np.nansum(self.nodes * self.weights, axis=1)))


def slq_density(
    matvec: Matvec,
    n: int | None = None,
    *,
    runs: int = 5,
    steps: int = 80,
    sigma: float | None = None,
    grid_points: int = 1000,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    on_matvec: Callable[[int], None] | None = None,
) -> DensityResult:
    """Gaussian-broadened spectral density from `runs` Rademacher starts of `steps` steps each.

    `sigma` defaults to 1% of the spread of the nodes; the grid extends 5 sigma beyond them so
    that the density integrates to 1.
    """
    n, device, dtype = dims_of(matvec, n, device, dtype)
    if runs < 1 or steps < 1:
        raise ValueError("density needs at least one run of at least one step")
    generator = torch.Generator().manual_seed(seed)
    steps = min(steps, n)
    nodes = np.full((runs, steps), np.nan)
    weights = np.zeros((runs, steps))
    count = 0

    def apply(v: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        if on_matvec is not None:
            on_matvec(count)
        return matvec(v)

    for r in range(runs):
        start = random_vector(n, generator, "rademacher").to(device, dtype)
        process = LanczosProcess(apply, start, steps, generator)
        while process.step():
            if process.last_beta() == 0.0:  # invariant subspace: quadrature is already exact
                break
        m = process.steps
        a = np.asarray(process.alphas)
        theta, vecs = (a, np.ones((1, 1))) if m == 1 else eigh_tridiagonal(a, np.asarray(process.betas[: m - 1]))
        nodes[r, :m] = theta
        weights[r, :m] = vecs[0, :] ** 2
    lo, hi = float(np.nanmin(nodes)), float(np.nanmax(nodes))
    if sigma is None:
        sigma = max(0.01 * (hi - lo), 1e-12 * max(abs(lo), abs(hi), 1.0))
    grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, grid_points)
    density = np.zeros_like(grid)
    norm = 1.0 / (runs * sigma * math.sqrt(2 * math.pi))
    for r in range(runs):
        valid = ~np.isnan(nodes[r])
        diff = grid[:, None] - nodes[r, valid][None, :]
        density += norm * (np.exp(-0.5 * (diff / sigma) ** 2) * weights[r, valid][None, :]).sum(axis=1)
    return DensityResult(nodes, weights, grid, density, float(sigma), count)
