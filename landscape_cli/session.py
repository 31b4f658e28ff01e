"""From a checkpoint file and the user's options to a ready Problem (the glue every command shares)."""

from __future__ import annotations

import torch

from .batches import as_batch
from .checkpoint import Checkpoint, instantiate
from .distributed import current as current_group
from .distributed import launched, local_device
from .errors import LandscapeError, ParameterError
from .losses import IGNORE_INDEX, FunctionLoss, Loss, resolve_loss
from .problem import Problem
from .sources import as_source, subset_indices
from .zoo.data import Dataset, load_source
from .zoo.entrypoints import is_entrypoint, resolve_entrypoint

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; an explicit device that is not there is an error. Under torchrun `auto`
    and `cuda` mean this rank's GPU (LOCAL_RANK)."""
    if name in ("auto", "cuda") and launched() and torch.cuda.is_available():
        return local_device()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LandscapeError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError("device", f"device '{name}' requested but CUDA is not available; use device cpu")
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
    ignore_index: int | None = None,
    label_smoothing: float | None = None,
    distributed: bool | None = None,
) -> Problem:
    """The Problem of a checkpoint on its own data (or `split` of it), optionally a seeded subset. Tensors
    are held on the device; what a data entry point returns as a Dataset, DataLoader or iterable of
    batches is streamed."""
    ckpt.spec("model")
    spec = dict(ckpt.spec("data"))
    loss_name = ckpt.loss_spec()
    options = ckpt.loss_options
    ignore_index = options.get("ignore_index", IGNORE_INDEX) if ignore_index is None else ignore_index
    label_smoothing = options.get("label_smoothing", 0.0) if label_smoothing is None else label_smoothing
    device = device if isinstance(device, torch.device) else resolve_device(device)
    dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype)
    if split is not None:
        spec["split"] = split
    data = load_source(spec)
    if isinstance(data, Dataset):
        if loss_name is None:  # a plain state_dict: class labels mean cross-entropy, real-valued targets MSE
            loss_name = ckpt.loss = "cross_entropy" if data.task == "classification" else "mse"
        indices = subset_indices(len(data), samples, seed)
        if indices is not None:
            data = data.subset(indices)
    else:
        data = as_source(data, batch_size=batch_size, samples=samples, seed=seed)
        if loss_name is None:
            target = as_batch(next(iter(data))).target
            integer = target is not None and not target.is_floating_point()
            loss_name = ckpt.loss = "cross_entropy" if integer else "mse"
    model = instantiate(ckpt, device=device, dtype=dtype)
    loss = build_loss(loss_name, model, ignore_index=ignore_index, label_smoothing=label_smoothing)
    # tensors in memory with a built-in loss get the check that names shapes; anything else runs the model
    # and the loss on two samples
    named_shapes = isinstance(data, Dataset) and loss.name in ("cross_entropy", "mse", "half_sse")
    if named_shapes:
        check_model_fits_data(model, data, device, dtype, loss.name)
    problem = Problem(
        model,
        data,
        loss,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        train_mode=train_mode,
        hvp=hvp,
        seed=seed,
        distributed=current_group() is not None if distributed is None else distributed,
    )
    if not named_shapes:
        problem.check_fits()
    return problem


def build_loss(name: str, model: torch.nn.Module, *, ignore_index: int = IGNORE_INDEX,
               label_smoothing: float = 0.0) -> Loss:  # fmt: skip
    """A loss by name, or the function a `file.py:fn` entry point names (the caller has checked it may run)."""
    if is_entrypoint(name):
        return FunctionLoss(resolve_entrypoint(name), name=name)
    if name != "cross_entropy" and (ignore_index != IGNORE_INDEX or label_smoothing):
        raise LandscapeError(f"ignore_index and label_smoothing apply to cross_entropy, not to {name}")
    return resolve_loss(name, ignore_index=ignore_index, label_smoothing=label_smoothing, model=model)
