"""train.h5: the training log, appended row by row and flushed, so a crash loses at most a row."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import LandscapeError

#: Columns of each table; every table has a `step` column first.
TABLES: dict[str, tuple[str, ...]] = {
    "train": ("step", "epoch", "loss", "accuracy", "lr"),
    "eval": ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy"),
    "sharpness": ("step", "top_eigenvalue", "error_bound", "grad_norm", "alignment", "hvps"),
}


class TrainLog:
    """One resizable float64 dataset per column, in one group per table."""

    def __init__(self, path: Path, attrs: dict[str, Any], resume: dict[str, int] | int | None = None) -> None:
        """A new log, or (`resume`) the existing one cut back to the checkpoint being resumed: to the row
        count of each table it records, or for older checkpoints to the rows up to its step."""
        self.path = path
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise LandscapeError(f"{path} is not a regular file; landscape keeps the training log there")
        fresh = resume is None or not path.exists()
        if fresh:  # created here, exclusively: never written through a link someone planted
            path.unlink(missing_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666))
        try:
            self.file = h5py.File(path, "r+" if not fresh else "w")
        except OSError as exc:
            raise LandscapeError(f"{path} is not a readable training log ({str(exc).splitlines()[0]})") from None
        if fresh:
            for key, value in attrs.items():
                self.file.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value
            for table, columns in TABLES.items():
                group = self.file.create_group(table)
                for column in columns:
                    group.create_dataset(column, shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,))
        elif isinstance(resume, dict):
            self.truncate_to(resume)
        else:
            self.truncate_after(int(resume))
        self.file.flush()

    def rows(self) -> dict[str, int]:
        return {table: int(self.file[table]["step"].shape[0]) for table in TABLES}

    def truncate_to(self, rows: dict[str, int]) -> None:
        """Keep the first rows[table] rows of each table: exactly what the log held at the checkpoint."""
        for table in TABLES:
            self._keep(table, int(rows.get(table, 0)))

    def truncate_after(self, step: int) -> None:
        """Keep the rows up to `step` (checkpoints written before row counts were recorded)."""
        for table in TABLES:
            self._keep(table, int(np.searchsorted(self._group(table)["step"][()], step, side="right")))

    def _group(self, table: str) -> h5py.Group:
        group = self.file.get(table)
        if not isinstance(group, h5py.Group) or not isinstance(group.get("step"), h5py.Dataset):
            raise LandscapeError(f"{self.path} is not a training log of landscape (no table '{table}')")
        return group

    def _keep(self, table: str, keep: int) -> None:
        group = self._group(table)
        if keep > group["step"].shape[0]:
            raise LandscapeError(
                f"{self.path} has fewer '{table}' rows than the checkpoint being resumed recorded; it does not "
                "belong to this run"
            )
        for column in TABLES[table]:
            if not isinstance(group.get(column), h5py.Dataset):
                raise LandscapeError(f"{self.path} is not a training log of landscape (no column '{table}/{column}')")
            group[column].resize((keep,))

    def append(self, table: str, row: dict[str, float]) -> None:
        group = self.file[table]
        n = group["step"].shape[0]
        for column in TABLES[table]:
            ds = group[column]
            ds.resize((n + 1,))
            ds[n] = float(row.get(column, np.nan))
        self.file.flush()

    def close(self) -> None:
        self.file.close()
