"""From `--dirs` to directions, the default grid that suits them, and what to mark on the plot."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LandscapeError, ParameterError
from ..files import file_sha256
from ..hdf5 import open_results
from ..problem import Problem
from ..progress import Tracker
from .directions import (
    Direction,
    DirectionSpec,
    Trajectory,
    eigen_directions_computed,
    eigen_directions_from_file,
    file_directions,
    interp_directions,
    normalize,
    pca_directions,
    random_directions,
    run_checkpoints,
)
from .grid import Axis

DEFAULT_POINTS = 51
#: Margin around a PCA trajectory, as a fraction of its extent.
TRAJECTORY_MARGIN = 0.2


@dataclass
class DirectionPlan:
    directions: list[Direction]
    default_x: Axis
    default_y: Axis
    trajectory: Trajectory | None = None
    anchors: list[tuple[str, float, float]] = field(default_factory=list)


def check_norm_applies(spec: DirectionSpec, norm: str | None) -> None:
    if norm is not None and norm != "none" and spec.kind in ("interp", "file"):
        reason = "x = 1 must land on the other checkpoint" if spec.kind == "interp" else "they are reused as stored"
        raise ParameterError("norm", f"norm does not apply to {spec.kind} directions: {reason}")


def plan_directions(
    spec: DirectionSpec,
    problem: Problem,
    dims: int,
    seed: int,
    norm: str,
    ignore: str,
    centre: str,
    tracker: Tracker | None = None,
) -> DirectionPlan:
    """Build the directions of `spec` for `problem` (the centre), with their default grid."""
    check_norm_applies(spec, norm)
    unit = Axis(-1.0, 1.0, DEFAULT_POINTS)
    if spec.kind == "random":
        return DirectionPlan(random_directions(problem, dims, seed, norm, ignore), unit, unit)
    if spec.kind == "eigen":
        if spec.paths:
            directions = eigen_directions_from_file(spec.paths[0], problem, dims)
        else:
            directions = eigen_directions_computed(problem, dims, seed, tracker)
        _renormalize(directions, problem, norm, ignore)
        return DirectionPlan(directions, unit, unit)
    if spec.kind == "interp":
        if len(spec.paths) != dims:
            need = "one checkpoint: interp:B.pt" if dims == 1 else "two checkpoints: interp:B.pt,C.pt"
            raise LandscapeError(f"a {dims}D interpolation needs {need}")
        span = Axis(-0.5, 1.5, DEFAULT_POINTS)
        anchors = [(centre, 0.0, 0.0)] + [(p.name, float(i == 0), float(i == 1)) for i, p in enumerate(spec.paths)]
        return DirectionPlan(interp_directions(problem, spec.paths), span, span, anchors=anchors)
    if spec.kind == "pca":
        directions, trajectory = pca_directions(problem, spec.paths[0], dims, norm, ignore)
        return DirectionPlan(
            directions, _around(trajectory.x), _around(trajectory.y) if dims == 2 else _around(trajectory.x), trajectory
        )
    directions = file_directions(spec.paths[0], problem, dims)
    x, y = file_axes(spec.paths[0])
    return DirectionPlan(directions, x, y or x)


def _renormalize(directions: list[Direction], problem: Problem, norm: str, ignore: str) -> None:
    if norm == "none":
        return
    weights = problem.layout.unflatten(problem.w)
    for d in directions:
        normalize(problem.layout.unflatten(d.vector), weights, norm, ignore)
        d.attrs.update(norm=norm, ignore=ignore)


def _around(values: np.ndarray) -> Axis:
    """Coordinates that hold the trajectory and the centre, with a margin."""
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    pad = TRAJECTORY_MARGIN * (hi - lo) if hi > lo else 1.0
    return Axis(lo - pad, hi + pad, DEFAULT_POINTS)


def file_axes(path: Path) -> tuple[Axis, Axis | None]:
    """The grid of an earlier surface, so that a comparison lands on the same points by default."""
    with open_results(path) as f:
        if "xcoordinates" not in f:
            raise LandscapeError(f"{path} has no xcoordinates (not a surface file)")
        x = _axis_of(f["xcoordinates"][()], path, "xcoordinates")
        y = _axis_of(f["ycoordinates"][()], path, "ycoordinates") if "ycoordinates" in f else None
    return x, y


def _axis_of(values: np.ndarray, path: Path, name: str) -> Axis:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(values) < 2:
        raise LandscapeError(f"{path}: {name} holds {len(values)} value(s); a surface axis has at least 2")
    axis = Axis(float(values[0]), float(values[-1]), int(len(values)))
    axis.validate(f"{path}: {name}")
    return axis


def source_fingerprint(spec: DirectionSpec) -> list[str]:
    """Digests of the files the directions come from, so a resume notices when one changed."""
    digests = []
    for path in spec.paths:
        if not path.exists():
            raise LandscapeError(f"file not found: {path}")
        if path.is_dir() and spec.kind != "pca":
            what = {"interp": "a checkpoint", "eigen": "a spectrum file"}.get(spec.kind, "a surface file")
            raise ParameterError("dirs", f"dirs {spec.kind}: {path} is a directory, not {what}")
        if path.is_dir():
            sha = hashlib.sha256()
            for ckpt in run_checkpoints(path):
                sha.update(ckpt.name.encode() + file_sha256(ckpt).encode())
            digests.append(sha.hexdigest())
        else:
            digests.append(file_sha256(path))
    return digests
