"""Trace of a symmetric operator by Hutch++ (Meyer, Musco, Musco, Woodruff 2021)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .process import Matvec, dims_of, random_vector


@dataclass
class TraceResult:
    estimate: float
    stderr: float  # standard error of the Hutchinson part; the low-rank part is exact given Q
    matvecs: int
    low_rank_part: float
    residual_samples: np.ndarray  # g^T (I-QQ^T) A (I-QQ^T) g for each probe


def hutchpp_trace(
    matvec: Matvec,
    n: int | None = None,
    *,
    matvecs: int = 90,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    on_matvec: Callable[[int], None] | None = None,
) -> TraceResult:
    """tr(A) with `matvecs` products: a third sketch the range, a third take tr(Q^T A Q) exactly,
    a third estimate the trace of the deflated remainder by Hutchinson with Rademacher probes.

    Deflating the dominant eigenspace first is what makes Hutch++ need O(1/eps) rather than
    O(1/eps^2) products for relative error eps on Hessians whose trace is carried by few
    eigenvalues.
    """
    n, device, dtype = dims_of(matvec, n, device, dtype)
    if matvecs < 6:
        raise ValueError("Hutch++ needs at least 6 matvecs (two probes per third)")
    s = matvecs // 3
    generator = torch.Generator().manual_seed(seed)
    count = 0

    def apply(v: torch.Tensor) -> torch.Tensor:
        nonlocal count
        out = matvec(v)
        count += 1
        if on_matvec is not None:
            on_matvec(count)
        return out

    def probe() -> torch.Tensor:
        return random_vector(n, generator, "rademacher").to(device, dtype)

    sketch_probes = [probe() for _ in range(s)]
    sketch = torch.stack([apply(v) for v in sketch_probes], dim=1)
    q, _ = torch.linalg.qr(sketch.double(), mode="reduced")
    q = q.to(dtype)
    low_rank = sum(float(torch.dot(q[:, i].double(), apply(q[:, i]).double())) for i in range(q.shape[1]))
    samples = []
    for _ in range(s):
        g = probe()
        g = g - q @ (q.T @ g)
        samples.append(float(torch.dot(g.double(), apply(g).double())))
    residual = np.asarray(samples)
    return TraceResult(
        estimate=low_rank + float(residual.mean()),
        stderr=float(residual.std(ddof=1) / math.sqrt(len(residual))),
        matvecs=count,
        low_rank_part=low_rank,
        residual_samples=residual,
    )
