"""One batch as the model and the loss see it, whatever shape the user's data gives it.

A batch is a tensor pair ``(x, y)``, a tuple ``(x, y, ...)``, a dict of tensors (HuggingFace style:
``input_ids``, ``attention_mask``, ``labels``) or a lone tensor of inputs. `Batch` separates what the
model is called with from the targets, keeps the user's structure for their own loss, and moves to a
device keeping integer dtypes (token ids stay int64): only floating tensors follow the working dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import LandscapeError

#: The key of the targets in a dict batch (HuggingFace's name).
LABELS = "labels"


@dataclass
class Batch:
    """What one batch passes to the model (`args`, `kwargs`), its targets, its size, and the structure the
    user gave it (`raw`, on the same device), which a user's loss function receives."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    target: torch.Tensor | None
    size: int
    raw: Any

    def model_kwargs(self, with_labels: bool = False) -> dict[str, Any]:
        """The model's keyword arguments; with the labels for HF models that compute their own loss."""
        if with_labels and self.target is not None and not self.args:
            return {**self.kwargs, LABELS: self.target}
        return self.kwargs

    def call(self, model: Any, with_labels: bool = False) -> Any:
        """The model's output on this batch."""
        return model(*self.args, **self.model_kwargs(with_labels))


def map_tensors(structure: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """The structure (tensors in dicts, lists and tuples, nested) with `fn` applied to every tensor."""
    if isinstance(structure, torch.Tensor):
        return fn(structure)
    if isinstance(structure, Mapping):
        return {k: map_tensors(v, fn) for k, v in structure.items()}
    if isinstance(structure, list):
        return [map_tensors(v, fn) for v in structure]
    if isinstance(structure, tuple):
        return tuple(map_tensors(v, fn) for v in structure)
    return structure


def move(structure: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """The structure on `device`; floating tensors in `dtype`, other dtypes kept."""

    def to(t: torch.Tensor) -> torch.Tensor:
        if t.is_floating_point():
            return t.to(device=device, dtype=dtype, non_blocking=True)
        return t.to(device=device, non_blocking=True)

    return map_tensors(structure, to)


def as_batch(structure: Any) -> Batch:
    """Read a batch: `(x, y, ...)` calls model(x) with targets y; a dict calls model(**dict) with its 'labels'
    as targets; a lone tensor calls model(x) without targets."""
    if isinstance(structure, torch.Tensor):
        return Batch((structure,), {}, None, _leading(structure), structure)
    if isinstance(structure, Mapping):
        kwargs = {k: v for k, v in structure.items() if k != LABELS}
        tensors = [v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.dim() > 0]
        if not tensors:
            raise LandscapeError(f"a dict batch needs tensors besides '{LABELS}'; it has keys {', '.join(structure)}")
        target = structure.get(LABELS)
        if target is not None and not isinstance(target, torch.Tensor):
            raise LandscapeError(f"the batch's '{LABELS}' is a {type(target).__name__}, not a tensor")
        return Batch((), kwargs, target, _leading(tensors[0]), structure)
    if isinstance(structure, tuple | list) and structure:
        x = structure[0]
        if not isinstance(x, torch.Tensor):
            raise LandscapeError(f"a batch's first element must be a tensor of inputs, got {type(x).__name__}")
        target = structure[1] if len(structure) > 1 else None
        if target is not None and not isinstance(target, torch.Tensor):
            raise LandscapeError(f"a batch's second element must be a tensor of targets, got {type(target).__name__}")
        if target is not None and target.dim() > 0 and target.shape[0] != x.shape[0]:
            raise LandscapeError(f"a batch has {x.shape[0]} inputs but {target.shape[0]} targets")
        return Batch((x,), {}, target, _leading(x), structure)
    raise LandscapeError(
        f"cannot read a batch of type {type(structure).__name__}; give (inputs, targets), a dict of tensors or a tensor"
    )


def _leading(tensor: torch.Tensor) -> int:
    if tensor.dim() == 0:
        raise LandscapeError("a batch's inputs must have a leading batch dimension, got a scalar")
    return int(tensor.shape[0])


def batch_size_of(structure: Any) -> int:
    return as_batch(structure).size


def take(structure: Any, n: int) -> Any:
    """The first `n` samples of a batch (every tensor with the batch's leading size is cut)."""
    return rows(structure, 0, n)


def rows(structure: Any, start: int, size: int) -> Any:
    """Samples start .. start + size of a batch, in its structure."""
    total = batch_size_of(structure)
    return map_tensors(structure, lambda t: t[start : start + size] if t.dim() > 0 and t.shape[0] == total else t)


def select(structure: Any, index: torch.Tensor) -> Any:
    """The samples at `index` (a 1-D index tensor on the batch's device) of a batch, in its structure."""
    total = batch_size_of(structure)
    return map_tensors(structure, lambda t: t[index] if t.dim() > 0 and t.shape[0] == total else t)


def nbytes(structure: Any) -> int:
    if isinstance(structure, torch.Tensor):
        return structure.numel() * structure.element_size()
    if isinstance(structure, Mapping):
        return sum(nbytes(v) for v in structure.values())
    if isinstance(structure, tuple | list):
        return sum(nbytes(v) for v in structure)
    return 0


def fingerprint(structure: Any) -> tuple:
    """A cheap identity of a batch's contents (shapes and a few sums), to notice data that changes between
    passes (a shuffling DataLoader)."""
    if isinstance(structure, torch.Tensor):
        flat = structure.detach().reshape(-1)
        return (tuple(structure.shape), float(flat[:4096].double().sum()) if flat.numel() else 0.0)
    if isinstance(structure, Mapping):
        return tuple((k, fingerprint(v)) for k, v in structure.items())
    if isinstance(structure, tuple | list):
        return tuple(fingerprint(v) for v in structure)
    return ()
