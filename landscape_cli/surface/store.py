"""The surface file on disk, and the partial sweep a stopped run leaves behind.

A sweep in progress is two files beside the output: `<out>.partial`, an HDF5 header written once
and atomically at the start (config, coordinates, directions, trajectory), and
`<out>.partial.points`, an append-only journal of finished points: fixed-size binary records
written with one `os.write` each. A process killed at any instant (kill -9 included) leaves at
worst a torn last record, which is dropped on resume; HDF5 itself is never open for writing
while points are computed, so it cannot be left corrupt. The finished file is the header plus
the arrays, renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import LandscapeError
from ..hdf5 import open_results, read_attrs
from ..problem import ParamLayout
from .directions import Direction, Trajectory
from .grid import Grid

PARTIAL_KIND = "surface-partial"
#: Journal record index that stores the evaluation method chosen by the first run (value 0 =
#: points per pass), so that a resumed sweep computes the rest exactly as an unbroken one would.
METHOD_RECORD = -1
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def partial_paths(out: Path) -> tuple[Path, Path]:
    return out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.points")


def check_partial_files(out: Path, inputs: list[Path]) -> None:
    """The partial files are ours: refuse a link, a directory or anything but a regular file where one
    should be (writing through a planted link would truncate its target), and an input of the command."""
    for path in partial_paths(out):
        if path.is_symlink():
            raise LandscapeError(f"{path} is a symbolic link where landscape keeps a partial sweep; remove it")
        if path.exists() and not path.is_file():
            raise LandscapeError(f"{path} is not a regular file, but landscape keeps a partial sweep there; remove it")
        for source in inputs:
            if path.exists() and source.exists() and os.path.samefile(path, source):
                raise LandscapeError(f"{path} is one of the inputs; choose another --out")


def remove_partial(out: Path) -> None:
    for path in partial_paths(out):
        if path.is_file() and not path.is_symlink():
            path.unlink()


def _set_attrs(obj: h5py.HLObject, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        if value is None:
            continue
        obj.attrs[key] = json.dumps(value) if isinstance(value, dict | list | tuple) else value


def write_header(
    path: Path,
    *,
    grid: Grid,
    config: dict[str, Any],
    attrs: dict[str, Any],
    directions: list[Direction],
    layout: ParamLayout,
    trajectory: Trajectory | None,
    anchors: list[tuple[str, float, float]],
) -> None:
    """Everything the finished file holds except the sweep's values, written atomically."""
    with atomic_path(path, overwrite=True) as tmp, h5py.File(tmp, "w") as f:
        _set_attrs(f, {**attrs, "kind": PARTIAL_KIND, "config": config, "dims": grid.dims})
        f.attrs["array_shape"] = "(len(xcoordinates),)" if grid.y is None else "(len(ycoordinates), len(xcoordinates))"
        f["xcoordinates"] = grid.x.coordinates
        if grid.y is not None:
            f["ycoordinates"] = grid.y.coordinates
        for i, direction in enumerate(directions, start=1):
            g = f.create_group(f"directions/d{i}")
            vector = direction.vector.detach().cpu()
            _set_attrs(g, {**direction.attrs, "l2_norm": float(vector.double().norm())})
            for name, tensor in layout.unflatten(vector).items():
                g[name] = tensor.numpy()
            for name, delta in direction.buffers.items():
                g[f"buffers/{name}"] = delta.detach().cpu().numpy()
        if trajectory is not None:
            g = f.create_group("trajectory")
            g["x"], g["y"], g["step"] = trajectory.x, trajectory.y, trajectory.step
            _set_attrs(g, {"explained_variance_ratio": trajectory.explained_variance_ratio})
        if anchors:
            g = f.create_group("anchors")
            g["label"] = np.array([a[0] for a in anchors], dtype=h5py.string_dtype())
            g["x"] = np.array([a[1] for a in anchors])
            g["y"] = np.array([a[2] for a in anchors])


def read_header_config(path: Path) -> dict[str, Any]:
    with open_results(path) as f:
        attrs = read_attrs(f)
    if attrs.get("kind") != PARTIAL_KIND:
        raise LandscapeError(f"{path} is not a partial surface sweep")
    return json.loads(attrs["config"])


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between the config a partial sweep was made with and this one."""
    out = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            out.append(f"{key} was {_show(old.get(key))}, now {_show(new.get(key))}")
    return out


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:28] + "..." + text[-28:]


class Journal:
    """Append-only fixed-size records (index, values...) of finished grid points.

    Under torchrun only rank 0 writes (`writer=False` elsewhere: the other ranks compute the same points and
    keep them in memory), so one journal serves a resume with any number of ranks."""

    def __init__(self, path: Path, width: int, writer: bool = True) -> None:
        self.path = path
        self.width = width
        self.writer = writer
        self.dtype = np.dtype([("index", "<i8"), ("values", "<f8", (width,))])
        self._fd: int | None = None

    def create(self) -> None:
        """A new, empty journal: created exclusively, never through a link someone planted."""
        if not self.writer:
            return
        if self.path.is_file() and not self.path.is_symlink():
            self.path.unlink()  # a stopped sweep's, which the caller was allowed to replace
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
        os.close(fd)

    def read(self) -> tuple[dict[int, np.ndarray], int | None]:
        """Finished points by index, and the recorded points per pass; a torn last record is cut off.

        Points journaled before the method record are the calibration's (auto mode times both methods
        on the first points and keeps their values). If the run stopped before it recorded its choice,
        they are dropped, so that the resumed run calibrates on the same points as an unbroken one and
        computes every point the same way."""
        if not self.path.is_file() or self.path.is_symlink():
            raise LandscapeError(
                f"the journal {self.path} of the partial sweep is missing; start over with --overwrite"
            )
        fd = os.open(self.path, os.O_RDWR | _NOFOLLOW)
        try:
            raw = b""
            while chunk := os.read(fd, 1 << 24):
                raw += chunk
            whole = len(raw) - len(raw) % self.dtype.itemsize
            if whole != len(raw):
                os.ftruncate(fd, whole)
        finally:
            os.close(fd)
        records = np.frombuffer(raw[:whole], dtype=self.dtype)
        done: dict[int, np.ndarray] = {}
        method: int | None = None
        for index, values in zip(records["index"], records["values"], strict=True):
            if index == METHOD_RECORD:
                method = int(values[0])
            elif 0 <= index:
                done[int(index)] = values.copy()
        if method is None:
            done = {}
        return done, method

    def append(self, indices: np.ndarray, values: np.ndarray) -> None:
        if not self.writer:
            return
        records = np.empty(len(indices), dtype=self.dtype)
        records["index"] = indices
        records["values"] = values
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | _NOFOLLOW)
        data = records.tobytes()
        while data:  # one write on any sane file system; loop in case of a short write
            written = os.write(self._fd, data)
            data = data[written:]

    def record_method(self, points_per_pass: int) -> None:
        values = np.zeros((1, self.width))
        values[0, 0] = points_per_pass
        self.append(np.array([METHOD_RECORD]), values)

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None


def finish(
    header: Path,
    out: Path,
    arrays: dict[str, np.ndarray],
    summary: dict[str, Any],
    attrs: dict[str, Any],
    overwrite: bool,
) -> None:
    """Header + arrays + summary -> `out`, atomically; then the partial files go."""
    with atomic_path(out, overwrite=overwrite) as tmp:
        shutil.copyfile(header, tmp)
        with h5py.File(tmp, "a") as f:
            f.attrs["kind"] = "surface"
            _set_attrs(f, attrs)
            for name, array in arrays.items():
                f[name] = array
            _set_attrs(f.create_group("summary"), summary)
    journal = partial_paths(out)[1]
    header.unlink(missing_ok=True)
    journal.unlink(missing_ok=True)
