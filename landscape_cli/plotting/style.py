"""The look every figure shares, the words for axes and titles, and saving a figure."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

#: Formats a figure can be written in.
FORMATS = ("png", "pdf", "svg")

#: Settings for figures a paper would take, drawn at the size it prints them (one panel about a column wide,
#: 3.4-4.8 in; a row of panels a page wide, 7.2 in), so that 8-9 pt type stays 8-9 pt on paper.
RC: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "image.cmap": "viridis",
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by journals
    "svg.fonttype": "none",  # text stays text in SVGs
}

F = TypeVar("F", bound=Callable[..., Figure])


def styled(build: F) -> F:
    """Build the figure under the shared style (artists take their look when they are created)."""

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(RC):
            return build(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


#: Written into every figure's metadata (PNG Software, PDF and SVG Creator, a comment in .vtp files), so
#: that `plot` knows a figure at its output path is one it drew: figures are derived and cheap, and plot
#: redraws its own without --overwrite, while a file it did not write is never replaced without it.
STAMP = "landscape figure"
_METADATA_KEY = {"png": "Software", "pdf": "Creator", "svg": "Creator"}


def save_figure(fig: Figure, out: Path, fmt: str = "png", dpi: int = 150) -> None:
    """Write `fig` to `out` in `fmt`, stamped as ours (callers see to atomicity)."""
    with matplotlib.rc_context(RC):
        fig.savefig(out, format=fmt, dpi=dpi, bbox_inches="tight", metadata={_METADATA_KEY[fmt]: STAMP})


def is_own_figure(path: Path, limit: int = 64 << 20) -> bool:
    """Whether `path` is a figure landscape drew (a regular file carrying STAMP)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > limit:
            return False
        data = path.read_bytes()
    except OSError:
        return False
    return STAMP.encode() in data


def quantity_label(name: str) -> str:
    """'train_loss' -> 'train loss', 'test_acc' -> 'test accuracy (%)'; other names with spaces."""
    split, _, what = name.rpartition("_")
    if what == "acc":
        return f"{split} accuracy (%)" if split else "accuracy (%)"
    return name.replace("_", " ")


def plain(text: object) -> str:
    """Text from a file as Matplotlib should show it: a '$' is a dollar sign, not the start of TeX (which
    could also fail to parse and stop the figure)."""
    return str(text).replace("$", r"\$")


def source_name(attrs: dict[str, Any], path: Path) -> str:
    """What a figure is of: the checkpoint's file name when the results record it, else the file's."""
    checkpoint = attrs.get("checkpoint")
    if isinstance(checkpoint, str) and checkpoint:
        return plain(Path(checkpoint).name)
    return plain(path.name)


def legend_below(ax: Axes, handles: list | None = None, labels: list[str] | None = None, ncol: int = 4) -> None:
    """A legend under the axes, in rows, below the x axis's label: it never covers a curve, a contour label or
    a marker. Call it once the layout is final (after tight_layout): it places itself by the drawn label."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    fig = ax.get_figure()
    renderer = FigureCanvasAgg(fig).get_renderer() if not hasattr(fig.canvas, "get_renderer") else None
    renderer = renderer or fig.canvas.get_renderer()
    ax.apply_aspect()  # equal-aspect axes shrink when drawn: place the legend by where they will be
    parts = [ax.xaxis.label, *ax.get_xticklabels()]
    bottom = min(t.get_window_extent(renderer).y0 for t in parts if t.get_text()) if any(
        t.get_text() for t in parts) else ax.get_window_extent(renderer).y0  # fmt: skip
    y = ax.transAxes.inverted().transform((0, bottom))[1]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, y), borderaxespad=0.4,
              ncol=min(ncol, len(handles)), frameon=False, handlelength=1.8, columnspacing=1.2)  # fmt: skip
