"""A PyTorch Lightning callback: sharpness tracked every K optimizer steps and logged through the trainer's own
loggers (each of `trainer.loggers` at the optimizer step: TensorBoard, CSV, W&B ... all receive it).

    trainer = lightning.Trainer(callbacks=[SharpnessCallback(train_dataset, every=200)])
"""

from __future__ import annotations

from typing import Any

import lightning

from ..track import SharpnessTracker


class SharpnessCallback(lightning.Callback):
    """`data`, `loss` and the keyword arguments are SharpnessTracker's; the tracker is built on the module at the
    start of training (`self.tracker`)."""

    def __init__(self, data: Any, loss: Any = "cross_entropy", *, every: int = 100, prefix: str = "sharpness/",
                 **tracker_options: Any) -> None:  # fmt: skip
        super().__init__()
        self.data, self.loss, self.every, self.prefix = data, loss, every, prefix
        self.options = tracker_options
        self.tracker: SharpnessTracker | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.tracker = SharpnessTracker(pl_module, self.data, self.loss, every=self.every, **self.options)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        assert self.tracker is not None
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        row = self.tracker.step(trainer.global_step, optimizer)
        if row is not None and trainer.is_global_zero:
            metrics = {self.prefix + k: v for k, v in row.items() if k != "step"}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker is not None:
            self.tracker.close()
