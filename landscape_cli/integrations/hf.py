"""A HuggingFace `TrainerCallback`: sharpness tracked every K optimizer steps and logged through the Trainer's
own `log` (so its TensorBoard, W&B ... callbacks and `state.log_history` receive it).

    callback = SharpnessCallback(eval_dataset, loss="model", every=200)
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset, callbacks=[callback])
    callback.attach(trainer)   # the callback logs through this trainer
    trainer.train()
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ..track import SharpnessTracker


class SharpnessCallback(TrainerCallback):
    """`data` (a Dataset of dict samples, a DataLoader or batches), `loss` ("model": the model's own `.loss`, as
    HF models compute it) and the keyword arguments are SharpnessTracker's."""

    def __init__(self, data: Any, loss: Any = "model", *, every: int = 100, prefix: str = "sharpness/",
                 **tracker_options: Any) -> None:  # fmt: skip
        self.data, self.loss, self.every, self.prefix = data, loss, every, prefix
        self.options = tracker_options
        self.tracker: SharpnessTracker | None = None
        self.trainer: Any = None

    def attach(self, trainer: Any) -> SharpnessCallback:
        """Log through `trainer.log`; without it rows are appended to `state.log_history` only."""
        self.trainer = trainer
        return self

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.tracker = SharpnessTracker(model, self.data, self.loss, every=self.every, **self.options)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None,
                    **kwargs: Any) -> None:  # fmt: skip
        assert self.tracker is not None
        row = self.tracker.step(state.global_step, optimizer)
        if row is None:
            return
        logs = {self.prefix + k: v for k, v in row.items() if k != "step"}
        if self.trainer is not None:
            self.trainer.log(logs)
        else:
            state.log_history.append({**logs, "step": state.global_step})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.tracker is not None:
            self.tracker.close()
