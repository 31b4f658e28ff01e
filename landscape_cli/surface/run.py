"""A whole surface: directions, a resumable sweep over every split, the summary, the finished file."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..checkpoint import Checkpoint
from ..distributed import barrier, broadcast_object, raise_everywhere
from ..errors import LandscapeError, ParameterError
from ..limits import require_memory
from ..problem import Problem
from ..progress import Tracker
from ..results import provenance
from ..signals import Terminated, sigterm_raises
from .directions import IGNORES, NORMS, DirectionSpec, check_directions, file_directions
from .evaluate import PointEvaluator
from .grid import Axis, Grid
from .plan import file_axes, plan_directions, source_fingerprint
from .store import (
    Journal,
    config_differences,
    finish,
    partial_paths,
    read_header_config,
    remove_partial,
    write_header,
)
from .summary import default_radius, summarize
from .sweep import Sweep, SweepStats


@dataclass
class SurfaceOptions:
    """What defines a surface (everything but the data, which the Problems carry)."""

    dims: int = 1
    dirs: str = "random"
    x: str | None = None
    y: str | None = None
    norm: str | None = None
    ignore: str = "biasbn"
    radius: float | None = None
    points_per_pass: int | Literal["auto"] = "auto"
    seed: int = 0

    def validate(self) -> tuple[DirectionSpec, Axis | None, Axis | None]:
        """Parse and check every option before anything is loaded."""
        if self.dims not in (1, 2):
            raise LandscapeError(f"a surface is 1D or 2D, not {self.dims}D")
        spec = DirectionSpec.parse(self.dirs)
        x = Axis.parse(self.x, "x") if self.x is not None else None
        y = Axis.parse(self.y, "y") if self.y is not None else None
        if y is not None and self.dims == 1:
            raise ParameterError("y", "y needs a 2D surface")
        if x is not None and (y is not None or self.dims == 1):
            require_grid_memory(x.n * (y.n if y is not None else 1), 1)
        if self.norm is not None and self.norm not in NORMS:
            raise ParameterError("norm", f"unknown norm '{self.norm}'; choose {', '.join(NORMS)}")
        if self.ignore not in IGNORES:
            raise ParameterError("ignore", f"unknown ignore '{self.ignore}'; choose {', '.join(IGNORES)}")
        if self.radius is not None and not 0 < self.radius < math.inf:
            raise ParameterError("radius", f"radius must be positive and finite, got {self.radius}")
        if self.points_per_pass != "auto" and (not isinstance(self.points_per_pass, int) or self.points_per_pass < 1):
            raise ParameterError(
                "points_per_pass", f"points_per_pass must be auto or a whole number >= 1, got {self.points_per_pass}"
            )
        return spec, x, y


@dataclass
class SurfaceResult:
    path: Path
    grid: Grid
    splits: list[str]
    arrays: dict[str, np.ndarray]
    summary: dict[str, Any]
    directions: list[dict[str, Any]]
    stats: SweepStats
    nonfinite: int
    problem: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def sweep_config(
    ckpt: Checkpoint, problems: dict[str, Problem], options: SurfaceOptions, spec: DirectionSpec
) -> dict[str, Any]:
    """Every choice that changes the numbers: a partial sweep resumes only under the same config."""
    primary = next(iter(problems.values()))
    return {
        "checkpoint_sha256": ckpt.sha256 or "",
        "model_spec": ckpt.model,
        "data_spec": {k: v for k, v in (ckpt.data or {}).items() if k != "split"},
        "loss": ckpt.loss,
        "splits": list(problems),
        "samples": [p.n_samples for p in problems.values()],
        "seed": options.seed,
        "dtype": str(primary.dtype).replace("torch.", ""),
        "mode": primary.mode,
        "dims": options.dims,
        "dirs": spec.kind,
        "dirs_sources": source_fingerprint(spec),
        "x": options.x,
        "y": options.y,
        "norm": options.norm or spec.default_norm(),
        "ignore": options.ignore,
    }


def compute_surface(
    ckpt: Checkpoint,
    problems: dict[str, Problem],
    options: SurfaceOptions,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    command: list[str] | None = None,
    tracker: Tracker | None = None,
) -> SurfaceResult:
    """Sweep the grid on every split's Problem (the first is the primary one) and write `out`.

    Points are journaled beside `out` as they finish; `resume` continues a stopped sweep of the
    same config, and refuses another config with the reason.
    """
    spec, x_axis, y_axis = options.validate()
    header, journal_path = partial_paths(out)
    primary_name, primary = next(iter(problems.items()))
    # Under torchrun every rank computes every point on its share of the data; rank 0 alone checks and writes
    # the files (the others would see its header appear), and its journal state is every rank's.
    group = primary.group
    writer = group is None or group.is_main
    config = sweep_config(ckpt, problems, options, spec)
    refusal = None
    if writer:
        try:
            _check_files(out, header, config, resume, overwrite)
        except LandscapeError as exc:
            refusal = str(exc)
    raise_everywhere(broadcast_object(refusal, group))  # every rank stops on rank 0's refusal
    if resume:
        directions = file_directions(header, primary, options.dims, as_stored=True)
        check_directions(directions)
        grid = Grid(*file_axes(header))
    else:
        norm = options.norm or spec.default_norm()
        centre = ckpt.path.name if ckpt.path else "centre"
        plan = plan_directions(spec, primary, options.dims, options.seed, norm, options.ignore, centre, tracker)
        check_directions(plan.directions)
        directions = plan.directions
        grid = Grid(x_axis or plan.default_x, (y_axis or plan.default_y) if options.dims == 2 else None)
        require_grid_memory(grid.size, len(problems))
        attrs = provenance(ckpt, primary.describe(), options.seed, command)
        attrs.update(splits=list(problems), directions_kind=spec.kind)
    barrier(group)  # every rank has read the old header (resume) before rank 0 writes a new one
    if writer and not resume:
        write_header(
            header,
            grid=grid,
            config=config,
            attrs=attrs,
            directions=directions,
            layout=primary.layout,
            trajectory=plan.trajectory,
            anchors=plan.anchors,
        )
    try:
        evaluators = [PointEvaluator(p, directions) for p in problems.values()]
        journal = Journal(journal_path, sum(len(e.metrics) for e in evaluators), writer=writer)
        sweep = Sweep(evaluators, grid, journal, tracker)
        recorded = None
        if resume:
            if writer:
                sweep.done, recorded = journal.read()
                _check_journal(journal_path, sweep.done, recorded, grid)
            sweep.done, recorded = broadcast_object((sweep.done, recorded), group)
            if recorded is None:  # stopped during the calibration: its points are redone, as in an unbroken run
                journal.create()
        else:
            journal.create()
        try:
            with sigterm_raises():  # a terminated sweep says where its finished points are, as Ctrl-C does
                stats = sweep.run(options.points_per_pass, recorded)
        finally:
            journal.close()
    except (KeyboardInterrupt, Terminated):
        raise  # the finished points stay journaled for --resume
    except BaseException:
        if writer and not resume and not sweep_started(journal_path):
            remove_partial(out)  # nothing to resume: leave no partial sweep to block the next run
        raise
    arrays, nonfinite = _arrays(grid, list(problems), evaluators, sweep.done)
    centre_loss = float(evaluators[0].evaluate_loop(np.zeros((1, grid.dims)))[0, 0])
    y_coords = grid.y.coordinates if grid.y is not None else None
    radius = options.radius if options.radius is not None else default_radius(grid.x.coordinates, y_coords)
    summary = summarize(grid.x.coordinates, y_coords, arrays[f"{primary_name}_loss"], centre_loss, radius)
    summary["split"] = primary_name
    final_attrs = {
        "nonfinite_points": nonfinite,
        "points_per_pass": stats.points_per_pass,
        "evaluation": {
            "method": stats.method,
            "seconds_per_point": stats.calibration,
            "fallback_reason": stats.fallback_reason,
            "device": str(primary.device),
        },
    }
    if writer:
        finish(header, out, arrays, summary, final_attrs, overwrite=True)
    warnings = []
    if nonfinite:
        warnings.append(f"{nonfinite} of {grid.size} grid points gave a non-finite loss; stored as NaN")
    return SurfaceResult(
        path=out,
        grid=grid,
        splits=list(problems),
        arrays=arrays,
        summary=summary,
        directions=[{k: v for k, v in d.attrs.items()} for d in directions],
        stats=stats,
        nonfinite=nonfinite,
        problem=primary.describe(),
        warnings=warnings,
    )


def _check_files(out: Path, header: Path, config: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """The output and a stopped sweep's files allow this run: no silent replacement, a resume of the same config."""
    if out.exists() and not overwrite:
        raise LandscapeError(f"{out} exists; pass --overwrite to replace it")
    if header.exists() and not (resume or overwrite):
        raise LandscapeError(f"a stopped sweep left {header}; pass --resume to continue it, or --overwrite")
    if resume:
        if not header.exists():
            raise LandscapeError(f"nothing to resume: no partial sweep {header}")
        differences = config_differences(read_header_config(header), config)
        if differences:
            raise LandscapeError(
                "cannot resume: the partial sweep was made with another config (" + "; ".join(differences[:3]) + ")"
            )


def require_grid_memory(points: int, splits: int) -> None:
    """The journal's values, their arrays and the finished file's copies: a few float64 per point and metric."""
    require_memory(f"a grid of {points:,} points", points * 8 * (4 * splits + 2) * 3)


def sweep_started(journal: Path) -> bool:
    """Whether a stopped sweep has anything worth resuming (a journaled point or method record)."""
    return journal.is_file() and journal.stat().st_size > 0


def _check_journal(path: Path, done: dict[int, np.ndarray], recorded: int | None, grid: Grid) -> None:
    """Refuse a journal that cannot be this sweep's (edited or damaged), naming it."""
    if recorded is not None and not 1 <= recorded <= 1 << 16:
        raise LandscapeError(f"{path} is damaged (points per pass {recorded}); start over with --overwrite")
    beyond = [k for k in done if k >= grid.size]
    if beyond:
        raise LandscapeError(
            f"{path} is damaged (point {beyond[0]} of a {grid.size}-point grid); start over with --overwrite"
        )


def _arrays(
    grid: Grid, splits: list[str], evaluators: list[PointEvaluator], done: dict[int, np.ndarray]
) -> tuple[dict[str, np.ndarray], int]:
    """Li et al.'s datasets from the journaled values; non-finite losses become NaN and are counted."""
    values = np.full((grid.size, sum(len(e.metrics) for e in evaluators)), np.nan)
    for index, row in done.items():
        values[index] = row
    arrays: dict[str, np.ndarray] = {}
    column = 0
    nonfinite = 0
    for split, evaluator in zip(splits, evaluators, strict=True):
        for metric in evaluator.metrics:
            name = f"{split}_{'loss' if metric == 'loss' else 'acc'}"
            array = values[:, column].reshape(grid.shape)
            if metric == "loss":
                bad = ~np.isfinite(array)
                nonfinite = max(nonfinite, int(bad.sum()))
                array = np.where(bad, np.nan, array)
            arrays[name] = array
            column += 1
    return arrays, nonfinite
