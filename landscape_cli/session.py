"""From a checkpoint file and the user's options to a ready Problem (the glue every command shares)."""

from __future__ import annotations

import warnings

import torch

from .checkpoint import Checkpoint, instantiate
from .errors import LandscapeError, LandscapeWarning
from .problem import Problem
from .zoo.data import Dataset, load_data

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; an explicit device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LandscapeError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LandscapeError(f"device '{name}' requested but CUDA is not available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LandscapeError(f"device '{name}' does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif device.type != "cpu":
        raise LandscapeError(f"device type '{device.type}' is not supported; use auto, cpu, cuda or cuda:N")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise LandscapeError(f"unknown dtype '{name}'; choose float32 or float64") from None


def subset_indices(n: int, samples: int | None, seed: int) -> torch.Tensor | None:
    """A fixed seeded subset of `samples` indices (sorted), or None for all `n` (with a warning when more
    were asked for than there are)."""
    if samples is None or samples >= n:
        if samples is not None and samples < 1:
            raise LandscapeError(f"--samples must be at least 1, got {samples}")
        if samples is not None and samples > n:
            warnings.warn(f"--samples {samples:,} is more than the {n:,} samples there are; using all of them",
                          LandscapeWarning, stacklevel=2)  # fmt: skip
        return None
    if samples < 1:
        raise LandscapeError(f"--samples must be at least 1, got {samples}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:samples].sort().values


def check_model_fits_data(
    model: torch.nn.Module, data: Dataset, device: torch.device, dtype: torch.dtype, loss: str | None = None
) -> None:
    """One forward pass on two samples (eval mode), so that a model that does not fit the data or the loss
    fails here with a message naming the shapes, instead of deep inside a computation."""
    batch = data.x[:2]
    try:
        with torch.no_grad():
            out = model.eval()(batch.to(device, dtype))
    except Exception as exc:  # noqa: BLE001 - a model/data mismatch can fail anywhere in forward
        raise LandscapeError(
            f"the model does not accept inputs of shape {tuple(data.x.shape[1:])} from the data: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise LandscapeError(f"the model returns a {type(out).__name__}; the loss needs a tensor of outputs")
    shape, n = tuple(out.shape), len(batch)
    if data.task == "classification" and (loss or "cross_entropy") == "cross_entropy":
        if out.dim() != 2 or shape[0] != n:
            raise LandscapeError(
                f"the model's output has shape {shape} for a batch of {n}; cross_entropy over class labels needs "
                f"(batch, classes), i.e. ({n}, C)"
            )
        if shape[-1] <= int(data.y.max()):
            raise LandscapeError(f"the model has {shape[-1]} outputs but the data has labels up to {int(data.y.max())}")
        return
    if out.dim() == 0 or shape[0] != n:
        raise LandscapeError(f"the model's output has shape {shape} for a batch of {n}; it must start with the batch")
    wanted = (shape[-1],) if data.task == "classification" else tuple(data.y.shape[1:])
    if shape[1:] != wanted or (data.task == "classification" and shape[-1] <= int(data.y.max())):
        what = f"one-hot labels up to {int(data.y.max())}" if data.task == "classification" else "targets"
        raise LandscapeError(
            f"the model's output has shape {shape} but mse against {what} needs ({n}, {', '.join(map(str, wanted))})"
        )


def problem_from_checkpoint(
    ckpt: Checkpoint,
    *,
    split: str | None = None,
    samples: int | None = None,
    batch_size: int = 2048,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    train_mode: bool = False,
    hvp: str = "auto",
    seed: int = 0,
) -> Problem:
    """The Problem of a checkpoint on its own data (or `split` of it), optionally a seeded subset."""
    ckpt.spec("model")
    spec = dict(ckpt.spec("data"))
    device = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype)
    if split is not None:
        spec["split"] = split
    data = load_data(spec)
    if ckpt.loss is None:  # a plain state_dict: class labels mean cross-entropy, real-valued targets MSE
        ckpt.loss = "cross_entropy" if data.task == "classification" else "mse"
    indices = subset_indices(len(data), samples, seed)
    if indices is not None:
        data = data.subset(indices)
    model = instantiate(ckpt, device=device, dtype=dtype)
    check_model_fits_data(model, data, device, dtype, ckpt.loss)
    return Problem(
        model,
        data,
        ckpt.loss,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        train_mode=train_mode,
        hvp=hvp,
        seed=seed,
    )
