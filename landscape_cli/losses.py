"""Losses as a (sum, count) pair per batch, so that a mean over a sample set is exact whatever the batching.

The mean loss over the set is the sum of every batch's loss sum over the sum of their counts: samples
for a per-sample loss, tokens for token-level cross-entropy (targets equal to `ignore_index` count for
nothing), so unequal padding across batches weighs every token alike. A batch-mean average would not.

Names (what checkpoints record and `--loss` takes):

- ``cross_entropy``: class scores on the last dimension, any leading shape ((B, C), (B, T, V)); targets
  with the leading shape; `ignore_index` (default -100) not counted; `label_smoothing` as PyTorch's.
- ``mse``: PyTorch's ``nn.MSELoss``: the mean over all elements.
- ``half_sse``: 0.5 x the squared error summed over outputs, mean over samples (Cohen et al.'s "MSE",
  and this project's ``mse`` before checkpoint format 2). Its Hessian is C/2 times ``mse``'s for C outputs.
- ``bce_with_logits``: ``nn.BCEWithLogitsLoss``: the mean over all elements.
- ``model``: the model computes its own loss from the batch's labels (a HuggingFace ``.loss``), weighted
  by the number of targets it averaged over where that is known (labels other than -100, shifted by one
  for a causal language model), otherwise by the batch size.
- a callable ``fn(output, batch)``: returns the batch's mean loss (weighted by its size) or a pair
  ``(loss_sum, count)`` for exact token weighting. An ``nn.Module`` loss (``nn.CrossEntropyLoss()``) is
  called as ``fn(output, targets)``; PyTorch's own three are read as the names above.

Class labels with ``mse`` and ``half_sse`` are compared one-hot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .batches import Batch
from .errors import LandscapeError

IGNORE_INDEX = -100
NAMES = ("cross_entropy", "mse", "half_sse", "bce_with_logits", "model")


def logits_of(output: Any) -> torch.Tensor:
    """The tensor a loss reads from a model's output: the output itself, the first element of a tuple, or the
    'logits' of a dict or HuggingFace ModelOutput."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        if "logits" in output and isinstance(output["logits"], torch.Tensor):
            return output["logits"]
        raise LandscapeError(f"the model returns a dict without 'logits' (keys: {', '.join(map(str, output))})")
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise LandscapeError(f"the model returns a {type(output).__name__}; the loss needs a tensor of outputs")


def _any(condition: torch.Tensor) -> bool:
    """Whether any entry is true, for checks on the data; inside vmap (per-sample gradients) the batch was
    checked outside, and a batched tensor cannot be read."""
    if torch._C._functorch.is_batchedtensor(condition):
        return False
    return bool(condition.any())


def _integer(t: torch.Tensor) -> bool:
    return not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


class Loss:
    """A loss over one batch as (sum, count); `many` does the same for a stack of outputs at P points."""

    name: str = ""
    #: The model receives the labels and computes the loss itself.
    passes_labels = False
    #: The loss is a function of the model's output alone, so the Gauss-Newton matrix exists.
    has_output_hessian = True

    def sum_and_count(self, output: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def many(self, outputs: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss sums of P points' outputs (P, ...) at once, (P,), and the count."""
        sums, count = [], torch.zeros(())
        for output in outputs:
            total, count = self.sum_and_count(output, batch)
            sums.append(total)
        return torch.stack(sums), count

    def correct(self, outputs: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Correct predictions of P points (P,) and how many were judged, for class-label targets."""
        target = batch.target
        if target is None or not _integer(target) or outputs.dim() < 2 or outputs.shape[-1] < 2:
            return None
        if tuple(outputs.shape[1:-1]) != tuple(target.shape):
            return None
        valid = target != IGNORE_INDEX
        safe = torch.where(valid, target, 0).long()
        picked = outputs.gather(-1, safe.expand(outputs.shape[0], *safe.shape).unsqueeze(-1)).squeeze(-1)
        hits = (picked == outputs.amax(-1)) & valid
        return hits.flatten(1).sum(-1), valid.sum()

    def record(self) -> str:
        """What a checkpoint records for this loss."""
        return self.name


class CrossEntropy(Loss):
    name = "cross_entropy"

    def __init__(self, ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise LandscapeError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)

    def _checked(self, scores: torch.Tensor, target: torch.Tensor | None, lead: int) -> torch.Tensor:
        if target is None:
            raise LandscapeError("cross_entropy needs targets; the batch has none")
        if not _integer(target):
            raise LandscapeError(
                f"cross_entropy needs class labels (integers), got {str(target.dtype).replace('torch.', '')} targets;"
                " use mse for regression targets"
            )
        if scores.dim() < 1 + lead or tuple(scores.shape[lead:-1]) != tuple(target.shape):
            raise LandscapeError(
                f"cross_entropy needs class scores shaped like the targets plus a class dimension: targets "
                f"{tuple(target.shape)}, model output {tuple(scores.shape[lead:])}"
            )
        valid = target != self.ignore_index
        classes = scores.shape[-1]
        if _any((target < 0) & valid) or _any((target >= classes) & valid):
            low, high = int(target[valid].min()), int(target[valid].max())
            raise LandscapeError(f"targets range over {low}..{high} but the model has {classes} classes")
        return valid

    def sum_and_count(self, output: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        scores = logits_of(output)
        valid = self._checked(scores, batch.target, 0)
        assert batch.target is not None
        total = F.cross_entropy(
            scores.reshape(-1, scores.shape[-1]),
            batch.target.reshape(-1).long(),
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        )
        return total, valid.sum()

    def many(self, outputs: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The same sums for P points at a third of the cost for a small model: log_softmax over 10
        classes took 270 us for 1,797 digits, as long as the digits MLP's forward pass."""
        target = batch.target
        valid = self._checked(outputs, target, 1)
        assert target is not None
        safe = torch.where(valid, target, 0).long().expand(outputs.shape[0], *target.shape)
        picked = outputs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        top = outputs.amax(-1, keepdim=True)
        lse = (outputs - top).exp().sum(-1).log() + top.squeeze(-1)
        nll = lse - picked
        if self.label_smoothing:
            nll = (1 - self.label_smoothing) * nll + self.label_smoothing * (lse - outputs.mean(-1))
        return (nll * valid).flatten(1).sum(-1), valid.sum()


class _Elementwise(Loss):
    """Losses over every output element, per sample the sum (half_sse) or the mean (mse, bce) of its elements."""

    per_sample_mean = True

    def _pair(self, scores: torch.Tensor, target: torch.Tensor | None, lead: int) -> torch.Tensor:
        if target is None:
            raise LandscapeError(f"{self.name} needs targets; the batch has none")
        if _integer(target) and self.name != "bce_with_logits":
            if scores.dim() - lead != target.dim() + 1:
                raise LandscapeError(
                    f"{self.name}: class labels {tuple(target.shape)} need outputs with one more dimension, got "
                    f"{tuple(scores.shape[lead:])}"
                )
            if _any(target < 0) or _any(target >= scores.shape[-1]):
                raise LandscapeError(
                    f"{self.name}: labels range over {int(target.min())}..{int(target.max())} but the model has "
                    f"{scores.shape[-1]} outputs"
                )
            target = F.one_hot(target.long(), scores.shape[-1])
        target = target.to(scores.dtype)
        if tuple(target.shape) != tuple(scores.shape[lead:]):
            if target.dim() == 1 and tuple(scores.shape[lead:]) == (target.shape[0], 1):
                target = target.unsqueeze(-1)
            else:
                raise LandscapeError(
                    f"{self.name}: model outputs {tuple(scores.shape[lead:])} but targets are {tuple(target.shape)}"
                )
        return target

    def _elements(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sums(self, scores: torch.Tensor, batch: Batch, lead: int) -> tuple[torch.Tensor, torch.Tensor]:
        target = self._pair(scores, batch.target, lead)
        per_element = self._elements(scores, target)
        total = per_element.flatten(lead).sum(-1)
        if self.per_sample_mean:
            total = total / max(1, target[0].numel() if target.dim() > 1 else 1)
        return total, torch.tensor(batch.size, device=scores.device)

    def sum_and_count(self, output: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sums(logits_of(output), batch, 0)

    def many(self, outputs: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sums(outputs, batch, 1)


class MeanSquaredError(_Elementwise):
    name = "mse"

    def _elements(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (scores - target).pow(2)


class HalfSumSquaredError(_Elementwise):
    name = "half_sse"
    per_sample_mean = False

    def _elements(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * (scores - target).pow(2)


class BinaryCrossEntropyWithLogits(_Elementwise):
    name = "bce_with_logits"

    def _elements(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if _any((target < 0) | (target > 1)):
            raise LandscapeError("bce_with_logits needs targets between 0 and 1")
        return F.binary_cross_entropy_with_logits(scores, target.expand_as(scores), reduction="none")


class ModelLoss(Loss):
    """The loss the model computes itself from the labels it is given (HuggingFace's `.loss`)."""

    name = "model"
    passes_labels = True
    has_output_hessian = False

    def __init__(self, causal: bool = False) -> None:
        self.causal = causal

    def sum_and_count(self, output: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        value = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            raise LandscapeError(
                "loss 'model' needs the model to return its loss (an output with .loss, as HuggingFace models do "
                "when given labels)" + ("" if batch.target is not None else "; the batch has no 'labels'")
            )
        count = self.count(batch, value.device)
        return value * count, count

    def count(self, batch: Batch, device: torch.device) -> torch.Tensor:
        """How many targets the model's mean was over: labels other than -100 (after the causal shift), or
        the batch size for per-sequence labels or none."""
        labels = batch.target
        if labels is None or labels.dim() < 2 or not _integer(labels):
            return torch.tensor(batch.size, device=device)
        if self.causal:
            labels = labels[..., 1:]
        return (labels != IGNORE_INDEX).sum().to(device)


class FunctionLoss(Loss):
    """A user's loss: `fn(output, batch)` (or an nn.Module loss as `fn(output, targets)`)."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self.fn = fn
        self.module = isinstance(fn, nn.Module)
        self.name = name or _callable_name(fn)

    def sum_and_count(self, output: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            value = self.fn(output, batch.target) if self.module else self.fn(output, batch.raw)
        except LandscapeError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's function failed
            raise LandscapeError(f"the loss {self.name} failed: {type(exc).__name__}: {exc}") from exc
        if isinstance(value, tuple | list) and len(value) == 2:
            total, count = value
            if not isinstance(total, torch.Tensor) or total.dim() != 0:
                raise LandscapeError(f"the loss {self.name} returned a pair whose first element is not a scalar tensor")
            return total, torch.as_tensor(count, device=total.device)
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise LandscapeError(
                f"the loss {self.name} must return a scalar tensor (the batch's mean) or (sum, count), got {shape}"
            )
        count = torch.tensor(batch.size, device=value.device)
        return value * count, count


def _callable_name(fn: Callable[..., Any]) -> str:
    if isinstance(fn, nn.Module):
        return type(fn).__name__
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}:{qualname}" if module else qualname


def is_causal_lm(model: nn.Module) -> bool:
    """A HuggingFace causal language model shifts its labels by one inside its loss."""
    config = getattr(model, "config", None)
    name = type(model).__name__
    return bool(getattr(config, "is_decoder", False)) or name.endswith(("LMHeadModel", "ForCausalLM"))


def resolve_loss(
    loss: str | Loss | Callable[..., Any],
    *,
    ignore_index: int = IGNORE_INDEX,
    label_smoothing: float = 0.0,
    model: nn.Module | None = None,
) -> Loss:
    """A loss from its name, a Loss, an nn.Module loss or a callable."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        if label_smoothing and loss != "cross_entropy":
            raise LandscapeError(f"label_smoothing applies to cross_entropy only, not {loss}")
        if loss == "cross_entropy":
            return CrossEntropy(ignore_index, label_smoothing)
        if loss == "mse":
            return MeanSquaredError()
        if loss == "half_sse":
            return HalfSumSquaredError()
        if loss == "bce_with_logits":
            return BinaryCrossEntropyWithLogits()
        if loss == "model":
            return ModelLoss(causal=model is not None and is_causal_lm(model))
        raise LandscapeError(f"unknown loss '{loss}'; choose one of {', '.join(NAMES)}, or pass a function")
    if isinstance(loss, nn.Module):
        builtin = _builtin_module(loss)
        return builtin if builtin is not None else FunctionLoss(loss)
    if callable(loss):
        return FunctionLoss(loss)
    raise LandscapeError(f"a loss is a name, an nn.Module loss or a function; got {type(loss).__name__}")


def _builtin_module(loss: nn.Module) -> Loss | None:
    """PyTorch's own losses with mean reduction and no weights, read as the exact built-ins."""
    if getattr(loss, "reduction", None) != "mean" or getattr(loss, "weight", None) is not None:
        return None
    if type(loss) is nn.CrossEntropyLoss:
        return CrossEntropy(loss.ignore_index, loss.label_smoothing)
    if type(loss) is nn.MSELoss:
        return MeanSquaredError()
    if type(loss) is nn.BCEWithLogitsLoss and loss.pos_weight is None:
        return BinaryCrossEntropyWithLogits()
    return None
