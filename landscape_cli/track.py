"""Sharpness tracking from any training loop: the top Hessian eigenvalue, trace, gradient norm, the SAM
perturbation's alignment with the top eigenvector and the edge of stability, every K steps.

    tracker = SharpnessTracker(model, train_loader, "cross_entropy", every=200, csv="sharpness.csv")
    for step, (x, y) in enumerate(loader, 1):
        ...                                      # your step
        tracker.step(step, optimizer)            # measures when step % every == 0

Measurements are made on a fixed, seeded sample set (the same samples every time, streamed batch by batch as
`ls.wrap` reads data), through the same operator as `landscape spectrum`, at the model's current weights
(copied in; the model is not touched). Lanczos starts from the last top eigenvector, which moves little
between measurements, so each refresh needs fewer products than a cold start.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import LandscapeWarning
from .linalg import hutchpp_trace, lanczos_extremal
from .operators import CurvatureOperator
from .problem import Problem
from .sinks import CsvTables, Sinks, TableLog, TensorBoardScalars

MEASURES = ("top", "trace", "grad_norm", "alignment", "eos")
#: The columns each measure adds to a row.
COLUMNS = {
    "top": ("top_eigenvalue", "error_bound", "hvps"),
    "grad_norm": ("grad_norm",),
    "alignment": ("alignment",),
    "trace": ("trace", "trace_stderr"),
    "eos": ("edge", "eos_ratio"),
}


def _learning_rate(optimizer: Any) -> float:
    """The learning rate the optimizer (its first parameter group) steps with now; NaN without one."""
    groups = getattr(optimizer, "param_groups", None)
    return float(groups[0]["lr"]) if groups else math.nan


def unwrapped_optimizer(optimizer: Any) -> Any:
    """The optimizer a trainer wraps (accelerate's AcceleratedOptimizer and Lightning's LightningOptimizer keep
    it as `.optimizer`), or `optimizer` itself."""
    inner = getattr(optimizer, "optimizer", None)
    while isinstance(inner, torch.optim.Optimizer) and inner is not optimizer:
        optimizer, inner = inner, getattr(inner, "optimizer", None)
    return optimizer


def top_eigenpair(problem: Problem, *, tol: float, max_iter: int, seed: int, start: torch.Tensor | None = None
                  ) -> tuple[dict[str, float], torch.Tensor]:  # fmt: skip
    """The top Hessian eigenvalue of `problem` at its loaded weights, by Lanczos from `start` (a seeded random
    vector when None): a row's columns (top_eigenvalue, error_bound, hvps) and the eigenvector, which is the
    next measurement's warm start."""
    calls = problem.hvp_calls
    result = lanczos_extremal(CurvatureOperator(problem, "hessian"), top_k=1, tol=tol, max_iter=max_iter,
                              seed=seed, want_vectors=True, start=start)  # fmt: skip
    assert result.top.vectors is not None
    columns = {
        "top_eigenvalue": float(result.top.values[0]),
        "error_bound": float(result.top.error_bounds[0]),
        "hvps": float(problem.hvp_calls - calls),
    }
    return columns, result.top.vectors[0].detach()


def perturbation_alignment(eps: list[torch.Tensor] | None, vector: torch.Tensor) -> float | None:
    """|cos(eps, v)| of a SAM perturbation with the top eigenvector (None before the optimizer perturbed)."""
    if eps is None:
        return None
    flat = torch.cat([e.reshape(-1) for e in eps]).to(vector)
    return abs(float(flat @ vector / flat.norm().clamp_min(1e-30)))


class SharpnessTracker:
    """Sharpness measured every `every` steps. Rows go to `self.rows` and, started afresh at the first
    measurement, to `log` (an HDF5 log that `landscape plot` and `landscape eos` read as they read train.h5; it
    records the optimizer's setting), `csv` and TensorBoard event files in the directory `tensorboard`."""

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        loss: Any = "cross_entropy",
        *,
        every: int = 100,
        measures: Iterable[str] = ("top", "grad_norm"),
        samples: int | None = 1024,
        seed: int = 0,
        tol: float = 1e-3,
        max_iter: int = 100,
        trace_hvps: int = 30,
        batch_size: int = 2048,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        warm_start: bool = True,
        csv: str | Path | None = None,
        tensorboard: str | Path | None = None,
        log: str | Path | None = None,
        distributed: bool | None = None,
    ) -> None:
        from .api import wrap

        self.measures = tuple(measures)
        unknown = sorted(set(self.measures) - set(MEASURES))
        if unknown or not self.measures:
            raise ValueError(f"measures must be some of {', '.join(MEASURES)}, got {list(self.measures)}")
        if not (isinstance(every, int) and every >= 1):
            raise ValueError(f"every must be a whole number of at least 1, got {every!r}")
        if not 0 < tol < 1:
            raise ValueError(f"tol must lie in (0, 1), got {tol}")
        first = next(model.parameters())
        self.model = model
        self.landscape = wrap(model, data, loss, samples=samples, seed=seed, batch_size=batch_size,
                              device=device or first.device, dtype=dtype or first.dtype,
                              distributed=distributed)  # fmt: skip
        self.every, self.seed, self.tol, self.max_iter, self.trace_hvps = every, seed, tol, max_iter, trace_hvps
        self.warm_start = warm_start
        self.rows: list[dict[str, float]] = []
        self._vector: torch.Tensor | None = None
        self._csv_path = Path(csv) if csv is not None else None
        self._tensorboard_dir = Path(tensorboard) if tensorboard is not None else None
        self._log_path = Path(log) if log is not None else None
        self._sinks: Sinks | None = None
        group = self.landscape.problem.group
        #: Under torchrun every rank measures (the sums are collective) and rank 0 writes.
        self._writes = group is None or group.is_main
        self._warned: set[str] = set()

    def step(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> dict[str, float] | None:
        """Measure when `step` is a multiple of `every` (and return the row); otherwise do nothing."""
        if step % self.every:
            return None
        return self.measure(step, optimizer)

    def measure(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        """Every chosen measure at the model's current weights, now. `optimizer` may be a trainer's wrapper
        around the optimizer (accelerate's, Lightning's)."""
        optimizer = unwrapped_optimizer(optimizer)
        problem = self.landscape.problem
        problem.load_weights(self.model)
        loss, gradient = problem.loss_and_gradient()
        grad_norm = float(gradient.double().norm())
        row: dict[str, float] = {"step": float(step), "loss": loss, "lr": _learning_rate(optimizer)}
        if "grad_norm" in self.measures:
            row["grad_norm"] = grad_norm
        if {"top", "alignment", "eos"} & set(self.measures):
            columns, self._vector = top_eigenpair(problem, tol=self.tol, max_iter=self.max_iter, seed=self.seed,
                                                  start=self._vector if self.warm_start else None)  # fmt: skip
            row.update(columns)
            if "alignment" in self.measures:
                alignment = perturbation_alignment(getattr(optimizer, "last_perturbation", None), self._vector)
                if alignment is not None:
                    row["alignment"] = alignment
            if "eos" in self.measures:
                self._edge(row, optimizer, columns["top_eigenvalue"], grad_norm)
        if "trace" in self.measures:
            trace = hutchpp_trace(CurvatureOperator(problem, "hessian"), matvecs=self.trace_hvps, seed=self.seed)
            row.update(trace=trace.estimate, trace_stderr=trace.stderr)
        self.rows.append(row)
        if self._writes:
            self._write(row, optimizer)
        return row

    def _edge(self, row: dict[str, float], optimizer: Any, top: float, grad_norm: float) -> None:
        """The optimizer's edge of stability and sharpness / edge (SGD and the SAM family; Adam's preconditioned
        sharpness is `landscape eos`'s)."""
        from .api import _optimizer_setting
        from .eos.measure import micro_batch_grad_norms

        if optimizer is None:
            return
        try:
            setting, _ = _optimizer_setting(optimizer, self.model)
            assert setting is not None
            rule = setting.rule()
            if rule.startswith("adam"):
                raise ValueError("Adam's edge compares the preconditioned sharpness: use landscape eos")
            micro = micro_batch_grad_norms(self.landscape.problem, setting.micro_batches, self.seed) \
                if rule == "msam" else []  # fmt: skip
            edge = setting.edge(grad_norm, micro)
        except Exception as exc:  # noqa: BLE001 - an optimizer without a formula: said once, then skipped
            if "eos" not in self._warned:
                self._warned.add("eos")
                warnings.warn(LandscapeWarning(f"no edge of stability tracked: {exc}"), stacklevel=3)
            return
        row.update(edge=edge, eos_ratio=top / edge if edge > 0 else math.inf)

    # -- sinks ---------------------------------------------------------------------------------------
    def columns(self) -> tuple[str, ...]:
        """The columns of this tracker's rows (a measure not made in a row is NaN there)."""
        wanted = set(self.measures)
        columns = ["step", "loss", "lr"]
        for measure, names in COLUMNS.items():
            if measure in wanted or (measure == "top" and wanted & {"alignment", "eos"}):
                columns += names
        return tuple(columns)

    def _write(self, row: dict[str, float], optimizer: Any) -> None:
        if self._sinks is None:
            self._sinks = self._open_sinks(optimizer)
        self._sinks.append("sharpness", row)

    def _open_sinks(self, optimizer: Any) -> Sinks:
        tables = {"sharpness": self.columns()}
        sinks: list[TableLog | CsvTables | TensorBoardScalars] = []
        if self._log_path is not None:
            sinks.append(TableLog(self._log_path, self._log_attrs(optimizer), tables, what="sharpness log"))
        if self._csv_path is not None:
            sinks.append(CsvTables({"sharpness": self._csv_path}, tables))
        if self._tensorboard_dir is not None:
            sinks.append(TensorBoardScalars(self._tensorboard_dir))
        return Sinks(*sinks)

    def _log_attrs(self, optimizer: Any) -> dict[str, Any]:
        """What `landscape eos` and `landscape plot` read from the log: its kind, the optimizer's setting (the
        edge's formula) and how the measurements were made."""
        from dataclasses import asdict

        from ._version import __version__
        from .api import _optimizer_setting

        config: dict[str, Any] = {}
        try:
            setting, _ = _optimizer_setting(optimizer, self.model)
        except Exception:  # noqa: BLE001 - an optimizer without an edge formula: its log records none
            setting = None
        if setting is not None:
            record = asdict(setting)
            config = {**record, "betas": [record.pop("beta1"), 0.999]}
        problem = self.landscape.problem
        return {"kind": "sharpness-log", "config": config, "measures": list(self.measures), "every": self.every,
                "samples": problem.n_samples, "seed": self.seed, "tol": self.tol, "version": __version__,
                "loss": str(problem.loss_name)}  # fmt: skip

    def close(self) -> None:
        if self._sinks is not None:
            self._sinks.close()
            self._sinks = None

    def __enter__(self) -> SharpnessTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
