"""`landscape report`: one self-contained interactive page (or the paper figures) for runs, results files and
comparisons; nothing is recomputed."""

from pathlib import Path
from typing import Annotated

import typer

from . import common as c


def report_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Run directories (every results file in them: train.h5, surfaces, spectra, eos files, check/compare "
            "JSON and JUnit) and results files.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="The HTML file (default report.html), or with --format png the directory "
            "for the figures (default report/).",
            rich_help_panel=c.OUTPUT_PANEL,
        ),  # fmt: skip
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="html (interactive, self-contained) or png (the figures of landscape plot).",
            rich_help_panel=c.OUTPUT_PANEL,
        ),  # fmt: skip
    ] = "html",
    title: Annotated[
        str | None, typer.Option("--title", help="The page's title.", rich_help_panel=c.OUTPUT_PANEL)
    ] = None,
    open_: Annotated[
        bool,
        typer.Option(
            "--open",
            help="Print the report's file:// URI (to open in a browser) instead of its path.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),  # fmt: skip
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing report.", rich_help_panel=c.OUTPUT_PANEL)
    ] = False,
) -> None:
    """Write one HTML page that holds a run's or several runs' story: 2D surfaces as rotatable 3D plots and
    contours with the PCA trajectory and interpolation anchors, 1D surfaces overlaid, spectra with error bars and
    the SLQ density, training curves with tracked sharpness and its edge of stability on linked step axes, eos
    verdicts, check/compare gates, and the provenance of every number; with several inputs, a comparison.

    The page needs no network: Plotly's JavaScript is inside it (the extra `[report]`). Files that cannot be
    read are named with the reason, on stderr and in the page; the rest still renders.
    """
    from ..atomic import atomic_path, claim_outputs
    from ..errors import LandscapeError
    from ..webreport.collect import collect

    if fmt not in ("html", "png"):
        raise LandscapeError(f"unknown --format '{fmt}'; choose html or png")
    groups, unreadable = collect(inputs)
    for problem in unreadable:
        typer.echo(f"warning: {problem.path}: {problem.reason}; not in the report", err=True)
    if not groups:
        raise LandscapeError("nothing to report: no input could be read" if unreadable else "no input given")
    names = [g.name for g in groups]
    heading = title if title is not None else "landscape report: " + ", ".join(names)
    if fmt == "png":
        _paper_figures(groups, out or Path("report"), overwrite)
        return
    path = out if out is not None else Path("report.html")
    if path.is_dir():
        raise LandscapeError(f"--out {path} is a directory; name the HTML file, e.g. {path / 'report.html'}")
    from ..webreport.page import build, plotly_js

    plotly_js()  # a missing extra is said before anything is written
    sources = [*inputs, *(item.path for g in groups for item in g.items)]
    with claim_outputs([path], sources, overwrite), atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(build(groups, unreadable, heading), encoding="utf-8")
    typer.echo(path.resolve().as_uri() if open_ else str(path))


def _paper_figures(groups: list, directory: Path, overwrite: bool) -> None:  # noqa: ANN401
    """--format png: `landscape plot`'s figures of every file it can draw, one subdirectory per input."""
    from ..errors import LandscapeError
    from .plot_jobs import plot_files

    kinds = ("surface", "spectrum", "train-log", "sharpness-log")
    plottable = [(g.name, [item.path for item in g.items if item.kind in kinds]) for g in groups]
    plottable = [(name, files) for name, files in plottable if files]
    if not plottable:
        raise LandscapeError("none of the inputs has a figure for papers (surfaces, spectra, training logs)")
    if directory.exists() and not directory.is_dir():
        raise LandscapeError(f"--out {directory} is a file; with --format png it names a directory")
    made: list[Path] = []
    try:
        for name, files in plottable:
            target = directory / name if len(plottable) > 1 else directory
            if not target.exists():
                target.mkdir(parents=True)
                made.append(target)
            plot_files(files, False, False, None, None, None, False, None, None, 30, False, "png", target, 150,
                       overwrite, False)  # fmt: skip
    except BaseException:
        for folder in reversed(made):  # a failed run leaves no empty folders behind
            if not any(folder.iterdir()):
                folder.rmdir()
        if directory.exists() and not any(directory.iterdir()):
            directory.rmdir()
        raise
