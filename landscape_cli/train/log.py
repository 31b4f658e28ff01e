"""train.h5: the training log, appended row by row and flushed, so a crash loses at most a row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

#: Columns of each table; every table has a `step` column first.
TABLES: dict[str, tuple[str, ...]] = {
    "train": ("step", "epoch", "loss", "accuracy", "lr"),
    "eval": ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy"),
    "sharpness": ("step", "top_eigenvalue", "error_bound", "grad_norm", "alignment", "hvps"),
}


class TrainLog:
    """One resizable float64 dataset per column, in one group per table."""

    def __init__(self, path: Path, attrs: dict[str, Any], resume_step: int | None = None) -> None:
        self.path = path
        fresh = resume_step is None or not path.exists()
        self.file = h5py.File(path, "w" if fresh else "a")
        if fresh:
            for key, value in attrs.items():
                self.file.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value
            for table, columns in TABLES.items():
                group = self.file.create_group(table)
                for column in columns:
                    group.create_dataset(column, shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,))
        else:
            self.truncate_after(int(resume_step))  # rows logged after the checkpoint we resume from
        self.file.flush()

    def truncate_after(self, step: int) -> None:
        for table in TABLES:
            group = self.file[table]
            keep = int(np.searchsorted(group["step"][()], step, side="right"))
            for column in group:
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
