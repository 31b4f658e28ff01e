"""`landscape plot`: figures (and ParaView files) drawn from results files only; nothing is recomputed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ..atomic import atomic_path, claim_outputs
from ..errors import LandscapeError
from ..plotting import (
    FORMATS,
    KINDS_2D,
    SPECTRUM,
    SURFACE,
    ColourScale,
    Source,
    Surface,
    TrainLogData,
    detect,
    draw_spectrum,
    figure_1d,
    figure_2d,
    load_surface,
    read_train_log,
    save_figure,
    train_figure,
    write_vtp,
)
from ..plotting.surface import check_positive
from ..plotting.trainlog import edge_references
from ..report import print_json
from . import common as c

SURF = "Surfaces"


@dataclass
class Job:
    """One file to write: which input(s) it comes from, its name's tag, its extension, how to draw it."""

    stem: str
    tag: str
    ext: str
    draw: Callable[[Path], object]
    sources: int = 1  # how many inputs it draws together (the 1D comparison draws several)


def plot_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Results files: surfaces (ours, or Li et al.'s), spectrum files, training logs (train.h5) "
            "or run directories holding train.h5.",
            show_default=False,
        ),
    ],
    one_d: Annotated[
        bool,
        typer.Option(
            "--1d", help="Plot surfaces as 1D curves: a 2D surface is cut along x through y = 0.", rich_help_panel=SURF
        ),
    ] = False,
    two_d: Annotated[
        bool, typer.Option("--2d", help="Insist on 2D figures (an error for a 1D surface).", rich_help_panel=SURF)
    ] = False,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="2D figure: contour, filled, heatmap, 3d, or all (one figure of each). Default: all.",
            rich_help_panel=SURF,
        ),
    ] = None,
    surface: Annotated[
        str | None,
        typer.Option(
            "--surface",
            help="Dataset to plot, e.g. test_loss or train_acc. Default: in 2D the primary split's loss, in 1D "
            "every loss (train and test) with its accuracy.",
            rich_help_panel=SURF,
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            help="Legend label of each 1D file, in order; repeatable. Default: the file's stem.",
            rich_help_panel=SURF,
        ),
    ] = None,
    log: Annotated[
        bool,
        typer.Option(
            "--log",
            help="Logarithmic loss: log axis in 1D and in training logs, log colour scale in 2D, log10 height in "
            "3D and in --vtp.",
            rich_help_panel=SURF,
        ),
    ] = False,
    vmin: Annotated[
        float | None, typer.Option("--vmin", help="Clip 2D colours and heights below VMIN.", rich_help_panel=SURF)
    ] = None,
    vmax: Annotated[
        float | None, typer.Option("--vmax", help="Clip 2D colours and heights above VMAX.", rich_help_panel=SURF)
    ] = None,
    levels: Annotated[int, typer.Option("--levels", help="Contour levels in 2D.", rich_help_panel=SURF)] = 30,
    vtp: Annotated[
        bool,
        typer.Option(
            "--vtp",
            help="Also write each 2D surface as VTK PolyData (.vtp, ASCII) for ParaView: <stem>_<surface>.vtp.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="png, pdf or svg. Default: the extension of --out when it is one of these, else png.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output: with one figure its path; with several a prefix (<out stem>_<kind>.<format>); an "
            "existing directory takes the default names. Default: <input stem>_<kind>.<format> in the current "
            "directory.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None,
    dpi: Annotated[int, typer.Option("--dpi", help="Resolution of PNG figures.", rich_help_panel=c.OUTPUT_PANEL)] = 150,
    overwrite: c.OverwriteOpt = False,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json", help='Print {"figures": [...], "vtp": [...]} on stdout.', rich_help_panel=c.OUTPUT_PANEL
        ),
    ] = False,
) -> None:
    """Publication-quality figures of results files: 1D and 2D loss surfaces, spectra, training logs.

    Several 1D surfaces are overlaid in one figure; a 2D surface gives one figure per --kind; a spectrum
    file its eigenvalue figure; a training log (or run directory) its loss, accuracy and sharpness
    panels. Prints the paths written, one per line. Plotting reads the files only.
    """
    fmt = _format(fmt, out)
    if one_d and two_d:
        raise LandscapeError("--1d and --2d exclude each other")
    if vtp and one_d:
        raise LandscapeError("--vtp writes 2D surfaces; drop --1d")
    if kind is not None and kind not in (*KINDS_2D, "all"):
        raise LandscapeError(f"unknown --kind '{kind}'; choose one of {', '.join(KINDS_2D)} or all")
    if not 10 <= dpi <= 1200:
        raise LandscapeError(f"--dpi must be between 10 and 1200, got {dpi}")
    scale = ColourScale(log=log, vmin=vmin, vmax=vmax, levels=levels)
    scale.validate()

    sources = [detect(path) for path in files]
    jobs = _plan(sources, fmt, dpi, one_d, two_d, kind, surface, label, scale, vtp)
    paths = _output_paths(jobs, out, fmt)
    inputs = [*files, *(source.file for source in sources)]
    # Every file is drawn under a temporary name and all are renamed at the end: a failure leaves none.
    with claim_outputs(paths, inputs, overwrite), contextlib.ExitStack() as stack:
        for job, path in zip(jobs, paths, strict=True):
            job.draw(stack.enter_context(atomic_path(path, overwrite=overwrite)))
    figures = [str(p) for job, p in zip(jobs, paths, strict=True) if job.ext != "vtp"]
    vtps = [str(p) for job, p in zip(jobs, paths, strict=True) if job.ext == "vtp"]
    if json_out:
        print_json({"figures": figures, "vtp": vtps})
    else:
        for path in paths:
            typer.echo(str(path))


def _format(fmt: str | None, out: Path | None) -> str:
    """--format, else the extension of --out when it names a format, else png; the two must agree."""
    suffix = out.suffix.lower().lstrip(".") if out is not None and not out.is_dir() else ""
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise LandscapeError(f"unknown --format '{fmt}'; choose one of {', '.join(FORMATS)}")
        if suffix in FORMATS and suffix != fmt:
            raise LandscapeError(f"--out {out} ends in .{suffix} but --format is {fmt}")
        return fmt
    return suffix if suffix in FORMATS else "png"


def _plan(
    sources: list[Source],
    fmt: str,
    dpi: int,
    one_d: bool,
    two_d: bool,
    kind: str | None,
    name: str | None,
    labels: list[str] | None,
    scale: ColourScale,
    vtp: bool,
) -> list[Job]:
    """Read every input and decide every file to write before anything is drawn."""
    jobs: list[Job] = []
    curves: list[tuple[Source, Surface]] = []
    compare_at: int | None = None
    plotted_2d = False
    for source in sources:
        if source.kind == SPECTRUM:
            jobs.append(Job(source.stem, "spectrum", fmt, _spectrum_drawer(source.file, fmt, dpi)))
        elif source.kind == SURFACE:
            surf = load_surface(source.file)
            if name is not None:
                surf.values(name)
            if surf.dims == 1:
                if two_d:
                    raise LandscapeError(f"{source.path} is a 1D surface; drop --2d")
                if vtp:
                    raise LandscapeError(f"{source.path} is a 1D surface; --vtp writes 2D surfaces only")
            if surf.dims == 1 or one_d:
                compare_at = len(jobs) if compare_at is None else compare_at
                curves.append((source, surf.cut_at_zero()))
                continue
            plotted_2d = True
            for k in KINDS_2D if kind in (None, "all") else (kind,):
                jobs.append(Job(source.stem, f"2d_{k}", fmt, _surface_drawer(surf, k, name, scale, fmt, dpi)))
            if vtp:
                dataset = name or surf.primary()
                tag = f"{dataset}_log" if scale.log else dataset
                jobs.append(Job(source.stem, tag, "vtp", _vtp_drawer(surf, dataset, scale.log)))
        else:
            log = read_train_log(source.file)
            if log.rows("train") == 0 and log.rows("eval") == 0:
                raise LandscapeError(f"{source.file} holds no logged rows yet: nothing to plot")
            jobs.append(Job(source.stem, "train", fmt, _train_drawer(log, scale.log, fmt, dpi)))
    has_surface = bool(curves) or plotted_2d
    for given, option in ((one_d, "--1d"), (two_d, "--2d"), (name, "--surface"), (vtp, "--vtp")):
        if given and not has_surface:
            raise LandscapeError(f"{option} applies to surface files, and none was given")
    if kind is not None and not plotted_2d:
        raise LandscapeError("--kind applies to 2D surfaces, and none is plotted in 2D")
    if labels and not curves:
        raise LandscapeError("--label names the curves of 1D surfaces, and none is plotted in 1D")
    if labels and len(labels) != len(curves):
        raise LandscapeError(f"--label given {len(labels)} times for {len(curves)} 1D surfaces: give one per file")
    if curves:
        assert compare_at is not None
        tag = "1d" if len(curves) == 1 else "1d_compare"
        draw = _curves_drawer(
            [s for _, s in curves], labels or [src.stem for src, _ in curves], name, scale.log, fmt, dpi
        )
        jobs.insert(compare_at, Job(curves[0][0].stem, tag, fmt, draw, sources=len(curves)))
    return jobs


def _spectrum_drawer(file: Path, fmt: str, dpi: int) -> Callable[[Path], None]:
    return lambda tmp: draw_spectrum(file, tmp, fmt, dpi)


def _surface_drawer(
    surf: Surface, kind: str, name: str | None, scale: ColourScale, fmt: str, dpi: int
) -> Callable[[Path], None]:
    return lambda tmp: save_figure(figure_2d(surf, kind, name, scale), tmp, fmt, dpi)


def _curves_drawer(
    surfaces: list[Surface], labels: list[str], name: str | None, log: bool, fmt: str, dpi: int
) -> Callable[[Path], None]:
    return lambda tmp: save_figure(figure_1d(surfaces, labels, name, log), tmp, fmt, dpi)


def _train_drawer(log_data: TrainLogData, log: bool, fmt: str, dpi: int) -> Callable[[Path], None]:
    references = edge_references(log_data)
    return lambda tmp: save_figure(train_figure(log_data, log_scale=log, references=references), tmp, fmt, dpi)


def _vtp_drawer(surf: Surface, dataset: str, log: bool) -> Callable[[Path], object]:
    def draw(tmp: Path) -> tuple[int, int]:
        values = surf.values(dataset)
        if log:
            check_positive(surf, dataset, values)
            with np.errstate(invalid="ignore"):
                values = np.log10(values)
        assert surf.y is not None
        return write_vtp(tmp, surf.x, surf.y, values, f"log10_{dataset}" if log else dataset)

    return draw


def _output_paths(jobs: list[Job], out: Path | None, fmt: str) -> list[Path]:
    """Default names in the current directory; --out is the path of a lone figure, else a prefix."""
    several_inputs = len({job.stem for job in jobs}) > 1 or any(job.sources > 1 for job in jobs)
    n_figures = sum(job.ext != "vtp" for job in jobs)
    paths = []
    for job in jobs:
        default = Path(f"{job.stem}_{job.tag}.{job.ext}")
        if out is None:
            path = default
        elif out.is_dir():
            path = out / default
        elif job.ext != "vtp" and n_figures == 1:
            path = out
        else:
            prefix = out.stem if out.suffix.lower().lstrip(".") in (*FORMATS, "vtp") else out.name
            middle = f"{job.stem}_" if several_inputs and job.sources == 1 else ""
            path = out.parent / f"{prefix}_{middle}{job.tag}.{job.ext}"
        paths.append(path)
    seen: dict[Path, int] = {}
    for i, path in enumerate(paths):
        key = Path(path.resolve())
        if key in seen:
            raise LandscapeError(
                f"two outputs would both be written to {path} (inputs with the same name?); plot them separately "
                "with --out"
            )
        seen[key] = i
    return paths
