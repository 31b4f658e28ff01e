"""A training run against its edge: the edge at every tracked step (SAM's moves with the logged
gradient norm, and every edge with the learning-rate schedule), the fraction of steps at the edge,
and the step at which progressive sharpening first reached it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LandscapeError, ParameterError
from ..hdf5 import open_results, read_attrs
from .setting import OptimizerSetting

LOG_NAME = "train.h5"
SHARPNESS_COLUMNS = ("step", "top_eigenvalue", "error_bound", "grad_norm")


@dataclass
class RunEdges:
    """Per tracked step: sharpness, gradient norm, learning rate, edge, ratio."""

    setting: OptimizerSetting
    step: np.ndarray
    sharpness: np.ndarray
    error_bound: np.ndarray
    grad_norm: np.ndarray
    lr: np.ndarray
    edge: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        return self.sharpness / self.edge


def log_path(path: Path) -> Path:
    """A run directory, its train.h5, or a tracker's log."""
    log = path / LOG_NAME if path.is_dir() else path
    if log.suffix.lower() == ".csv":
        raise LandscapeError(
            f"{log} is a CSV table, which does not record the optimizer; give the tracker's HDF5 log "
            "(SharpnessTracker(log=...)) or train.h5"
        )
    if not log.exists():
        what = f"{path} is not a run directory (no {LOG_NAME})" if path.is_dir() else f"file not found: {path}"
        raise LandscapeError(what)
    return log


def schedule_lr(config: dict[str, Any], steps: np.ndarray) -> np.ndarray:
    """The learning rate at each step under the run's schedule (base lr times the schedule factor)."""
    from ..train.schedule import lr_factor

    schedule = config.get("schedule", "constant")
    total = config.get("steps")
    if schedule == "cosine" and not total:
        raise LandscapeError("the run's config does not record its total steps, which a cosine schedule needs")

    step_size, gamma = int(config.get("lr_step_size", 1000)), float(config.get("lr_gamma", 0.1))
    factor = lr_factor(schedule, int(total or 1), step_size, gamma)
    return np.array([float(config["lr"]) * factor(int(s)) for s in steps])


#: What SharpnessTracker(log=...) writes; its rows also record the learning rate and the edge at each step.
TRACKER_KIND = "sharpness-log"


def run_edges(path: Path, overrides: dict[str, Any]) -> RunEdges:
    """Read a run's log (landscape train's train.h5, or a SharpnessTracker's log) and compute its edge at every
    step where sharpness was tracked."""
    log = log_path(path)
    with open_results(log) as f:
        attrs = read_attrs(f)
        kind = attrs.get("kind")
        if kind not in ("train-log", TRACKER_KIND):
            raise LandscapeError(f"{log} is not a training log (landscape train) or a sharpness log (SharpnessTracker)")
        table = f.get("sharpness")
        if table is None or "step" not in table or table["step"].shape[0] == 0:
            raise ParameterError(
                "track_sharpness_every", f"{log} has no tracked sharpness; train with track_sharpness_every K"
            )
        missing = [name for name in SHARPNESS_COLUMNS if name not in table]
        if missing:
            raise LandscapeError(f"{log} records no {', '.join(missing)}: track the top eigenvalue and grad_norm")
        names = [*SHARPNESS_COLUMNS, *(name for name in ("lr", "edge") if name in table)]
        columns = {name: np.asarray(table[name][()], dtype=np.float64).reshape(-1) for name in names}
        if len({len(c) for c in columns.values()}) != 1:
            raise LandscapeError(f"{log} is damaged: its sharpness columns differ in length")
        config = json.loads(attrs.get("config", "{}"))
        if not isinstance(config, dict):
            raise LandscapeError(f"{log} is damaged: its config is not a mapping")
    setting = OptimizerSetting.from_record(config.get("opt"), {**config, "betas": config.get("betas")}).override(
        **overrides
    )
    step = columns["step"]
    recorded_lr = columns.get("lr")
    if overrides.get("lr") is not None:
        lr = np.full(len(step), float(overrides["lr"]))
    elif kind == TRACKER_KIND and recorded_lr is not None and np.isfinite(recorded_lr).all():
        lr = recorded_lr  # what the user's scheduler had set at each measurement
        setting = setting.override(lr=float(lr[-1]))
    else:
        lr = schedule_lr(config, step)
    rule = setting.rule()
    if rule == "msam":
        recorded = columns.get("edge")
        if recorded is not None and np.isfinite(recorded).all() and not any(v is not None for v in overrides.values()):
            return RunEdges(setting, step, columns["top_eigenvalue"], columns["error_bound"], columns["grad_norm"],
                            lr, recorded)  # fmt: skip
        raise LandscapeError(
            "a training log does not record mSAM's micro-batch gradient norms; check its checkpoints with "
            "landscape eos CHECKPOINT"
        )
    pairs = zip(lr, columns["grad_norm"], strict=True)
    # the end of a cosine schedule has lr 0: no step, no edge (infinite)
    edge = np.array([setting.override(lr=float(r)).edge(grad_norm=float(g)) if r > 0 else np.inf for r, g in pairs])
    return RunEdges(setting, step, columns["top_eigenvalue"], columns["error_bound"], columns["grad_norm"], lr, edge)


def summarize_run(edges: RunEdges, band: float, after: int = 0) -> dict[str, Any]:
    """The fraction of tracked steps (from step `after`) within `band` of the edge, and the first step at
    which the sharpness reached 1 - band of the edge."""
    ratio = edges.ratio
    keep = edges.step >= after
    if not keep.any():
        raise LandscapeError(f"no tracked step at or after step {after}")
    at = np.abs(ratio[keep] - 1) <= band
    reached = np.flatnonzero(ratio >= 1 - band)
    last = int(np.flatnonzero(keep)[-1])
    return {
        "tracked_steps": int(keep.sum()),
        "after_step": int(after),
        "fraction_at_edge": float(at.mean()),
        "first_step_at_edge": int(edges.step[reached[0]]) if reached.size else None,
        "max_ratio": float(np.nanmax(ratio[keep])),
        "final": {
            "step": int(edges.step[last]),
            "sharpness": float(edges.sharpness[last]),
            "edge": float(edges.edge[last]) if np.isfinite(edges.edge[last]) else None,
            "ratio": float(ratio[last]),
        },
        "band": band,
        "setting": edges.setting.describe(),
    }
