"""Built-in and user datasets, as in-memory tensors, from a data spec.

A data spec is a plain dict stored in every checkpoint::

    {"name": "digits", "split": "train", "seed": 0, "kwargs": {}, "preprocessing": "standardize"}
    {"path": "data.npz", "split": "all", ...}
    {"entrypoint": "pkg.module:function", ...}

Nothing is downloaded: digits ships with scikit-learn, the synthetic sets are generated
from the seed, and files and entry points are the user's.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import LandscapeError, ParameterError
from ..files import require_regular_file, verify_archive
from ..limits import require_memory
from .entrypoints import is_entrypoint, resolve_entrypoint

SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2
#: The train/test split of the built-in sets never moves, whatever the training seed.
SPLIT_SEED = 0


@dataclass
class Dataset:
    """Inputs and targets held in memory; targets are class indices or regression values."""

    x: torch.Tensor
    y: torch.Tensor

    @property
    def task(self) -> str:
        return "classification" if self.y.dtype == torch.long else "regression"

    @property
    def num_classes(self) -> int | None:
        return int(self.y.max().item()) + 1 if self.task == "classification" and len(self.y) else None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, indices: torch.Tensor) -> Dataset:
        return Dataset(self.x[indices], self.y[indices])


def _split_indices(n: int, split: str) -> np.ndarray:
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = int(round(TEST_FRACTION * n))
    if split == "train":
        return np.sort(order[n_test:])
    if split == "test":
        return np.sort(order[:n_test])
    return np.arange(n)


def _standardize(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    mean = reference.mean(axis=0)
    std = reference.std(axis=0)
    std[std == 0] = 1.0
    return (x - mean) / std


def _finish(x: np.ndarray, y: np.ndarray, split: str, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Split with the fixed seed and standardize with statistics of the training part."""
    idx = _split_indices(len(x), split)
    if standardize:
        x = _standardize(x, x[_split_indices(len(x), "train")])
    return x[idx], y[idx]


def _digits(seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, read from the CSV file scikit-learn ships (what `load_digits` reads) without
    importing scikit-learn, whose import alone took 1.7 s of a 5 s `landscape check` here."""
    found = importlib.util.find_spec("sklearn")
    locations = list(found.submodule_search_locations or []) if found is not None else []
    csv = Path(locations[0]) / "datasets" / "data" / "digits.csv.gz" if locations else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",")
        data, target = table[:, :-1], table[:, -1]
    else:  # a scikit-learn that keeps the file elsewhere
        from sklearn.datasets import load_digits

        bunch = load_digits()
        data, target = bunch.data, bunch.target
    return _finish(data.astype(np.float64), target.astype(np.int64), split, True)


def _gaussian_mixture(
    seed: int, split: str, n: int = 2000, dim: int = 16, classes: int = 4, separation: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    centres *= separation / np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(size=(n, dim))
    return _finish(x, y.astype(np.int64), split, True)


def _spirals(
    seed: int, split: str, n: int = 1000, noise: float = 0.2, turns: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    t = np.sqrt(rng.uniform(size=n)) * turns * 2 * math.pi
    radius = t / (turns * 2 * math.pi) * 3.0
    angle = t + math.pi * y
    x = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    x += noise * rng.normal(size=x.shape)
    return _finish(x, y.astype(np.int64), split, False)


def _teacher_student(
    seed: int,
    split: str,
    n: int = 2000,
    dim: int = 16,
    hidden: int = 32,
    outputs: int = 1,
    noise: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    w1 = rng.normal(size=(dim, hidden)) / math.sqrt(dim)
    w2 = rng.normal(size=(hidden, outputs)) / math.sqrt(hidden)
    y = np.tanh(x @ w1) @ w2 + noise * rng.normal(size=(n, outputs))
    return _finish(x, y, split, False)


DATASETS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "digits": _digits,
    "gaussian-mixture": _gaussian_mixture,
    "spirals": _spirals,
    "teacher-student": _teacher_student,
}
PREPROCESSING = {
    "digits": "standardize (train-split statistics)",
    "gaussian-mixture": "standardize (train-split statistics)",
}


def data_spec(name: str, split: str = "train", seed: int = 0, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec dict for a built-in name, a data file or an entry point."""
    if split not in SPLITS:
        raise LandscapeError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    spec: dict[str, Any] = {"split": split, "seed": int(seed), "kwargs": dict(kwargs or {})}
    if name in DATASETS:
        spec["name"] = name
        spec["preprocessing"] = PREPROCESSING.get(name, "none")
    elif name.endswith((".npz", ".pt", ".pth", ".npy")) and not is_entrypoint(name):
        spec["path"] = name
        spec["preprocessing"] = "none"
    elif is_entrypoint(name):
        spec["entrypoint"] = name
        spec["preprocessing"] = "none"
    else:
        raise LandscapeError(
            f"unknown dataset '{name}'; built-in datasets are {', '.join(DATASETS)}, "
            "or give a .npz/.pt file with x and y, a .npy file of inputs (with --data-arg targets=FILE.npy), "
            "or an entry point 'pkg.module:function'"
        )
    return spec


#: Values a built-in dataset generates per sample, besides its `dim` features (labels, noise, teacher).
def _floats_per_sample(name: str, kwargs: dict[str, Any]) -> int:
    dim = int(kwargs.get("dim", 16))
    return {
        "gaussian-mixture": 2 * dim + 2,
        "spirals": 6,
        "teacher-student": 2 * dim + int(kwargs.get("hidden", 32)) + 2 * int(kwargs.get("outputs", 1)),
    }.get(name, 0)


def check_builtin_arguments(name: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Refuse arguments of the wrong type or range, and a size past the memory limit, before generating:
    `n=4e8` in a file's spec must not become a 48 GiB allocation."""
    parameters = inspect.signature(fn).parameters
    for key, value in kwargs.items():
        if key not in parameters or key in ("seed", "split"):
            known = ", ".join(k for k in parameters if k not in ("seed", "split")) or "none"
            raise LandscapeError(f"dataset '{name}' has no argument '{key}' (its arguments: {known}, limit)")
        default = parameters[key].default
        if isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise LandscapeError(f"dataset '{name}': {key} must be a whole number of at least 1, got {value!r}")
        if isinstance(default, float) and (
            isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
        ):
            raise LandscapeError(f"dataset '{name}': {key} must be a finite number, got {value!r}")
    n = int(kwargs.get("n", parameters["n"].default if "n" in parameters else 0))
    require_memory(f"dataset '{name}' with n={n:,}", 8.0 * n * _floats_per_sample(name, kwargs) * 2)


def describe_data(spec: dict[str, Any]) -> str:
    source = spec.get("name") or spec.get("path") or spec.get("entrypoint")
    extra = "".join(f",{k}={v}" for k, v in (spec.get("kwargs") or {}).items())
    return f"{source}[{spec.get('split', 'train')}{extra}]"


def load_source(spec: dict[str, Any]) -> Dataset | Any:
    """What an analysis reads: tensors in memory as a `Dataset`, or what a data entry point returns that is
    better streamed (a torch Dataset, IterableDataset, DataLoader or iterable of batches, or integer
    inputs such as token ids), for `sources.as_source`."""
    if "path" in spec and str(spec["path"]).endswith(".npy"):
        return _npy_arrays(Path(spec["path"]), spec.get("split", "train"), dict(spec.get("kwargs") or {}))
    if "path" in spec and not (spec.get("kwargs") or {}).get("limit"):
        x, y = _file_arrays(Path(spec["path"]), spec.get("split", "train"))
        x_t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
        if not x_t.is_floating_point():  # token ids keep their dtype, targets their shape: streamed as tensors
            y_t = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
            y_t = y_t.float() if y_t.is_floating_point() else y_t.long()
            if x_t.dim() == 0 or y_t.dim() == 0 or x_t.shape[0] != y_t.shape[0] or x_t.shape[0] == 0:
                raise LandscapeError(f"{spec['path']}: x has shape {tuple(x_t.shape)} but y {tuple(y_t.shape)}")
            return x_t.long(), y_t
        return _as_dataset(x, y, str(spec["path"]))
    if "entrypoint" in spec:
        kwargs = dict(spec.get("kwargs") or {})
        if "limit" not in kwargs:
            out = _call_entrypoint(spec["entrypoint"], spec.get("split", "train"), kwargs)
            if _streamable(out):
                return out
            return _dataset_from(out, spec["entrypoint"])
    return load_data(spec)


def _streamable(out: Any) -> bool:
    if isinstance(out, torch.utils.data.Dataset | torch.utils.data.DataLoader):
        return True
    if isinstance(out, tuple | list) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out):
        return not out[0].is_floating_point()  # token ids keep their dtype
    if isinstance(out, tuple | list | dict | str | bytes | np.ndarray):
        return isinstance(out, list) and bool(out) and not isinstance(out[0], torch.Tensor | np.ndarray)
    return hasattr(out, "__iter__")


def load_data(spec: dict[str, Any]) -> Dataset:
    """Materialize the dataset a spec describes as tensors (float inputs, long or float targets)."""
    split = spec.get("split", "train")
    if split not in SPLITS:
        raise LandscapeError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    kwargs = dict(spec.get("kwargs") or {})
    limit = kwargs.pop("limit", None)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise LandscapeError(f"data argument limit must be a positive integer, got {limit!r}")
    if "name" in spec:
        fn = DATASETS.get(spec["name"])
        if fn is None:
            raise LandscapeError(f"unknown dataset '{spec['name']}'; built-in datasets are {', '.join(DATASETS)}")
        check_builtin_arguments(spec["name"], fn, kwargs)
        try:
            x, y = fn(int(spec.get("seed", 0)), split, **kwargs)
        except TypeError as exc:
            raise LandscapeError(f"dataset '{spec['name']}': {exc}") from None
        data = Dataset(torch.from_numpy(np.ascontiguousarray(x)).float(), _targets(y))
    elif "path" in spec and str(spec["path"]).endswith(".npy"):
        arrays = _npy_arrays(Path(spec["path"]), split, {**kwargs, **({"limit": limit} if limit else {})})
        require_memory(f"data file {spec['path']}", float(arrays.x.nbytes + arrays.y.nbytes) * 2)
        data = _as_dataset(np.asarray(arrays.x), np.asarray(arrays.y), str(spec["path"]))
    elif "path" in spec:
        data = _load_file(Path(spec["path"]), split)
    elif "entrypoint" in spec:
        data = _load_entrypoint(spec["entrypoint"], split, kwargs)
    else:
        raise LandscapeError("data spec names neither a built-in dataset, a file nor an entry point")
    if limit is not None:
        data = Dataset(data.x[: int(limit)], data.y[: int(limit)])
    if len(data) == 0:
        raise LandscapeError(f"dataset {describe_data(spec)} is empty")
    return data


def _targets(y: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(y)) if not isinstance(y, torch.Tensor) else y
    if t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        return t.long().reshape(-1)
    return t.float() if t.dim() > 1 else t.float().reshape(-1, 1)


def _as_dataset(x: Any, y: Any, source: str) -> Dataset:
    x_t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    y_t = _targets(y)
    if x_t.shape[0] != y_t.shape[0]:
        raise LandscapeError(f"{source}: x has {x_t.shape[0]} rows but y has {y_t.shape[0]}")
    return Dataset(x_t.float(), y_t)


def _load_file(path: Path, split: str) -> Dataset:
    x, y = _file_arrays(path, split)
    return _as_dataset(x, y, str(path))


@dataclass
class Arrays:
    """Inputs and targets as NumPy arrays, memory-mapped from .npy files: read a batch at a time, so a file
    larger than memory works (`sources.as_source` streams them)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _npy_arrays(path: Path, split: str, kwargs: dict[str, Any]) -> Arrays:
    """`inputs.npy` with `--data-arg targets=targets.npy`, both memory-mapped."""
    if split == "test":
        raise ParameterError("split", f"{path} is one array; it has no test split (use split all or train)")
    unknown = sorted(set(kwargs) - {"targets", "limit"})
    if unknown:
        raise LandscapeError(f"data file {path}: unknown argument(s) {', '.join(unknown)}; it takes targets=FILE.npy")
    if "targets" not in kwargs:
        raise LandscapeError(f"data file {path} holds inputs only: name the targets with --data-arg targets=FILE.npy")
    arrays = []
    for file in (path, Path(str(kwargs["targets"]))):
        require_regular_file(file, "data file")
        try:
            arrays.append(np.load(file, mmap_mode="r", allow_pickle=False))
        except Exception as exc:  # noqa: BLE001 - any read failure means a bad file
            raise LandscapeError(f"cannot read data file {file}: {type(exc).__name__}: {exc}") from None
    x, y = arrays
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise LandscapeError(
            f"{path} has shape {x.shape} and its targets {y.shape}: they need the same rows, at least 1"
        )
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise LandscapeError(f"{path}: inputs and targets must be numbers, got {x.dtype} and {y.dtype}")
    limit = kwargs.get("limit")
    return Arrays(x[:limit], y[:limit]) if limit else Arrays(x, y)


def _file_arrays(path: Path, split: str) -> tuple[Any, Any]:
    require_regular_file(path, "data file")
    verify_archive(path)  # .npz and .pt files are zip archives: checksums and unpacked size
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                contents = {k: arrays[k] for k in arrays.files}
        else:
            contents = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any read failure means a bad file
        raise LandscapeError(f"cannot read data file {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(contents, dict):
        raise LandscapeError(f"data file {path} must hold a mapping with arrays 'x' and 'y'")
    candidates = {"train": [("x_train", "y_train"), ("x", "y")], "all": [("x", "y")], "test": [("x_test", "y_test")]}[
        split
    ]
    keys = next((k for k in candidates if k[0] in contents and k[1] in contents), None)
    if keys is None:
        wanted = " or ".join(f"{a!r}/{b!r}" for a, b in candidates)
        raise LandscapeError(
            f"data file {path} has no arrays {wanted} for split '{split}' (found: {', '.join(contents)})"
        )
    return contents[keys[0]], contents[keys[1]]


def _load_entrypoint(spec: str, split: str, kwargs: dict[str, Any]) -> Dataset:
    return _dataset_from(_call_entrypoint(spec, split, kwargs), spec)


def _call_entrypoint(spec: str, split: str, kwargs: dict[str, Any]) -> Any:
    fn = resolve_entrypoint(spec)
    try:
        if "split" in inspect.signature(fn).parameters:
            kwargs = {**kwargs, "split": split}
    except (TypeError, ValueError):
        pass
    try:
        out = fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's function failed
        raise LandscapeError(f"data entry point '{spec}' failed: {type(exc).__name__}: {exc}") from exc
    return out


def _dataset_from(out: Any, spec: str) -> Dataset:
    if isinstance(out, dict) and "x" in out and "y" in out:
        return _as_dataset(out["x"], out["y"], spec)
    if isinstance(out, tuple | list) and len(out) == 2:
        return _as_dataset(out[0], out[1], spec)
    if isinstance(out, torch.utils.data.Dataset):
        items = [out[i] for i in range(len(out))]  # type: ignore[arg-type]
        if not items:
            raise LandscapeError(f"data entry point '{spec}' returned an empty Dataset")
        xs = torch.stack([torch.as_tensor(item[0]) for item in items])
        ys = torch.stack([torch.as_tensor(item[1]) for item in items])
        return _as_dataset(xs, ys, spec)
    raise LandscapeError(
        f"data entry point '{spec}' returned {type(out).__name__}; expected (x, y), {{'x','y'}} or a torch Dataset"
    )
