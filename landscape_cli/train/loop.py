"""A minimal, deterministic training loop: SGD with momentum and weight decay, native checkpoints.

Readable top to bottom on purpose. Mini-batch or full batch; epochs or steps; a checkpoint every
`save_every` steps and at the end, each saved atomically.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import check_writable
from ..checkpoint import Checkpoint, save_checkpoint
from ..errors import LandscapeError
from ..problem import Problem, per_sample_loss_sum
from ..zoo.data import load_data
from ..zoo.models import build_model


@dataclass
class TrainConfig:
    model: dict[str, Any]
    data: dict[str, Any]
    out_dir: Path
    loss: str = "cross_entropy"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int | None = 128  # None: full batch
    epochs: int | None = 10
    steps: int | None = None
    save_every: int | None = None  # steps
    seed: int = 0
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    hparams: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.lr <= 0:
            raise LandscapeError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise LandscapeError(f"--momentum must lie in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise LandscapeError(f"--weight-decay must be non-negative, got {self.weight_decay}")
        if self.nesterov and self.momentum == 0:
            raise LandscapeError("--nesterov needs --momentum > 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise LandscapeError(f"--batch-size must be at least 1 or 'full', got {self.batch_size}")
        if (self.epochs is None) == (self.steps is None):
            raise LandscapeError("give exactly one of --epochs and --steps")
        if (self.epochs is not None and self.epochs < 1) or (self.steps is not None and self.steps < 1):
            raise LandscapeError("--epochs and --steps must be at least 1")
        if self.save_every is not None and self.save_every < 1:
            raise LandscapeError(f"--save-every must be at least 1, got {self.save_every}")


def _metrics(model: torch.nn.Module, data, loss: str, device, dtype) -> dict[str, float]:
    problem = Problem(model, data, loss, device=device, dtype=dtype, hvp="jvp")
    return problem.evaluate()


def train_model(config: TrainConfig, log: Callable[[str], None] = lambda _: None, overwrite: bool = False) -> Path:
    """Train and return the path of the final checkpoint (`final.pt` in the run directory)."""
    config.validate()
    out = Path(config.out_dir)
    if out.exists() and not out.is_dir():
        raise LandscapeError(f"{out} is a file, not a run directory; choose another --out")
    check_writable(out / "final.pt")
    existed = out.exists()
    previous = existed and any(out.iterdir())
    if previous and not overwrite:
        raise LandscapeError(f"run directory {out} exists and is not empty; pass --overwrite to replace it")
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    train_data = load_data({**config.data, "split": config.data.get("split", "train")})
    test_spec = {**config.data, "split": "test"}
    test_data = load_data(test_spec) if "name" in config.data else None
    model = build_model(config.model).to(device=device, dtype=config.dtype)
    x = train_data.x.to(device, config.dtype)
    y = train_data.y.to(device) if train_data.task == "classification" else train_data.y.to(device, config.dtype)
    try:  # a model that does not fit the data fails here with a message, not in the middle of the loop
        with torch.no_grad():
            probe = model.eval()(x[:2])
    except Exception as exc:  # noqa: BLE001 - a model/data mismatch can fail anywhere in forward
        raise LandscapeError(
            f"the model does not accept inputs of shape {tuple(x.shape[1:])} from the data: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    if train_data.task == "classification" and probe.shape[-1] <= int(train_data.y.max()):
        raise LandscapeError(
            f"the model has {probe.shape[-1]} outputs but the data has labels up to {int(train_data.y.max())}"
        )
    n = len(train_data)
    batch = n if config.batch_size is None else min(config.batch_size, n)
    steps_per_epoch = math.ceil(n / batch)
    total_steps = config.steps if config.steps is not None else config.epochs * steps_per_epoch  # type: ignore[operator]
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    generator = torch.Generator().manual_seed(config.seed)
    hparams = {
        "lr": config.lr,
        "momentum": config.momentum,
        "nesterov": config.nesterov,
        "weight_decay": config.weight_decay,
        "batch_size": config.batch_size or "full",
        **config.hparams,
    }

    def checkpoint(step: int, epoch: float, name: str) -> Path:
        metrics = _metrics(model, train_data, config.loss, device, config.dtype)
        result = {f"train_{k}": v for k, v in metrics.items()}
        if test_data is not None:
            result |= {f"test_{k}": v for k, v in _metrics(model, test_data, config.loss, device, config.dtype).items()}
        ckpt = Checkpoint(
            state_dict=model.state_dict(),
            model=config.model,
            data=config.data,
            loss=config.loss,
            optimizer={"name": "sgd", "hparams": hparams, "state": optimizer.state_dict()},
            step=step,
            epoch=int(epoch),
            seed=config.seed,
            metrics=result,
        )
        path = save_checkpoint(ckpt, out / name)
        log(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items()) + f" -> {path}")
        return path

    def run() -> Path:
        step = 0
        model.train()
        while step < total_steps:
            order = torch.randperm(n, generator=generator).to(device)
            for start in range(0, n, batch):
                if step >= total_steps:
                    break
                idx = order[start : start + batch]
                optimizer.zero_grad(set_to_none=True)
                value = per_sample_loss_sum(model(x[idx]), y[idx], config.loss) / len(idx)
                if not torch.isfinite(value):
                    raise LandscapeError(f"the training loss became {float(value.detach())} at step {step}; lower --lr")
                value.backward()
                optimizer.step()
                step += 1
                if config.save_every and step % config.save_every == 0 and step < total_steps:
                    checkpoint(step, step / steps_per_epoch, f"step_{step:07d}.pt")
        model.eval()
        return checkpoint(step, step / steps_per_epoch, "final.pt")

    # With --overwrite the previous run is only moved aside, and comes back if this one fails: a
    # failed run destroys nothing. Without a previous run, the checkpoints a failed or interrupted
    # run already wrote are complete files and are kept; only an empty directory is removed.
    backup = out.with_name(f".{out.name}.{os.getpid()}.old") if previous else None
    if backup is not None:
        os.replace(out, backup)
    try:
        out.mkdir(parents=True, exist_ok=True)
        final = run()
    except BaseException:
        if backup is not None:
            shutil.rmtree(out, ignore_errors=True)
            os.replace(backup, out)
        elif not existed and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return final


def config_dict(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d["out_dir"] = str(config.out_dir)
    d["dtype"] = str(config.dtype).replace("torch.", "")
    return d
