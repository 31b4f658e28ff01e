"""Training with SGD and the SAM family (names load on first use: `rundir` needs no torch)."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("TrainConfig", "train_model"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")


__all__ = ["TrainConfig", "train_model"]
