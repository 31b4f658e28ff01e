"""Where rows of numbers go while a run is under way: an HDF5 log (the native format every command reads),
CSV tables and TensorBoard event files. Each is appended row by row and flushed, so a crash loses at most
a row, and each can be cut back to the rows a checkpoint recorded when a run resumes."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import LandscapeError


def _create_exclusively(path: Path) -> None:
    """Create `path` afresh and exclusively: never written through a link someone planted."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666))


def _refuse_non_file(path: Path, what: str) -> None:
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise LandscapeError(f"{path} is not a regular file; landscape keeps the {what} there")


class TableLog:
    """One resizable float64 dataset per column, in one HDF5 group per table; every table's first column is
    `step`. A missing value is NaN."""

    def __init__(
        self,
        path: Path,
        attrs: Mapping[str, Any],
        tables: Mapping[str, tuple[str, ...]],
        resume: dict[str, int] | int | None = None,
        what: str = "log",
    ) -> None:
        """A new log, or (`resume`) the existing one cut back to the checkpoint being resumed: to the row
        count of each table it records, or for older checkpoints to the rows up to its step."""
        self.path, self.tables, self.what = path, dict(tables), what
        _refuse_non_file(path, what)
        fresh = resume is None or not path.exists()
        if fresh:
            _create_exclusively(path)
        try:
            self.file = h5py.File(path, "r+" if not fresh else "w")
        except OSError as exc:
            raise LandscapeError(f"{path} is not a readable {what} ({str(exc).splitlines()[0]})") from None
        if fresh:
            for key, value in attrs.items():
                self.file.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value
            for table, columns in self.tables.items():
                group = self.file.create_group(table)
                for column in columns:
                    group.create_dataset(column, shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,))
        elif isinstance(resume, dict):
            self.truncate_to(resume)
        else:
            self.truncate_after(int(resume))  # type: ignore[arg-type]
        self.file.flush()

    def rows(self) -> dict[str, int]:
        return {table: int(self.file[table]["step"].shape[0]) for table in self.tables}

    def truncate_to(self, rows: dict[str, int]) -> None:
        """Keep the first rows[table] rows of each table: exactly what the log held at the checkpoint."""
        for table in self.tables:
            self._keep(table, int(rows.get(table, 0)))

    def truncate_after(self, step: int) -> None:
        """Keep the rows up to `step` (checkpoints written before row counts were recorded)."""
        for table in self.tables:
            self._keep(table, int(np.searchsorted(self._group(table)["step"][()], step, side="right")))

    def _group(self, table: str) -> h5py.Group:
        group = self.file.get(table)
        if not isinstance(group, h5py.Group) or not isinstance(group.get("step"), h5py.Dataset):
            raise LandscapeError(f"{self.path} is not a {self.what} of landscape (no table '{table}')")
        return group

    def _keep(self, table: str, keep: int) -> None:
        group = self._group(table)
        if keep > group["step"].shape[0]:
            raise LandscapeError(
                f"{self.path} has fewer '{table}' rows than the checkpoint being resumed recorded; it does not "
                "belong to this run"
            )
        for column in self.tables[table]:
            if not isinstance(group.get(column), h5py.Dataset):
                raise LandscapeError(f"{self.path} is not a {self.what} of landscape (no column '{table}/{column}')")
            group[column].resize((keep,))

    def append(self, table: str, row: Mapping[str, float]) -> None:
        group = self.file[table]
        n = group["step"].shape[0]
        for column in self.tables[table]:
            ds = group[column]
            ds.resize((n + 1,))
            ds[n] = float(row.get(column, np.nan))
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class CsvTables:
    """One CSV file per table (`paths[table]`) with fixed columns; a missing value is an empty cell."""

    def __init__(
        self, paths: Mapping[str, Path], tables: Mapping[str, tuple[str, ...]], resume: dict[str, int] | None = None
    ) -> None:
        """New files, or (`resume`) the existing ones cut back to rows[table] data rows."""
        self.tables = dict(tables)
        self.paths = dict(paths)
        for table, path in self.paths.items():
            _refuse_non_file(path, f"CSV table '{table}'")
            if resume is not None and path.exists():
                self._keep(table, int(resume.get(table, 0)))
            else:
                _create_exclusively(path)
                with path.open("w", newline="") as f:
                    csv.writer(f).writerow(self.tables[table])

    def _keep(self, table: str, keep: int) -> None:
        path = self.paths[table]
        with path.open(newline="") as f:
            lines = list(csv.reader(f))
        if not lines or tuple(lines[0]) != self.tables[table] or keep > len(lines) - 1:
            raise LandscapeError(f"{path} does not hold the rows of this run's '{table}' table; move it away")
        with path.open("w", newline="") as f:
            csv.writer(f).writerows(lines[: keep + 1])

    def append(self, table: str, row: Mapping[str, float]) -> None:
        cells = [str(int(row[c])) if c == "step" else _cell(row.get(c)) for c in self.tables[table]]
        with self.paths[table].open("a", newline="") as f:
            csv.writer(f).writerow(cells)

    def close(self) -> None:
        pass


def _cell(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return repr(float(value))


class TensorBoardScalars:
    """Each column of each row as the scalar `<table>/<column>` at the row's step. On resume, TensorBoard
    drops what an earlier writer logged from `purge_step` on, so a resumed run shows one curve."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        if log_dir.exists() and not log_dir.is_dir():
            raise LandscapeError(f"{log_dir} is a file; TensorBoard writes event files into a directory")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LandscapeError(
                "TensorBoard logging needs the tensorboard package: pip install 'landscape-cli[tensorboard]'"
            ) from None
        try:
            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)
        except OSError as exc:
            raise LandscapeError(f"cannot write TensorBoard events into {log_dir}: {exc.strerror}") from None

    def append(self, table: str, row: Mapping[str, float]) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and value is not None and not math.isnan(float(value)):
                self.writer.add_scalar(f"{table}/{key}", float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Sinks:
    """Several sinks fed the same rows; the HDF5 log, when there is one, keeps the row counts a checkpoint
    records."""

    def __init__(self, *sinks: TableLog | CsvTables | TensorBoardScalars) -> None:
        self.sinks = sinks

    def rows(self) -> dict[str, int]:
        return next((sink.rows() for sink in self.sinks if isinstance(sink, TableLog)), {})

    def append(self, table: str, row: Mapping[str, float]) -> None:
        for sink in self.sinks:
            sink.append(table, row)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
