"""Per-layer spectra: the top eigenvalue and the trace of each parameter tensor's (or module's) diagonal
block of the curvature matrix, to see where sharpness lives (PyHessian #9, #10; hessian-eigenthings #19).

A block H_BB is the curvature restricted to the block's parameters, the others held fixed; its top
eigenvalue bounds the whole matrix's from below, and the traces of all blocks add up to the trace.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ParameterError
from .linalg import hutchpp_trace, lanczos_extremal
from .operators import CurvatureOperator
from .problem import Problem
from .progress import Tracker

UNITS = ("tensor", "module")


@dataclass
class LayerSpectrum:
    """One row per block: its name, parameter count, top eigenvalue with its Lanczos error bound, and trace
    with its standard error (0 where the trace is exact: blocks no larger than the trace's product budget)."""

    by: str
    names: list[str]
    sizes: np.ndarray
    top: np.ndarray
    top_error: np.ndarray
    trace: np.ndarray
    trace_stderr: np.ndarray
    matvecs: int

    def rows(self) -> list[dict[str, float | int | str]]:
        return [
            {
                "name": n,
                "size": int(s),
                "top": float(t),
                "top_error": float(e),
                "trace": float(tr),
                "trace_stderr": float(se),
            }  # fmt: skip
            for n, s, t, e, tr, se in zip(
                self.names, self.sizes, self.top, self.top_error, self.trace, self.trace_stderr, strict=True
            )
        ]


def blocks_of(names: tuple[str, ...] | list[str], by: str) -> list[tuple[str, list[str]]]:
    """(block name, its parameter names) in model order: each tensor, or each module's own parameters."""
    if by not in UNITS:
        raise ParameterError("per_layer", f"unit '{by}' is unknown; choose tensor or module")
    if by == "tensor":
        return [(name, [name]) for name in names]
    groups: dict[str, list[str]] = {}
    for name in names:
        module = name.rpartition(".")[0] or name
        groups.setdefault(module, []).append(name)
    return list(groups.items())


def per_layer_spectrum(
    problem: Problem,
    *,
    curvature: str = "hessian",
    by: str = "tensor",
    tol: float = 1e-4,
    max_iter: int = 200,
    trace_hvps: int = 90,
    seed: int = 0,
    within: list[str] | None = None,
    tracker: Tracker | None = None,
) -> LayerSpectrum:
    """Top eigenvalue (Lanczos) and trace (Hutch++, or exact for small blocks) of every block (of the
    parameters in `within`, default all)."""
    tracker = tracker or Tracker(None)
    chosen = set(within) if within is not None else None
    blocks = blocks_of([n for n in problem.layout.names if chosen is None or n in chosen], by)
    sizes, top, top_error, trace, stderr = [], [], [], [], []
    matvecs = 0
    tracker.start("Per-layer blocks", total=len(blocks))
    common = {"seed": seed, "device": problem.device, "dtype": problem.dtype}
    for index, (_, members) in enumerate(blocks):
        op = CurvatureOperator(problem, curvature, [glob.escape(m) for m in members])
        lanczos = lanczos_extremal(op, op.size, top_k=1, tol=tol, max_iter=min(max_iter, op.size), **common)
        top.append(float(lanczos.top.values[0]))
        top_error.append(float(lanczos.top.error_bounds[0]))
        matvecs += lanczos.matvecs
        if op.size <= trace_hvps:  # cheaper exactly: one product per unit vector
            eye = torch.eye(op.size, device=problem.device, dtype=problem.dtype)
            trace.append(float(sum(float((op @ e)[i]) for i, e in enumerate(eye))))
            stderr.append(0.0)
            matvecs += op.size
        else:
            result = hutchpp_trace(op, op.size, matvecs=trace_hvps, **common)
            trace.append(result.estimate)
            stderr.append(result.stderr)
            matvecs += result.matvecs
        sizes.append(op.size)
        tracker.update(index + 1)
    return LayerSpectrum(
        by,
        [name for name, _ in blocks],
        np.asarray(sizes),
        np.asarray(top),
        np.asarray(top_error),
        np.asarray(trace),
        np.asarray(stderr),
        matvecs,
    )
