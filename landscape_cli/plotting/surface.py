"""Figures of loss surfaces: 1D curves (several overlaid), and 2D contour, filled contour, heatmap and 3D."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mpl_toolkits.axes_grid1 import make_axes_locatable
from scipy.interpolate import RegularGridInterpolator

from ..errors import LandscapeError, ParameterError
from .inputs import figure_stem
from .style import legend_below, plain, quantity_label, source_name, styled
from .surface_data import Surface, grid_xyz

#: The 2D figure kinds, in the order `--kind all` draws them.
KINDS_2D = ("contour", "filled", "heatmap", "3d")
#: Colour map of areas, with missing points in light grey; lines use its darker 85% (yellow is unreadable on white).
CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
LINE_CMAP = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, 256)))


#: Contour levels at most: more cannot be told apart on a page, and each costs a contour pass.
MAX_LEVELS = 200


@dataclass(frozen=True)
class ColourScale:
    """How values map to colours: --log, --vmin, --vmax (clip) and --levels."""

    log: bool = False
    vmin: float | None = None
    vmax: float | None = None
    levels: int = 30

    def validate(self) -> None:
        if not 2 <= self.levels <= MAX_LEVELS:
            raise ParameterError("levels", f"levels must be between 2 and {MAX_LEVELS}, got {self.levels}")
        for name, value in (("--vmin", self.vmin), ("--vmax", self.vmax)):
            if value is not None and not np.isfinite(value):
                raise LandscapeError(f"{name} must be a finite number, got {value}")
        if self.vmin is not None and self.vmax is not None and not self.vmin < self.vmax:
            raise ParameterError(("vmin", "vmax"), f"vmin ({self.vmin:g}) must be below vmax ({self.vmax:g})")
        if self.log and self.vmin is not None and self.vmin <= 0:
            raise ParameterError(("log", "vmin"), f"log needs a positive vmin, got {self.vmin:g}")

    def limits(self, z: np.ndarray) -> tuple[float, float]:
        """The value range the colours span: the finite data's range unless --vmin/--vmax say otherwise."""
        finite = z[np.isfinite(z)]
        if self.log:
            finite = finite[finite > 0]
        if finite.size == 0:
            raise LandscapeError("the surface has no finite values to plot" + (" above 0" if self.log else ""))
        lo = float(finite.min()) if self.vmin is None else float(self.vmin)
        hi = float(finite.max()) if self.vmax is None else float(self.vmax)
        if not hi > lo:  # a flat surface, or one --vmin/--vmax leaves on one side
            hi = lo * (1 + 1e-6) + 1e-12 if self.log else lo + max(abs(lo), 1.0) * 1e-6
        return lo, hi

    def norm(self, lo: float, hi: float) -> Normalize:
        return LogNorm(lo, hi) if self.log else Normalize(lo, hi)

    def level_values(self, lo: float, hi: float) -> np.ndarray:
        """About `levels` contour levels spanning [lo, hi], round numbers (readable labels): evenly spaced
        on a linear scale, 1-2-5-style steps per decade on a log scale; lo and hi themselves included."""
        if self.log:
            nice = log_ticks(lo, hi, self.levels)
            inner = nice[(nice > lo * (1 + 1e-9)) & (nice < hi * (1 - 1e-9))]
            return np.concatenate([[lo], inner, [hi]])
        nice = MaxNLocator(nbins=self.levels, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
        inner = nice[(nice > lo + 1e-9 * (hi - lo)) & (nice < hi - 1e-9 * (hi - lo))]
        return np.concatenate([[lo], inner, [hi]])


#: Mantissas of round values per decade, from sparse to dense, for log-scale levels and colour-bar ticks.
LOG_MANTISSAS = ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
                 (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0))  # fmt: skip


def log_ticks(lo: float, hi: float, count: int) -> np.ndarray:
    """Round values (1, 2, 5, 10, 20, ... or denser) within [lo, hi], about `count` of them at most, at least 2
    when the range allows: readable tick and level labels on a log scale (no 4.0462x10^-1)."""
    decades = range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1)
    best = np.array([])
    for mantissas in LOG_MANTISSAS:
        values = np.array([m * 10.0**d for d in decades for m in mantissas])
        values = values[(values >= lo * (1 - 1e-9)) & (values <= hi * (1 + 1e-9))]
        if len(values) > count and len(best) >= 2:
            break
        best = values
    if len(best) < 2:  # a narrow range: two round-ish values at its ends
        best = np.array([float(f"{lo:.2g}"), float(f"{hi:.2g}")])
    return best


def check_positive(surface: Surface, name: str, values: np.ndarray) -> None:
    """--log needs values above 0."""
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() <= 0:
        raise LandscapeError(
            f"--log needs positive values, but {name} of {surface.path} goes down to {finite.min():.4g}"
        )


# ----------------------------------------------------------------------------------------------- 1D


def curve_names(surface: Surface, name: str | None) -> list[str]:
    """The datasets a 1D figure draws on its main axis: NAME, or every loss (train and test)."""
    if name is not None:
        surface.values(name)
        return [name]
    return surface.losses() or [surface.primary()]


@styled
def figure_1d(
    surfaces: Sequence[Surface], labels: Sequence[str] | None = None, name: str | None = None, log: bool = False
) -> Figure:
    """Loss against x for each surface (one colour per surface and split), its accuracy dashed on a twin
    axis, and the interpolation's checkpoints marked on the curve."""
    given = labels is not None
    if labels is None:
        labels = [figure_stem(s.path) for s in surfaces]
    if len(labels) != len(surfaces):
        raise ParameterError("label", f"{len(labels)} labels for {len(surfaces)} 1D surfaces: give label once per file")
    fig = Figure(figsize=(4.8, 3.4))
    ax = fig.subplots()
    ax_acc = _draw_1d(ax, surfaces, labels, name, log, named=given)
    handles, names = ax.get_legend_handles_labels()
    if ax_acc is not None:
        more = ax_acc.get_legend_handles_labels()
        handles, names = handles + more[0], names + more[1]
    fig.tight_layout()
    if len(handles) > 1:
        # losses in the first row, their accuracies under them: Matplotlib fills a legend column by column
        ncol = len(names) // 2 if ax_acc is not None and len(names) % 2 == 0 else min(len(names), 4)
        if ncol == len(names) // 2 and ax_acc is not None:
            order = [i for pair in zip(range(ncol), range(ncol, 2 * ncol), strict=True) for i in pair]
            handles, names = [handles[i] for i in order], [names[i] for i in order]
        legend_below(ax, handles, names, ncol=ncol)
    return fig


def _draw_1d(
    ax: Axes, surfaces: Sequence[Surface], labels: Sequence[str], name: str | None, log: bool, named: bool = False
) -> Axes | None:
    ax_acc = None
    quantities: set[str] = set()
    colour = 0
    for surface, label in zip(surfaces, labels, strict=True):
        names = curve_names(surface, name)
        for k, curve in enumerate(names):
            values = surface.values(curve)
            if log:
                check_positive(surface, curve, values)
            split = curve.rpartition("_")[0]
            if len(surfaces) == 1:
                curve_label = quantity_label(curve)
            else:
                curve_label = label if len(names) == 1 else f"{label}, {split}"
            quantities.add(quantity_label(curve))
            acc_label = f"{split} accuracy" if len(surfaces) == 1 else f"{curve_label} accuracy"
            c = f"C{colour % 10}"
            colour += 1
            ax.plot(surface.x, values, "-", color=c, lw=1.6, label=curve_label)
            acc = f"{split}_acc"
            if curve.endswith("_loss") and acc in surface.data:
                if ax_acc is None:
                    ax_acc = ax.twinx()
                    ax_acc.spines["right"].set_visible(True)
                    ax_acc.set_ylabel("accuracy (%), dashed")
                ax_acc.plot(surface.x, surface.data[acc], "--", color=c, lw=1.2, label=acc_label, clip_on=False)
            if k == 0 and surface.anchors is not None:
                _mark_anchors_1d(ax, surface, values, c)
    first = surfaces[0]
    xlabels = {s.axis_label(1) for s in surfaces}
    ax.set_xlabel(xlabels.pop() if len(xlabels) == 1 else "direction 1")
    quantity = quantities.pop() if len(quantities) == 1 else "loss"
    ax.set_ylabel(quantity + (" (log scale)" if log else ""))
    if log:
        ax.set_yscale("log")
    if ax_acc is not None:  # accuracy is at most 100%: the axis says so, and the lines at 100 stay whole
        low = min(float(np.nanmin(s.data[a])) for s in surfaces for a in s.data if a.endswith("_acc"))
        ax_acc.set_ylim(max(0.0, 10 * np.floor(low / 10)), 100)
    ax.grid(True, alpha=0.3)
    cut = f", cut at y = {first.cut_at:.3g}" if first.cut_at is not None else ""
    if len(surfaces) == 1:
        ax.set_title(f"{quantity} around {source_name(first.attrs, first.path)}{cut}")
    else:
        names = list(labels) if named else [source_name(s.attrs, s.path) for s in surfaces]
        listed = ", ".join(names[:-1]) + f" and {names[-1]}"
        around = listed if len(set(names)) == len(names) and len(listed) <= 48 else f"{len(names)} models"
        ax.set_title(f"{quantity} around {around}{cut}")
    return ax_acc


def _mark_anchors_1d(ax: Axes, surface: Surface, values: np.ndarray, colour: str) -> None:
    anchors = surface.anchors
    assert anchors is not None
    order = np.argsort(surface.x)
    finite = np.isfinite(values[order])
    if not finite.any():
        return
    at = np.interp(anchors.x, surface.x[order][finite], values[order][finite], left=np.nan, right=np.nan)
    ax.scatter(anchors.x, at, marker="D", s=28, facecolor="white", edgecolor=colour, zorder=4, linewidths=1.2)
    for x, y, text in zip(anchors.x, at, anchors.labels, strict=True):
        if np.isfinite(y):
            ax.annotate(plain(text), (x, y), textcoords="offset points", xytext=(4, 6), fontsize=7)


# ----------------------------------------------------------------------------------------------- 2D


@styled
def figure_2d(surface: Surface, kind: str, name: str | None = None, scale: ColourScale | None = None) -> Figure:
    """One 2D figure (`kind` in KINDS_2D) of the dataset `name` (default: the primary loss)."""
    if kind not in KINDS_2D:
        raise LandscapeError(f"unknown figure kind '{kind}'; choose one of {', '.join(KINDS_2D)} or all")
    if surface.y is None:
        raise LandscapeError(f"{surface.path} is a 1D surface; drop --2d")
    scale = scale or ColourScale()
    scale.validate()
    name = name or surface.primary()
    xx, yy, z = grid_xyz(surface.x, surface.y, surface.values(name))
    if scale.log:
        check_positive(surface, name, z)
    lo, hi = scale.limits(z)
    if kind == "3d":
        return _figure_3d(surface, name, xx, yy, z, scale, lo, hi)
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.subplots()
    _draw_2d(fig, ax, surface, kind, name, xx, yy, z, scale, lo, hi)
    fig.tight_layout()
    legend_below(ax)
    return fig


def _draw_2d(
    fig: Figure,
    ax: Axes,
    surface: Surface,
    kind: str,
    name: str,
    xx: np.ndarray,
    yy: np.ndarray,
    z: np.ndarray,
    scale: ColourScale,
    lo: float,
    hi: float,
) -> None:
    masked = np.ma.masked_invalid(z)
    norm = scale.norm(lo, hi)
    label = quantity_label(name) + (" (log scale)" if scale.log else "")
    if kind == "heatmap":
        # 'nearest' puts each cell's centre on its grid point, for any spacing and any grid shape.
        mappable = ax.pcolormesh(xx, yy, masked, shading="nearest", cmap=CMAP, norm=norm, rasterized=True)
    else:
        levels = scale.level_values(lo, hi)
        if kind == "filled":
            mappable = ax.contourf(xx, yy, masked, levels=levels, cmap=CMAP, norm=norm, extend=_extend(z, lo, hi))
        else:
            # The lines at the round levels (lo and hi are only the ends of the colour range).
            lines = levels if scale.log else levels[1:-1]
            mappable = ax.contour(xx, yy, masked, levels=lines, cmap=LINE_CMAP, norm=norm, linewidths=0.9)
            labelled = mappable.levels[:: max(1, len(mappable.levels) // 8)]
            ax.clabel(mappable, labelled, inline=True, fontsize=6.5, fmt=lambda v: f"{v:.3g}")
    _set_aspect(ax, surface)
    # A colour bar as tall as the axes, whatever their aspect.
    cax = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.12)
    bar = fig.colorbar(mappable, cax=cax, label=label)
    if scale.log:
        ticks = log_ticks(lo, hi, 7)
        bar.ax.minorticks_off()
        bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
    else:
        bar.set_ticks([t for t in MaxNLocator(nbins=6).tick_values(lo, hi) if lo <= t <= hi])
    _overlays(ax, surface)
    if kind == "heatmap":
        ax.set_xlim(*_edges(surface.x))
        ax.set_ylim(*_edges(surface.y))
    else:
        ax.set_xlim(surface.x.min(), surface.x.max())
        ax.set_ylim(surface.y.min(), surface.y.max())
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.set_xlabel(surface.axis_label(1))
    ax.set_ylabel(surface.axis_label(2))
    ax.set_title(f"{quantity_label(name)} around {source_name(surface.attrs, surface.path)}")


def _set_aspect(ax: Axes, surface: Surface) -> None:
    """Equal units on both axes when the ranges are comparable (same-scale directions look true)."""
    assert surface.y is not None
    x_span, y_span = np.ptp(surface.x), np.ptp(surface.y)
    if x_span > 0 and y_span > 0 and 1 / 3 <= x_span / y_span <= 3:
        ax.set_aspect("equal", adjustable="box")


def _extend(z: np.ndarray, lo: float, hi: float) -> str:
    below, above = bool(np.nanmin(z) < lo), bool(np.nanmax(z) > hi)
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get((below, above), "neither")


def _edges(c: np.ndarray) -> tuple[float, float]:
    """The outer edges of the cells centred on coordinates c."""
    if len(c) == 1:
        return float(c[0]) - 0.5, float(c[0]) + 0.5
    c = np.sort(c)
    return float(c[0] - (c[1] - c[0]) / 2), float(c[-1] + (c[-1] - c[-2]) / 2)


def _overlays(ax: Axes, surface: Surface) -> None:
    """The centre, the PCA trajectory with its start and end, and the interpolation's checkpoints."""
    t = surface.trajectory
    if t is not None and len(t.x):
        ax.plot(t.x, t.y, "-", marker=".", ms=4, color="tab:red", lw=1.3, zorder=5, label="trajectory")
        first = f"start (step {t.step[0]:.0f})" if t.step is not None and len(t.step) else "start"
        last = f"end (step {t.step[-1]:.0f})" if t.step is not None and len(t.step) else "end"
        ax.plot(t.x[0], t.y[0], ls="none", marker="o", ms=7, color="tab:orange", mec="black", zorder=7, label=first)
        # the end is usually the centre: a square larger than the star, so both show
        ax.plot(t.x[-1], t.y[-1], ls="none", marker="s", ms=12, color="tab:red", mec="black", zorder=7, label=last)
    ax.plot(0, 0, ls="none", marker="*", ms=11, color="white", mec="black", mew=0.9, zorder=8, label="centre")
    a = surface.anchors
    if a is not None and len(a.x):
        ax.scatter(a.x, a.y, marker="D", s=34, c="white", edgecolors="black", zorder=7, label="checkpoints")
        for x, y, text in zip(a.x, a.y, a.labels, strict=True):
            ax.annotate(
                plain(text),
                (x, y),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=8,
                zorder=8,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.75},
            )


def _figure_3d(
    surface: Surface,
    name: str,
    xx: np.ndarray,
    yy: np.ndarray,
    z: np.ndarray,
    scale: ColourScale,
    lo: float,
    hi: float,
) -> Figure:
    """The surface in 3D; with --log the height is log10 of the value, and --vmin/--vmax clip it."""
    if scale.log:
        z, lo, hi = np.log10(z), np.log10(lo), np.log10(hi)
        label = f"log10 {quantity_label(name)}"
    else:
        label = quantity_label(name)
    height = np.clip(z, lo, hi)  # NaN stays NaN: its quads are not drawn
    fig = Figure(figsize=(5.0, 4.4))
    ax = fig.add_subplot(projection="3d")
    ax.computed_zorder = False  # markers on top of the surface, which is seen from above
    ax.plot_surface(
        xx,
        yy,
        height,
        cmap=CMAP,
        norm=Normalize(lo, hi),
        rcount=min(len(surface.y), 150),
        ccount=min(len(surface.x), 150),
        linewidth=0,
        antialiased=True,
        zorder=1,
    )
    lift = _lifter(surface.x, surface.y, height)
    t = surface.trajectory
    if t is not None and len(t.x):
        tz = [lift(px, py) for px, py in zip(t.x, t.y, strict=True)]
        ax.plot(t.x, t.y, tz, "-", marker=".", ms=4, color="tab:red", lw=1.5, zorder=4, label="trajectory")
    a = surface.anchors
    if a is not None:
        for px, py, text in zip(a.x, a.y, a.labels, strict=True):
            pz = lift(px, py)
            ax.scatter([px], [py], [pz], marker="D", s=30, c="white", edgecolors="black", depthshade=False,
                       zorder=5)  # fmt: skip
            ax.text(px, py, pz, f"  {plain(text)}", fontsize=7, zorder=6)
    ax.scatter([0], [0], [lift(0.0, 0.0)], marker="*", s=140, c="white", edgecolors="black", depthshade=False,
               zorder=6, label="centre")  # fmt: skip
    ax.set_zlim(lo, hi)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):  # few ticks: tick labels of a tilted axis run together otherwise
        axis.set_major_locator(MaxNLocator(nbins=4))
    ax.tick_params(labelsize=7, pad=1)
    ax.set_xlabel(surface.axis_label(1), labelpad=2)
    ax.set_ylabel(surface.axis_label(2), labelpad=2)
    ax.set_zlabel(label, labelpad=2)
    ax.set_title(f"{quantity_label(name)} around {source_name(surface.attrs, surface.path)}")
    ax.view_init(elev=30, azim=-60)
    return fig


def _lifter(x: np.ndarray, y: np.ndarray, z: np.ndarray):
    """Height of the surface at a point (bilinear), NaN off the grid or where the grid is not ascending."""
    if len(x) < 2 or len(y) < 2 or np.any(np.diff(x) <= 0) or np.any(np.diff(y) <= 0):
        return lambda px, py: np.nan
    interp = RegularGridInterpolator((y, x), z, bounds_error=False, fill_value=np.nan)
    return lambda px, py: float(interp([[py, px]])[0])
