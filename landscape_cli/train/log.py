"""train.h5: the training log, appended row by row and flushed, so a crash loses at most a row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..sinks import TableLog

#: Columns of each table; every table has a `step` column first.
TABLES: dict[str, tuple[str, ...]] = {
    "train": ("step", "epoch", "loss", "accuracy", "lr"),
    "eval": ("step", "train_loss", "train_accuracy", "test_loss", "test_accuracy"),
    "sharpness": ("step", "top_eigenvalue", "error_bound", "grad_norm", "alignment", "hvps"),
}


class TrainLog(TableLog):
    """The tables of `landscape train`'s log."""

    def __init__(self, path: Path, attrs: dict[str, Any], resume: dict[str, int] | int | None = None) -> None:
        super().__init__(path, attrs, TABLES, resume, what="training log")
