"""Training: the loop that writes native checkpoints."""

from .loop import TrainConfig, train

__all__ = ["TrainConfig", "train"]
