"""Hessian spectrum of a Problem: extremal eigenvalues, trace and density, as plain results."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .choices import CURVATURES
from .errors import LandscapeError, ParameterError
from .layers import LayerSpectrum, per_layer_spectrum
from .limits import peak_memory, require_memory
from .linalg import (
    DensityResult,
    LanczosResult,
    TraceResult,
    hutchpp_trace,
    lanczos_extremal,
    slq_density,
)
from .operators import CurvatureOperator
from .problem import Problem
from .progress import Tracker


@dataclass
class SpectrumOptions:
    top_k: int = 5
    bottom_k: int = 0
    tol: float = 1e-4
    max_iter: int = 200
    trace: bool = False
    trace_hvps: int = 90
    density: bool = False
    density_runs: int = 5
    density_steps: int = 80
    density_sigma: float | None = None
    save_eigenvectors: bool = False
    seed: int = 0
    #: Which matrix: hessian, ggn or fisher (landscape_cli.operators).
    curvature: str = "hessian"
    #: Glob patterns of parameter names: the block of the matrix over them (None: all parameters).
    params: str | None = None
    #: Also the top eigenvalue and trace of each parameter tensor's ("tensor") or module's ("module") block.
    per_layer: str | None = None

    def validate(self, n_params: int | None = None) -> None:
        """Check the options; with `n_params`, also that the problem has room for the eigenvalues asked."""
        if self.top_k < 0 or self.bottom_k < 0:
            raise ParameterError(("top_k", "bottom_k"), "top_k and bottom_k must be non-negative")
        if self.per_layer is not None and self.per_layer not in ("tensor", "module"):
            raise ParameterError("per_layer", f"unknown per_layer unit '{self.per_layer}'; choose tensor or module")
        if self.top_k + self.bottom_k == 0 and not (self.trace or self.density or self.per_layer):
            raise ParameterError(
                ("top_k", "bottom_k", "trace", "density"),
                "nothing to compute: top_k and bottom_k are 0 and neither trace nor density is set",
            )
        if n_params is not None and self.top_k + self.bottom_k > n_params:
            raise ParameterError(
                ("top_k", "bottom_k"),
                f"top_k {self.top_k} plus bottom_k {self.bottom_k} exceeds the number of parameters ({n_params})",
            )
        validate_lanczos(self.tol, self.max_iter)
        if n_params is not None and self.max_iter < self.top_k + self.bottom_k:
            raise ParameterError("max_iter", f"max_iter {self.max_iter} is below the number of eigenvalues asked for")
        if not 6 <= self.trace_hvps <= MAX_MATVECS:
            raise ParameterError(
                "trace_hvps", f"trace_hvps must be at least 6 and at most {MAX_MATVECS:,}, got {self.trace_hvps}"
            )
        if not (1 <= self.density_runs <= MAX_MATVECS and 2 <= self.density_steps <= MAX_MATVECS):
            raise ParameterError(
                ("density_runs", "density_steps"), "density_runs must be at least 1 and density_steps at least 2"
            )
        if self.curvature not in CURVATURES:
            raise LandscapeError(f"unknown curvature '{self.curvature}'; choose one of {', '.join(CURVATURES)}")
        if self.density_sigma is not None and not 0 < self.density_sigma < math.inf:
            raise ParameterError(
                "density_sigma", f"density_sigma must be positive and finite, got {self.density_sigma}"
            )
        if n_params is not None:
            # the Lanczos basis (and the density's) in float64 at most
            steps = max(self.max_iter if self.top_k + self.bottom_k else 0, self.density_steps if self.density else 0)
            require_memory(f"a Lanczos basis of {steps} vectors of {n_params:,} parameters", 8.0 * steps * n_params)


#: Matrix-vector products one option may ask for, at most (a guard against typos such as 1e9).
MAX_MATVECS = 1_000_000


def validate_lanczos(tol: float, max_iter: int) -> None:
    """The Lanczos options every command shares."""
    if not 0 < tol < 1:
        raise ParameterError("tol", f"tol must lie in (0, 1), got {tol}")
    if not 1 <= max_iter <= MAX_MATVECS:
        raise ParameterError("max_iter", f"max_iter must be at least 1 and at most {MAX_MATVECS:,}, got {max_iter}")


@dataclass
class SpectrumResult:
    """Every number `landscape spectrum` reports, with what it was computed on."""

    loss: float
    accuracy: float | None
    grad_norm: float
    problem: dict
    options: SpectrumOptions
    lanczos: LanczosResult | None = None
    trace: TraceResult | None = None
    density: DensityResult | None = None
    layers: LayerSpectrum | None = None
    #: Peak host (process RSS) and device memory, bytes.
    memory: dict[str, int | None] = field(default_factory=dict)
    eigenvectors: dict[str, list[dict[str, np.ndarray]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def hvps(self) -> int:
        return sum(r.matvecs for r in (self.lanczos, self.trace, self.density, self.layers) if r is not None)


def compute_spectrum(problem: Problem, options: SpectrumOptions, tracker: Tracker | None = None) -> SpectrumResult:
    """Run what `options` asks for on `problem`. Fails on a non-finite loss before any HVP."""
    tracker = tracker or Tracker(None)
    options.validate()
    op = CurvatureOperator(problem, options.curvature, options.params)
    options.validate(op.size)
    started = time.perf_counter()
    metrics = problem.evaluate()
    loss, gradient = problem.loss_and_gradient()
    if not np.isfinite(loss) or not torch.isfinite(gradient).all():
        raise LandscapeError(f"the loss at the checkpoint is {loss} (not finite); nothing to analyse")
    if options.curvature == "hessian":
        problem.choose_hvp_method()
    result = SpectrumResult(
        loss=loss,
        accuracy=metrics.get("accuracy"),
        grad_norm=float(gradient.double().norm()),
        problem=problem.describe(),
        options=options,
    )
    result.seconds["setup"] = time.perf_counter() - started
    result.problem.update(curvature=options.curvature, params=options.params or "", block_size=op.size)
    common = {"seed": options.seed, "device": problem.device, "dtype": problem.dtype}
    hvp = _checked(op)
    if options.top_k + options.bottom_k:
        tracker.start("Lanczos", total=min(options.max_iter, op.size))
        t0 = time.perf_counter()
        result.lanczos = lanczos_extremal(
            hvp,
            op.size,
            top_k=options.top_k,
            bottom_k=options.bottom_k,
            tol=options.tol,
            max_iter=options.max_iter,
            want_vectors=options.save_eigenvectors,
            on_step=lambda steps, _: tracker.update(steps),
            **common,
        )
        result.seconds["lanczos"] = time.perf_counter() - t0
        if options.save_eigenvectors:
            result.eigenvectors = _by_name(op, result.lanczos)
    if options.trace:
        tracker.start("Hutch++ trace", total=options.trace_hvps // 3 * 3)
        t0 = time.perf_counter()
        result.trace = hutchpp_trace(hvp, op.size, matvecs=options.trace_hvps, on_matvec=tracker.update, **common)
        result.seconds["trace"] = time.perf_counter() - t0
    if options.density:
        steps = min(options.density_steps, op.size)
        tracker.start("Density (SLQ)", total=options.density_runs * steps)
        t0 = time.perf_counter()
        result.density = slq_density(
            hvp,
            op.size,
            runs=options.density_runs,
            steps=steps,
            sigma=options.density_sigma,
            on_matvec=tracker.update,
            **common,
        )
        result.seconds["density"] = time.perf_counter() - t0
    if options.per_layer:
        t0 = time.perf_counter()
        result.layers = per_layer_spectrum(
            problem,
            curvature=options.curvature,
            by=options.per_layer,
            within=op.names,
            tol=options.tol,
            max_iter=options.max_iter,
            trace_hvps=options.trace_hvps,
            seed=options.seed,
            tracker=tracker,
        )
        result.seconds["per_layer"] = time.perf_counter() - t0
    result.seconds["total"] = time.perf_counter() - started
    result.memory = peak_memory(problem.device)
    return result


def _checked(op: CurvatureOperator):
    """Products that stop the run with a clear message when the curvature is not finite."""

    def hvp(v: torch.Tensor) -> torch.Tensor:
        out = op.matvec(v)
        if not torch.isfinite(out).all():
            raise LandscapeError(
                f"a {op.kind}-vector product returned NaN or inf; the loss is not twice differentiable here"
            )
        return out

    return hvp


def _by_name(op: CurvatureOperator, lanczos: LanczosResult) -> dict[str, list[dict[str, np.ndarray]]]:
    """Eigenvectors as one array per parameter of the block."""
    layout = op.problem.layout
    out: dict[str, list[dict[str, np.ndarray]]] = {}
    for which in ("top", "bottom"):
        vectors = getattr(lanczos, which).vectors
        if vectors is not None:
            out[which] = [
                {k: t.detach().cpu().numpy() for k, t in layout.unflatten(op._embed(v)).items() if k in op.names}
                for v in vectors
            ]
    return out
