"""Training with SGD and the SAM family (names load on first use: `rundir` and `schedule` need no torch)."""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {"TrainConfig": "loop", "train_model": "loop"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = list(_EXPORTS)
