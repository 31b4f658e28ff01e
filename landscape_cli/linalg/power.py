"""Power iteration: the dominant eigenvector of a symmetric operator, a few matvecs at a time.

For a running estimate refined every few hundred training steps (Eigen-SAM), where a warm start from the
last estimate makes a handful of products enough and Lanczos's basis would be wasted.
"""

from __future__ import annotations

import torch

from .process import Matvec


def power_iteration(matvec: Matvec, start: torch.Tensor, iterations: int) -> tuple[torch.Tensor, float]:
    """`iterations` products from `start`: the unit estimate of the eigenvector of largest |eigenvalue|
    and its Rayleigh quotient (of the last product)."""
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    v = start / torch.linalg.vector_norm(start).clamp_min(1e-30)
    rayleigh = 0.0
    for _ in range(iterations):
        w = matvec(v)
        rayleigh = float(torch.dot(v.double().reshape(-1), w.double().reshape(-1)))
        v = w / torch.linalg.vector_norm(w).clamp_min(1e-30)
    return v, rayleigh
