"""A surface file read into arrays laid out one way: row i is ycoordinates[i], column j is xcoordinates[j]."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import LandscapeError
from ..hdf5 import open_results, read_attrs
from .inputs import SURFACE
from .style import plain

#: The order in which the primary loss is looked for when the file does not name its splits.
SPLITS = ("train", "test", "all")
#: What Li et al.'s code stores at points it has not evaluated yet.
LI_UNFILLED = -1.0


@dataclass
class Trajectory:
    """A training run's checkpoints projected onto the surface's plane (PCA directions)."""

    x: np.ndarray
    y: np.ndarray
    step: np.ndarray | None
    explained_variance: list[float] | None


@dataclass
class Anchors:
    """Checkpoints that lie on the line or plane of an interpolation surface."""

    x: np.ndarray
    y: np.ndarray
    labels: list[str]


@dataclass
class Surface:
    path: Path
    attrs: dict[str, Any]
    x: np.ndarray
    y: np.ndarray | None
    #: Every `*_loss` and `*_acc` root dataset: shape (len(y), len(x)) in 2D, (len(x),) in 1D; NaN where
    #: the value is missing or was not finite.
    data: dict[str, np.ndarray]
    directions: list[dict[str, Any]] = field(default_factory=list)
    trajectory: Trajectory | None = None
    anchors: Anchors | None = None
    #: The y of the row a 1D view of a 2D surface was cut at (None: not a cut).
    cut_at: float | None = None

    @property
    def dims(self) -> int:
        return 1 if self.y is None else 2

    def primary(self) -> str:
        """The primary split's loss: the first split the file names, else the first of train, test, all."""
        splits = _json_list(self.attrs.get("splits")) or []
        for split in [*splits, *SPLITS]:
            if f"{split}_loss" in self.data:
                return f"{split}_loss"
        losses = self.losses()
        return losses[0] if losses else next(iter(self.data))

    def losses(self) -> list[str]:
        """The loss datasets, primary split first."""
        splits = _json_list(self.attrs.get("splits")) or []
        order = [f"{s}_loss" for s in [*splits, *SPLITS]]
        names = [n for n in self.data if n.endswith("_loss")]
        return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))

    def values(self, name: str) -> np.ndarray:
        if name not in self.data:
            have = ", ".join(sorted(self.data)) or "none"
            raise LandscapeError(f"{self.path} has no dataset '{name}' (it has: {have})")
        return self.data[name]

    def axis_label(self, i: int) -> str:
        """The words for direction i (1 or 2), from the directions' attributes where the file has them."""
        attrs = self.directions[i - 1] if len(self.directions) >= i else {}
        kind = attrs.get("kind") or self.attrs.get("directions_kind")
        if kind == "pca":
            ratio = attrs.get("explained_variance_ratio")
            if ratio is None and self.trajectory is not None and self.trajectory.explained_variance:
                ratio = self.trajectory.explained_variance[i - 1]
            return f"PC{i} ({100 * float(ratio):.1f}%)" if ratio is not None else f"PC{i}"
        if kind == "eigen":
            value = attrs.get("eigenvalue")
            return f"Hessian eigenvector {i}" + (f" (λ = {float(value):.4g})" if value is not None else "")
        if kind == "interp":
            source = attrs.get("source")
            return f"direction {i} (towards {plain(Path(source).name)})" if source else f"direction {i} (interpolation)"
        words = []
        if kind == "file":
            source = attrs.get("source")
            words.append(f"from {plain(Path(source).name)}" if source else "from a file")
        norm = attrs.get("norm")
        if norm in ("filter", "layer"):
            words.append(f"{norm}-normalized")
        elif norm == "none":
            words.append("not normalized")
        return f"direction {i}" + (f" ({', '.join(words)})" if words else "")

    def cut_at_zero(self) -> Surface:
        """The 1D surface along x through the row nearest y = 0, with the anchors that lie on that row."""
        if self.y is None:
            return self
        row = int(np.argmin(np.abs(self.y)))
        y0 = float(self.y[row])
        if abs(y0) <= 1e-9 * float(np.ptp(self.y)):
            y0 = 0.0  # linspace's rounding: -1.1e-16 is the zero row
        anchors = None
        if self.anchors is not None:
            tol = 0.5 * float(np.min(np.abs(np.diff(self.y)))) if len(self.y) > 1 else np.inf
            on_row = np.abs(self.anchors.y - y0) <= tol
            if on_row.any():
                labels = [label for label, keep in zip(self.anchors.labels, on_row, strict=True) if keep]
                anchors = Anchors(self.anchors.x[on_row], np.full(int(on_row.sum()), y0), labels)
        data = {name: values[row].copy() for name, values in self.data.items()}
        return replace(self, y=None, data=data, trajectory=None, anchors=anchors, cut_at=y0)


def grid_xyz(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X, Y, Z of shape (len(y), len(x)) with Z[i, j] the value at (x[j], y[i]): what matplotlib expects."""
    z = np.asarray(z, dtype=np.float64)
    if z.shape != (len(y), len(x)):
        raise ValueError(f"values of shape {z.shape} do not match the grid (len(y), len(x)) = ({len(y)}, {len(x)})")
    xx, yy = np.meshgrid(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return xx, yy, z


def load_surface(path: Path) -> Surface:
    """Read a surface file (ours, or one from Li et al.'s code) without computing anything."""
    with open_results(path) as f:
        attrs = read_attrs(f)
        ours = attrs.get("kind") == SURFACE
        if not isinstance(f.get("xcoordinates"), h5py.Dataset):
            raise LandscapeError(f"{path} has no xcoordinates dataset: not a surface file")
        x = _vector(f, "xcoordinates", path)
        y = _vector(f, "ycoordinates", path) if isinstance(f.get("ycoordinates"), h5py.Dataset) else None
        data = {}
        for name in f:
            if (name.endswith("_loss") or name.endswith("_acc")) and isinstance(f[name], h5py.Dataset):
                data[name] = _arrange(f[name][()], x, y, name, path, ours)
        if not data:
            raise LandscapeError(f"{path} holds no *_loss or *_acc dataset: nothing to plot")
        directions = [read_attrs(f[f"directions/{d}"]) if f"directions/{d}" in f else {} for d in ("d1", "d2")]
        trajectory = _trajectory(f["trajectory"]) if isinstance(f.get("trajectory"), h5py.Group) else None
        anchors = _anchors(f["anchors"]) if isinstance(f.get("anchors"), h5py.Group) else None
    return Surface(path, attrs, x, y, data, directions, trajectory, anchors)


def _vector(f: h5py.File, name: str, path: Path) -> np.ndarray:
    values = np.asarray(f[name][()], dtype=np.float64)
    if values.ndim != 1 or len(values) == 0 or not np.all(np.isfinite(values)):
        raise LandscapeError(f"{path}: {name} must be a non-empty vector of finite numbers")
    return values


def _arrange(values: np.ndarray, x: np.ndarray, y: np.ndarray | None, name: str, path: Path, ours: bool) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    expected = (len(x),) if y is None else (len(y), len(x))
    if values.shape != expected and not ours and y is not None and values.shape == (len(x), len(y)):
        # Li et al.'s code allocates (len(x), len(y)) but fills it through the flat index of
        # meshgrid(x, y), whose order is (len(y), len(x)): reading the flat order back restores the grid.
        values = values.reshape(expected)
    if values.shape != expected:
        what = "(len(xcoordinates),)" if y is None else "(len(ycoordinates), len(xcoordinates))"
        raise LandscapeError(f"{path}: {name} has shape {values.shape}, expected {what} = {expected}")
    if not ours:
        values = np.where(values == LI_UNFILLED, np.nan, values)
    return np.where(np.isfinite(values), values, np.nan)


def _trajectory(g: h5py.Group) -> Trajectory | None:
    if "x" not in g or "y" not in g:
        return None
    ratio = _json_list(read_attrs(g).get("explained_variance_ratio"))
    step = np.asarray(g["step"][()], dtype=np.float64) if "step" in g else None
    return Trajectory(np.asarray(g["x"][()], np.float64), np.asarray(g["y"][()], np.float64), step, ratio)


def _anchors(g: h5py.Group) -> Anchors | None:
    if "x" not in g:
        return None
    x = np.asarray(g["x"][()], dtype=np.float64)
    y = np.asarray(g["y"][()], dtype=np.float64) if "y" in g else np.zeros_like(x)
    raw = g["label"][()] if "label" in g else [f"#{i}" for i in range(len(x))]
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
    return Anchors(x, y, labels)


def _json_list(value: Any) -> list[Any] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return list(value) if isinstance(value, list | tuple) else None
