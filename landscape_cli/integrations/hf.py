"""The HuggingFace Trainer with landscape: a `TrainerCallback` that tracks sharpness every K optimizer steps and
logs it through the Trainer's own `log` (so its TensorBoard, W&B ... callbacks and `state.log_history` receive
it), and `SharpnessAwareTrainer`, a Trainer that steps `landscape_cli.optim`'s SAM family.

    callback = SharpnessCallback(eval_dataset, loss="model", every=200)
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset, callbacks=[callback])
    callback.attach(trainer)   # the callback logs through this trainer
    trainer.train()

    opt = SAM(model.parameters(), torch.optim.AdamW, rho=0.05, lr=5e-5, weight_decay=0.01)
    trainer = SharpnessAwareTrainer(model=model, args=args, train_dataset=train_dataset, optimizers=(opt, None))
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from ..optim import MSAM, EigenSAM, SharpnessAwareOptimizer, frozen_batchnorm
from ..track import SharpnessTracker, unwrapped_optimizer


class SharpnessAwareTrainer(Trainer):
    """A `transformers.Trainer` whose training step takes SAM's two passes: the loss and its backward at w, the
    optimizer's `first_step` (to w + eps), the loss and its backward again (BatchNorm statistics frozen); the
    Trainer then calls `optimizer.step()`, which is the second step (back to w, the base optimizer steps).
    The optimizer, given as `optimizers=(opt, scheduler or None)`, is `SAM`, `ASAM`, `SSAM`, `USAM` or
    `EigenSAM` (its power iterations use the batch's loss). `max_grad_norm` clips the descent gradient the
    base optimizer receives (after SSAM's rescaling), unless the optimizer has its own `clip_grad_norm`. With
    fp16 the ascent divides by the loss scale and an overflow skips the step, as `GradScaler` skips it. The
    logged loss is the one at w.

    Refused: `MSAM` (it cuts the batch itself and takes its own step) and gradient accumulation (SAM's ascent
    needs the whole batch's gradient before the second pass: raise `per_device_train_batch_size` instead)."""

    def sharpness_aware_optimizer(self) -> SharpnessAwareOptimizer:
        """The SAM-family optimizer inside the Trainer's wrappers (accelerate's AcceleratedOptimizer)."""
        optimizer = unwrapped_optimizer(self.optimizer)
        if not isinstance(optimizer, SharpnessAwareOptimizer):
            raise ValueError(
                "SharpnessAwareTrainer needs a landscape_cli.optim optimizer: pass "
                f"optimizers=(SAM(model.parameters(), ...), None); got {type(optimizer).__name__}"
            )
        if isinstance(optimizer, MSAM):
            raise ValueError("MSAM cuts the batch and steps by itself; in the Trainer use SAM, ASAM, SSAM, USAM or "
                             "EigenSAM")  # fmt: skip
        if self.args.gradient_accumulation_steps != 1:
            raise ValueError("SharpnessAwareTrainer takes no gradient accumulation (SAM's ascent needs the whole "
                             "batch's gradient before its second pass); set gradient_accumulation_steps=1 and "
                             "raise per_device_train_batch_size")  # fmt: skip
        return optimizer

    def _clip_grad_norm(self, model: torch.nn.Module) -> None:
        """The optimizer clips, after SSAM's rescaling (clipping before it would be undone): `max_grad_norm`
        becomes the optimizer's `clip_grad_norm` unless the optimizer was given its own."""
        optimizer = self.sharpness_aware_optimizer()
        if optimizer.clip_grad_norm is None:
            optimizer.clip_grad_norm = self.args.max_grad_norm

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None,
                      ) -> torch.Tensor:  # fmt: skip
        optimizer = self.sharpness_aware_optimizer()
        loss = super().training_step(model, dict(inputs), num_items_in_batch)
        scaler = getattr(self.accelerator, "scaler", None)
        if isinstance(optimizer, EigenSAM):

            def batch_loss() -> torch.Tensor:  # called only on the steps that refresh the eigenvector
                prepared = self._prepare_inputs(dict(inputs))
                return self.compute_loss(self.model, prepared, num_items_in_batch=num_items_in_batch)

            optimizer.first_step(zero_grad=True, grad_scaler=scaler, loss_fn=batch_loss)
        else:
            optimizer.first_step(zero_grad=True, grad_scaler=scaler)
        with frozen_batchnorm(model):
            super().training_step(model, dict(inputs), num_items_in_batch)
        return loss


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
