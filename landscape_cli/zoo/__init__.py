"""Built-in models and datasets, and resolution of user entry points (names load on first use: the
entry-point helpers need no torch)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DATASETS": "data",
    "Dataset": "data",
    "data_spec": "data",
    "describe_data": "data",
    "load_data": "data",
    "is_entrypoint": "entrypoints",
    "resolve_entrypoint": "entrypoints",
    "MODELS": "models",
    "build_model": "models",
    "model_spec": "models",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = list(_EXPORTS)
