"""`landscape plot`: figures (and ParaView files) drawn from results files only; nothing is recomputed."""

from pathlib import Path
from typing import Annotated

import typer

from . import common as c

SURF = "Surfaces"


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
            metavar="LABEL",
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
            help="Output: with one figure its path; with several a prefix (<out>.<kind>.<format>); an existing "
            "directory takes the default names. Default: beside each input, named after it: X.h5 gives X.png, a 2D "
            "surface X.<kind>.png, a run directory RUN/train.png, several 1D surfaces X.compare.png.",
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
    panels. Figures go beside their input, named after it, and plot redraws figures it drew before
    without --overwrite. Prints the paths written, one per line. Plotting reads the files only.
    """
    from .plot_jobs import plot_files

    plot_files(files, one_d, two_d, kind, surface, label, log, vmin, vmax, levels, vtp, fmt, out, dpi, overwrite,
               json_out)  # fmt: skip
