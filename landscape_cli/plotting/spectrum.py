"""The figure of a spectrum file: extremal eigenvalues with their error bounds, and the density."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..atomic import atomic_path
from ..hdf5 import open_results, read_attrs
from .style import save_figure, source_name, styled


def plot_spectrum(h5_path: Path, out: Path, dpi: int = 150, overwrite: bool = False) -> Path:
    """Top (and bottom) eigenvalues with their error bounds; the density on a log scale if present."""
    with atomic_path(out, overwrite=overwrite) as tmp:
        draw_spectrum(h5_path, tmp, out.suffix.lstrip(".") or "png", dpi)
    return out


def draw_spectrum(h5_path: Path, out: Path, fmt: str = "png", dpi: int = 150) -> None:
    """Draw the figure of a spectrum file into `out` (callers see to atomicity)."""
    save_figure(spectrum_figure(h5_path), out, fmt, dpi)


@styled
def spectrum_figure(h5_path: Path) -> Figure:
    """The figure of a spectrum file, not yet saved."""
    with open_results(h5_path) as f:
        attrs = read_attrs(f)
        has_density, has_eigenvalues = "density" in f, "top" in f or "bottom" in f
        has_layers = "layers" in f
        panels = int(has_eigenvalues) + int(has_density) + int(has_layers)
        rows = len(f["layers"]["names"]) if has_layers else 0
        height = max(3.0, 0.9 + 0.16 * rows) if has_layers else 3.0
        fig = Figure(figsize=({1: 3.8, 2: 7.2, 3: 10.6}.get(panels, 3.8), height))
        axes = np.atleast_1d(fig.subplots(1, max(panels, 1)))
        if has_eigenvalues:
            _eigenvalue_panel(axes[0], f)
        if has_density:
            _density_panel(axes[int(has_eigenvalues)], f["density"])
        if has_layers:
            _layers_panel(axes[-1], f["layers"])
        trace = read_attrs(f["trace"]) if "trace" in f else None
    if panels == 0:
        axes[0].set_axis_off()
    title = source_name(attrs, h5_path)
    n_params, n_samples = attrs.get("n_params"), attrs.get("n_samples")
    sizes = ", ".join(
        f"{value:,} {what}" if isinstance(value, int) else f"? {what}"
        for value, what in ((n_params, "parameters"), (n_samples, "samples"))
    )
    matrix = {"ggn": "Gauss-Newton", "fisher": "Empirical Fisher"}.get(str(attrs.get("curvature")), "Hessian")
    block = f" block {attrs['params']}" if attrs.get("params") else ""
    line = f"{matrix}{block} spectrum of {title} ({sizes}, {attrs.get('mode', '')} mode)"
    if trace is not None and isinstance(trace.get("estimate"), float | int):
        line += f"\ntrace {trace['estimate']:.5g} ± {trace.get('stderr', float('nan')):.2g} (Hutch++, standard error)"
    fig.suptitle(line)
    fig.tight_layout()
    return fig


def _eigenvalue_panel(ax: Axes, f: h5py.File) -> None:
    most = 1
    for which, colour, marker in (("top", "tab:blue", "o"), ("bottom", "tab:red", "s")):
        if which not in f:
            continue
        values = f[which]["eigenvalues"][()]
        bounds = f[which]["error_bounds"][()]
        converged = f[which]["converged"][()]
        idx = np.arange(1, len(values) + 1)
        ax.errorbar(
            idx,
            values,
            yerr=bounds,
            fmt=marker,
            color=colour,
            capsize=3,
            label=f"{which} {len(values)} ({int(converged.sum())} converged)",
        )
        for i, v in zip(idx, values, strict=True):
            below = which == "bottom"  # bottom values sit near 0: their labels go under them, clear of the line
            ax.annotate(f"{v:.4g}", (i, v), textcoords="offset points", xytext=(5, -9 if below else 3), fontsize=7)
        most = max(most, len(values))
    ax.set_xlim(0.5, most + 0.9)  # room for the labels of the last points inside the axes
    if most <= 10:
        ax.set_xticks(np.arange(1, most + 1))
    ax.margins(y=0.14)  # and for the labels under the bottom values
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("index (1: largest top, most negative bottom)")
    ax.set_ylabel("eigenvalue")
    ax.set_title("Extremal eigenvalues (Lanczos)")
    ax.legend(loc="upper right", frameon=False)
    ax.grid(alpha=0.3)


def _layers_panel(ax: Axes, g: h5py.Group) -> None:
    """Top eigenvalue of each block as a horizontal bar, model order from the top, on a log scale when the
    values span more than two decades; the trace as a marker on the same axis."""
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in g["names"][()]]
    top, trace = g["top"][()], g["trace"][()]
    y = np.arange(len(names))
    ax.barh(y, top, color="tab:blue", alpha=0.8, label="top eigenvalue")
    ax.plot(trace, y, "D", color="tab:orange", ms=3.5, label="trace")
    ax.set_yticks(y, [_short(n) for n in names], fontsize=6)
    ax.invert_yaxis()
    positive = np.concatenate([top[top > 0], trace[trace > 0]])
    if positive.size and (top > 0).all() and positive.max() / positive.min() > 100:
        ax.set_xscale("log")
    by = g.attrs.get("by", "tensor")
    ax.set_title(f"Per-{by} blocks")
    ax.set_xlabel("value")
    ax.legend(loc="lower right", frameon=False, fontsize=7)
    ax.grid(alpha=0.3, axis="x")


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


#: The density is drawn down to this fraction of its peak; below, the curve leaves the axes instead of
#: lying on a floor that would look like data.
DENSITY_RANGE = 1e-6


def _density_panel(ax: Axes, g: h5py.Group) -> None:
    grid, density = g["grid"][()], g["density"][()]
    peak = float(np.nanmax(density)) if density.size and np.isfinite(density).any() else 0.0
    if peak > 0:
        ax.plot(grid, np.where(density > 0, density, np.nan), color="tab:green", lw=1.2)
        ax.set_yscale("log")
        ax.set_ylim(peak * DENSITY_RANGE, peak * 3)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.set_title(f"Spectral density (SLQ, {g['nodes'].shape[0]} runs, σ = {g.attrs['sigma']:.3g})")
    ax.grid(alpha=0.3)
