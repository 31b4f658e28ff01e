"""The look every figure shares, the words for axes and titles, and saving a figure."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

#: Formats a figure can be written in.
FORMATS = ("png", "pdf", "svg")

#: Settings for figures a paper would take: readable type, light grids, no clutter.
RC: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.alpha": 0.3,
    "image.cmap": "viridis",
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by journals
    "svg.fonttype": "none",  # text stays text in SVGs
    "text.parse_math": False,  # names from files are shown as they are ('$' is no TeX, and cannot fail)
}

F = TypeVar("F", bound=Callable[..., Figure])


def styled(build: F) -> F:
    """Build the figure under the shared style (artists take their look when they are created)."""

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with plt.rc_context(RC):
            return build(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def save_figure(fig: Figure, out: Path, fmt: str = "png", dpi: int = 150) -> None:
    """Write `fig` to `out` in `fmt` and close it (callers see to atomicity)."""
    try:
        with plt.rc_context(RC):
            fig.savefig(out, format=fmt, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)


def quantity_label(name: str) -> str:
    """'train_loss' -> 'train loss', 'test_acc' -> 'test accuracy (%)'; other names with spaces."""
    split, _, what = name.rpartition("_")
    if what == "acc":
        return f"{split} accuracy (%)" if split else "accuracy (%)"
    return name.replace("_", " ")


def source_name(attrs: dict[str, Any], path: Path) -> str:
    """What a figure is of: the checkpoint's file name when the results record it, else the file's."""
    checkpoint = attrs.get("checkpoint")
    if isinstance(checkpoint, str) and checkpoint:
        return Path(checkpoint).name
    return path.name
