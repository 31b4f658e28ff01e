"""Training: the loop that writes native checkpoints."""

from .loop import TrainConfig, train_model

__all__ = ["TrainConfig", "train_model"]
