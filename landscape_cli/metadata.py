"""The metadata of a native checkpoint, checked before anything uses it.

`torch.load(weights_only=True)` runs no code, but what it returns is whatever the file says: a model
spec that is a list, a step that is a string, or a structure of shared references that a 30 KB file
can expand to billions of nodes when printed. Each field gets its type checked here, and the whole
structure is walked with a budget that counts every visit (a shared reference costs each time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import LandscapeError

#: Visits of the metadata walk (every dict entry, list item and scalar, shared references counted each
#: time they are reached): ample for a real checkpoint's optimizer state, tiny next to a reference bomb.
NODE_BUDGET = 200_000
MAX_DEPTH = 48
MAX_STRING = 1 << 20
INT_RANGE = 1 << 63

#: Hyper-parameters `landscape train` records as numbers.
NUMERIC_HPARAMS = ("lr", "momentum", "weight_decay", "rho", "alpha", "lr_gamma", "micro_batches")
_SPEC_STRINGS = {"model": ("name", "entrypoint"), "data": ("name", "path", "entrypoint", "split", "preprocessing")}


class _Walk:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.visits = 0

    def fail(self, field: str, why: str) -> LandscapeError:
        return LandscapeError(f"{self.path} has malformed metadata: {field} {why}")

    def visit(self, value: Any, field: str, depth: int = 0, tensors: bool = False) -> None:
        self.visits += 1
        if self.visits > NODE_BUDGET:
            raise LandscapeError(
                f"{self.path} has metadata too large to read (over {NODE_BUDGET:,} entries, e.g. shared references "
                "that expand when copied); it was not written by landscape"
            )
        if depth > MAX_DEPTH:
            raise self.fail(field, f"is nested more than {MAX_DEPTH} levels deep")
        if value is None or isinstance(value, bool | int | float):
            return
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise self.fail(field, f"holds a string of {len(value):,} characters")
            return
        if isinstance(value, torch.Tensor):
            if not tensors:
                raise self.fail(field, "holds a tensor where plain values belong")
            return
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str | int):
                    raise self.fail(field, f"has a key of type {type(key).__name__}")
                self.visit(item, f"{field}.{key}", depth + 1, tensors)
            return
        if isinstance(value, list | tuple):
            for i, item in enumerate(value):
                self.visit(item, f"{field}[{i}]", depth + 1, tensors)
            return
        raise self.fail(field, f"holds a {type(value).__name__}")


def _optional_int(raw: dict[str, Any], key: str, walk: _Walk) -> None:
    value = raw.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not -INT_RANGE <= value < INT_RANGE:
        raise walk.fail(key, f"must be a whole number, got {type(value).__name__}")


def _spec(raw: dict[str, Any], key: str, walk: _Walk) -> None:
    spec = raw.get(key)
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise walk.fail(f"the {key} spec", f"must be a mapping, got {type(spec).__name__}")
    for name in _SPEC_STRINGS[key]:
        if name in spec and not isinstance(spec[name], str):
            raise walk.fail(f"the {key} spec's '{name}'", f"must be a string, got {type(spec[name]).__name__}")
    sources = [name for name in ("name", "path", "entrypoint") if name in spec]
    if len(sources) != 1:
        raise walk.fail(f"the {key} spec", "must name exactly one of a built-in name, a path or an entry point")
    if not isinstance(spec.get("kwargs", {}), dict):
        raise walk.fail(f"the {key} spec's kwargs", "must be a mapping")
    if key == "data" and "seed" in spec:
        _optional_int(spec, "seed", walk)
    walk.visit(spec, f"the {key} spec")


def validate_metadata(raw: dict[str, Any], path: Path) -> None:
    """Refuse a native checkpoint whose metadata has the wrong types or an unreasonable size."""
    walk = _Walk(path)
    _spec(raw, "model", walk)
    _spec(raw, "data", walk)
    for key in ("step", "epoch", "seed", "format_version"):
        _optional_int(raw, key, walk)
    for key in ("loss", "created", "tool_version"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise walk.fail(key, f"must be a string, got {type(raw[key]).__name__}")
    metrics = raw.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, dict):
            raise walk.fail("metrics", f"must be a mapping, got {type(metrics).__name__}")
        for name, value in metrics.items():
            if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, int | float):
                raise walk.fail("metrics", "must map names to numbers")
        walk.visit(metrics, "metrics")
    for key in ("optimizer", "train_state"):
        value = raw.get(key)
        if value is not None and not isinstance(value, dict):
            raise walk.fail(key, f"must be a mapping, got {type(value).__name__}")
        walk.visit(value, key, tensors=True)
    optimizer = raw.get("optimizer") or {}
    if optimizer.get("name") is not None and not isinstance(optimizer["name"], str):
        raise walk.fail("optimizer.name", "must be a string")
    hparams = optimizer.get("hparams") or {}
    if not isinstance(hparams, dict):
        raise walk.fail("optimizer.hparams", "must be a mapping")
    for key in NUMERIC_HPARAMS:
        value = hparams.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise walk.fail(f"optimizer.hparams.{key}", f"must be a number, got {type(value).__name__}")
