"""Everything a training run is, as one validated, serializable dataclass."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..choices import BASES, OPTIMIZERS, SCHEDULES, TRAIN_LOSSES
from ..errors import LandscapeError, ParameterError
from .optimizers import ASCENTS
from .parallel import ASCENT_SCOPES

#: Seeds lie in [0, 2^32): derived seeds (seed * 1_000_003 + epoch) must fit torch's 64-bit generator.
SEED_LIMIT = 1 << 32
#: Fields that may differ between a run and its resumption (they do not change the numbers).
RESUMABLE_DIFFERENCES = ("out_dir", "device")


@dataclass
class TrainConfig:
    model: dict[str, Any]
    data: dict[str, Any]
    out_dir: Path
    loss: str = "cross_entropy"
    opt: str = "sgd"
    base: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    rho: float = 0.05
    ascent: str = "normalized"
    micro_batches: int = 1
    ascent_scope: str = "global"  # under torchrun: the SAM ascent on the global batch, or each rank's own
    eigen_iters: int = 5
    eigen_every: int = 100
    alpha: float = 0.2
    clip_grad_norm: float | None = None
    schedule: str = "constant"
    lr_step_size: int = 1000  # steps, for the step schedule
    lr_gamma: float = 0.1
    batch_size: int | None = 128  # None: full batch
    epochs: int | None = 10
    steps: int | None = None
    save_every: int | None = None  # steps
    save_every_epochs: int | None = None
    log_every: int = 1
    eval_every: int | None = None  # steps; None: once per epoch
    track_sharpness_every: int | None = None
    track_samples: int = 5000
    seed: int = 0
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    hparams: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        checks = [
            (self.opt in OPTIMIZERS, f"unknown optimizer '{self.opt}'; choose one of {', '.join(OPTIMIZERS)}"),
            (self.base in BASES, f"unknown base optimizer '{self.base}'; choose one of {', '.join(BASES)}"),
            (self.loss in TRAIN_LOSSES, f"unknown loss '{self.loss}'; choose one of {', '.join(TRAIN_LOSSES)}"),
            (0 < self.lr < math.inf, f"--lr must be positive and finite, got {self.lr}"),
            (0 <= self.momentum < 1, f"--momentum must lie in [0, 1), got {self.momentum}"),
            (
                0 <= self.weight_decay < math.inf,
                f"--weight-decay must be non-negative and finite, got {self.weight_decay}",
            ),
            (not (self.nesterov and self.momentum == 0), "--nesterov needs --momentum > 0"),
            (self.base == "sgd" or not (self.momentum or self.nesterov), "--momentum/--nesterov apply to --base sgd"),
            (all(0 <= b < 1 for b in self.betas), f"--beta1/--beta2 must lie in [0, 1), got {self.betas}"),
            (0 < self.rho < math.inf, f"--rho must be positive and finite, got {self.rho}"),
            (math.isfinite(self.alpha), f"--alpha must be a finite number, got {self.alpha}"),
            (self.ascent in ASCENTS, f"--ascent must be normalized or unnormalized, got '{self.ascent}'"),
            (self.micro_batches >= 1, f"--micro-batches must be at least 1, got {self.micro_batches}"),
            (self.eigen_iters >= 1 and self.eigen_every >= 1, "--eigen-iters and --eigen-every must be at least 1"),
            (
                self.clip_grad_norm is None or 0 < self.clip_grad_norm < math.inf,
                "--clip-grad-norm must be positive and finite",
            ),
            (
                self.schedule in SCHEDULES,
                f"unknown --lr-schedule '{self.schedule}'; choose one of {', '.join(SCHEDULES)}",
            ),
            (self.lr_step_size >= 1 and 0 < self.lr_gamma <= 1, "--lr-step-size must be >= 1, --lr-gamma in (0, 1]"),
            (
                self.batch_size is None or self.batch_size >= 1,
                f"--batch-size must be at least 1 or 'full', got {self.batch_size}",
            ),
            ((self.epochs is None) != (self.steps is None), "give exactly one of --epochs and --steps"),
            (
                (self.epochs is None or self.epochs >= 1) and (self.steps is None or self.steps >= 1),
                "--epochs and --steps must be at least 1",
            ),
            (
                self.save_every is None or self.save_every >= 1,
                f"--save-every must be at least 1, got {self.save_every}",
            ),
            (
                self.save_every_epochs is None or self.save_every_epochs >= 1,
                f"--save-every-epochs must be at least 1, got {self.save_every_epochs}",
            ),
            (
                self.save_every is None or self.save_every_epochs is None,
                "give at most one of --save-every and --save-every-epochs",
            ),
            (0 <= self.seed < SEED_LIMIT, f"--seed must lie in [0, 2^32), got {self.seed}"),
            (self.log_every >= 1, f"--log-every must be at least 1, got {self.log_every}"),
            (
                self.eval_every is None or self.eval_every >= 1,
                f"--eval-every must be at least 1, got {self.eval_every}",
            ),
            (
                self.track_sharpness_every is None or self.track_sharpness_every >= 1,
                "--track-sharpness-every must be at least 1",
            ),
            (self.track_samples >= 1, f"--track-samples must be at least 1, got {self.track_samples}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LandscapeError(message)
        if self.ascent_scope not in ASCENT_SCOPES:
            raise ParameterError("ascent_scope", f"must be global or rank, got '{self.ascent_scope}'")
        if self.opt == "msam" and self.batch_size is not None and self.batch_size % self.micro_batches:
            raise ParameterError(
                ("micro_batches", "batch_size"),
                f"micro_batches {self.micro_batches} does not divide batch_size {self.batch_size}",
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        d["dtype"] = str(self.dtype).replace("torch.", "")
        d["betas"] = list(self.betas)
        return d

    def hyper_parameters(self) -> dict[str, Any]:
        """What a checkpoint records as the optimizer's hyper-parameters."""
        keep = ["base", "lr", "weight_decay", "schedule", "clip_grad_norm"]
        keep += ["momentum", "nesterov"] if self.base == "sgd" else ["betas"]
        if self.opt != "sgd":
            keep += ["rho"]
        keep += {
            "ssam": ["ascent"],
            "msam": ["micro_batches"],
            "eigensam": ["eigen_iters", "eigen_every", "alpha"],
        }.get(self.opt, [])
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.to_dict().items() if k in keep}
        out["batch_size"] = self.batch_size or "full"
        return {**out, **self.hparams}
