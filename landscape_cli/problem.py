"""Problem: the mean loss over a fixed set of samples as a pure function of a flat parameter vector.

It owns everything that touches the data: chunking with exact weighting (the sum of chunk sums
divided by N, so the operator does not depend on the chunk size), train/eval mode and
BatchNorm, and the two ways of computing Hessian-vector products.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from .errors import LandscapeError
from .zoo.data import Dataset

HVP_METHODS = ("jvp", "double-backward")
GradientGraph = tuple[dict[str, torch.Tensor], tuple[torch.Tensor | None, ...]]
#: Samples used to time the two HVP methods against each other.
CALIBRATION_SAMPLES = 256


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and offsets of the trainable parameters inside one flat vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]

    @classmethod
    def of(cls, params: dict[str, torch.Tensor]) -> ParamLayout:
        offsets, total = [], 0
        for t in params.values():
            offsets.append(total)
            total += t.numel()
        offsets.append(total)
        return cls(tuple(params), tuple(t.shape for t in params.values()), tuple(offsets))

    @property
    def size(self) -> int:
        return self.offsets[-1]

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views into `flat`, one per parameter (no copy)."""
        return {
            name: flat[self.offsets[i] : self.offsets[i + 1]].view(shape)
            for i, (name, shape) in enumerate(zip(self.names, self.shapes, strict=True))
        }

    def flatten(self, tensors: dict[str, torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        values = tensors.values() if isinstance(tensors, dict) else tensors
        return torch.cat([t.reshape(-1) for t in values])


def per_sample_loss_sum(output: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Sum over the chunk of each sample's loss.

    ``mse`` is 0.5 * ||f(x) - y||^2 summed over outputs, with one-hot targets for class labels
    (Cohen et al.'s convention), so its Hessian is the Gauss-Newton matrix plus residual terms
    without a 1/classes factor.
    """
    if loss == "cross_entropy":
        if target.dtype != torch.long:
            raise LandscapeError("cross_entropy needs class labels; use --loss mse for regression targets")
        return F.cross_entropy(output, target, reduction="sum")
    if loss == "mse":
        if target.dtype == torch.long:
            target = F.one_hot(target, output.shape[-1]).to(output.dtype)
        if target.shape != output.shape:
            raise LandscapeError(
                f"mse: model outputs {tuple(output.shape[1:])} but targets are {tuple(target.shape[1:])}"
            )
        return 0.5 * (output - target).pow(2).sum()
    raise LandscapeError(f"unknown loss '{loss}'; choose cross_entropy or mse")


def loss_and_correct_sums(
    outputs: torch.Tensor, target: torch.Tensor, loss: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sums over a chunk of the loss and of correct predictions, for outputs (B, ...) or a block of P
    parameter points at once, (P, B, ...); the sums have the leading shape, () or (P,).

    The same values as `per_sample_loss_sum` and an argmax, at a third of the cost for a small
    model: log_softmax over 10 classes took 270 us for 1,797 digits on our CPU, as long as the MLP's
    forward pass, and cross_entropy under vmap more. A sample counts as correct when its label's
    output is the largest (argmax would break exact ties by index; outputs are never exactly tied
    in practice).
    """
    classification = target.dtype == torch.long
    lead = outputs.dim() - (target.dim() + (1 if classification else 0))
    picked = top = correct = None
    if classification:
        index = target.expand(*outputs.shape[:lead], *target.shape).unsqueeze(-1)
        picked = outputs.gather(-1, index)
        top = outputs.amax(dim=-1, keepdim=True)
        correct = (picked == top).flatten(lead).sum(-1)
    if loss == "cross_entropy":
        if not classification:
            raise LandscapeError("cross_entropy needs class labels; use --loss mse for regression targets")
        lse = (outputs - top).exp().sum(dim=-1, keepdim=True).log() + top
        return (lse - picked).flatten(lead).sum(-1), correct
    if loss == "mse":
        if classification:
            target = F.one_hot(target, outputs.shape[-1]).to(outputs.dtype)
        if target.shape != outputs.shape[lead:]:
            raise LandscapeError(
                f"mse: model outputs {tuple(outputs.shape[lead + 1 :])} but targets are {tuple(target.shape[1:])}"
            )
        return 0.5 * (outputs - target).pow(2).flatten(lead).sum(-1), correct
    raise LandscapeError(f"unknown loss '{loss}'; choose cross_entropy or mse")


@contextlib.contextmanager
def reproducible_cuda(device: torch.device) -> Iterator[None]:
    """On CUDA, full float32 and deterministic cuDNN while computing. cuDNN convolutions default to TF32
    (10-bit mantissa), which moved the ResNet sample's second eigenvalue by 1e-3 relative on an H100; and
    its default algorithms made the top eigenvalue differ by 3e-8 relative between identical runs there,
    enough to flake a CI gate set at a measured value. Deterministic cuDNN made them bitwise equal."""
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = saved


@functools.cache
def _import_jvp_decompositions_quietly() -> None:
    """The first forward-mode call imports torch's jvp decompositions, which call the deprecated
    `torch.jit.script` 18 times, each a DeprecationWarning in the caller's own test suite. Import them
    here, once, with that warning silenced (ours to silence: the user did not call it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
        importlib.import_module("torch._decomp.decompositions_for_jvp")


def _disable_running_stats(model: nn.Module) -> None:
    """In train mode use each chunk's batch statistics without updating the stored ones."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False


class Problem:
    """Loss, gradient and Hessian-vector products of the mean loss over a fixed sample set."""

    def __init__(
        self,
        model: nn.Module,
        data: Dataset,
        loss: str,
        *,
        batch_size: int = 2048,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        train_mode: bool = False,
        hvp: str = "auto",
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise LandscapeError(f"--batch-size must be at least 1, got {batch_size}")
        if hvp not in ("auto", *HVP_METHODS):
            raise LandscapeError(f"unknown HVP method '{hvp}'; choose auto, {', '.join(HVP_METHODS)}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.loss_name = loss
        self.train_mode = train_mode
        self.seed = seed
        self.model = copy.deepcopy(model).to(device=self.device, dtype=dtype)
        self.model.train(train_mode)
        if train_mode:
            _disable_running_stats(self.model)
        self.params = {k: p.detach() for k, p in self.model.named_parameters() if p.requires_grad}
        if not self.params:
            raise LandscapeError("the model has no trainable parameters")
        self.buffers = {k: b.detach() for k, b in self.model.named_buffers()}
        for name, tensor in self.params.items():
            if not torch.isfinite(tensor).all():
                raise LandscapeError(f"parameter '{name}' contains NaN or inf")
        self.layout = ParamLayout.of(self.params)
        self.w = self.layout.flatten(self.params).clone()
        self.x = data.x.to(self.device, dtype)
        self.y = data.y.to(self.device) if data.y.dtype == torch.long else data.y.to(self.device, dtype)
        self.n_samples = len(data)
        self.batch_size = min(batch_size, self.n_samples)
        self.chunks = [
            slice(i, min(i + self.batch_size, self.n_samples)) for i in range(0, self.n_samples, self.batch_size)
        ]
        self.is_classification = data.y.dtype == torch.long
        self.requested_hvp = hvp
        self.hvp_method: str | None = None if hvp == "auto" else hvp
        self.hvp_timings: dict[str, float] = {}
        self.hvp_calls = 0
        self._graph: GradientGraph | None = None
        self._graph_w: torch.Tensor | None = None
        self._graph_version = -1

    @torch.no_grad()
    def load_weights(self, model: nn.Module) -> None:
        """Move the problem to `model`'s current parameters and buffers (same architecture), in place.

        Used by training to measure a moving model on a fixed sample set without rebuilding.
        """
        named = dict(model.named_parameters())
        self.w.copy_(torch.cat([named[k].detach().reshape(-1) for k in self.layout.names]).to(self.device, self.dtype))
        for name, buffer in model.named_buffers():
            if name in self.buffers:
                self.buffers[name].copy_(buffer.detach())

    @property
    def n_params(self) -> int:
        return self.layout.size

    @property
    def mode(self) -> str:
        return "train" if self.train_mode else "eval"

    # -- the pure function ------------------------------------------------------------------
    def _loss_sum(self, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.model, (params, self.buffers), (x,))
        return per_sample_loss_sum(out, y, self.loss_name)

    @contextlib.contextmanager
    def chunk_context(self, index: int) -> Iterator[None]:
        """Full float32 precision, deterministic cuDNN, and in train mode fixed dropout masks per chunk, so
        that the operator is deterministic."""
        if not self.train_mode:
            with reproducible_cuda(self.device):
                yield
            return
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), reproducible_cuda(self.device):
            torch.manual_seed(self.seed * 1_000_003 + index)
            yield

    def _point(self, w: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return self.layout.unflatten(self.w if w is None else w)

    # -- values -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, w: torch.Tensor | None = None) -> dict[str, float]:
        """Mean loss and (for classification) accuracy in %, at `w` (default: the checkpoint)."""
        params = self._point(w)
        loss_sum, correct = 0.0, 0
        for i, chunk in enumerate(self.chunks):
            with self.chunk_context(i):
                out = functional_call(self.model, (params, self.buffers), (self.x[chunk],))
            chunk_loss, chunk_correct = loss_and_correct_sums(out, self.y[chunk], self.loss_name)
            loss_sum += float(chunk_loss)
            if chunk_correct is not None:
                correct += int(chunk_correct)
        result = {"loss": loss_sum / self.n_samples}
        if self.is_classification:
            result["accuracy"] = 100.0 * correct / self.n_samples
        return result

    def loss_and_gradient(self, w: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        """Mean loss and its gradient (flat) over all samples (plain autograd: no torch.func start-up)."""
        leaves = {k: t.detach().requires_grad_(True) for k, t in self._point(w).items()}
        total = torch.zeros(self.n_params, device=self.device, dtype=self.dtype)
        loss_sum = 0.0
        for i, chunk in enumerate(self.chunks):
            with self.chunk_context(i), torch.enable_grad():
                value = self._loss_sum(leaves, self.x[chunk], self.y[chunk])
                grads = torch.autograd.grad(value, tuple(leaves.values()), allow_unused=True)
            total += self._flatten_grads(leaves, grads)
            loss_sum += float(value.detach())
        return loss_sum / self.n_samples, total / self.n_samples

    # -- Hessian-vector products ----------------------------------------------------------------
    def _hvp_jvp(self, params: dict[str, torch.Tensor], v: dict[str, torch.Tensor], chunk: slice) -> torch.Tensor:
        _import_jvp_decompositions_quietly()
        x, y = self.x[chunk], self.y[chunk]
        _, hv = jvp(lambda p: grad(self._loss_sum)(p, x, y), (params,), (v,))
        return self.layout.flatten(hv)

    def _gradient_graph(self, params: dict[str, torch.Tensor], chunk: slice) -> GradientGraph:
        """The chunk's gradient with its graph kept, so that H v is one more backward pass."""
        leaves = {k: t.detach().requires_grad_(True) for k, t in params.items()}
        with torch.enable_grad():
            value = self._loss_sum(leaves, self.x[chunk], self.y[chunk])
            grads = torch.autograd.grad(value, tuple(leaves.values()), create_graph=True, allow_unused=True)
        return leaves, grads

    def _hvp_from_graph(self, graph: GradientGraph, v: dict[str, torch.Tensor], keep: bool) -> torch.Tensor:
        leaves, grads = graph
        with torch.enable_grad():
            dot = sum((g * v[k]).sum() for k, g in zip(leaves, grads, strict=True) if g is not None and g.requires_grad)
            if not isinstance(dot, torch.Tensor):  # the gradient does not depend on the parameters
                return torch.zeros(self.n_params, device=self.device, dtype=self.dtype)
            hv = torch.autograd.grad(dot, tuple(leaves.values()), allow_unused=True, retain_graph=keep)
        return self._flatten_grads(leaves, hv)

    def _hvp_double_backward(
        self, params: dict[str, torch.Tensor], v: dict[str, torch.Tensor], chunk: slice
    ) -> torch.Tensor:
        return self._hvp_from_graph(self._gradient_graph(params, chunk), v, keep=False)

    def _cached_graph(self) -> GradientGraph:
        """The gradient graph of the single chunk at the checkpoint's weights, built on first use.

        Reusing it halves the cost of each double-backward HVP (no forward pass, no first
        backward pass). Only for single-chunk problems: its memory is that of one uncached HVP.
        """
        # The weights may be changed in place (version counter) or replaced (the tensor itself; holding
        # it keeps its id from being reused by another tensor).
        if self._graph is None or self._graph_w is not self.w or self._graph_version != self.w._version:
            self._graph = self._gradient_graph(self._point(None), self.chunks[0])
            self._graph_w, self._graph_version = self.w, self.w._version
        return self._graph

    def _caches_graph(self, method: str, w: torch.Tensor | None) -> bool:
        return method == "double-backward" and w is None and len(self.chunks) == 1

    def _flatten_grads(self, leaves: dict[str, torch.Tensor], grads: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        """Flatten autograd results; a parameter the loss does not reach contributes zeros."""
        return self.layout.flatten(
            tuple(torch.zeros_like(t) if g is None else g for t, g in zip(leaves.values(), grads, strict=True))
        )

    def _hvp_chunk(self, method: str, params: dict, v: dict, chunk: slice, index: int) -> torch.Tensor:
        with self.chunk_context(index):
            if method == "jvp":
                return self._hvp_jvp(params, v, chunk)
            return self._hvp_double_backward(params, v, chunk)

    def choose_hvp_method(self) -> str:
        """Time both HVP methods on a slice of the data and keep the faster one.

        Which is faster depends on the model and device, so it is measured, not guessed. A method
        that fails (an op without forward-mode or double-backward support) is skipped.
        """
        if self.hvp_method is not None:
            return self.hvp_method
        chunk = slice(0, min(CALIBRATION_SAMPLES, self.n_samples))
        params = self._point(None)
        v = self.layout.unflatten(torch.ones(self.n_params, device=self.device, dtype=self.dtype))
        errors: dict[str, str] = {}
        for method in HVP_METHODS:
            try:
                if self._caches_graph(method, None):  # time what the HVPs will cost: the cached graph
                    with self.chunk_context(0):
                        graph = self._gradient_graph(params, chunk)

                    def run(graph: GradientGraph = graph) -> torch.Tensor:
                        with self.chunk_context(0):
                            return self._hvp_from_graph(graph, v, keep=True)
                else:

                    def run(method: str = method) -> torch.Tensor:
                        return self._hvp_chunk(method, params, v, chunk, 0)

                run()  # warm-up
                times = []
                for _ in range(2):
                    self._sync()
                    start = time.perf_counter()
                    run()
                    self._sync()
                    times.append(time.perf_counter() - start)
                self.hvp_timings[method] = min(times)
            except LandscapeError:
                raise
            except Exception as exc:  # noqa: BLE001 - an op may lack one kind of derivative
                errors[method] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if not self.hvp_timings:
            raise LandscapeError(
                "the model supports neither HVP method: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
            )
        self.hvp_method = min(self.hvp_timings, key=self.hvp_timings.__getitem__)
        return self.hvp_method

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def hvp(self, v: torch.Tensor, w: torch.Tensor | None = None, method: str | None = None) -> torch.Tensor:
        """H v for the Hessian of the mean loss at `w` (default: the checkpoint), as a flat vector."""
        method = method or self.choose_hvp_method()
        params = self._point(w)
        tangent = self.layout.unflatten(v.to(self.device, self.dtype))
        total = torch.zeros(self.n_params, device=self.device, dtype=self.dtype)
        if self._caches_graph(method, w):
            with self.chunk_context(0):
                total += self._hvp_from_graph(self._cached_graph(), tangent, keep=True)
        else:
            for i, chunk in enumerate(self.chunks):
                total += self._hvp_chunk(method, params, tangent, chunk, i)
        self.hvp_calls += 1
        return total / self.n_samples

    def describe(self) -> dict[str, Any]:
        return {
            "n_params": self.n_params,
            "n_samples": self.n_samples,
            "batch_size": self.batch_size,
            "mode": self.mode,
            "loss": self.loss_name,
            "hvp_method": self.hvp_method,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
        }
