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


#: Device memory the Lanczos basis may take on a GPU, as a fraction of what is free; past it the basis
#: lives in host memory (each step then moves one vector each way).
DEVICE_BASIS_FRACTION = 0.25


def basis_device(device: torch.device, nbytes: int) -> torch.device:
    """Where a basis of `nbytes` lives: the working device, or the host when a GPU would be crowded."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes > DEVICE_BASIS_FRACTION * free:
            return torch.device("cpu")
    return device


class LanczosProcess:
    """Builds an orthonormal Krylov basis Q and the tridiagonal T = Q^T A Q one matvec at a time.

    The basis is kept in blocks of `BLOCK` vectors allocated as the process reaches them, so top-1 of an
    11M-parameter model holds the dozen vectors it uses, not a preallocated 32 (1.4 GB there); on a GPU
    whose free memory the whole basis would crowd, it lives in host memory."""

    BLOCK = 8

    def __init__(self, matvec: Matvec, start: torch.Tensor, max_steps: int, generator: torch.Generator) -> None:
        self.matvec = matvec
        self.n = start.numel()
        self.max_steps = min(max_steps, self.n)
        self.generator = generator
        self.dtype, self.device = start.dtype, start.device
        self.storage = basis_device(self.device, self.max_steps * self.n * start.element_size())
        self.blocks: list[torch.Tensor] = []
        self.rows = 0
        self._append(start / start.norm())
        self.alphas: list[float] = []
        self.betas: list[float] = []  # betas[j] couples q_j and q_{j+1}; 0.0 after a restart
        self.matvecs = 0
        self.restarts = 0
        self._eps = torch.finfo(self.dtype).eps

    @property
    def steps(self) -> int:
        return len(self.alphas)

    @property
    def basis(self) -> torch.Tensor:
        """The basis vectors so far as rows of one tensor (a copy, on the working device)."""
        return torch.cat(self.blocks).to(self.device)[: self.rows]

    def _append(self, q: torch.Tensor) -> None:
        slot = self.rows % self.BLOCK
        if slot == 0:
            size = min(self.BLOCK, self.max_steps - self.rows)
            # empty, not zeros: untouched rows take no resident memory until the process reaches them
            self.blocks.append(torch.empty(size, self.n, dtype=self.dtype, device=self.storage))
        self.blocks[-1][slot] = q.to(self.storage)
        self.rows += 1

    def _row(self, j: int) -> torch.Tensor:
        return self.blocks[j // self.BLOCK][j % self.BLOCK].to(self.device)

    def _project(self, w: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """w minus its components along the first `rows` basis vectors, and those components."""
        coeffs, done = [], 0
        for block in self.blocks:
            if done >= rows:
                break
            q = block[: min(block.shape[0], rows - done)]
            c = q @ w
            # w - Q^T c without a temporary: a fresh tensor the first time (w is the caller's), in place after
            w = torch.addmv(w, q.T, c, alpha=-1) if done == 0 else w.addmv_(q.T, c, alpha=-1)
            coeffs.append(c)
            done += q.shape[0]
        return w, torch.cat(coeffs)

    def _orthogonalize(self, w: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Classical Gram-Schmidt against the basis, repeated only when it cancelled much of w.

        "Twice is enough" (Kahan, Parlett): a second pass is needed only when the first removed
        most of the vector (norm ratio below 1/sqrt(2)); otherwise it would cost a second sweep
        over the whole basis for nothing. (Block by block: within a pass the blocks see the vector
        already reduced by the earlier ones, which is modified Gram-Schmidt across blocks.)
        """
        w = w.to(self.storage)
        before = torch.linalg.vector_norm(w, dtype=torch.float64)
        w, coeffs = self._project(w, rows)
        if torch.linalg.vector_norm(w, dtype=torch.float64) < 0.7071 * before:
            w, second = self._project(w, rows)
            coeffs = coeffs + second
        return w.to(self.device), coeffs

    def step(self) -> bool:
        """One matvec. Returns False once the basis can grow no further (max steps or n reached)."""
        j = self.steps
        if j >= self.max_steps:
            return False
        q = self._row(j)
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
        scale = max(max(abs(a) for a in self.alphas), max(self.betas, default=0.0), 1e-300)
        if beta > 1e3 * self._eps * scale:
            self._append(w.div_(beta))  # w is the projection's own tensor
            self.betas.append(beta)
            return True
        # Invariant subspace found: restart with a random vector orthogonal to the basis.
        # beta = 0 keeps T block-diagonal and still the exact projection.
        self.betas.append(0.0)
        self.restarts += 1
        fresh = random_vector(self.n, self.generator).to(self.device, self.dtype)
        fresh, _ = self._orthogonalize(fresh, j + 1)
        self._append(fresh / fresh.norm())
        return True

    def last_beta(self) -> float:
        return self.betas[-1] if self.betas else 0.0
