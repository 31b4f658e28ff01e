"""Built-in models and datasets, and resolution of user entry points (names load on first use: the
entry-point helpers need no torch)."""

from __future__ import annotations

from .._lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
