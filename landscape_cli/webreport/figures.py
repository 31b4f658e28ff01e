"""Plotly figures as plain JSON-ready dicts ({"data": [...], "layout": {...}}), built from what collect.py
read. Nothing is recomputed except the edge of stability of a training log (from its own columns)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import LandscapeError
from ..plotting.surface_data import Surface
from ..plotting.trainlog import TrainLogData

Figure = dict[str, Any]
#: One colour per run, the same in every figure of the report.
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
BASE_LAYOUT: dict[str, Any] = {
    "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "legend": {"orientation": "h", "y": -0.18},
    "template": None,
    "plot_bgcolor": "white",
}


def colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def values(array: Any) -> list[Any]:
    """An array as nested lists, non-finite values as None (JSON null: a gap in the plot)."""
    a = np.asarray(array, dtype=np.float64)
    if a.ndim == 0:
        return [None if not math.isfinite(float(a)) else float(a)]
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out.tolist()


def _layout(title: str, **extra: Any) -> dict[str, Any]:
    grid = {"gridcolor": "#e5e5e5", "zeroline": False, "showline": True, "linecolor": "#444"}
    layout = {**BASE_LAYOUT, "title": {"text": title, "x": 0.02}, "xaxis": dict(grid), "yaxis": dict(grid)}
    for key, value in extra.items():
        layout[key] = {**layout[key], **value} if isinstance(value, dict) and isinstance(layout.get(key), dict) \
            else value  # fmt: skip
    return layout


# -- surfaces ---------------------------------------------------------------------------------------------
def surface_3d(surface: Surface, title: str) -> Figure:
    """The primary loss as a rotatable surface (row i of z is y[i])."""
    name = surface.primary()
    z = surface.values(name)
    trace = {"type": "surface", "x": values(surface.x), "y": values(surface.y), "z": values(z), "name": name,
             "colorscale": "Viridis", "colorbar": {"title": {"text": name}, "len": 0.8},
             "contours": {"z": {"show": True, "usecolormap": True, "project": {"z": True}, "width": 1}}}  # fmt: skip
    scene = {"xaxis": {"title": {"text": surface.axis_label(1)}}, "yaxis": {"title": {"text": surface.axis_label(2)}},
             "zaxis": {"title": {"text": name}}, "camera": {"eye": {"x": 1.5, "y": -1.5, "z": 0.9}}}  # fmt: skip
    return {"data": [trace], "layout": {**_layout(title), "scene": scene, "height": 520}}


def surface_contour(surface: Surface, title: str) -> Figure:
    """Contours of the primary loss with the PCA trajectory (with its steps) and the interpolation anchors."""
    name = surface.primary()
    data: list[dict[str, Any]] = [
        {
            "type": "contour",
            "x": values(surface.x),
            "y": values(surface.y),
            "z": values(surface.values(name)),
            "name": name,
            "colorscale": "Viridis",
            "ncontours": 30,
            "colorbar": {"title": {"text": name}},
            "contours": {"coloring": "heatmap", "showlabels": True},
            "line": {"width": 0.5},
        }  # fmt: skip
    ]
    if surface.trajectory is not None:
        t = surface.trajectory
        text = [f"step {int(s)}" for s in t.step] if t.step is not None else None
        data.append({"type": "scatter", "mode": "lines+markers", "x": values(t.x), "y": values(t.y), "text": text,
                     "name": "trajectory (PCA)", "line": {"color": "white", "width": 2},
                     "marker": {"color": "#d62728", "size": 6}})  # fmt: skip
    if surface.anchors is not None:
        a = surface.anchors
        data.append({"type": "scatter", "mode": "markers+text", "x": values(a.x), "y": values(a.y), "text": a.labels,
                     "textposition": "top center", "name": "interpolation anchors",
                     "marker": {"color": "white", "size": 10, "symbol": "star", "line": {"color": "black", "width": 1}},
                     "textfont": {"color": "white"}})  # fmt: skip
    layout = _layout(title, xaxis={"title": {"text": surface.axis_label(1)}},
                     yaxis={"title": {"text": surface.axis_label(2)}, "scaleanchor": "x"})  # fmt: skip
    return {"data": data, "layout": {**layout, "height": 520}}


def surfaces_1d(surfaces: Sequence[tuple[str, int, Surface]], title: str) -> Figure:
    """1D surfaces (and the y = 0 cut of 2D ones) on shared axes: every loss split of each, colour `i` for each
    (one per run), the primary split solid."""
    data = []
    for label, i, surface in surfaces:
        line = surface.cut_at_zero() if surface.dims == 2 else surface
        for name in line.losses():
            primary = name == line.primary()
            data.append({"type": "scatter", "mode": "lines", "x": values(line.x), "y": values(line.values(name)),
                         "name": f"{label}: {name}", "legendgroup": label,
                         "line": {"color": colour(i), "dash": "solid" if primary else "dash"}})  # fmt: skip
        if line.anchors is not None:
            y = np.interp(line.anchors.x, line.x, line.values(line.primary()))
            data.append({"type": "scatter", "mode": "markers+text", "x": values(line.anchors.x), "y": values(y),
                         "text": line.anchors.labels, "textposition": "top center", "showlegend": False,
                         "marker": {"color": colour(i), "size": 9, "symbol": "star"}})  # fmt: skip
    first = surfaces[0][2]
    return {"data": data, "layout": {**_layout(title, xaxis={"title": {"text": first.axis_label(1)}},
                                               yaxis={"title": {"text": "loss"}}), "height": 420}}  # fmt: skip


# -- spectra ----------------------------------------------------------------------------------------------
def spectrum_eigenvalues(spectra: Sequence[tuple[str, dict[str, Any]]], title: str) -> Figure:
    """Top and bottom eigenvalues with their Lanczos error bounds as error bars, one colour per source."""
    data = []
    for i, (label, spec) in enumerate(spectra):
        for which, symbol in (("top", "circle"), ("bottom", "diamond")):
            part = spec.get(which)
            if part is None:
                continue
            k = len(part["eigenvalues"])
            data.append({"type": "scatter", "mode": "markers", "x": [f"{which} {j + 1}" for j in range(k)],
                         "y": values(part["eigenvalues"]), "name": f"{label}: {which}", "legendgroup": label,
                         "error_y": {"type": "data", "array": values(part["error_bounds"]), "visible": True},
                         "marker": {"color": colour(i), "size": 9, "symbol": symbol}})  # fmt: skip
    layout = _layout(title, xaxis={"title": {"text": "eigenvalue"}, "type": "category"},
                     yaxis={"title": {"text": "value ± Lanczos bound"}})  # fmt: skip
    return {"data": data, "layout": {**layout, "height": 380}}


def spectrum_density(spectra: Sequence[tuple[str, dict[str, Any]]], title: str) -> Figure:
    """SLQ spectral densities on a log scale (zero density is left out: a log axis has no zero)."""
    data = []
    for i, (label, spec) in enumerate(spectra):
        d = spec["density"]
        peak = float(np.nanmax(d["density"])) if len(d["density"]) else 0.0
        # below a millionth of the peak is the Gaussian kernels' tail, not spectrum: left out
        density = np.where(d["density"] > 1e-6 * peak, d["density"], np.nan)
        data.append({"type": "scatter", "mode": "lines", "x": values(d["grid"]), "y": values(density),
                     "name": label, "line": {"color": colour(i)}})  # fmt: skip
    layout = _layout(title, xaxis={"title": {"text": "eigenvalue"}},
                     yaxis={"title": {"text": "density (log scale)"}, "type": "log"})  # fmt: skip
    return {"data": data, "layout": {**layout, "height": 380}}


def spectrum_layers(spec: dict[str, Any], title: str) -> Figure:
    """Per-block top eigenvalues (error bars: Lanczos bounds) and traces (error bars: standard errors)."""
    layers = spec["layers"]
    names = list(layers["names"])
    data = [
        {"type": "bar", "orientation": "h", "y": names, "x": values(layers["top"]), "name": "top eigenvalue",
         "error_x": {"type": "data", "array": values(layers["top_error"])}, "marker": {"color": colour(0)}},
        {"type": "bar", "orientation": "h", "y": names, "x": values(layers["trace"]), "name": "trace",
         "error_x": {"type": "data", "array": values(layers["trace_stderr"])}, "marker": {"color": colour(4)}},
    ]  # fmt: skip
    layout = _layout(title, xaxis={"title": {"text": "value"}, "type": "log"}, yaxis={"automargin": True})
    return {"data": data, "layout": {**layout, "barmode": "group", "height": max(300, 60 + 36 * len(names))}}


# -- training ---------------------------------------------------------------------------------------------
def _rows_layout(title: str, rows: list[str], height_per_row: int = 200) -> dict[str, Any]:
    """Stacked panels, one y axis each, all x axes matched: zooming one zooms all (the step axis is linked)."""
    layout = _layout(title)
    gap = 0.06
    size = (1 - gap * (len(rows) - 1)) / len(rows)
    for r, name in enumerate(rows):
        suffix = "" if r == 0 else str(r + 1)
        top = 1 - r * (size + gap)
        layout[f"yaxis{suffix}"] = {**layout["yaxis"], "domain": [max(top - size, 0), top],
                                    "title": {"text": name}, "anchor": f"x{suffix}"}  # fmt: skip
        layout[f"xaxis{suffix}"] = {**layout["xaxis"], "anchor": f"y{suffix}", "matches": None if r == 0 else "x",
                                    "showticklabels": r == len(rows) - 1}  # fmt: skip
    layout[f"xaxis{'' if len(rows) == 1 else len(rows)}"]["title"] = {"text": "step"}
    layout["hovermode"] = "x unified"
    layout["height"] = 80 + height_per_row * len(rows)
    return layout


def _axes(r: int) -> dict[str, str]:
    suffix = "" if r == 0 else str(r + 1)
    return {"xaxis": f"x{suffix}", "yaxis": f"y{suffix}"}


def _finite(column: Any) -> bool:
    return column is not None and bool(np.isfinite(np.asarray(column, dtype=np.float64)).any())


def training(log: TrainLogData, title: str, edge: tuple[np.ndarray, np.ndarray, str] | None) -> Figure:
    """Loss, accuracy, learning rate and tracked sharpness (with its edge of stability) against the step, in
    panels whose step axes zoom together."""
    train, ev, sharp = log.table("train"), log.table("eval"), log.table("sharpness")
    panels: list[tuple[str, list[dict[str, Any]]]] = []
    loss = []
    if _finite(train.get("loss")):
        loss.append(_line(train["step"], train["loss"], "train loss (mini-batch)", colour(0), width=1, opacity=0.5))
    for split, c in (("train", 0), ("test", 1)):
        if _finite(ev.get(f"{split}_loss")):
            loss.append(_line(ev["step"], ev[f"{split}_loss"], f"{split} loss (full)", colour(c), markers=True))
    if not loss and _finite(sharp.get("loss")):
        loss.append(_line(sharp["step"], sharp["loss"], "loss (tracked samples)", colour(0), markers=True))
    if loss:
        panels.append(("loss", loss))
    accuracy = []
    if _finite(train.get("accuracy")):
        accuracy.append(_line(train["step"], train["accuracy"], "train accuracy (mini-batch)", colour(0), width=1,
                              opacity=0.5))  # fmt: skip
    for split, c in (("train", 0), ("test", 1)):
        if _finite(ev.get(f"{split}_accuracy")):
            accuracy.append(_line(ev["step"], ev[f"{split}_accuracy"], f"{split} accuracy (full)", colour(c),
                                  markers=True))  # fmt: skip
    if accuracy:
        panels.append(("accuracy (%)", accuracy))
    lr_table = train if _finite(train.get("lr")) else sharp
    if _finite(lr_table.get("lr")):
        panels.append(("learning rate", [_line(lr_table["step"], lr_table["lr"], "lr", "#444")]))
    if _finite(sharp.get("top_eigenvalue")):
        panels.append(("top eigenvalue", sharpness_traces(sharp, edge, colour(3))))
    if not panels:
        raise LandscapeError(f"{log.path} holds no logged rows yet")
    layout = _rows_layout(title, [name for name, _ in panels])
    data = [{**trace, **_axes(r)} for r, (_, traces) in enumerate(panels) for trace in traces]
    return {"data": data, "layout": layout}


def sharpness_traces(sharp: dict[str, np.ndarray], edge: tuple[np.ndarray, np.ndarray, str] | None,
                     c: str, label: str = "") -> list[dict[str, Any]]:  # fmt: skip
    """The top eigenvalue with its error band, and the edge of stability (2/lr for GD, SAM's moving edge)."""
    step, top = sharp["step"], sharp["top_eigenvalue"]
    prefix = f"{label}: " if label else ""
    traces = []
    bound = sharp.get("error_bound")
    if _finite(bound):
        band = np.nan_to_num(np.asarray(bound, np.float64))
        traces.append({"type": "scatter", "mode": "lines", "x": values(np.concatenate([step, step[::-1]])),
                       "y": values(np.concatenate([top + band, (top - band)[::-1]])), "fill": "toself",
                       "fillcolor": "rgba(214,39,40,0.2)", "line": {"width": 0}, "hoverinfo": "skip",
                       "name": f"{prefix}error bound", "showlegend": not label})  # fmt: skip
    traces.append(_line(step, top, f"{prefix}top eigenvalue", c, markers=True))
    if edge is not None:
        edge_step, edge_value, rule = edge
        traces.append({**_line(edge_step, edge_value, f"{prefix}{rule} edge", c if label else "black"),
                       "line": {"color": c if label else "black", "dash": "dash", "width": 1.5}})  # fmt: skip
    return traces


def _line(x: Any, y: Any, name: str, c: str, *, markers: bool = False, width: float = 2, opacity: float = 1.0
          ) -> dict[str, Any]:  # fmt: skip
    return {"type": "scatter", "mode": "lines+markers" if markers else "lines", "x": values(x), "y": values(y),
            "name": name, "line": {"color": c, "width": width}, "opacity": opacity, "marker": {"size": 5}}  # fmt: skip


def runs_overlaid(runs: Sequence[tuple[str, TrainLogData, tuple[np.ndarray, np.ndarray, str] | None]],
                  title: str) -> Figure:  # fmt: skip
    """The runs side by side on linked step axes: test (or tracked) loss, test accuracy, tracked sharpness."""
    loss, accuracy, sharpness = [], [], []
    for i, (label, log, edge) in enumerate(runs):
        ev, sharp = log.table("eval"), log.table("sharpness")
        if _finite(ev.get("test_loss")):
            loss.append(_line(ev["step"], ev["test_loss"], f"{label}: test loss", colour(i), markers=True))
        elif _finite(log.table("train").get("loss")):
            train = log.table("train")
            loss.append(_line(train["step"], train["loss"], f"{label}: train loss", colour(i), width=1))
        elif _finite(sharp.get("loss")):
            loss.append(_line(sharp["step"], sharp["loss"], f"{label}: loss (tracked)", colour(i), markers=True))
        if _finite(ev.get("test_accuracy")):
            accuracy.append(_line(ev["step"], ev["test_accuracy"], f"{label}: test accuracy", colour(i), markers=True))
        if _finite(sharp.get("top_eigenvalue")):
            sharpness.extend(t for t in sharpness_traces(sharp, edge, colour(i), label) if t.get("fill") is None)
    panels = [(n, t) for n, t in (("loss", loss), ("accuracy (%)", accuracy), ("top eigenvalue", sharpness)) if t]
    layout = _rows_layout(title, [name for name, _ in panels])
    data = [{**trace, **_axes(r)} for r, (_, traces) in enumerate(panels) for trace in traces]
    return {"data": data, "layout": layout}


def eos_run(data: dict[str, Any], title: str) -> Figure:
    """A run's sharpness against its edge per tracked step (`landscape eos RUN`'s file)."""
    traces = [
        _line(data["step"], data["sharpness"], "sharpness", colour(3), markers=True),
        {**_line(data["step"], data["edge"], "edge", "black"), "line": {"color": "black", "dash": "dash"}},
    ]
    layout = _layout(title, xaxis={"title": {"text": "step"}}, yaxis={"title": {"text": "top eigenvalue"}})
    return {"data": traces, "layout": {**layout, "height": 360}}
