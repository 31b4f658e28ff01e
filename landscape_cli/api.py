"""The Python API: a model and its data, ready to analyse, from a checkpoint file or a live module.

    import landscape_cli as ls

    scape = ls.load("sample_checkpoints/mlp_digits.pt")
    scape.spectrum(top_k=3).lanczos.top.values
    scape.check(max_top_eig=0.5).assert_passed()

    scape = ls.wrap(model, (x, y), loss="cross_entropy")      # or a DataLoader
    scape.surface(dims=2).summary["rise_mean"]

The commands are built on these objects (`check`, `compare`) and on the same compute functions
(`spectrum`, `surface`, `eos`), so a number from Python equals the command's number for the same options.
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DistributedSampler

from .check.compare import (
    MEASURES,
    Delta,
    default_measures_of_files,
    deltas,
    measures_of_file,
    parse_increase,
    parse_measures,
    setting_differences,
)
from .check.gates import KINDS, GateResult, validate_limits
from .check.run import run_checks
from .checkpoint import LOSSES, Checkpoint, load_checkpoint
from .choices import CURVATURES
from .distributed import current as current_group
from .distributed import share_file
from .eos.measure import EosResult, measure_checkpoint
from .eos.setting import OptimizerSetting
from .errors import LandscapeError, ParameterError
from .limits import memory_limit
from .losses import Loss
from .operators import CurvatureOperator
from .problem import Problem
from .progress import Tracker
from .session import check_model_fits_data, problem_from_checkpoint, resolve_device, resolve_dtype
from .sharpness import SharpnessResult, SharpnessSettings, measure_sharpness
from .sources import subset_indices
from .spectrum import SpectrumOptions, SpectrumResult, compute_spectrum, validate_lanczos
from .surface import SurfaceOptions, SurfaceResult, compute_surface
from .zoo.data import Dataset, data_spec
from .zoo.models import model_spec


@dataclass
class CheckResult:
    """Every gate of one check, and what was measured for them."""

    gates: list[GateResult]
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failures(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def value(self, gate: str) -> float:
        """The measured value of one gate, e.g. value('max_top_eig')."""
        for g in self.gates:
            if g.name == gate:
                return g.value
        raise KeyError(f"no gate '{gate}' in this check; it has {', '.join(g.name for g in self.gates)}")

    def assert_passed(self) -> None:
        """Raise AssertionError naming each failed gate, its value and its limit (for pytest)."""
        if self.failures:
            raise AssertionError("; ".join(describe_gate(g) for g in self.failures))

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "gates": [g.to_dict() for g in self.gates], "measured": self.measured}


def describe_gate(gate: GateResult) -> str:
    relation = "<=" if gate.bound == "max" else ">="
    verdict = "passed" if gate.passed else "failed"
    return f"{gate.quantity} {gate.value:.6g} {verdict} {relation} {gate.limit:.6g}"


class Landscape:
    """A model, its data and loss (a `Problem`), with the checkpoint record results are attributed to.

    Build one with `load` or `wrap`. The model is copied: analysing never changes the caller's module.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        problem: Problem,
        *,
        split: str = "train",
        optimizer: OptimizerSetting | None = None,
        optimizer_state: dict[str, Any] | None = None,
        other_split: Callable[[str], Problem] | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.problem = problem
        self.split = split
        self.optimizer = optimizer
        self.optimizer_state = optimizer_state
        self._other_split = other_split  # a checkpoint's data can give its other splits alike; a live one cannot

    def __repr__(self) -> str:
        source = self.checkpoint.path or "a live module"
        return f"Landscape({source}: {self.problem.n_params} parameters, {self.problem.n_samples} samples)"

    @property
    def n_params(self) -> int:
        return self.problem.n_params

    def operator(self, curvature: str = "hessian", params: str | Sequence[str] | None = None) -> CurvatureOperator:
        """The curvature matrix (hessian, ggn or fisher) as a linear operator, over all parameters or the
        block of those whose names match the glob patterns `params`."""
        return CurvatureOperator(self.problem, curvature, params)

    def loss(self) -> float:
        """The mean loss over the data at the weights."""
        return float(self.problem.evaluate()["loss"])

    def spectrum(
        self,
        top_k: int = 1,
        bottom_k: int = 0,
        *,
        trace: bool = False,
        density: bool = False,
        tol: float = 1e-4,
        max_iter: int = 200,
        seed: int | None = None,
        tracker: Tracker | None = None,
        **options: Any,
    ) -> SpectrumResult:
        """Top/bottom eigenvalues by Lanczos, and optionally the trace (Hutch++) and spectral density.
        Extra keyword arguments are `SpectrumOptions` fields (trace_hvps, density_runs, ...)."""
        spec = SpectrumOptions(
            top_k=top_k,
            bottom_k=bottom_k,
            trace=trace,
            density=density,
            tol=tol,
            max_iter=max_iter,
            seed=self._seed(seed),
            **options,
        )
        return compute_spectrum(self.problem, spec, tracker)

    def sharpness(self, *, tol: float = 1e-4, seed: int | None = None) -> float:
        """The top Hessian eigenvalue."""
        return float(self.spectrum(1, tol=tol, seed=seed).lanczos.top.values[0])  # type: ignore[union-attr]

    def measure(self, measure: str, rho: float = 0.05, **options: Any) -> SharpnessResult:
        """A sharpness measure of the literature at the weights: `worst` (max loss increase within rho, L2 or
        L-inf `norm`; a lower bound found by ascent), `average` (mean increase under N(0, rho^2 I)) or
        `keskar`; `adaptive=True` scales the perturbation by |w|, `m` takes it per batch of m samples.
        Other keyword arguments are `SharpnessSettings` fields (perturbations, steps, restarts, seed)."""
        options.setdefault("seed", self._seed(None))
        return measure_sharpness(self.problem, SharpnessSettings(measure, rho, **options))

    def surface(
        self,
        dims: int = 1,
        dirs: str = "random",
        *,
        x: str | None = None,
        y: str | None = None,
        out: str | Path | None = None,
        overwrite: bool = False,
        resume: bool = False,
        also_splits: Sequence[str] = (),
        seed: int | None = None,
        tracker: Tracker | None = None,
        command: list[str] | None = None,
        **options: Any,
    ) -> SurfaceResult:
        """A 1D or 2D loss surface (x, y as 'MIN:MAX:N'); written to `out` when given (`resume` continues a
        stopped sweep into it), else its arrays are only returned. `also_splits` ('test') sweeps other splits of
        a loaded checkpoint's data on the same grid. Extra keyword arguments are `SurfaceOptions` fields (norm,
        ignore, radius, ...)."""
        spec = SurfaceOptions(dims=dims, dirs=dirs, x=x, y=y, seed=self._seed(seed), **options)
        problems = {self.split: self.problem}
        for name in also_splits:
            if self._other_split is None:
                raise ParameterError("also_splits", "needs a loaded checkpoint whose data has splits")
            problems.setdefault(name, self._other_split(name))
        run = {"overwrite": overwrite, "resume": resume, "command": command, "tracker": tracker}
        if out is not None:
            return compute_surface(self.checkpoint, problems, spec, Path(out), **run)
        with tempfile.TemporaryDirectory() as tmp:
            return compute_surface(self.checkpoint, problems, spec, Path(tmp) / "surface.h5", **run)

    def eos(
        self,
        *,
        band: float = 0.1,
        tol: float = 1e-4,
        max_iter: int = 200,
        seed: int | None = None,
        tracker: Tracker | None = None,
        **setting: Any,
    ) -> EosResult:
        """Sharpness against the edge of stability of the optimizer (recorded in the checkpoint, given to
        `wrap`, or as keywords: opt, lr, momentum, nesterov, rho, beta1, micro_batches, base)."""
        return measure_checkpoint(
            self.problem,
            self._setting(setting),
            band=band,
            tol=tol,
            max_iter=max_iter,
            seed=self._seed(seed),
            optimizer_state=self.optimizer_state,
            tracker=tracker,
        )

    def check(
        self,
        *,
        max_top_eig: float | None = None,
        min_bottom_eig: float | None = None,
        max_trace: float | None = None,
        max_eos_ratio: float | None = None,
        max_surface_rise: float | None = None,
        max_sharpness_worst: float | None = None,
        max_sharpness_avg: float | None = None,
        radius: float = 0.5,
        tol: float = 1e-4,
        seed: int | None = None,
        tracker: Tracker | None = None,
        surface_dirs: str = "random",
        surface_out: Path | None = None,
        curvature: str = "hessian",
        params: str | None = None,
        sharpness_rho: float = 0.05,
        sharpness_adaptive: bool = False,
        **setting: Any,
    ) -> CheckResult:
        """The gates of `landscape check`, each measurement made once; deterministic given the seed.
        `curvature` (hessian, ggn, fisher) and `params` (glob patterns of a parameter block) choose the matrix
        of the eigenvalue and trace gates. Keywords beyond the gates set the optimizer for the eos gate, as
        in `eos`."""
        limits = validate_limits(
            {
                "max_top_eig": max_top_eig,
                "min_bottom_eig": min_bottom_eig,
                "max_trace": max_trace,
                "max_eos_ratio": max_eos_ratio,
                "max_surface_rise": max_surface_rise,
                "max_sharpness_worst": max_sharpness_worst,
                "max_sharpness_avg": max_sharpness_avg,
            }
        )
        if not 0 < radius < math.inf:
            raise ParameterError("radius", f"radius must be positive and finite, got {radius}")
        SharpnessSettings("average", sharpness_rho).validate()
        validate_lanczos(tol, 200)
        if curvature not in CURVATURES:
            raise ParameterError("curvature", f"'{curvature}' is not one of {', '.join(CURVATURES)}")
        return self._judge(limits, radius, tol, self._seed(seed), tracker, surface_dirs, surface_out, setting,
                           curvature, params, sharpness_rho, sharpness_adaptive)  # fmt: skip

    def _judge(self, limits, radius, tol, seed, tracker, surface_dirs, surface_out, setting, curvature="hessian",
               params=None, sharpness_rho=0.05, sharpness_adaptive=False) -> CheckResult:  # fmt: skip
        """`check` on validated limits (what `compare` calls, with limits that always pass)."""
        optimizer = self._setting(setting) if "max_eos_ratio" in limits else None
        gates, measured = run_checks(
            self.checkpoint,
            self.problem,
            limits,
            radius=radius,
            seed=seed,
            tol=tol,
            setting=optimizer,
            optimizer_state=self.optimizer_state,
            tracker=tracker,
            surface_dirs=surface_dirs,
            surface_out=surface_out,
            curvature=curvature,
            params=params,
            sharpness_rho=sharpness_rho,
            sharpness_adaptive=sharpness_adaptive,
        )
        return CheckResult(gates, measured)

    def _seed(self, seed: int | None) -> int:
        return self.problem.seed if seed is None else int(seed)

    def _setting(self, overrides: dict[str, Any]) -> OptimizerSetting:
        known = OptimizerSetting.__dataclass_fields__
        unknown = [k for k in overrides if k not in known]
        if unknown:
            raise LandscapeError(f"unknown optimizer setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        setting = (self.optimizer or OptimizerSetting()).override(**overrides)
        setting.rule()  # refuses an optimizer without an edge, or a missing lr/rho, here
        return setting


def load(
    path: str | Path,
    *,
    split: str | None = None,
    samples: int | None = None,
    batch_size: int = 2048,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    train_mode: bool = False,
    hvp: str = "auto",
    seed: int = 0,
    model: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    data: str | None = None,
    data_kwargs: dict[str, Any] | None = None,
    loss: str | None = None,
    loss_options: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    max_memory: str | int | None = None,
    distributed: bool | None = None,
) -> Landscape:
    """A checkpoint on its own data (or `split` of it, or a seeded subset of `samples`). `model`, `data`
    and `loss` describe a foreign checkpoint (a bare state_dict) or override the recorded ones.

    An entry point the file records as its model or data (code, e.g. 'mypkg.nets:build') is imported only
    when you name a model or data here, or pass `trust_remote_code=True`. `max_memory` ('64G') refuses
    models and data estimated to need more (default: 80% of RAM). Inside a torchrun job every rank loading the
    same file shares the samples and gets the global result (`distributed=False`: each rank on its own)."""
    with memory_limit(max_memory):
        ckpt = load_checkpoint(
            path,
            model=model_spec(model, model_kwargs) if model else None,
            data=data_spec(data, "train", seed, data_kwargs) if data else None,
            loss=loss,
            trust_remote_code=trust_remote_code,
        )
        ckpt.loss_spec()
        ckpt.loss_options = dict(loss_options or {})
        return landscape_of(ckpt, split, samples, batch_size, device, dtype, seed, train_mode, hvp, distributed)


def landscape_of(
    ckpt: Checkpoint,
    split: str | None = None,
    samples: int | None = None,
    batch_size: int = 2048,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    seed: int = 0,
    train_mode: bool = False,
    hvp: str = "auto",
    distributed: bool | None = None,
) -> Landscape:
    """A loaded checkpoint on its data, with the optimizer it records (what `load` and the commands share).
    `distributed` None: the samples are shared among the ranks of a running torchrun job, if any."""
    alike = functools.partial(
        problem_from_checkpoint,
        ckpt,
        samples=samples,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        train_mode=train_mode,
        hvp=hvp,
        seed=seed,
        distributed=distributed,
    )
    record = ckpt.optimizer or {}
    return Landscape(
        ckpt,
        alike(split=split),
        split=split or str((ckpt.data or {}).get("split", "train")),
        optimizer=OptimizerSetting.from_checkpoint(record) if record.get("name") else None,
        optimizer_state=record.get("state"),
        other_split=lambda name: alike(split=name),
    )


def wrap(
    model: nn.Module,
    data: Any,
    loss: str | Loss | Callable[..., Any] = "cross_entropy",
    *,
    optimizer: torch.optim.Optimizer | None = None,
    batch_size: int = 2048,
    samples: int | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    train_mode: bool = False,
    hvp: str = "auto",
    seed: int = 0,
    split: str = "train",
    distributed: bool | None = None,
) -> Landscape:
    """A live module on its data, ready to analyse.

    `data`: tensors `(x, y)` (held on the device), or streamed batch by batch: a torch `Dataset`, an
    `IterableDataset`, a `DataLoader` or any iterable of batches, where a batch is `(x, y, ...)`, a dict
    of tensors (HuggingFace style, targets under 'labels') or a tensor. `samples` keeps a seeded subset of
    a Dataset (an iterable's first samples). Integer inputs (token ids) keep their dtype.

    `loss`: a name (cross_entropy, mse, half_sse, bce_with_logits, model), an nn.Module loss, or a
    function `fn(output, batch)` returning the batch's mean or `(loss_sum, count)`; see
    `landscape_cli.losses`.

    `optimizer`: a torch SGD or Adam, or one of `landscape_cli.optim`'s, for the edge of stability; Adam's
    state gives the preconditioner.

    `distributed`: inside a torchrun job (a process group started), True shares the samples among the ranks
    and sums over them, so every rank gets the global result at a fraction of the work; the default does so
    for a DataLoader with a `DistributedSampler` (whose own split pads with repeated samples, so the fixed
    set is split here instead), and leaves other data to each rank alone."""
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"wrap needs a torch.nn.Module, got {type(model).__name__}")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype)
    dataset = _in_memory(data, samples, seed)
    problem = Problem(  # copies the module
        model,
        dataset if dataset is not None else data,
        loss,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        train_mode=train_mode,
        hvp=hvp,
        seed=seed,
        samples=samples,
        distributed=_wants_distributed(data) if distributed is None else distributed,
    )
    if dataset is not None and isinstance(loss, str) and loss in ("cross_entropy", "mse", "half_sse"):
        check_model_fits_data(problem.model, dataset, device, dtype, loss)  # switches the copy to eval mode
    else:
        problem.check_fits()
    problem.model.train(train_mode)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    recorded = problem.loss_name if problem.loss_name in LOSSES else None
    ckpt = Checkpoint(state_dict=state, loss=recorded, native=False)
    setting, opt_state = _optimizer_setting(optimizer, model)
    return Landscape(ckpt, problem, split=split, optimizer=setting, optimizer_state=opt_state)


def _wants_distributed(data: Any) -> bool:
    sampler = getattr(data, "sampler", None)
    return current_group() is not None and isinstance(sampler, DistributedSampler)


def _in_memory(data: Any, samples: int | None, seed: int) -> Dataset | None:
    """Floating inputs and targets given as two tensors stay on the device as a Dataset (the fastest path);
    anything else is streamed."""
    if isinstance(data, Dataset):
        return data
    if not (isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        return None
    x, y = (t.detach().cpu() for t in data)
    if not x.is_floating_point() or x.dim() == 0 or y.dim() == 0 or len(x) != len(y) or len(x) == 0:
        return None
    indices = subset_indices(len(x), samples, seed)
    if indices is not None:
        x, y = x[indices], y[indices]
    return Dataset(x, y if y.is_floating_point() else y.long())


def hessian(model: nn.Module, data: Any, loss: Any = "cross_entropy", *, params: Any = None, **options: Any
            ) -> CurvatureOperator:  # fmt: skip
    """The Hessian of the mean loss as a linear operator (`op @ v`, `op.to_scipy()`); `params`: glob
    patterns of parameter names for a block. `options` are those of `wrap`."""
    return wrap(model, data, loss, **options).operator("hessian", params)


def ggn(model: nn.Module, data: Any, loss: Any = "cross_entropy", *, params: Any = None, **options: Any
        ) -> CurvatureOperator:  # fmt: skip
    """The generalized Gauss-Newton matrix J^T H_loss J as a linear operator; as `hessian`."""
    return wrap(model, data, loss, **options).operator("ggn", params)


def fisher(model: nn.Module, data: Any, loss: Any = "cross_entropy", *, params: Any = None, **options: Any
           ) -> CurvatureOperator:  # fmt: skip
    """The empirical Fisher (1/N) sum_i g_i g_i^T as a linear operator; as `hessian`."""
    return wrap(model, data, loss, **options).operator("fisher", params)


def _optimizer_setting(
    optimizer: torch.optim.Optimizer | None, model: nn.Module
) -> tuple[OptimizerSetting | None, dict[str, Any] | None]:
    """Hyper-parameters of a live optimizer as an edge-of-stability setting (and Adam's state)."""
    if optimizer is None:
        return None, None
    from .optim import SharpnessAwareOptimizer

    sharpness_aware = isinstance(optimizer, SharpnessAwareOptimizer)
    base = optimizer.base if sharpness_aware else optimizer
    group = base.param_groups[0]
    if isinstance(base, torch.optim.Adam | torch.optim.AdamW):
        if isinstance(base, torch.optim.AdamW) or group.get("weight_decay"):
            raise LandscapeError("no edge-of-stability formula for Adam with weight decay; pass an Adam without it")
        setting = OptimizerSetting(base="adam", lr=float(group["lr"]), beta1=float(group["betas"][0]))
        state = _adam_state_in_model_order(base, model)
    elif isinstance(base, torch.optim.SGD):
        setting = OptimizerSetting(
            lr=float(group["lr"]), momentum=float(group["momentum"]), nesterov=bool(group["nesterov"])
        )
        state = None
    else:
        raise LandscapeError(f"no edge-of-stability formula for {type(base).__name__}; use SGD, Adam or SAM")
    if sharpness_aware:
        setting = setting.override(opt=optimizer.variant, rho=float(optimizer.param_groups[0]["rho"]),
                                   micro_batches=getattr(optimizer, "micro_batches", 1))  # fmt: skip
    return setting, state


def _adam_state_in_model_order(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Any]:
    """Adam's state re-indexed by the model's trainable parameter order, which the preconditioner reads."""
    by_param = {id(p): optimizer.state.get(p, {}) for g in optimizer.param_groups for p in g["params"]}
    trainable = [p for p in model.parameters() if p.requires_grad]
    state = {i: by_param[id(p)] for i, p in enumerate(trainable) if by_param.get(id(p))}
    group = optimizer.param_groups[0]
    return {"state": state, "param_groups": [{"betas": group["betas"], "eps": group["eps"], "lr": group["lr"]}]}


@dataclass
class CompareResult:
    """The same measurements on BASE and NEW, their deltas, and the --max-increase verdict of each."""

    base: str
    new: str
    deltas: list[Delta]
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(d.passed for d in self.deltas)

    def delta(self, measure: str) -> Delta:
        for d in self.deltas:
            if d.measure == measure:
                return d
        raise KeyError(f"'{measure}' was not compared; this comparison has {', '.join(d.measure for d in self.deltas)}")

    def assert_passed(self) -> None:
        """Raise AssertionError naming each measurement that got sharper than allowed (for pytest)."""
        failed = [d for d in self.deltas if not d.passed]
        if failed:
            raise AssertionError(
                "; ".join(
                    f"{d.quantity} {d.base:.6g} -> {d.new:.6g} is {100 * d.sharper_by:+.2f}% sharper, "
                    f"more than {100 * (d.limit or 0):.3g}%"
                    for d in failed
                )
            )

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "new": self.new, "passed": self.passed, "deltas": [d.to_dict() for d in self.deltas],
                "warnings": self.warnings}  # fmt: skip


def compare(
    base: Landscape | str | Path,
    new: Landscape | str | Path,
    *,
    what: str | Iterable[str] | None = None,
    max_increase: float | str | None = None,
    radius: float = 0.5,
    tol: float = 1e-4,
    seed: int = 0,
    tracker: Tracker | None = None,
    force: bool = False,
    curvature: str = "hessian",
    params: str | None = None,
    **load_options: Any,
) -> CompareResult:
    """Compare two models (Landscapes or checkpoint paths, measured alike: the same data options and seed,
    NEW's surface on BASE's directions) or two results files (spectrum, surface or eos files of the same
    kind). `what`: top, bottom, trace, eos, surface (default top,surface for models, what the files hold
    otherwise). `max_increase`: 0.1 or '10%', how much sharper NEW may be. Two files measured with other
    settings (data, sample count, loss, mode, curvature; a surface's dimension, radius or directions) are
    refused unless `force`, which compares them with a warning. `curvature` and `params` choose the matrix
    (as in `check`) when comparing models. `load_options` go to `load`."""
    limit = parse_increase(max_increase)
    warnings: list[str] = []
    names = (what if isinstance(what, str) else ",".join(what)) if what is not None else None
    if _is_model(base) != _is_model(new):
        model, other = (base, new) if _is_model(base) else (new, base)
        raise LandscapeError(
            f"compare takes two checkpoints or two results files; got {_name(model)} (a model) and {other}"
        )
    if _is_model(base):
        measures = parse_measures(names if names is not None else "top,surface")
        if not 0 < radius < math.inf:
            raise ParameterError("radius", f"radius must be positive and finite, got {radius}")
        validate_lanczos(tol, 200)
        base_scape = base if isinstance(base, Landscape) else load(base, seed=seed, **load_options)
        with tempfile.TemporaryDirectory() as tmp:
            surface = Path(tmp) / "base_surface.h5"  # NEW is swept on BASE's directions
            matrix = (curvature, params)
            base_values, quantities = _measure(base_scape, measures, radius, tol, seed, tracker, "random", surface,
                                               matrix)  # fmt: skip
            if "surface" in measures:
                share_file(surface, base_scape.problem.group)  # rank 0 wrote it; every rank sweeps NEW on it
            del base_scape
            new_scape = new if isinstance(new, Landscape) else load(new, seed=seed, **load_options)
            new_values, _ = _measure(new_scape, measures, radius, tol, seed, tracker, f"file:{surface}", None, matrix)
    else:
        measures = parse_measures(names) if names is not None else default_measures_of_files(Path(base))
        base_kind, base_values, quantities, base_settings = measures_of_file(Path(base), measures)
        new_kind, new_values, _, new_settings = measures_of_file(Path(new), measures)
        if base_kind != new_kind:
            raise LandscapeError(f"{base} is a {base_kind} file and {new} a {new_kind} file; compare like with like")
        differences = setting_differences(base_settings, new_settings)
        if differences:
            message = f"{Path(base).name} and {Path(new).name} were not measured alike: " + "; ".join(differences)
            if not force:
                raise LandscapeError(message + "; pass --force to compare them anyway")
            warnings.append(message)
    result = CompareResult(_name(base), _name(new), deltas(base_values, new_values, quantities, limit))
    result.warnings = warnings
    return result


def _is_model(item: Landscape | str | Path) -> bool:
    return isinstance(item, Landscape) or Path(item).suffix in (".pt", ".pth")


def _name(item: Landscape | str | Path) -> str:
    if isinstance(item, Landscape):
        return item.checkpoint.path.name if item.checkpoint.path else "module"
    return Path(item).name


def _measure(scape, measures, radius, tol, seed, tracker, dirs, out, matrix) -> tuple[dict[str, float], dict[str, str]]:
    """The requested measurements, through the gates of `check` with limits that always pass."""
    limits = {MEASURES[m][0]: (float("inf") if MEASURES[m][1] else float("-inf")) for m in measures}
    by_gate = {g.name: g for g in scape._judge(limits, radius, tol, seed, tracker, dirs, out, {}, *matrix).gates}
    values = {m: by_gate[MEASURES[m][0]].value for m in measures}
    quantities = {m: by_gate[MEASURES[m][0]].quantity for m in measures}
    return values, quantities


__all__ = [
    "CheckResult",
    "CompareResult",
    "KINDS",
    "Landscape",
    "compare",
    "describe_gate",
    "fisher",
    "ggn",
    "hessian",
    "load",
    "wrap",
]
