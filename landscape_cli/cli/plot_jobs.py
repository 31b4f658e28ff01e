"""What `landscape plot` writes, and where: every input read and every output decided before anything is
drawn, then all drawn under temporary names and renamed together.

Naming rule: a figure goes next to its input and is named after it: X.h5 gives X.png (a spectrum, a 1D
surface, a training log: `run/train.h5` or `run` gives `run/train.png`), a 2D surface X.<kind>.png
(contour, filled, heatmap, 3d) and X.<dataset>.vtp, several 1D surfaces overlaid X.compare.png beside the
first. `--out` names a lone figure, is a prefix for several (<out>.<name>.<tag>.<format>), or is a
directory that takes the default names.
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
from ..plotting.style import is_own_figure
from ..plotting.surface import check_positive
from ..plotting.trainlog import edge_references, has_rows
from ..text import print_json


@dataclass
class Job:
    """One file to write: the input it is named after (`base`: its path without .h5), the tag that tells it
    from the input's other figures (None for a lone figure), its extension, and how to draw it."""

    base: Path
    tag: str | None
    ext: str
    draw: Callable[[Path], object]
    sources: int = 1  # how many inputs it draws together (the 1D comparison draws several)

    @property
    def default(self) -> Path:
        return self.base.with_name(self.base.name + (f".{self.tag}" if self.tag else "") + f".{self.ext}")


def plot_files(
    files: list[Path],
    one_d: bool,
    two_d: bool,
    kind: str | None,
    surface: str | None,
    label: list[str] | None,
    log: bool,
    vmin: float | None,
    vmax: float | None,
    levels: int,
    vtp: bool,
    fmt: str | None,
    out: Path | None,
    dpi: int,
    overwrite: bool,
    json_out: bool,
) -> None:
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
    paths = _output_paths(jobs, out)
    inputs = [*files, *(source.file for source in sources)]
    # figures are derived: our own are redrawn without --overwrite; anything else needs it
    replaceable = [p for p in paths if overwrite or is_own_figure(p)]
    # Every file is drawn under a temporary name and all are renamed at the end: a failure leaves none.
    with claim_outputs(paths, inputs, replaceable), contextlib.ExitStack() as stack:
        for job, path in zip(jobs, paths, strict=True):
            job.draw(stack.enter_context(atomic_path(path, overwrite=path in replaceable)))
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
            jobs.append(Job(_base(source), None, fmt, _spectrum_drawer(source.file, fmt, dpi)))
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
                jobs.append(Job(_base(source), k, fmt, _surface_drawer(surf, k, name, scale, fmt, dpi)))
            if vtp:
                dataset = name or surf.primary()
                tag = f"{dataset}_log" if scale.log else dataset  # X.train_loss.vtp, X.train_loss_log.vtp
                jobs.append(Job(_base(source), tag, "vtp", _vtp_drawer(surf, dataset, scale.log)))
        else:
            log = read_train_log(source.file)
            if not has_rows(log):
                raise LandscapeError(f"{source.file} holds no logged rows yet: nothing to plot")
            jobs.append(Job(_base(source), None, fmt, _train_drawer(log, scale.log, fmt, dpi)))
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
        tag = None if len(curves) == 1 else "compare"
        draw = _curves_drawer(
            [s for _, s in curves], labels or [src.stem for src, _ in curves], name, scale.log, fmt, dpi
        )
        jobs.insert(compare_at, Job(_base(curves[0][0]), tag, fmt, draw, sources=len(curves)))
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


def _base(source: Source) -> Path:
    """The input's path without its .h5 suffix: figures are named after it, beside it."""
    return source.file.with_suffix("") if source.file.suffix in (".h5", ".hdf5") else source.file


def _output_paths(jobs: list[Job], out: Path | None) -> list[Path]:
    """Default names beside the inputs; --out is the path of a lone figure, a prefix for several, or a
    directory that takes the default names."""
    several_inputs = len({job.base for job in jobs}) > 1 or any(job.sources > 1 for job in jobs)
    n_figures = sum(job.ext != "vtp" for job in jobs)
    paths = []
    for job in jobs:
        if out is None:
            path = job.default
        elif out.is_dir():
            path = out / job.default.name
        elif job.ext != "vtp" and n_figures == 1:
            path = out
        else:
            prefix = out.stem if out.suffix.lower().lstrip(".") in (*FORMATS, "vtp") else out.name
            parts = [prefix, job.base.name if several_inputs and job.sources == 1 else None, job.tag, job.ext]
            path = out.parent / ".".join(part for part in parts if part)
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
