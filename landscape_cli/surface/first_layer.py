"""The first layer of a sweep, computed once instead of at every grid point.

A Linear or convolution layer is linear in its weight and bias, so on the raw input x its output at
w + sum_k c_k d_k is f(x; w) + sum_k c_k f(x; d_k). When the model's first layer reads the data
itself (a view of it, so its input does not move with the parameters), those 1 + k outputs are
computed once per data chunk and every grid point pays a linear combination instead of the layer:
for the digits MLP the first layer is 86% of the forward pass.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..problem import Problem

LINEAR_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class FirstLayerCache:
    """Installed on a private model: its first layer returns the cached combination for the current
    chunk and point instead of computing."""

    def __init__(self, module: nn.Module, outputs: list[list[torch.Tensor]]) -> None:
        self.module = module
        self.outputs = outputs  # [chunk][0 = at w, 1.. = along each direction]
        self.chunk = 0
        self.coefficients: list[float] = []
        #: Set inside a vmapped forward: this point's output, sliced by vmap from `block`'s result.
        self.serve: torch.Tensor | None = None
        module.forward = self._forward  # an instance attribute: nn.Module.__call__ finds it first

    def block(self, chunk: int, coefficients: torch.Tensor) -> torch.Tensor:
        """The first layer's outputs on `chunk` at P points at once, (P, ...), for a batched pass."""
        base, *along = self.outputs[chunk]
        return base + torch.tensordot(coefficients.to(base.dtype), torch.stack(along), dims=1)

    def _forward(self, *_args: object, **_kwargs: object) -> torch.Tensor:
        if self.serve is not None:
            return self.serve
        base, first, *rest = self.outputs[self.chunk]
        out = torch.add(base, first, alpha=self.coefficients[0])  # a new tensor: the next layer may work in place
        for c, d in zip(self.coefficients[1:], rest, strict=True):
            out.add_(d, alpha=c)
        return out

    @classmethod
    def install(
        cls, model: nn.Module, problem: Problem, directions: torch.Tensor, budget_bytes: int
    ) -> FirstLayerCache | None:
        """Cache `model`'s first layer if it is a Linear/Conv layer fed by the data itself, called once
        per forward pass, and its outputs for every chunk fit in `budget_bytes`; else None."""
        if not problem.in_memory:  # streamed batches: their outputs per batch would not stay small
            return None
        module = _first_layer(model, problem)
        if module is None:
            return None
        names = {id(p): n for n, p in model.named_parameters()}
        own = {k: names.get(id(p)) for k, p in module.named_parameters(recurse=False)}
        if any(name not in problem.layout.names for name in own.values()):
            return None
        w = problem.layout.unflatten(problem.w)
        along = [problem.layout.unflatten(d) for d in directions]
        copies = []
        for source in (w, *along):
            layer = copy.deepcopy(module)
            for key, name in own.items():
                getattr(layer, key).data = source[name].detach().clone()
            copies.append(layer)
        inputs = _inputs_per_chunk(model, module, problem)
        if inputs is None:
            return None
        probe = copies[0](inputs[0])
        per_chunk = probe.numel() * probe.element_size() * len(copies)
        if per_chunk * len(problem.chunks) > budget_bytes:
            return None
        outputs = []
        with torch.no_grad():
            for index, x in enumerate(inputs):
                with problem.chunk_context(index):
                    outputs.append([layer(x) for layer in copies])
        return cls(module, outputs)


def _first_layer(model: nn.Module, problem: Problem) -> nn.Module | None:
    """The first leaf module with parameters to run, if it is linear in them, reads a view of the data,
    and runs once per forward pass."""
    calls: list[tuple[nn.Module, bool]] = []
    x = problem.x[problem.chunks[0]]

    def record(module: nn.Module, args: tuple) -> None:
        if any(True for _ in module.parameters(recurse=False)):
            first = args[0] if args and isinstance(args[0], torch.Tensor) else None
            reads_data = first is not None and first.data_ptr() == x.data_ptr() and first.numel() == x.numel()
            calls.append((module, reads_data))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_pre_hook(record) for m in leaves]
    try:
        with torch.no_grad(), problem.chunk_context(0):
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not calls:
        return None
    module, reads_data = calls[0]
    if type(module) not in LINEAR_LAYERS or not reads_data:
        return None
    if sum(1 for m, _ in calls if m is module) != 1 or getattr(module, "parametrizations", None):
        return None
    return module


def _inputs_per_chunk(model: nn.Module, module: nn.Module, problem: Problem) -> list[torch.Tensor] | None:
    """The tensor the first layer receives on each chunk (a view of the data, checked again)."""
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, args: tuple) -> None:
        captured.append(args[0])

    handle = module.register_forward_pre_hook(keep)
    try:
        with torch.no_grad():
            for index, chunk in enumerate(problem.chunks):
                x = problem.x[chunk]
                with problem.chunk_context(index):
                    model(x)
                if len(captured) != index + 1 or captured[-1].data_ptr() != x.data_ptr():
                    return None
    finally:
        handle.remove()
    return captured
