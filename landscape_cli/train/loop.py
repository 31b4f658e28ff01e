"""The training loop, readable top to bottom: data order, one optimizer step, evaluation, sharpness
tracking, checkpoints and the log. Deterministic given the seed; a killed run resumes exactly.

Data order: epoch e visits the training set in the permutation drawn from seed * 1_000_003 + e, so
any step can be reproduced without replaying the ones before it. Checkpoints carry the model, the
optimizer (base and SAM state), the step and the global RNG state (dropout), which is all a
resumption needs.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic import check_writable
from ..checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ..distributed import broadcast_object, raise_everywhere, sum_floats
from ..distributed import current as distributed_group
from ..errors import LandscapeError, ParameterError
from ..limits import require_memory
from ..locks import exclusive
from ..optim import MSAM, EigenSAM, frozen_batchnorm
from ..problem import Problem, per_sample_loss_sum
from ..session import check_model_fits_data, subset_indices
from ..signals import sigterm_raises
from ..sinks import CsvTables, Sinks, TensorBoardScalars
from ..track import perturbation_alignment, top_eigenpair
from ..zoo.data import Dataset, load_data
from ..zoo.models import build_model, count_parameters
from .config import RESUMABLE_DIFFERENCES, TrainConfig
from .display import Display
from .log import TABLES, TrainLog
from .optimizers import PlainStep, load_trainer_state, make_optimizer, trainer_state
from .parallel import GradientSync
from .rundir import LOG_NAME, backup_path, refuse_stale_backup, require_run_directory
from .schedule import lr_factor


def _epoch_order(config: TrainConfig, epoch: int, n: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).to(device)


def _latest_checkpoint(out: Path) -> Path | None:
    """final.pt if the run finished, else the periodic checkpoint with the highest step (from its name)."""
    if (out / "final.pt").exists():
        return out / "final.pt"
    return max(out.glob("step_*.pt"), key=lambda p: int(p.stem.removeprefix("step_")), default=None)


#: Copies of the parameters a run holds: the model, its gradient, two optimizer moments, the SAM ascent, and
#: the train, test and tracking evaluators' own models.
COPIES_IN_TRAINING = 8


class Run:
    """One training run: the model, its data, its optimizer and its bookkeeping."""

    def __init__(self, config: TrainConfig, log: Callable[[str], None]) -> None:
        self.config, self.log = config, log
        self.device = torch.device(config.device)
        if self.device.type == "cuda":
            # cuDNN picks nondeterministic convolution kernels by default: two runs of a ResNet with
            # one seed differed on an H100. Deterministic kernels make runs and resumptions repeat.
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        torch.manual_seed(config.seed)
        #: The ranks of a torchrun job: each takes its share of every global batch; rank 0 writes.
        self.group = distributed_group()
        self.writer = self.group is None or self.group.is_main
        n_params = count_parameters(config.model)
        if n_params is not None:  # weights, gradients, optimizer state and the evaluators' copies
            bytes_per = torch.finfo(config.dtype).bits // 8
            require_memory(f"training a model of {n_params:,} parameters", COPIES_IN_TRAINING * n_params * bytes_per)
        self.train_data = load_data({**config.data, "split": config.data.get("split", "train")})
        self.test_data = load_data({**config.data, "split": "test"}) if "name" in config.data else None
        self.model = build_model(config.model).to(device=self.device, dtype=config.dtype)
        d = self.train_data
        self.x = d.x.to(self.device, config.dtype)
        self.y = d.y.to(self.device) if d.task == "classification" else d.y.to(self.device, config.dtype)
        check_model_fits_data(self.model, d, self.device, config.dtype, config.loss)
        self.n = len(d)
        self.batch = self.n if config.batch_size is None else min(config.batch_size, self.n)
        if config.opt == "msam" and self.batch % config.micro_batches:
            raise ParameterError(
                "micro_batches", f"micro_batches {config.micro_batches} does not divide the batch of {self.batch}"
            )
        self.steps_per_epoch = math.ceil(self.n / self.batch)
        self.total_steps = config.steps if config.steps is not None else config.epochs * self.steps_per_epoch  # type: ignore[operator]
        self.eval_every = config.eval_every or self.steps_per_epoch
        self.save_every = config.save_every or (config.save_every_epochs or 0) * self.steps_per_epoch
        self.optimizer = make_optimizer(config, self.model)
        self.optimizer.sync = GradientSync(self.group, config.ascent_scope)
        factor = lr_factor(config.schedule, self.total_steps, config.lr_step_size, config.lr_gamma)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer.base, factor)
        self.step = 0
        self._order, self._order_epoch = torch.empty(0, dtype=torch.long), -1  # the current epoch's data order
        self.metrics: dict[str, float] = {}
        self.evaluators = {"train": self._problem(self.train_data)}
        if self.test_data is not None:
            self.evaluators["test"] = self._problem(self.test_data)
        #: The training log's row counts per table, recorded in each checkpoint (set by the loop).
        self.log_rows: Callable[[], dict[str, int]] = dict
        self.tracker: Problem | None = None
        if config.track_sharpness_every:
            idx = subset_indices(self.n, min(config.track_samples, self.n), config.seed)  # at most all of them
            self.tracker = self._problem(d if idx is None else d.subset(idx))

    def _problem(self, data: Dataset) -> Problem:
        return Problem(self.model, data, self.config.loss, device=self.device, dtype=self.config.dtype,
                       distributed=self.group is not None)  # fmt: skip

    def _share(self, part: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a (micro-)batch's indices (all of them in one process)."""
        if self.group is None:
            return part
        start, stop = self.group.share(len(part))
        return part[start:stop]

    # -- one step -----------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        if self._order_epoch != epoch:
            self._order, self._order_epoch = _epoch_order(self.config, epoch, self.n, self.device), epoch
        idx = self._order[offset * self.batch : (offset + 1) * self.batch]
        first_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # each part's samples and unperturbed outputs

        def loss_of(part: torch.Tensor, record: bool = False) -> torch.Tensor:
            mine = self._share(part)  # this rank's samples; its loss sum over the whole part's size
            self.optimizer.sync.local_fraction = len(mine) / len(part)
            out = self.model(self.x[mine])
            if record:
                first_outputs.append((mine, out.detach()))
            return per_sample_loss_sum(out, self.y[mine], self.config.loss) / len(part)

        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        loss = float(self._step(idx, loss_of))
        self.optimizer.sync.same_buffers(self.model)
        if not math.isfinite(loss):  # the global batch's loss: every rank stops here alike
            error = ParameterError("lr", f"the training loss became {loss} at step {self.step}; lower lr")
            error.on_every_rank = self.group is not None  # type: ignore[attr-defined]
            raise error
        self.scheduler.step()
        self.step += 1
        row = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "loss": loss, "lr": lr}
        if self.train_data.task == "classification":
            correct = sum(int((out.argmax(-1) == self.y[mine]).sum()) for mine, out in first_outputs)
            (correct,) = sum_floats([correct], self.group, self.device)
            row["accuracy"] = 100.0 * correct / len(idx)
        return row

    def _step(self, idx: torch.Tensor, loss_of: Callable[..., torch.Tensor]) -> torch.Tensor:
        """One optimizer step on the batch `idx` with landscape_cli.optim's classes, as a user's loop makes it:
        backward, first_step, backward at w + eps (BatchNorm statistics frozen), second_step. Returns the loss
        of the global batch at w."""
        opt = self.optimizer
        if isinstance(opt, MSAM):

            def on_part(part: torch.Tensor) -> torch.Tensor:
                value = loss_of(part, record=not self._perturbed_pass)
                value.backward()
                self._perturbed_pass = not self._perturbed_pass
                return value

            self._perturbed_pass = False
            return opt.sync.value(opt.step(on_part, idx))
        loss = loss_of(idx, record=True)
        loss.backward()
        if isinstance(opt, PlainStep):
            opt.descend()
            return opt.sync.value(loss.detach())
        if isinstance(opt, EigenSAM):
            opt.first_step(zero_grad=True, loss_fn=lambda: loss_of(idx))
        else:
            opt.first_step(zero_grad=True)
        with frozen_batchnorm(self.model):
            loss_of(idx).backward()
        opt.second_step(zero_grad=True)
        return opt.sync.value(loss.detach())

    # -- measurements -------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        row: dict[str, float] = {"step": self.step}
        for split, problem in self.evaluators.items():
            problem.load_weights(self.model)
            for key, value in problem.evaluate().items():
                row[f"{split}_{key}"] = value
        self.metrics = {k: v for k, v in row.items() if k != "step"}
        return row

    def track_sharpness(self) -> dict[str, float]:
        """Top Hessian eigenvalue and full-batch gradient norm on the fixed tracking subset: SharpnessTracker's
        measurement, always cold-started (a resumed run then tracks the values an uninterrupted one does,
        without an eigenvector stored in the checkpoint)."""
        assert self.tracker is not None
        self.tracker.load_weights(self.model)
        _, gradient = self.tracker.loss_and_gradient()
        columns, vector = top_eigenpair(self.tracker, tol=1e-3, max_iter=100, seed=self.config.seed)
        row = {"step": self.step, **columns, "grad_norm": float(gradient.double().norm())}
        alignment = perturbation_alignment(self.optimizer.last_perturbation, vector)
        if alignment is not None:
            row["alignment"] = alignment
        return row

    # -- checkpoints --------------------------------------------------------------------------------
    def checkpoint(self, path: Path) -> Path:
        state: dict[str, Any] = {
            "log_rows": self.log_rows(),
            "config": self.config.to_dict(),
            "optimizer": trainer_state(self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        ckpt = Checkpoint(
            state_dict=self.model.state_dict(),
            model=self.config.model,
            data=self.config.data,
            loss=self.config.loss,
            optimizer={"name": self.config.opt, "hparams": self.config.hyper_parameters(), "state": state["optimizer"]},
            step=self.step,
            epoch=self.step // self.steps_per_epoch,
            seed=self.config.seed,
            metrics=dict(self.metrics),
            train_state=state,
        )
        if self.writer:
            save_checkpoint(ckpt, path)
        self.log(f"step {self.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items()) + f" -> {path}")
        return path

    def restore(self, ckpt: Checkpoint) -> None:
        state = ckpt.train_state or {}
        saved = dict(state.get("config") or {})
        if (ckpt.format_version or 0) < 2 and saved.get("loss") == "mse":
            saved["loss"] = "half_sse"  # what format 1 meant by mse
        saved.setdefault("ascent_scope", "global")  # runs from before data-parallel training
        mine = self.config.to_dict()
        differing = sorted(k for k in mine if k not in RESUMABLE_DIFFERENCES and saved.get(k) != mine[k])
        if differing:
            raise LandscapeError(
                f"cannot resume {ckpt.path}: the run was made with different "
                + ", ".join(f"{k} ({saved.get(k)!r} vs {mine[k]!r})" for k in differing[:4])
            )
        self.model.load_state_dict(ckpt.state_dict)
        load_trainer_state(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.step = int(ckpt.step or 0)
        self.metrics = dict(ckpt.metrics)


def train_model(
    config: TrainConfig,
    log: Callable[[str], None] = lambda _: None,
    overwrite: bool = False,
    resume: bool = False,
    quiet: bool = True,
    tensorboard: Path | None = None,
    csv: bool = False,
) -> Path:
    """Train and return the path of the final checkpoint (`final.pt` in the run directory). Besides train.h5
    the log's rows go to TensorBoard event files in `tensorboard` and, with `csv`, to <table>.csv files in the
    run directory.

    The run directory is locked for the whole run: a second `train --out` on it is refused at once. Under
    torchrun rank 0 owns the run directory and tells the other ranks where to start (or why not to)."""
    config.validate()
    group = distributed_group()
    if group is not None and not group.is_main:
        return _follow(config)
    started: list[bool] = []  # set once the other ranks were told to start
    try:
        return _train_checked(config, log, overwrite, resume, quiet, started, LogOptions(tensorboard, csv))
    except LandscapeError as exc:
        if group is not None and not started:
            broadcast_object(("refused", str(exc)), group)  # the other ranks stop with rank 0's reason
            exc.on_every_rank = True  # type: ignore[attr-defined]
        raise


def _follow(config: TrainConfig) -> Path:
    """A rank other than 0: the same steps and measurements on its share of each batch, writing nothing."""
    run = Run(config, lambda _: None)
    status, value = broadcast_object(None, run.group)
    if status == "refused":
        raise_everywhere(value)
    if value is not None:
        run.restore(load_checkpoint(value))
    _steps(run, Path(config.out_dir), _NoLog(), Display(run.total_steps, quiet=True), start_fresh=value is None)
    return Path(config.out_dir) / "final.pt"


class _NoLog:
    """The training log of a rank that writes none."""

    def append(self, table: str, row: dict[str, float]) -> None:
        pass

    def rows(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class LogOptions:
    """The log's sinks besides train.h5."""

    tensorboard: Path | None = None
    csv: bool = False

    def open(self, out: Path, attrs: dict[str, Any], resume: dict[str, int] | int | None, step: int) -> Sinks:
        train_log = TrainLog(out / LOG_NAME, attrs, resume)
        try:
            others: list[CsvTables | TensorBoardScalars] = []
            if self.csv:
                others.append(
                    CsvTables(
                        {t: out / f"{t}.csv" for t in TABLES}, TABLES, None if resume is None else train_log.rows()
                    )
                )
            if self.tensorboard is not None:
                others.append(TensorBoardScalars(self.tensorboard, purge_step=None if resume is None else step + 1))
        except BaseException:
            train_log.close()
            raise
        return Sinks(train_log, *others)


def _train_checked(
    config: TrainConfig,
    log: Callable[[str], None],
    overwrite: bool,
    resume: bool,
    quiet: bool,
    started: list[bool],
    sinks: LogOptions,
) -> Path:
    out = Path(config.out_dir)
    if str(out) in ("", "."):
        raise LandscapeError("--out must name the run directory, e.g. --out runs/sgd")
    if resume and overwrite:
        raise LandscapeError("--resume and --overwrite exclude each other")
    if out.is_symlink():
        raise LandscapeError(f"{out} is a symbolic link; give the run directory itself as --out")
    if out.exists() and not out.is_dir():
        raise LandscapeError(f"{out} is a file, not a run directory; choose another --out")
    check_writable(out / "final.pt")
    with exclusive([out]):
        refuse_stale_backup(out)
        return _train_locked(config, out, log, overwrite, resume, quiet, started, sinks)


def _train_locked(
    config: TrainConfig,
    out: Path,
    log: Callable[[str], None],
    overwrite: bool,
    resume: bool,
    quiet: bool,
    started: list[bool],
    sinks: LogOptions,
) -> Path:
    existed = out.exists()
    previous = existed and any(out.iterdir())
    if previous and not (overwrite or resume):
        raise LandscapeError(f"run directory {out} exists and is not empty; pass --resume or --overwrite")
    if previous and overwrite:
        require_run_directory(out)
    run = Run(config, log)
    start = _latest_checkpoint(out) if resume and previous else None
    if resume and start is None:
        raise LandscapeError(f"nothing to resume: {out} holds no checkpoint of a run")
    resume_rows: dict[str, int] | int | None = None
    if start is not None:
        ckpt = load_checkpoint(start)
        if ckpt.train_state is None:
            raise LandscapeError(f"cannot resume from {start}: it was not written by landscape train")
        run.restore(ckpt)
        if run.step >= run.total_steps:
            raise LandscapeError(f"{out} already finished ({run.step} of {run.total_steps} steps)")
        # the log is cut to the rows it had when the checkpoint was written (older checkpoints: by step)
        resume_rows = ckpt.train_state.get("log_rows") or run.step

    def loop() -> Path:
        if run.group is not None:  # the directory is ready: the other ranks start where rank 0 does
            broadcast_object(("start", None if start is None else str(start)), run.group)
            started.append(True)
        attrs = {"config": config.to_dict(), "kind": "train-log", "world_size": 1 if run.group is None else
                 run.group.world_size, "backend": "none" if run.group is None else run.group.backend}  # fmt: skip
        train_log = sinks.open(out, attrs, resume_rows, run.step)
        run.log_rows = train_log.rows
        display = Display(run.total_steps, quiet=quiet, echo=log)
        run.log = display.log  # messages go above the live table, not over it
        return _steps(run, out, train_log, display, start_fresh=start is None)

    # With --overwrite the previous run is only moved aside, and comes back if this one fails or is
    # interrupted (Ctrl-C, SIGTERM): a failed run destroys nothing. A SIGKILL leaves the backup, which the
    # next command on this directory names with the way to restore it. Without --overwrite the checkpoints
    # a failed or interrupted run already wrote are complete files and are kept (--resume continues from
    # them); only an empty directory is removed.
    backup = backup_path(out) if previous and overwrite else None
    with sigterm_raises():
        return _run_replacing(out, backup, existed, loop)


def _run_replacing(out: Path, backup: Path | None, existed: bool, loop: Callable[[], Path]) -> Path:
    """Run `loop` into `out`, with the previous run moved to `backup` until it succeeds."""
    if backup is not None:
        os.replace(out, backup)
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LandscapeError(f"cannot create the run directory {out}: {exc.strerror}") from None
        final = loop()
    except BaseException:
        if backup is not None:
            shutil.rmtree(out, ignore_errors=True)
            os.replace(backup, out)
        elif not existed and out.is_dir() and not any(p.suffix == ".pt" for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return final


def _steps(run: Run, out: Path, train_log: Sinks | _NoLog, display: Display, start_fresh: bool) -> Path:
    """Train to the last step: evaluations, sharpness tracking and checkpoints at their steps (the same calls on
    every rank, since measurements are collective)."""
    config = run.config
    try:
        if start_fresh:
            _measure(run, train_log, display)
            if run.save_every:  # the starting point, for trajectory plots (surface --dirs pca:RUN)
                run.checkpoint(out / f"step_{0:07d}.pt")
        while run.step < run.total_steps:
            row = run.train_step()
            display.update(**row)
            if run.step % config.log_every == 0:
                train_log.append("train", row)
            if run.step % run.eval_every == 0 or run.step == run.total_steps:
                _measure(run, train_log, display)
            elif config.track_sharpness_every and run.step % config.track_sharpness_every == 0:
                _track(run, train_log, display)
            if run.save_every and run.step % run.save_every == 0 and run.step < run.total_steps:
                if run.step % run.eval_every:
                    run.evaluate()
                run.checkpoint(out / f"step_{run.step:07d}.pt")
        run.model.eval()
        return run.checkpoint(out / "final.pt")
    finally:
        display.close()
        train_log.close()


def _measure(run: Run, train_log: Sinks | _NoLog, display: Display) -> None:
    row = run.evaluate()
    train_log.append("eval", row)
    display.update(step=run.step, epoch=run.step / run.steps_per_epoch)
    display.measured(run.step, **{k: v for k, v in row.items() if k.startswith("test_")})
    if run.config.track_sharpness_every and run.step % run.config.track_sharpness_every == 0:
        _track(run, train_log, display)
    display.line()


def _track(run: Run, train_log: Sinks | _NoLog, display: Display) -> None:
    row = run.track_sharpness()
    train_log.append("sharpness", row)
    display.measured(run.step, sharpness=row["top_eigenvalue"])
