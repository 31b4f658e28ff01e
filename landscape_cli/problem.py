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
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

from .attention import differentiable_attention
from .batches import Batch, as_batch, move, rows, select, take
from .distributed import agree, all_reduce_sum_, sum_floats
from .distributed import current as distributed_group
from .errors import LandscapeError, LandscapeWarning, ParameterError
from .limits import max_memory, release_free_host_memory
from .losses import FunctionLoss, Loss, logits_of, resolve_loss
from .sources import BatchSource, as_source
from .zoo.data import Dataset

#: The exact HVP methods, which `auto` times against each other.
HVP_METHODS = ("jvp", "double-backward")
#: Central differences of gradients, for models whose ops have neither derivative of a derivative (custom
#: fused kernels): approximate, see `Problem._hvp_finite_difference`.
FINITE_DIFFERENCE = "finite-difference"

GradientGraph = tuple[dict[str, torch.Tensor], tuple[torch.Tensor | None, ...], float]
#: |u.Hv - v.Hu| relative to |u||Hv| + |v||Hu| above which an HVP method is wrong (float32 rounding: ~1e-7).
ASYMMETRY_LIMIT = 1e-3
#: Samples whose gradient graph is measured to size the batches (`Problem.fit_graph_to_budget`).
GRAPH_PROBE_SAMPLES = 16
#: The share of the memory limit (CPU) or of free GPU memory one batch's gradient graph may take.
GRAPH_BUDGET_FRACTION = 0.25
#: From this many parameters, free heap pages go back to the system before each product (a ResNet-18's peak
#: resident memory falls by about 0.15 GB; the trim takes well under a millisecond).
TRIM_EACH_PRODUCT_PARAMS = 1_000_000
#: Samples used to time the two HVP methods against each other.
CALIBRATION_SAMPLES = 128
#: ... and at least this many, however few samples there are.
CALIBRATION_FLOOR = 16


def finite_difference_step(dtype: torch.dtype) -> float:
    """The RMS entry of h v (per unit of 1 + the RMS weight) of a central-difference HVP. Theory balances the
    truncation error (h^2 times third derivatives of order one) against rounding (eps / h) at cbrt(eps).
    Networks' third derivatives are larger than that assumes: in float32 the error on a tanh MLP and a GPT-2
    is smallest 30 times below cbrt(eps) (tanh 2e-3 at cbrt(eps), 4e-5 there; GPT-2 0.15 and 2e-4), which
    is where it is taken. float64 keeps cbrt(eps) (tanh 3e-9): HF losses round the logits to float32
    inside, which a smaller step would magnify."""
    eps = float(torch.finfo(dtype).eps)
    return eps ** (1 / 3) * (1 / 30 if dtype == torch.float32 else 1.0)


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
    """Sum over a batch of each sample's loss (the training loop's objective, named as checkpoints name it)."""
    return resolve_loss(loss).sum_and_count(output, as_batch((output, target)))[0]


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
    """Loss, gradient and Hessian-vector products of the mean loss over a fixed sample set.

    `data` is a `Dataset` of in-memory tensors (moved to the device once and cut into chunks), or anything
    `sources.as_source` reads: tensors, a torch Dataset, an IterableDataset, a DataLoader, an iterable of
    batches, which is streamed: one batch on the device at a time, plus the next one being copied.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Dataset | Any,
        loss: str | Loss | Callable[..., Any],
        *,
        batch_size: int = 2048,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        train_mode: bool = False,
        hvp: str = "auto",
        seed: int = 0,
        samples: int | None = None,
        distributed: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ParameterError("batch_size", f"must be at least 1, got {batch_size}")
        if hvp not in ("auto", *HVP_METHODS, FINITE_DIFFERENCE):
            raise ParameterError("hvp", f"method '{hvp}' is unknown; choose auto, {', '.join(HVP_METHODS)} or "
                                 f"{FINITE_DIFFERENCE}")  # fmt: skip
        self.device = torch.device(device)
        self.dtype = dtype
        self.loss = resolve_loss(loss, model=model)
        self.loss_name = self.loss.record()
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
        self.source: BatchSource | None = None
        #: The ranks sharing the samples (each sums over its share; sums are all-reduced), or None.
        self.group = distributed_group() if distributed else None
        if isinstance(data, Dataset):
            self.in_memory = True
            self.n_samples = len(data)
            start, stop = self._share()
            self.x = data.x[start:stop].to(self.device, dtype)
            y = data.y[start:stop]
            self.y = y.to(self.device) if y.dtype == torch.long else y.to(self.device, dtype)
            self.local_samples = stop - start
            self.batch_size = min(batch_size, self.local_samples)
            self.chunks = [slice(i, min(i + self.batch_size, self.local_samples))
                           for i in range(0, self.local_samples, self.batch_size)]  # fmt: skip
            self.n_batches = len(self.chunks)
            self.is_classification = data.y.dtype == torch.long
        else:
            self.in_memory = False
            source = as_source(data, batch_size=batch_size, samples=samples, seed=seed)
            self.n_samples = source.n_samples
            self.source = source.part(*self._share())
            self.local_samples = self.source.n_samples
            self.n_batches = self.source.n_batches
            self.batch_size = batch_size
            first = as_batch(next(iter(self.source)))
            self.is_classification = first.target is not None and not first.target.is_floating_point()
        self.max_rows: int | None = None
        self.graph_bytes_per_sample: float | None = None
        self._graph_fitted = False
        self.requested_hvp = hvp
        self.hvp_method: str | None = None if hvp == "auto" else hvp
        self.hvp_timings: dict[str, float] = {}
        self.hvp_calls = 0
        self._graph: GradientGraph | None = None
        self._graph_w: torch.Tensor | None = None
        self._graph_version = -1

    def _share(self) -> tuple[int, int]:
        """This rank's positions of the sample set (all of them in one process)."""
        if self.group is None:
            return 0, self.n_samples
        if self.n_samples < self.group.world_size:
            raise LandscapeError(f"{self.n_samples} samples cannot be shared by {self.group.world_size} ranks")
        return self.group.share(self.n_samples)

    def sum_over_ranks(self, total: torch.Tensor | None, *numbers: float) -> tuple[torch.Tensor | None, list[float]]:
        """Per-rank sums (a tensor and plain numbers such as counts) summed over the ranks; as given in one
        process. Every rank gets the same bits, so every rank's solver takes the same steps."""
        if self.group is None:
            return total, list(numbers)
        if total is not None:
            all_reduce_sum_(total, self.group)
        return total, sum_floats(list(numbers), self.group, self.device)

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

    def restricted(self, positions: torch.Tensor) -> Problem:
        """The same model and loss on the samples at `positions` of this problem's sample set (a view: the
        model, weights and buffers are shared). In memory any positions; a streamed set only a contiguous run
        of them. Used by m-sharpness, a measure per batch of m samples."""
        if self.group is not None:
            raise ParameterError("m", "m-sharpness runs in one process; it is not split across ranks")
        view = copy.copy(self)
        positions = positions.to(torch.long).cpu()
        if self.source is None:
            index = positions.to(self.x.device)
            view.x, view.y = self.x[index], self.y[index]
            view.n_samples = view.local_samples = len(positions)
            view.batch_size = min(self.batch_size, len(positions))
            view.chunks = [slice(i, min(i + view.batch_size, len(positions)))
                           for i in range(0, len(positions), view.batch_size)]  # fmt: skip
            view.n_batches = len(view.chunks)
        else:
            start, stop = int(positions[0]), int(positions[-1]) + 1
            if not torch.equal(positions, torch.arange(start, stop)):
                raise ParameterError("m", "a streamed sample set is cut into consecutive runs only")
            view.source = self.source.part(start, stop)
            view.n_samples = view.local_samples = stop - start
            view.n_batches = view.source.n_batches
        view._graph, view._graph_w, view._graph_version = None, None, -1
        return view

    @property
    def n_params(self) -> int:
        return self.layout.size

    @property
    def mode(self) -> str:
        return "train" if self.train_mode else "eval"

    # -- the data ---------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[int, Batch]]:
        """(index, batch on the device) for every batch of the sample set, in a fixed order. A streamed
        source's next batch is copied while the current one is used; no more than two are held."""
        if self.source is None:
            for index, chunk in enumerate(self.chunks):
                x, y = self.x[chunk], self.y[chunk]
                yield index, Batch((x,), {}, y, chunk.stop - chunk.start, (x, y))
            return
        pending: Batch | None = None
        index = 0
        for raw in self.source:
            ready = as_batch(move(raw, self.device, self.dtype))
            if pending is not None:
                for piece in self._pieces(pending):
                    yield index, piece
                    index += 1
            pending = ready
        if pending is not None:
            for piece in self._pieces(pending):
                yield index, piece
                index += 1

    def _pieces(self, batch: Batch) -> Iterator[Batch]:
        """A streamed batch cut to the rows whose gradient graph fits the memory budget."""
        if self.max_rows is None or batch.size <= self.max_rows:
            yield batch
            return
        for start in range(0, batch.size, self.max_rows):
            yield as_batch(rows(batch.raw, start, self.max_rows))

    def fit_graph_to_budget(self) -> None:
        """Cut batches so that one batch's gradient graph fits `graph_budget`: measured once, from the bytes
        autograd saves for a double-backward graph on a few samples. A ResNet-18 keeps about 38 MB per
        CIFAR image; with the default --batch-size 2048 its graph would not fit most machines."""
        if self._graph_fitted:
            return
        self._graph_fitted = True
        self.graph_bytes_per_sample = self._graph_bytes_per_sample()
        release_free_host_memory()  # the probe's graph
        limit = max(1, int(graph_budget(self.device) // max(self.graph_bytes_per_sample, 1.0)))
        largest = self.batch_size if self.source is None else self.first_batch().size
        if limit >= largest:
            return
        self.max_rows = limit
        if self.source is None:
            self.chunks = [slice(i, min(i + limit, self.local_samples)) for i in range(0, self.local_samples, limit)]
        self.n_batches = max(2, -(-self.local_samples // limit))
        self.batch_size = limit
        self._graph = None

    def _graph_bytes_per_sample(self) -> float:
        batch = self.first_batch(GRAPH_PROBE_SAMPLES)
        storages: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            with contextlib.suppress(Exception):  # a tensor without storage (a functorch wrapper)
                storage = tensor.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), self.chunk_context(0):
                graph = self._gradient_graph(self._point(None), batch)
            del graph
        except LandscapeError:
            raise
        except Exception:  # noqa: BLE001 - no double backward: the finite-difference graph is a gradient's
            return 0.0
        return sum(storages.values()) / max(batch.size, 1)

    def first_batch(self, size: int | None = None) -> Batch:
        """The first batch on the device, cut to `size` samples."""
        if self.source is None:
            end = self.local_samples if size is None else min(size, self.local_samples)
            x, y = self.x[:end], self.y[:end]
            return Batch((x,), {}, y, end, (x, y))
        raw = next(iter(self.source))
        return as_batch(move(raw if size is None else take(raw, size), self.device, self.dtype))

    def output(self, model: nn.Module, batch: Batch) -> Any:
        """A model's output on a batch (with the labels when the model computes its own loss)."""
        return batch.call(model, with_labels=self.loss.passes_labels)

    def check_fits(self) -> None:
        """The model and the loss on two samples (eval mode), so that a model that does not fit the data or a
        loss that cannot read the output fails here, in one line, instead of deep inside a computation."""
        batch = self.first_batch(2)
        self.model.eval()
        try:
            with torch.no_grad():
                try:
                    out = self.output(self.model, batch)
                except LandscapeError:
                    raise
                except Exception as exc:  # noqa: BLE001 - a model/data mismatch can fail anywhere in forward
                    raise LandscapeError(f"the model does not accept the data's batches: {_first_line(exc)}") from None
                try:
                    total, _ = self.loss.sum_and_count(out, batch)
                except LandscapeError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    raise LandscapeError(f"loss {self.loss_name} cannot read the model's output: {_first_line(exc)}"
                                         ) from None  # fmt: skip
                if total.dim() != 0:
                    raise LandscapeError(
                        f"loss {self.loss_name} gave a tensor of shape {tuple(total.shape)}, not a scalar"
                    )
        finally:
            self.model.train(self.train_mode)

    # -- the pure function ------------------------------------------------------------------
    def _loss_sum(self, params: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        kwargs = batch.model_kwargs(self.loss.passes_labels)
        out = functional_call(self.model, (params, self.buffers), batch.args, kwargs)
        return self.loss.sum_and_count(out, batch)

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
        """Mean loss and (for class labels) accuracy in %, at `w` (default: the checkpoint)."""
        params = self._point(w)
        loss_sum, count, correct, judged = 0.0, 0.0, 0, 0
        for index, batch in self.batches():
            with self.chunk_context(index):
                kwargs = batch.model_kwargs(self.loss.passes_labels)
                out = functional_call(self.model, (params, self.buffers), batch.args, kwargs)
            if isinstance(out, torch.Tensor) and not isinstance(self.loss, FunctionLoss):
                sums, batch_count = self.loss.many(out.unsqueeze(0), batch)
                batch_loss = sums[0]
            else:
                batch_loss, batch_count = self.loss.sum_and_count(out, batch)
            loss_sum += float(batch_loss)
            count += float(batch_count)
            hits = self.loss.correct(logits_of(out).unsqueeze(0), batch) if self.is_classification else None
            if hits is not None:
                correct += int(hits[0][0])
                judged += int(hits[1])
        _, (loss_sum, count, correct, judged) = self.sum_over_ranks(None, loss_sum, count, correct, judged)
        result = {"loss": loss_sum / positive_count(count)}
        if judged:
            result["accuracy"] = 100.0 * correct / judged
        return result

    def loss_and_gradient(self, w: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        """Mean loss and its gradient (flat) over all samples (plain autograd: no torch.func start-up)."""
        leaves = {k: t.detach().requires_grad_(True) for k, t in self._point(w).items()}
        total = torch.zeros(self.n_params, device=self.device, dtype=self.dtype)
        loss_sum, count = 0.0, 0.0
        for index, batch in self.batches():
            with self.chunk_context(index), torch.enable_grad():
                value, batch_count = self._loss_sum(leaves, batch)
                grads = torch.autograd.grad(value, tuple(leaves.values()), allow_unused=True)
            total += self._flatten_grads(leaves, grads)
            loss_sum += float(value.detach())
            count += float(batch_count)
        _, (loss_sum, count) = self.sum_over_ranks(total, loss_sum, count)
        count = positive_count(count)
        return loss_sum / count, total / count

    def group_gradients(self, groups: torch.Tensor, n_groups: int) -> list[torch.Tensor]:
        """The mean-loss gradient of each group of samples at the checkpoint, in one pass over the data.

        `groups[i]` is the group of the i-th sample in the problem's order, so a streamed source is cut the
        same way as data in memory (mSAM's micro-batches: parts of a seeded permutation)."""
        if groups.shape != (self.n_samples,):  # the whole set's positions; this rank reads its share of them
            raise ParameterError(
                "groups", f"must hold one group per sample ({self.n_samples}), got {tuple(groups.shape)}"
            )
        leaves = {k: t.detach().requires_grad_(True) for k, t in self._point(None).items()}
        totals = [torch.zeros(self.n_params, device=self.device, dtype=self.dtype) for _ in range(n_groups)]
        counts = [0.0] * n_groups
        position = self._share()[0]
        for index, batch in self.batches():
            ids = groups[position : position + batch.size].to(self.device)
            position += batch.size
            for group in ids.unique().tolist():
                piece = as_batch(select(batch.raw, (ids == group).nonzero().squeeze(1)))
                with self.chunk_context(index), torch.enable_grad():
                    value, count = self._loss_sum(leaves, piece)
                    grads = torch.autograd.grad(value, tuple(leaves.values()), allow_unused=True)
                totals[group] += self._flatten_grads(leaves, grads)
                counts[group] += float(count)
        for total in totals:
            self.sum_over_ranks(total)
        _, counts = self.sum_over_ranks(None, *counts)
        return [total.div_(positive_count(count)) for total, count in zip(totals, counts, strict=True)]

    # -- Hessian-vector products ----------------------------------------------------------------
    def _hvp_jvp(self, params: dict[str, torch.Tensor], v: dict[str, torch.Tensor], batch: Batch) -> tuple:
        """Forward-mode over reverse-mode: the batch's H v summed over its samples, and its count."""
        _import_jvp_decompositions_quietly()

        def gradient(p: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
            return grad(lambda q: self._loss_sum(q, batch), has_aux=True)(p)

        with differentiable_attention():
            _, hv, count = jvp(gradient, (params,), (v,), has_aux=True)
        return self.layout.flatten(hv), count

    def _hvp_finite_difference(self, params: dict, v: dict, batch: Batch) -> tuple[torch.Tensor, float]:
        """(g(w + h v) - g(w - h v)) / 2h on the batch: two gradients, no second derivative of any op.

        The step makes h v's RMS entry `finite_difference_step(dtype)` x (1 + the RMS weight). A ReLU
        network's gradient jumps where a unit's input crosses zero, and no step is exact across a jump."""
        w = self.layout.flatten(params)
        direction = self.layout.flatten(v)
        n = max(1, w.numel())
        rms_v = float(direction.norm()) / n**0.5
        if rms_v == 0.0:
            return torch.zeros_like(w), float(self._count_of(batch))
        step = finite_difference_step(self.dtype) * (1.0 + float(w.norm()) / n**0.5) / rms_v
        grads, count = [], 0.0
        for sign in (1.0, -1.0):
            leaves = {
                k: t.detach().requires_grad_(True)
                for k, t in self.layout.unflatten(w + sign * step * direction).items()
            }
            with torch.enable_grad():
                value, count = self._loss_sum(leaves, batch)
                g = torch.autograd.grad(value, tuple(leaves.values()), allow_unused=True)
            grads.append(self._flatten_grads(leaves, g))
        return (grads[0] - grads[1]) / (2 * step), float(count)

    def _count_of(self, batch: Batch) -> float:
        with torch.no_grad():
            return float(self._loss_sum(self._point(None), batch)[1])

    def _gradient_graph(self, params: dict[str, torch.Tensor], batch: Batch) -> GradientGraph:
        """The batch's gradient with its graph kept, so that H v is one more backward pass."""
        leaves = {k: t.detach().requires_grad_(True) for k, t in params.items()}
        with torch.enable_grad(), differentiable_attention():
            value, count = self._loss_sum(leaves, batch)
            grads = torch.autograd.grad(value, tuple(leaves.values()), create_graph=True, allow_unused=True)
        return leaves, grads, float(count)

    def _hvp_from_graph(self, graph: GradientGraph, v: dict[str, torch.Tensor], keep: bool) -> torch.Tensor:
        leaves, grads, _ = graph
        with torch.enable_grad():
            dot = sum((g * v[k]).sum() for k, g in zip(leaves, grads, strict=True) if g is not None and g.requires_grad)
            if not isinstance(dot, torch.Tensor):  # the gradient does not depend on the parameters
                return torch.zeros(self.n_params, device=self.device, dtype=self.dtype)
            hv = torch.autograd.grad(dot, tuple(leaves.values()), allow_unused=True, retain_graph=keep)
        return self._flatten_grads(leaves, hv)

    def _cached_graph(self) -> GradientGraph:
        """The gradient graph of the single batch at the checkpoint's weights, built on first use.

        Reusing it halves the cost of each double-backward HVP (no forward pass, no first
        backward pass). Only for single-batch problems: its memory is that of one uncached HVP.
        """
        # The weights may be changed in place (version counter) or replaced (the tensor itself; holding
        # it keeps its id from being reused by another tensor).
        if self._graph is None or self._graph_w is not self.w or self._graph_version != self.w._version:
            self._graph = None
            self._graph = self._gradient_graph(self._point(None), self.first_batch())
            self._graph_w, self._graph_version = self.w, self.w._version
        return self._graph

    def _caches_graph(self, method: str, w: torch.Tensor | None) -> bool:
        return method == "double-backward" and w is None and self.n_batches == 1

    def _flatten_grads(self, leaves: dict[str, torch.Tensor], grads: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        """Flatten autograd results; a parameter the loss does not reach contributes zeros."""
        return self.layout.flatten(
            tuple(torch.zeros_like(t) if g is None else g for t, g in zip(leaves.values(), grads, strict=True))
        )

    def _hvp_batch(self, method: str, params: dict, v: dict, batch: Batch, index: int) -> tuple[torch.Tensor, float]:
        """The batch's H v summed over its samples, and its count."""
        with self.chunk_context(index):
            if method == FINITE_DIFFERENCE:
                return self._hvp_finite_difference(params, v, batch)
            if method == "jvp":
                hv, count = self._hvp_jvp(params, v, batch)
                return hv, float(count)
            graph = self._gradient_graph(params, batch)
            return self._hvp_from_graph(graph, v, keep=False), graph[2]

    def choose_hvp_method(self) -> str:
        """Time both HVP methods on a slice of the data and keep the faster one.

        Which is faster depends on the model and device, so it is measured, not guessed. A method
        that fails (an op without forward-mode or double-backward support) is skipped.
        """
        if self.hvp_method is not None:
            return self.hvp_method
        self.fit_graph_to_budget()
        # an eighth of the samples at most: calibrating on all 128 images of a ResNet-18 run cost 8 full HVPs
        batch = self.first_batch(min(CALIBRATION_SAMPLES, max(CALIBRATION_FLOOR, self.n_samples // 8)))
        params = self._point(None)
        v = self.layout.unflatten(torch.ones(self.n_params, device=self.device, dtype=self.dtype))
        errors: dict[str, str] = {}
        for method in HVP_METHODS:
            try:
                self._require_symmetric(method, params, batch)
                if self._caches_graph(method, None):  # time what the HVPs will cost: the cached graph
                    with self.chunk_context(0):
                        graph = self._gradient_graph(params, batch)

                    def run(graph: GradientGraph = graph) -> torch.Tensor:
                        with self.chunk_context(0):
                            return self._hvp_from_graph(graph, v, keep=True)
                else:

                    def run(method: str = method) -> torch.Tensor:
                        return self._hvp_batch(method, params, v, batch, 0)[0]

                # the symmetry check was the warm-up; a second timing only where one is short enough to be noisy
                times: list[float] = []
                while not times or (len(times) < 2 and times[0] < 0.5):
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
        # every rank must use the same method: a method fails if it failed anywhere, and is as slow as its slowest
        timings = agree([self.hvp_timings.get(m, math.inf) for m in HVP_METHODS], self.group, "max", self.device)
        self.hvp_timings = {m: t for m, t in zip(HVP_METHODS, timings, strict=True) if math.isfinite(t)}
        if not self.hvp_timings:
            reasons = "; ".join(f"{k}: {v}" for k, v in errors.items())
            warnings.warn(LandscapeWarning(
                f"the model supports neither exact HVP method ({reasons[:300]}); using finite differences of "
                "gradients, accurate to about 1e-3 relative in float32 and 1e-9 in float64 where the model is smooth "
                "(not across ReLU kinks)"), stacklevel=2)  # fmt: skip
            self.hvp_method = FINITE_DIFFERENCE
            return self.hvp_method
        self.hvp_method = min(self.hvp_timings, key=self.hvp_timings.__getitem__)
        release_free_host_memory()  # the calibration graphs
        return self.hvp_method

    def _require_symmetric(self, method: str, params: dict, batch: Batch) -> None:
        """Raise unless u.(H v) = v.(H u) on the batch. PyTorch silently drops the second-order terms that pass
        through a backward it cannot differentiate (`once_differentiable`, some fused kernels): the HVPs
        then come out wrong and asymmetric (10% on our test model) instead of failing."""
        generator = torch.Generator().manual_seed(12345)
        u, v = (torch.randn(self.n_params, generator=generator, dtype=torch.float64).to(self.device, self.dtype)
                for _ in range(2))  # fmt: skip
        hu = self._hvp_batch(method, params, self.layout.unflatten(u), batch, 0)[0]
        hv = self._hvp_batch(method, params, self.layout.unflatten(v), batch, 0)[0]
        scale = float(u.norm() * hv.norm() + v.norm() * hu.norm())
        if scale > 0 and abs(float(u @ hv) - float(v @ hu)) > ASYMMETRY_LIMIT * scale:
            raise RuntimeError("its products are not symmetric (an op's backward cannot be differentiated)")

    def first_working_method(self) -> str:
        """The first of double-backward, jvp and finite differences that this model supports: a fixed choice,
        for results that must not depend on timing (a CI gate; the methods differ in the last digits)."""
        if self.hvp_method is not None:
            return self.hvp_method
        batch = self.first_batch(2)
        params = self._point(None)
        order = ("double-backward", "jvp", FINITE_DIFFERENCE)
        chosen = len(order) - 1
        for index, method in enumerate(order[:-1]):
            try:
                self._require_symmetric(method, params, batch)
                chosen = index
                break
            except LandscapeError:
                raise
            except Exception:  # noqa: BLE001, S112 - an op may lack one kind of derivative
                continue
        (agreed,) = agree([chosen], self.group, "max", self.device)  # the same method on every rank
        return order[int(agreed)]

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def hvp(self, v: torch.Tensor, w: torch.Tensor | None = None, method: str | None = None) -> torch.Tensor:
        """H v for the Hessian of the mean loss at `w` (default: the checkpoint), as a flat vector."""
        method = method or self.choose_hvp_method()
        self.fit_graph_to_budget()
        if self.n_params >= TRIM_EACH_PRODUCT_PARAMS:
            release_free_host_memory()  # the last product's buffers, before this one's
        params = self._point(w)
        tangent = self.layout.unflatten(v.to(self.device, self.dtype))
        if self._caches_graph(method, w):
            graph = self._cached_graph()
            with self.chunk_context(0):
                total = self._hvp_from_graph(graph, tangent, keep=True)
            count = graph[2]
        else:
            total, count = torch.zeros(self.n_params, device=self.device, dtype=self.dtype), 0.0
            for index, batch in self.batches():
                hv, batch_count = self._hvp_batch(method, params, tangent, batch, index)
                total += hv
                count += batch_count
                del hv  # before the next batch's graph
        self.hvp_calls += 1
        _, (count,) = self.sum_over_ranks(total, count)
        return total.div_(positive_count(count))

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
            "world_size": 1 if self.group is None else self.group.world_size,
            "backend": "none" if self.group is None else self.group.backend,
        }


def graph_budget(device: torch.device) -> float:
    """Bytes one batch's gradient graph may take: a quarter of free GPU memory, or of the memory limit."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return GRAPH_BUDGET_FRACTION * free
    return GRAPH_BUDGET_FRACTION * max_memory()


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:300]}"


def positive_count(count: float) -> float:
    """The total count a mean divides by; none at all is the data's fault (every target ignored)."""
    if not count > 0:
        raise LandscapeError("the loss counted no targets in the data (every target ignored?)")
    return count
