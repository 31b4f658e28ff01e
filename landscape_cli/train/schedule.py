"""Learning-rate schedules as plain functions of the step (no torch: the eos command reads them from a
run's config to know the edge at every logged step)."""

from __future__ import annotations

import math
from collections.abc import Callable


def lr_factor(schedule: str, total_steps: int, step_size: int, gamma: float) -> Callable[[int], float]:
    """The schedule's multiplier of the base learning rate at a step."""
    if schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if schedule == "step":
        return lambda step: gamma ** (step // step_size)
    return lambda step: 1.0
