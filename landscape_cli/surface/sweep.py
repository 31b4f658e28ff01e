"""The sweep: every unfinished grid point evaluated on every split and journaled as it finishes.

The evaluation method (one point per pass, or a block of points per pass under vmap) is chosen by
timing both on the sweep's first unfinished points, whose values are kept; the choice is journaled
so that a resumed sweep carries on exactly as an unbroken one would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..distributed import agree
from ..errors import ParameterError
from ..progress import Tracker
from .evaluate import PointEvaluator, points_per_pass_limit, timed
from .grid import Grid
from .store import Journal

#: Points evaluated (one pass each) and journaled together by the plain loop.
LOOP_BLOCK = 8
#: Points timed with one pass each when choosing the method (after one warm-up point).
LOOP_TIMING_POINTS = 6
#: Points of the batched trial, after a warm-up pass over BATCHED_WARMUP points.
BATCHED_TRIAL = 32
BATCHED_WARMUP = 2


@dataclass
class SweepStats:
    """How the sweep ran: the method, its measured speed, and the points this run computed."""

    points_per_pass: int
    computed: int = 0
    resumed: int = 0
    seconds: float = 0.0
    calibration: dict[str, float] = field(default_factory=dict)
    fallback_reason: str = ""

    @property
    def method(self) -> str:
        return "loop" if self.points_per_pass == 1 else "batched"


class Sweep:
    """Runs a grid over one evaluator per split, appending finished points to a journal."""

    def __init__(self, evaluators: list[PointEvaluator], grid: Grid, journal: Journal, tracker: Tracker | None = None):
        self.evaluators = evaluators
        self.grid = grid
        self.journal = journal
        self.tracker = tracker or Tracker(None)
        self.width = sum(len(e.metrics) for e in evaluators)
        self.done: dict[int, np.ndarray] = {}

    def evaluate(self, indices: np.ndarray, batched: bool) -> np.ndarray:
        coefficients = self.grid.coefficients(indices)
        parts = [(e.evaluate_batched if batched else e.evaluate_loop)(coefficients) for e in self.evaluators]
        return np.concatenate(parts, axis=1)

    def _record(self, indices: np.ndarray, values: np.ndarray) -> None:
        self.journal.append(indices, values)
        for k, v in zip(indices, values, strict=True):
            self.done[int(k)] = v
        self.tracker.update(len(self.done))

    def run(self, points_per_pass: int | Literal["auto"], recorded: int | None = None) -> SweepStats:
        """Finish the grid. `recorded`: the method a previous run of this sweep chose (resume)."""
        started = time.perf_counter()
        resumed = len(self.done)
        todo = np.array([k for k in range(self.grid.size) if k not in self.done], dtype=np.int64)
        self.tracker.start("surface", total=self.grid.size)
        self.tracker.update(len(self.done))
        batched_ok = all(e.batched_ok for e in self.evaluators)
        if recorded is not None:
            stats = SweepStats(points_per_pass=recorded if batched_ok else 1)
        elif points_per_pass == "auto":
            stats, todo = self._calibrate(todo, batched_ok)
            self.journal.record_method(stats.points_per_pass)
        else:
            if points_per_pass < 1:
                raise ParameterError(
                    "points_per_pass", f"points_per_pass must be at least 1 or auto, got {points_per_pass}"
                )
            stats = SweepStats(points_per_pass=points_per_pass if batched_ok else 1)
            if not batched_ok and points_per_pass > 1:
                stats.fallback_reason = "train mode with dropout is evaluated one point per pass"
            self.journal.record_method(stats.points_per_pass)
        batched = stats.points_per_pass > 1
        block = stats.points_per_pass if batched else LOOP_BLOCK
        for start in range(0, len(todo), block):
            indices = todo[start : start + block]
            self._record(indices, self.evaluate(indices, batched=batched))
        stats.resumed = resumed
        stats.computed = len(self.done) - resumed
        stats.seconds = time.perf_counter() - started
        return stats

    def _calibrate(self, todo: np.ndarray, batched_ok: bool) -> tuple[SweepStats, np.ndarray]:
        """Time single passes against a batched pass on the sweep's first points, keeping their values.

        The batched trial is small (a 2-point warm-up for vmap's start-up, then BATCHED_TRIAL points),
        so the method that loses costs little even on a 21x21 grid: a 64-point trial and warm-up made
        the CNN's 21x21 sweep 35% slower on a CPU, where batched convolutions take twice as long; a
        16-point trial misjudged the MLP, whose batched passes keep gaining up to 64 points."""
        device = self.evaluators[0].problem.device
        limit = points_per_pass_limit(self.evaluators) if batched_ok else 1
        trial = min(limit, BATCHED_TRIAL)
        if limit == 1 or len(todo) < 1 + LOOP_TIMING_POINTS + BATCHED_WARMUP + trial:
            reason = "" if batched_ok else "train mode with dropout is evaluated one point per pass"
            return SweepStats(points_per_pass=1, fallback_reason=reason), todo
        stats = SweepStats(points_per_pass=limit)
        first = todo[:1]
        self._record(first, self.evaluate(first, batched=False))  # builds the loop's model and cache
        loop = todo[1 : 1 + LOOP_TIMING_POINTS]
        values, seconds = timed(lambda: self.evaluate(loop, batched=False), device)
        self._record(loop, values)
        stats.calibration["loop"] = seconds / len(loop)
        used = 1 + LOOP_TIMING_POINTS
        try:
            warm = todo[used : used + BATCHED_WARMUP]
            self._record(warm, self.evaluate(warm, batched=True))
            block = todo[used + BATCHED_WARMUP : used + BATCHED_WARMUP + trial]
            values, seconds = timed(lambda: self.evaluate(block, batched=True), device)
            self._record(block, values)
            stats.calibration["batched"] = seconds / len(block)
        except Exception as exc:  # noqa: BLE001 - an op without a vmap rule: one point per pass then
            stats.points_per_pass = 1
            stats.fallback_reason = f"batched evaluation failed ({type(exc).__name__}); one point per pass"
            return stats, np.array([k for k in todo if int(k) not in self.done], dtype=np.int64)
        problem = self.evaluators[0].problem  # every rank takes the same decision: on the slowest rank's times
        loop_time, batched_time = agree([stats.calibration["loop"], stats.calibration["batched"]], problem.group,
                                        "max", problem.device)  # fmt: skip
        stats.calibration.update(loop=loop_time, batched=batched_time)
        if stats.calibration["loop"] <= stats.calibration["batched"]:
            stats.points_per_pass = 1
        return stats, todo[used + BATCHED_WARMUP + trial :]
