"""Sharpness as the literature measures it, beyond the top eigenvalue (definitions and sources in
docs/sharpness.md):

- worst:   max over ||delta|| <= rho of L(w + delta) - L(w), L2 or L-inf ball, by projected gradient ascent
           with restarts: the best value found, a lower bound of the maximum (Andriushchenko et al. 2023).
- average: E[L(w + delta)] - L(w), delta ~ N(0, rho^2 I), by Monte Carlo with antithetic pairs, with its
           standard error.
- adaptive (either of them): delta scaled elementwise by |w| (Kwon et al. 2021, ASAM's normalization).
- keskar:  Keskar et al.'s epsilon-sharpness, 100 (max L(w + delta) - L(w)) / (1 + L(w)) over the box
           |delta_i| <= rho (|w_i| + 1), by projected sign-gradient ascent (a lower bound).
- m-sharpness (any of them, `m`): the measure on each batch of m samples of a seeded permutation of the
           sample set, averaged over the batches (standard error across them).

Everything runs through a `Problem`, so any model, data source and loss `landscape spectrum` takes works.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import ParameterError
from .problem import Problem

MEASURES = ("worst", "average", "keskar")
#: Pairs of perturbed models in each of the two blocks timed to choose one point per pass or several.
TRIAL_PAIRS = 4
#: The most memory the average's perturbations take at once.
DRAW_BYTES = 256 << 20
NORMS = ("l2", "linf")


@dataclass
class SharpnessSettings:
    """How a measure is taken; validated before any work."""

    measure: str
    rho: float
    norm: str = "l2"
    adaptive: bool = False
    m: int | None = None
    #: average: perturbations (antithetic pairs count as two)
    perturbations: int = 64
    #: worst and keskar: ascent steps per restart, and restarts (the first from the gradient's direction)
    steps: int = 20
    restarts: int = 3
    seed: int = 0
    #: average: perturbed losses one point per pass ("loop"), several per data pass ("batched"), or timed ("auto")
    points: str = "auto"

    def validate(self, n_samples: int | None = None) -> None:
        if self.measure not in MEASURES:
            raise ParameterError("measure", f"'{self.measure}' is unknown; choose {', '.join(MEASURES)}")
        if not (isinstance(self.rho, int | float) and 0 < self.rho < math.inf):
            raise ParameterError("rho", f"must be positive and finite, got {self.rho}")
        if self.norm not in NORMS:
            raise ParameterError("norm", f"'{self.norm}' is unknown; choose l2 or linf")
        if self.measure == "keskar" and (self.adaptive or self.norm != "l2"):
            raise ParameterError("measure", "keskar has its own box, scaled by |w| + 1: adaptive and norm do not apply")
        if self.measure == "average" and self.norm != "l2":
            raise ParameterError("norm", "average perturbs with Gaussian noise; the norm applies to worst")
        for name, value, least in (("perturbations", self.perturbations, 2), ("steps", self.steps, 1),
                                   ("restarts", self.restarts, 1)):  # fmt: skip
            if not (isinstance(value, int) and value >= least):
                raise ParameterError(name, f"must be a whole number of at least {least}, got {value!r}")
        if self.points not in ("auto", "loop", "batched"):
            raise ParameterError("points", f"'{self.points}' is unknown; choose auto, loop or batched")
        if self.m is not None:
            if not (isinstance(self.m, int) and self.m >= 1):
                raise ParameterError("m", f"must be a whole number of at least 1, got {self.m!r}")
            if n_samples is not None and (self.m > n_samples or n_samples % self.m):
                raise ParameterError("m", f"{self.m} does not divide the {n_samples} samples into equal batches")

    def name(self) -> str:
        """A short label: 'worst-l2-adaptive m=128 rho=0.05'."""
        parts = [self.measure] + ([self.norm] if self.measure == "worst" else []) + \
            (["adaptive"] if self.adaptive else [])  # fmt: skip
        return "-".join(parts) + (f" m={self.m}" if self.m else "") + f" rho={self.rho:g}"


@dataclass
class SharpnessResult:
    settings: SharpnessSettings
    #: the measure's value (keskar: in %)
    value: float
    #: average: Monte Carlo standard error; m-sharpness: the standard error across batches; worst: None
    stderr: float | None
    #: worst and keskar give the best value the ascent found: the true maximum is at least this
    lower_bound: bool
    loss: float
    #: passes over the sample set (a loss, or a loss and its gradient)
    passes: int
    per_batch: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "settings": asdict(self.settings), "name": self.settings.name()}


def measure_sharpness(problem: Problem, settings: SharpnessSettings) -> SharpnessResult:
    """One measure at the problem's weights."""
    settings.validate(problem.n_samples)
    if settings.m is None:
        return _measure(problem, settings)
    n, m = problem.n_samples, settings.m
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(n, generator=generator) if problem.source is None else torch.arange(n)
    results = [_measure(problem.restricted(order[i : i + m]), settings) for i in range(0, n, m)]
    values = torch.tensor([r.value for r in results], dtype=torch.float64)
    stderr = float(values.std(unbiased=True) / math.sqrt(len(values))) if len(values) > 1 else None
    return SharpnessResult(settings, float(values.mean()), stderr, results[0].lower_bound,
                           sum(r.loss for r in results) / len(results), sum(r.passes for r in results),
                           values.tolist())  # fmt: skip


def _measure(problem: Problem, settings: SharpnessSettings) -> SharpnessResult:
    w = problem.w
    if settings.measure == "average":
        return _average(problem, settings, w)
    scale = (w.abs() + 1) if settings.measure == "keskar" else w.abs() if settings.adaptive else None
    norm = "linf" if settings.measure == "keskar" else settings.norm
    best, loss, passes = _ascend(problem, settings, w, scale, norm)
    value = 100 * best / (1 + loss) if settings.measure == "keskar" else best
    return SharpnessResult(settings, value, None, True, loss, passes)


def _average(problem: Problem, settings: SharpnessSettings, w: torch.Tensor) -> SharpnessResult:
    """Antithetic pairs delta, -delta: the odd terms of the loss's expansion cancel within a pair, so the
    estimate's variance is that of the even ones. The perturbed losses are evaluated as the surface sweep
    evaluates its points (a private in-place model per point, or several perturbed models per data pass under
    vmap, whichever the first blocks time faster: `settings.points`)."""
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    loss = float(problem.evaluate(w)["loss"])
    pairs = max(settings.perturbations // 2, 1)
    # the draws are made a chunk at a time: at most DRAW_BYTES of perturbations are held at once
    chunk = max(1, DRAW_BYTES // (w.numel() * w.element_size()))
    evaluate, means = _PerturbedLosses(problem, settings.points), []
    for start in range(0, pairs, chunk):
        draws = torch.randn(min(chunk, pairs - start), w.numel(), generator=generator, dtype=torch.float64)
        draws = draws.to(w.device, w.dtype)
        up, down = evaluate.at(settings.rho * (draws * w.abs() if settings.adaptive else draws))
        means.append(0.5 * (up + down) - loss)
    values = torch.tensor(np.concatenate(means), dtype=torch.float64)
    stderr = float(values.std(unbiased=True) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return SharpnessResult(settings, float(values.mean()), stderr, False, loss, 1 + 2 * pairs)


class _PerturbedLosses:
    """L(w + delta) and L(w - delta) for rows delta of a matrix, in blocks of pairs: one point per forward
    pass, or a block of points per data pass (vmap) where the first blocks show it is faster."""

    def __init__(self, problem: Problem, points: str) -> None:
        self.problem = problem
        #: True: batched, False: one point per pass, None: not decided yet (timed on the first two blocks)
        self.batched: bool | None = {"loop": False, "batched": True}.get(points)
        self.seconds: dict[bool, float] = {}

    def at(self, deltas: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        from .surface.directions import Direction
        from .surface.evaluate import PointEvaluator, points_per_pass_limit, timed

        p = self.problem
        probe = PointEvaluator(p, [Direction(deltas[0], {})])
        if not probe.batched_ok:
            self.batched = False
        block = max(1, points_per_pass_limit([probe]) // 2)  # also the loop's: one model copy per block
        up, down = [], []
        start = 0
        while start < len(deltas):
            # while undecided, two small blocks (TRIAL_PAIRS each) are timed, one each way
            size = min(block, TRIAL_PAIRS) if self.batched is None else block
            part = deltas[start : start + size]
            start += len(part)
            evaluator = PointEvaluator(p, [Direction(d, {}) for d in part])
            coefficients = np.concatenate([np.eye(len(part)), -np.eye(len(part))])
            if self.batched is None:  # time a block each way, keeping the values, then keep the faster
                batched = len(self.seconds) == 1
                run = evaluator.evaluate_batched if batched else evaluator.evaluate_loop
                if batched:
                    run(coefficients[:1])  # vmap's start-up, not counted
                values, seconds = timed(lambda run=run, c=coefficients: run(c), p.device)
                self.seconds[batched] = seconds / len(coefficients)
                if len(self.seconds) == 2:
                    self.batched = self.seconds[True] < self.seconds[False]
            else:
                values = (evaluator.evaluate_batched if self.batched else evaluator.evaluate_loop)(coefficients)
            up.append(values[: len(part), 0])
            down.append(values[len(part) :, 0])
        return np.concatenate(up), np.concatenate(down)


def _ascend(problem: Problem, settings: SharpnessSettings, w: torch.Tensor, scale: torch.Tensor | None,
            norm: str) -> tuple[float, float, int]:  # fmt: skip
    """Projected gradient ascent on L(w + T u) - L(w) over ||u|| <= rho (T = diag(scale), or I): normalized
    gradient steps for L2, sign steps for L-inf, each step size halved when a step does not improve on the
    current point. Restart 0 starts from the ascent direction at w (SAM's perturbation), the others from
    random points on the sphere (corners of the box). Returns the best increase, L(w) and the passes made."""
    rho = settings.rho
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    t = scale if scale is not None else torch.ones_like(w)

    def loss_grad(u: torch.Tensor) -> tuple[float, torch.Tensor]:
        value, gradient = problem.loss_and_gradient(w + t * u)
        return value, t * gradient  # the gradient in u

    def direction(g: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            return g.sign()
        return g / g.norm().clamp_min(torch.finfo(g.dtype).tiny)

    def project(u: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            return u.clamp(-rho, rho)
        return u * min(1.0, rho / max(float(u.norm()), 1e-300))

    loss, g0 = loss_grad(torch.zeros_like(w))
    passes, best = 1, 0.0
    for restart in range(settings.restarts):
        if restart == 0 and float(g0.abs().max()) > 0:
            u = project(rho * direction(g0))
        else:
            z = torch.randn(w.numel(), generator=generator, dtype=torch.float64).to(w.device, w.dtype)
            u = project(rho * direction(z))
        value, g = loss_grad(u)
        passes += 1
        step = rho
        for _ in range(settings.steps - 1):
            candidate = project(u + step * direction(g))
            new_value, new_g = loss_grad(candidate)
            passes += 1
            if new_value > value:
                u, value, g = candidate, new_value, new_g
            else:
                step *= 0.5
            best = max(best, value - loss)
        best = max(best, value - loss)
    return best, loss, passes


def write_sharpness(path: Any, results: list[SharpnessResult], extra: dict[str, float], prov: dict[str, Any]) -> None:
    """One group per measure (its settings, value, standard error, per-batch values) and the spectrum's top
    eigenvalue and trace as root attributes, with the provenance (callers see to atomicity)."""
    import json

    import h5py
    import numpy as np

    with h5py.File(path, "w") as f:
        for key, value in {"kind": "sharpness", **prov, **extra}.items():
            if value is not None:
                f.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value
        for i, result in enumerate(results):
            g = f.create_group(f"measures/{i}")
            for key, value in {**asdict(result.settings), "name": result.settings.name(), "value": result.value,
                               "stderr": result.stderr, "lower_bound": result.lower_bound, "loss": result.loss,
                               "passes": result.passes}.items():  # fmt: skip
                if value is not None:
                    g.attrs[key] = value
            g["per_batch"] = np.asarray(result.per_batch, dtype=np.float64)
