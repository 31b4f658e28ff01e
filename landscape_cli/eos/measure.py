"""Where a checkpoint sits relative to the edge of its own optimizer: the sharpness by Lanczos (for
Adam the preconditioned one), the gradient norms the edge depends on, the edge, and a verdict."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import LandscapeError, ParameterError
from ..linalg import lanczos_extremal
from ..problem import Problem
from ..progress import Tracker
from .setting import OptimizerSetting, verdict


@dataclass
class EosResult:
    setting: dict[str, Any]
    sharpness: float
    error_bound: float
    preconditioned: bool
    grad_norm: float
    edge: float
    ratio: float
    band: float
    verdict: str
    loss: float
    hvps: int
    problem: dict[str, Any]
    micro_grad_norms: list[float] = field(default_factory=list)
    seconds: float = 0.0


def adam_preconditioner(optimizer_state: dict[str, Any] | None, problem: Problem) -> torch.Tensor:
    """P = sqrt(v_hat) + eps, flat in the problem's layout, from a saved torch Adam state."""
    base = (optimizer_state or {}).get("base", optimizer_state or {})
    state, groups = base.get("state") if isinstance(base, dict) else None, base.get("param_groups") if base else None
    if not state or not groups:
        raise LandscapeError(
            "the checkpoint holds no Adam state (exp_avg_sq); the preconditioned sharpness needs a checkpoint "
            "saved by landscape train after at least one Adam step"
        )
    group = groups[0]
    beta2, eps = float(group["betas"][1]), float(group["eps"])
    parts = []
    for index, shape in enumerate(problem.layout.shapes):
        entry = state.get(index, state.get(str(index)))
        if entry is None or "exp_avg_sq" not in entry:
            raise LandscapeError(f"the Adam state has no exp_avg_sq for parameter {problem.layout.names[index]}")
        v = entry["exp_avg_sq"]
        if tuple(v.shape) != tuple(shape):
            raise LandscapeError(f"the Adam state does not fit parameter {problem.layout.names[index]}")
        step = float(entry["step"])
        v_hat = v.double() / (1.0 - beta2**step)
        parts.append((v_hat.sqrt() + eps).reshape(-1))
    return torch.cat(parts).to(problem.device, problem.dtype)


def micro_batch_grad_norms(problem: Problem, m: int, seed: int) -> list[float]:
    """Gradient norms of the m micro-batches (a seeded permutation of the samples cut in m parts), for data in
    memory and streamed alike."""
    if m < 1 or m > problem.n_samples:
        raise ParameterError(
            "micro_batches", f"micro_batches must be between 1 and the {problem.n_samples} samples, got {m}"
        )
    order = torch.randperm(problem.n_samples, generator=torch.Generator().manual_seed(seed))
    part_of = torch.empty(problem.n_samples, dtype=torch.long)
    for part, members in enumerate(torch.tensor_split(order, m)):
        part_of[members] = part
    return [float(gradient.double().norm()) for gradient in problem.group_gradients(part_of, m)]


def measure_checkpoint(
    problem: Problem,
    setting: OptimizerSetting,
    *,
    band: float = 0.1,
    tol: float = 1e-4,
    max_iter: int = 200,
    seed: int = 0,
    optimizer_state: dict[str, Any] | None = None,
    tracker: Tracker | None = None,
) -> EosResult:
    """Measure the sharpness the edge governs and compare it with the edge."""
    if not band > 0:
        raise ParameterError("band", f"band must be positive, got {band}")
    started = time.perf_counter()
    rule = setting.rule()
    loss, gradient = problem.loss_and_gradient()
    if not torch.isfinite(gradient).all() or loss != loss:
        raise LandscapeError(f"the loss at the checkpoint is {loss} (not finite); nothing to analyse")
    grad_norm = float(gradient.double().norm())
    micro = micro_batch_grad_norms(problem, setting.micro_batches, seed) if rule == "msam" else []
    preconditioned = rule == "adam"
    if preconditioned:
        scale = adam_preconditioner(optimizer_state, problem).rsqrt()

        def matvec(v: torch.Tensor) -> torch.Tensor:
            return scale * problem.hvp(scale * v)
    else:
        matvec = problem.hvp
    tracker = tracker or Tracker(None)
    tracker.start("Lanczos", total=min(max_iter, problem.n_params))
    calls = problem.hvp_calls
    result = lanczos_extremal(
        matvec,
        problem.n_params,
        top_k=1,
        tol=tol,
        max_iter=max_iter,
        seed=seed,
        device=problem.device,
        dtype=problem.dtype,
        on_step=lambda steps, _: tracker.update(steps),
    )
    sharpness = float(result.top.values[0])
    edge = setting.edge(grad_norm, micro)
    ratio = sharpness / edge if edge > 0 else float("inf")
    return EosResult(
        setting=setting.describe(),
        sharpness=sharpness,
        error_bound=float(result.top.error_bounds[0]),
        preconditioned=preconditioned,
        grad_norm=grad_norm,
        edge=edge,
        ratio=ratio,
        band=band,
        verdict=verdict(ratio, band),
        loss=float(loss),
        hvps=problem.hvp_calls - calls,
        problem=problem.describe(),
        micro_grad_norms=micro,
        seconds=time.perf_counter() - started,
    )
