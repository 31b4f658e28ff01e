"""Loss and accuracy at grid points theta = w + x d1 + y d2, one point per pass or many.

Batched evaluation runs the model under `vmap` over a block of points, so each chunk of data serves
every point of the block in one call; it pays where per-call overhead dominates (small dense models)
and loses where batched kernels are slow (convolutions on CPU). Which one runs is measured on the
sweep's own first points, never guessed, and the measured points are kept.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from ..batches import Batch
from ..distributed import agree
from ..losses import FunctionLoss, ModelLoss, logits_of
from ..problem import Problem, positive_count
from .directions import Direction
from .first_layer import FirstLayerCache

#: Upper limit on points per batched pass: beyond this, bigger blocks gain nothing measurable and
#: progress and the resume journal would advance in coarse steps.
MAX_POINTS_PER_PASS = 64
#: Model outputs held back to compute the losses of several points together.
HELD_OUTPUT_BYTES = 64 << 20
#: Default memory for one batched pass: a fraction of free GPU memory, a fixed amount on CPU.
CPU_BUDGET_BYTES = 1 << 30
CUDA_BUDGET_FRACTION = 0.5


class PointEvaluator:
    """Evaluates one Problem (one data split) along fixed directions."""

    def __init__(self, problem: Problem, directions: list[Direction], cache_first_layer: bool = True) -> None:
        self.problem = problem
        self.cache_first_layer = cache_first_layer
        self.first_layer: FirstLayerCache | None = None
        p = problem
        self.directions = torch.stack([d.vector.to(p.device, p.dtype) for d in directions])
        # Buffers that move with the point (interpolation of BatchNorm statistics): base + coeffs @ deltas.
        moving = sorted({name for d in directions for name in d.buffers})
        self.buffer_deltas = {
            name: torch.stack(
                [d.buffers.get(name, torch.zeros_like(p.buffers[name])).to(p.device, p.dtype) for d in directions]
            )
            for name in moving
        }
        self.metrics = ("loss", "accuracy") if p.is_classification else ("loss",)
        self._inplace: tuple[nn.Module, torch.Tensor] | None = None
        self._batched: tuple[nn.Module, FirstLayerCache | None] | None = None
        self.batched_ok = not (
            p.train_mode and any(isinstance(m, nn.modules.dropout._DropoutNd) for m in p.model.modules())
        ) and not isinstance(p.loss, FunctionLoss | ModelLoss)  # their losses read one output at a time

    # -- the points ----------------------------------------------------------------------------
    def thetas(self, coeffs: torch.Tensor) -> torch.Tensor:
        """(P, n) parameters: every point from w afresh, never accumulated."""
        return torch.addmm(self.problem.w.unsqueeze(0), coeffs, self.directions)

    def buffers_at(self, coeffs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Buffers for each of the P points, (P, ...) each; unmoved ones are broadcast views."""
        size = coeffs.shape[0]
        out = {name: b.expand(size, *b.shape) for name, b in self.problem.buffers.items()}
        for name, deltas in self.buffer_deltas.items():
            base = self.problem.buffers[name].reshape(1, -1)
            moved = torch.addmm(base, coeffs, deltas.reshape(deltas.shape[0], -1))
            out[name] = moved.view(size, *self.problem.buffers[name].shape)
        return out

    def _coeffs(self, coefficients: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(coefficients, dtype=self.problem.dtype, device=self.problem.device)

    # -- one point per pass -------------------------------------------------------------------------
    def _inplace_model(self) -> tuple[nn.Module, torch.Tensor]:
        """A private copy of the model whose parameters are views into one flat vector, so a point is
        one copy into that vector and then a plain forward call: no functional_call overhead, which
        cost several times a small MLP's forward pass."""
        if self._inplace is None:
            p = self.problem
            model = copy.deepcopy(p.model).requires_grad_(False)
            flat = torch.empty(p.n_params, device=p.device, dtype=p.dtype)
            for name, view in p.layout.unflatten(flat).items():
                model.get_parameter(name).data = view
            if self.cache_first_layer:
                self.first_layer = FirstLayerCache.install(model, p, self.directions, memory_budget(p.device))
            self._inplace = model, flat
        return self._inplace

    @torch.no_grad()
    def evaluate_loop(self, coefficients: np.ndarray) -> np.ndarray:
        """(P, len(metrics)) values, one forward pass per point and batch.

        Batches are the outer loop, so streamed data is read once for the whole block of points. The
        outputs of a few points are kept and their losses computed together: the loss's small kernels
        cost a third of the digits MLP's forward pass when run point by point."""
        p = self.problem
        model, flat = self._inplace_model()
        coeffs = self._coeffs(coefficients)
        thetas = self.thetas(coeffs)
        moving = {name: model.get_buffer(name) for name in self.buffer_deltas}
        buffers = self.buffers_at(coeffs) if moving else {}
        totals = _Totals(len(coeffs), p)
        for index, batch in p.batches():
            if self.first_layer is not None:
                self.first_layer.chunk = index
            held: list[Any] = []
            held_bytes, start = 0, 0
            for i in range(len(coeffs)):
                flat.copy_(thetas[i])
                if self.first_layer is not None:
                    self.first_layer.coefficients = [float(c) for c in coefficients[i]]
                for name, buffer in moving.items():
                    buffer.copy_(buffers[name][i])
                with p.chunk_context(index):
                    output = p.output(model, batch)
                held.append(output)
                held_bytes += _nbytes(output)
                if held_bytes > HELD_OUTPUT_BYTES or i == len(coeffs) - 1:
                    totals.add(p, slice(start, i + 1), held, batch)
                    held, held_bytes, start = [], 0, i + 1
        return totals.values(self.metrics)

    # -- many points per pass -----------------------------------------------------------------------
    def _batched_model(self) -> tuple[nn.Module, FirstLayerCache | None]:
        """The model the vmapped pass calls: a private copy serving the cached first layer, if any."""
        if self._batched is None:
            p = self.problem
            model: nn.Module = p.model
            cache = None
            if self.cache_first_layer:
                candidate = copy.deepcopy(p.model)
                cache = FirstLayerCache.install(candidate, p, self.directions, memory_budget(p.device))
                model = candidate if cache is not None else p.model
            self._batched = model, cache
        return self._batched

    @torch.no_grad()
    def evaluate_batched(self, coefficients: np.ndarray) -> np.ndarray:
        """(P, len(metrics)) values; each batch of data goes through the model once for all P points."""
        p = self.problem
        coeffs = self._coeffs(coefficients)
        size = len(coeffs)
        thetas = self.thetas(coeffs)
        params = {
            name: thetas[:, p.layout.offsets[i] : p.layout.offsets[i + 1]].view(size, *shape)
            for i, (name, shape) in enumerate(zip(p.layout.names, p.layout.shapes, strict=True))
        }
        buffers = self.buffers_at(coeffs)
        model, cache = self._batched_model()

        def forward(point_params: dict, point_buffers: dict, first: torch.Tensor, args: tuple, kwargs: dict) -> Any:
            if cache is not None:
                cache.serve = first  # this point's first-layer output, computed outside vmap
            return logits_of(functional_call(model, (point_params, point_buffers), args, kwargs))

        batched_forward = vmap(forward, in_dims=(0, 0, 0, None, None), randomness="same")
        totals = _Totals(size, p)
        for index, batch in p.batches():
            first = cache.block(index, coeffs) if cache is not None else torch.zeros(size, device=p.device)
            with p.chunk_context(index):
                outputs = batched_forward(params, buffers, first, batch.args, batch.kwargs)
                totals.add(p, slice(0, size), outputs, batch)
        return totals.values(self.metrics)

    def bytes_per_point(self) -> int:
        """Memory one point adds to a batched pass: its parameters and the activations of one chunk
        (every module's output, an over-estimate: no_grad frees most of them early)."""
        p = self.problem
        total = 0

        def count(_module: nn.Module, _inputs: object, output: object) -> None:
            nonlocal total
            if isinstance(output, torch.Tensor):
                total += output.numel() * output.element_size()

        leaves = [m for m in p.model.modules() if not list(m.children())]
        handles = [m.register_forward_hook(count) for m in leaves]
        probe = p.first_batch(8)
        try:
            with torch.no_grad(), p.chunk_context(0):
                p.output(p.model, probe)
        finally:
            for h in handles:
                h.remove()
        per_sample = total / probe.size
        return int(per_sample * p.batch_size + p.n_params * p.w.element_size() * 2)


class _Totals:
    """Loss sums, counts and correct predictions of P points, accumulated over batches. Counts (targets or
    samples) do not depend on the point, so a batch's are taken from the block that starts at point 0."""

    def __init__(self, size: int, problem: Problem) -> None:
        self.problem = problem
        self.loss_sums = torch.zeros(size, dtype=torch.float64, device=problem.device)
        self.correct = torch.zeros(size, dtype=torch.float64, device=problem.device)
        self.count = 0.0
        self.judged = 0.0

    def add(self, problem: Problem, points: slice, outputs: list[Any] | torch.Tensor, batch: Batch) -> None:
        """The losses of a block of points' outputs on one batch (a stacked tensor or a list)."""
        loss = problem.loss
        if isinstance(outputs, list) and all(isinstance(o, torch.Tensor) for o in outputs):
            outputs = torch.stack(outputs)
        if isinstance(outputs, torch.Tensor) and not isinstance(loss, FunctionLoss | ModelLoss):
            sums, count = loss.many(outputs, batch)
            scores = outputs
        else:
            pairs = [loss.sum_and_count(o, batch) for o in outputs]
            sums, count = torch.stack([total for total, _ in pairs]), pairs[0][1]
            scores = torch.stack([logits_of(o) for o in outputs])
        self.loss_sums[points] += sums
        hits = loss.correct(scores, batch) if problem.is_classification else None
        if hits is not None:
            self.correct[points] += hits[0]
        if points.start == 0:
            self.count += float(count)
            self.judged += int(hits[1]) if hits is not None else 0

    def values(self, metrics: tuple[str, ...]) -> np.ndarray:
        """Means over every rank's samples (one all-reduce of the sums and counts under torchrun)."""
        size = len(self.loss_sums)
        packed = torch.cat([self.loss_sums, self.correct, self.loss_sums.new_tensor([self.count, self.judged])])
        packed, _ = self.problem.sum_over_ranks(packed)
        self.loss_sums, self.correct = packed[:size], packed[size : 2 * size]
        self.count, self.judged = float(packed[-2]), float(packed[-1])
        out = np.empty((size, len(metrics)))
        out[:, 0] = (self.loss_sums / positive_count(self.count)).cpu().numpy()
        if "accuracy" in metrics:
            out[:, 1] = (100.0 * self.correct / max(self.judged, 1.0)).cpu().numpy()
        return out


def _nbytes(output: Any) -> int:
    tensor = logits_of(output)
    return tensor.numel() * tensor.element_size()


def memory_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_BUDGET_FRACTION)
    return CPU_BUDGET_BYTES


def points_per_pass_limit(evaluators: list[PointEvaluator], budget: int | None = None) -> int:
    """How many points one batched pass may hold within the memory budget (at least 1)."""
    problem = evaluators[0].problem
    budget = memory_budget(problem.device) if budget is None else budget
    need = max(e.bytes_per_point() for e in evaluators)
    limit = int(max(1, min(MAX_POINTS_PER_PASS, budget // max(need, 1))))
    return int(agree([limit], problem.group, "min", problem.device)[0])  # every rank passes the same blocks


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], np.ndarray], device: torch.device) -> tuple[np.ndarray, float]:
    _sync(device)
    start = time.perf_counter()
    values = fn()
    _sync(device)
    return values, time.perf_counter() - start
