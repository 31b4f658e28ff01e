"""The Lanczos three-term recurrence with full reorthogonalization.

Shared by the eigenvalue solver and stochastic Lanczos quadrature. Full reorthogonalization
(classical Gram-Schmidt, twice) keeps the basis orthonormal to working precision, which is what
prevents ghost copies of converged eigenvalues. The tridiagonal coefficients are kept in
float64 whatever the working dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Matvec = Callable[[torch.Tensor], torch.Tensor]


def dims_of(
    matvec: Matvec, n: int | None, device: torch.device | str | None, dtype: torch.dtype | None
) -> tuple[int, torch.device | str, torch.dtype]:
    """Size, device and dtype of the operator: as given, else from a linear operator (`shape`, `device`,
    `dtype`, as a CurvatureOperator has), else the CPU in float32."""
    if n is None:
        shape = getattr(matvec, "shape", None)
        if shape is None:
            raise ValueError("give n, the operator's size, or an operator with a shape")
        n = int(shape[0])
    device = device if device is not None else getattr(matvec, "device", "cpu")
    dtype = dtype if dtype is not None else getattr(matvec, "dtype", torch.float32)
    return n, device, dtype


def random_vector(n: int, generator: torch.Generator, kind: str = "gaussian") -> torch.Tensor:
    """Seeded on the CPU so that the same seed gives the same vector on every device."""
    if kind == "rademacher":
        return torch.randint(0, 2, (n,), generator=generator, dtype=torch.float64) * 2 - 1
    return torch.randn(n, generator=generator, dtype=torch.float64)


class LanczosProcess:
    """Builds an orthonormal Krylov basis Q and the tridiagonal T = Q^T A Q one matvec at a time."""

    GROW = 32

    def __init__(self, matvec: Matvec, start: torch.Tensor, max_steps: int, generator: torch.Generator) -> None:
        self.matvec = matvec
        self.n = start.numel()
        self.max_steps = min(max_steps, self.n)
        self.generator = generator
        self.dtype, self.device = start.dtype, start.device
        self.basis = torch.zeros(min(self.GROW, self.max_steps), self.n, dtype=self.dtype, device=self.device)
        self.basis[0] = start / start.norm()
        self.alphas: list[float] = []
        self.betas: list[float] = []  # betas[j] couples q_j and q_{j+1}; 0.0 after a restart
        self.matvecs = 0
        self.restarts = 0
        self._eps = torch.finfo(self.dtype).eps

    @property
    def steps(self) -> int:
        return len(self.alphas)

    def _orthogonalize(self, w: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Classical Gram-Schmidt against the basis, repeated only when it cancelled much of w.

        "Twice is enough" (Kahan, Parlett): a second pass is needed only when the first removed
        most of the vector (norm ratio below 1/sqrt(2)); otherwise it would cost a second sweep
        over the whole basis for nothing.
        """
        q = self.basis[:rows]
        before = torch.linalg.vector_norm(w, dtype=torch.float64)
        coeffs = q @ w
        w = w - q.T @ coeffs
        if torch.linalg.vector_norm(w, dtype=torch.float64) < 0.7071 * before:
            second = q @ w
            w = w - q.T @ second
            coeffs = coeffs + second
        return w, coeffs

    def step(self) -> bool:
        """One matvec. Returns False once the basis can grow no further (max steps or n reached)."""
        j = self.steps
        if j >= self.max_steps:
            return False
        q = self.basis[j]
        w = self.matvec(q)
        self.matvecs += 1
        w, coeffs = self._orthogonalize(w, j + 1)
        # The coefficient on q_j is alpha; the others are the (tiny) reorthogonalization terms
        # plus beta_{j-1}, so T stays exactly Q^T A Q to working precision.
        self.alphas.append(float(coeffs[j].double()))
        beta = float(torch.linalg.vector_norm(w, dtype=torch.float64))
        if j + 1 >= self.max_steps:
            self.betas.append(beta)
            return True
        if j + 1 >= self.basis.shape[0]:
            self._grow()
        scale = max(max(abs(a) for a in self.alphas), max(self.betas, default=0.0), 1e-300)
        if beta > 1e3 * self._eps * scale:
            self.basis[j + 1] = w / beta
            self.betas.append(beta)
            return True
        # Invariant subspace found: restart with a random vector orthogonal to the basis.
        # beta = 0 keeps T block-diagonal and still the exact projection.
        self.betas.append(0.0)
        self.restarts += 1
        fresh = random_vector(self.n, self.generator).to(self.device, self.dtype)
        fresh, _ = self._orthogonalize(fresh, j + 1)
        self.basis[j + 1] = fresh / fresh.norm()
        return True

    def _grow(self) -> None:
        rows = min(self.basis.shape[0] + self.GROW, self.max_steps)
        bigger = torch.zeros(rows, self.n, dtype=self.dtype, device=self.device)
        bigger[: self.basis.shape[0]] = self.basis
        self.basis = bigger

    def last_beta(self) -> float:
        return self.betas[-1] if self.betas else 0.0
