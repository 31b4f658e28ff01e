"""The figure of a spectrum file: extremal eigenvalues with their error bounds, and the density."""

from __future__ import annotations

from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..atomic import atomic_path
from ..results import open_results, read_attrs
from .style import save_figure


def plot_spectrum(h5_path: Path, out: Path, dpi: int = 150, overwrite: bool = False) -> Path:
    """Top (and bottom) eigenvalues with their error bounds; the density on a log scale if present."""
    with atomic_path(out, overwrite=overwrite) as tmp:
        draw_spectrum(h5_path, tmp, out.suffix.lstrip(".") or "png", dpi)
    return out


def draw_spectrum(h5_path: Path, out: Path, fmt: str = "png", dpi: int = 150) -> None:
    """Draw the figure of a spectrum file into `out` (callers see to atomicity)."""
    save_figure(spectrum_figure(h5_path), out, fmt, dpi)


def spectrum_figure(h5_path: Path) -> Figure:
    """The figure of a spectrum file, not yet saved."""
    with open_results(h5_path) as f:
        attrs = read_attrs(f)
        has_density = "density" in f
        fig, axes = plt.subplots(1, 2 if has_density else 1, figsize=(11 if has_density else 5.5, 4.2))
        axes = np.atleast_1d(axes)
        try:
            _eigenvalue_panel(axes[0], f)
            if has_density:
                _density_panel(axes[1], f["density"])
        except BaseException:
            plt.close(fig)
            raise
    title = Path(attrs.get("checkpoint", h5_path.name)).name
    fig.suptitle(
        f"Hessian spectrum of {title} ({attrs.get('n_params', '?')} parameters, "
        f"{attrs.get('n_samples', '?')} samples, {attrs.get('mode', '')} mode)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _eigenvalue_panel(ax: plt.Axes, f: h5py.File) -> None:
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
            ax.annotate(f"{v:.4g}", (i, v), textcoords="offset points", xytext=(6, 2), fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("index (1 = largest for top, most negative for bottom)")
    ax.set_ylabel("eigenvalue")
    ax.set_title("Extremal Hessian eigenvalues (Lanczos)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _density_panel(ax: plt.Axes, g: h5py.Group) -> None:
    grid, density = g["grid"][()], g["density"][()]
    floor = max(float(density.max()) * 1e-8, 1e-300)
    ax.semilogy(grid, np.maximum(density, floor), color="tab:green")
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    ax.set_title(f"Spectral density (SLQ, {g['nodes'].shape[0]} runs, sigma={g.attrs['sigma']:.3g})")
    ax.grid(alpha=0.3)
