"""Figures of a training log (train.h5): loss, accuracy and sharpness against the step."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..errors import LandscapeError
from ..hdf5 import open_results, read_attrs
from ..text import printable
from .style import styled


@dataclass
class TrainLogData:
    """The tables of a training log, one array per column, and its root attributes."""

    path: Path
    attrs: dict[str, Any]
    config: dict[str, Any]
    tables: dict[str, dict[str, np.ndarray]]

    def table(self, name: str) -> dict[str, np.ndarray]:
        return self.tables.get(name, {})

    def rows(self, name: str) -> int:
        return len(self.table(name).get("step", ()))

    def run_name(self) -> str:
        return self.path.resolve().parent.name or str(self.path)


@dataclass(frozen=True)
class ReferenceCurve:
    """An extra curve on a panel: y against x, or a horizontal line at y when x is None
    (e.g. the edge of stability 2/lr on the sharpness panel)."""

    label: str
    y: float | np.ndarray
    x: np.ndarray | None = None
    style: dict[str, Any] = field(default_factory=dict)

    def draw(self, ax: Axes) -> None:
        style = {"color": "black", "ls": ":", "lw": 1.2, **self.style}
        if self.x is None:
            ax.axhline(float(np.asarray(self.y)), label=self.label, **style)
        else:
            ax.plot(self.x, self.y, label=self.label, **style)


def read_train_log(path: Path) -> TrainLogData:
    """A training log (train.h5), a tracker's HDF5 log, or a tracker's CSV table (its one table, `sharpness`)."""
    if path.suffix.lower() == ".csv":
        return _read_csv_log(path)
    with open_results(path) as f:
        attrs = read_attrs(f)
        tables = {
            name: {column: np.asarray(ds[()], dtype=np.float64) for column, ds in group.items()}
            for name, group in f.items()
            if isinstance(group, h5py.Group) and isinstance(group.get("step"), h5py.Dataset)
        }
    for name, columns in tables.items():
        shapes = {column: values.shape for column, values in columns.items()}
        if len(set(shapes.values())) != 1 or any(len(shape) != 1 for shape in shapes.values()):
            raise LandscapeError(f"{path} is damaged: the columns of its '{name}' table differ in shape ({shapes})")
    try:
        config = json.loads(attrs.get("config", "{}"))
    except (TypeError, json.JSONDecodeError):
        config = {}
    return TrainLogData(path, attrs, config if isinstance(config, dict) else {}, tables)


def _read_csv_log(path: Path) -> TrainLogData:
    """A tracker's CSV table: a header with a `step` column, then numbers (an empty cell is NaN)."""
    try:
        with path.open(newline="") as f:
            lines = list(csv.reader(f))
    except FileNotFoundError:
        raise LandscapeError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LandscapeError(f"{path} is not a readable CSV table ({exc})") from None
    if not lines or "step" not in lines[0]:
        raise LandscapeError(f"{path} is not a sharpness table: its first line names no 'step' column")
    header, rows = lines[0], lines[1:]
    if any(len(row) != len(header) for row in rows):
        raise LandscapeError(f"{path} is damaged: its rows do not all have the header's {len(header)} cells")
    try:
        values = np.array([[float(cell) if cell else np.nan for cell in row] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise LandscapeError(f"{path} holds a cell that is not a number ({exc})") from None
    values = values.reshape(len(rows), len(header))
    table = {column: values[:, i] for i, column in enumerate(header)}
    return TrainLogData(path, {"kind": "sharpness-log"}, {}, {"sharpness": table})


def _finite(values: np.ndarray | None) -> bool:
    return values is not None and bool(np.isfinite(values).any())


def _draw_train_and_eval(ax: Axes, log: TrainLogData, metric: str) -> None:
    """The mini-batch curve of `metric` (thin when full evaluations exist) and the evaluated train and
    test points (`train_<metric>`, `test_<metric>`)."""
    train, ev = log.table("train"), log.table("eval")
    if _finite(train.get(metric)):
        thin = log.rows("eval") > 0
        ax.plot(train["step"], train[metric], lw=0.8 if thin else 1.4, alpha=0.55 if thin else 1.0,
                color="C0", label="train (mini-batch)")  # fmt: skip
    for split, colour, text in (("train", "C0", "train (full)"), ("test", "C1", "test")):
        column = f"{split}_{metric}"
        if _finite(ev.get(column)):
            ax.plot(ev["step"], ev[column], "o-", ms=3.5, lw=1.4, color=colour, label=text)


def draw_loss_panel(ax: Axes, log: TrainLogData, log_scale: bool = False) -> None:
    _draw_train_and_eval(ax, log, "loss")
    if log_scale:
        ax.set_yscale("log")
    ax.set_ylabel("loss" + (" (log scale)" if log_scale else ""))
    ax.set_title("Loss")


def draw_accuracy_panel(ax: Axes, log: TrainLogData) -> None:
    _draw_train_and_eval(ax, log, "accuracy")
    if ax.get_ylim()[1] > 100:  # accuracy is at most 100%; curves that touch it stay whole
        ax.set_ylim(top=100)
        for line in ax.get_lines():
            line.set_clip_on(False)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy")


def draw_sharpness_panel(
    ax: Axes,
    step: np.ndarray,
    eigenvalue: np.ndarray,
    error_bound: np.ndarray | None = None,
    references: Sequence[ReferenceCurve] = (),
) -> None:
    """The top Hessian eigenvalue against the step, its error bound as a band, and extra reference curves."""
    ax.plot(step, eigenvalue, "o-", ms=3.5, lw=1.4, color="C3", label="top eigenvalue")
    if error_bound is not None and _finite(error_bound):
        bound = np.nan_to_num(error_bound, nan=0.0)
        ax.fill_between(step, eigenvalue - bound, eigenvalue + bound, color="C3", alpha=0.25, lw=0,
                        label="error bound")  # fmt: skip
    for reference in references:
        reference.draw(ax)
    ax.set_ylabel("top Hessian eigenvalue")
    ax.set_title("Sharpness")


def has_rows(log: TrainLogData) -> bool:
    return any(log.rows(table) for table in ("train", "eval", "sharpness"))


def has_accuracy(log: TrainLogData) -> bool:
    ev = log.table("eval")
    return any(
        _finite(t) for t in (log.table("train").get("accuracy"), ev.get("train_accuracy"), ev.get("test_accuracy"))
    )


@styled
def train_figure(log: TrainLogData, log_scale: bool = False, references: Sequence[ReferenceCurve] = ()) -> Figure:
    """Panels loss, accuracy (when logged) and sharpness (when tracked), sharing the step axis;
    `references` go on the sharpness panel."""
    if not has_rows(log):
        raise LandscapeError(f"{log.path} holds no logged rows yet: nothing to plot")
    sharp = log.table("sharpness")
    tracked_loss = log.rows("train") == 0 and log.rows("eval") == 0  # a tracker's log: the loss it measured
    panels = (["loss"] if not tracked_loss or _finite(sharp.get("loss")) else []) + \
        (["accuracy"] if has_accuracy(log) else []) + (["sharpness"] if log.rows("sharpness") else [])  # fmt: skip
    fig = Figure(figsize=(2.4 * len(panels), 2.9))
    axes = fig.subplots(1, len(panels), sharex=True, squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "loss" and tracked_loss:
            ax.plot(sharp["step"], sharp["loss"], "o-", ms=3.5, lw=1.4, color="C0", label="loss (tracked samples)")
            ax.set_yscale("log" if log_scale else "linear")
            ax.set_ylabel("loss" + (" (log scale)" if log_scale else ""))
            ax.set_title("Loss")
        elif panel == "loss":
            draw_loss_panel(ax, log, log_scale)
        elif panel == "accuracy":
            draw_accuracy_panel(ax, log)
        else:
            draw_sharpness_panel(ax, sharp["step"], sharp["top_eigenvalue"], sharp.get("error_bound"), references)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
    # one legend for all panels, under them: the loss and accuracy panels share their curves' names
    seen: dict[str, object] = {}
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(name, handle)
    fig.suptitle(_title(log))
    fig.tight_layout()
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=min(len(seen), 6), frameon=False)
        fig.subplots_adjust(bottom=0.3)
    return fig


def _title(log: TrainLogData) -> str:
    """'Training run ssam: ssam (sgd), lr = 0.1, momentum 0.9, rho = 0.05, weight decay 5e-4, batch 64, mlp'."""
    c = log.config
    details = []
    if c.get("opt"):
        details.append(str(c["opt"]) + (f" ({c['base']})" if c.get("opt") != "sgd" and c.get("base") else ""))
    for key, text in (("lr", "lr = {}"), ("momentum", "momentum {}"), ("rho", "rho = {}"),
                      ("weight_decay", "weight decay {}")):  # fmt: skip
        value = c.get(key)
        if key == "rho" and c.get("opt") in (None, "sgd"):
            continue
        if value is not None and not (key in ("momentum", "weight_decay") and value == 0):
            details.append(text.format(_number(value)))
    if "batch_size" in c and c["batch_size"] is None:
        details.append("full batch")
    elif c.get("batch_size"):
        details.append(f"batch {c['batch_size']}")
    model = c.get("model")
    if isinstance(model, dict) and model.get("name"):
        details.append(str(model["name"]))
    name = (
        f"Sharpness log {log.path.stem}"
        if log.attrs.get("kind") == "sharpness-log"
        else f"Training run {log.run_name()}"
    )
    title = name + (": " + ", ".join(details) if details else "")
    return printable(title)


def _number(value: object) -> str:
    """A recorded hyper-parameter as text: numbers compactly, anything else (a damaged log) as it is."""
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


#: The edge is drawn when it lies within this factor of the largest tracked sharpness.
EDGE_OFF_SCALE = 5.0


def edge_references(log: TrainLogData) -> list[ReferenceCurve]:
    """The edge of stability of the run's optimizer on the sharpness panel, in the manner of Cohen et
    al.'s Figure 1: a line where it is constant (2/lr for GD), a curve where it moves (SAM's edge with
    the logged gradient norm, any edge under a schedule). None when no formula applies, or when the edge
    is more than EDGE_OFF_SCALE times the largest sharpness."""
    from ..eos.run import run_edges

    if not log.rows("sharpness"):
        return []
    try:
        edges = run_edges(log.path, {})
    except LandscapeError:
        recorded = log.table("sharpness").get("edge")  # a tracker's CSV table records the edge it computed
        if not _finite(recorded):
            return []
        return [ReferenceCurve("edge of stability", recorded, log.table("sharpness")["step"],
                               style={"color": "black", "ls": "--"})]  # fmt: skip
    if np.nanmin(edges.edge) > EDGE_OFF_SCALE * np.nanmax(edges.sharpness):
        return []  # e.g. mini-batch SGD far from its full-batch edge: the line would flatten the curve
    rule = edges.setting.rule()
    label = {"gd": "2 / lr", "ssam": "SSAM edge (2 / lr)", "sam": "SAM edge", "usam": "USAM edge"}.get(
        rule, f"{rule} edge"
    )
    if np.allclose(edges.edge, edges.edge[0], rtol=1e-12):
        return [ReferenceCurve(label, float(edges.edge[0]), style={"color": "black", "ls": "--"})]
    return [ReferenceCurve(label, edges.edge, edges.step, style={"color": "black", "ls": "--"})]
