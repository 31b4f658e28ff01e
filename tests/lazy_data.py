"""A lazily made dataset of a million samples (4.4 GB if materialised) and a model for it, importable by a
fresh process that measures memory."""

from __future__ import annotations

import torch
from torch import nn

FEATURES = 1100  # 1,000,000 samples of 1,100 float32 features: 4.4 GB if materialised


class Lazy(torch.utils.data.Dataset):
    """A million samples, each made when asked for (deterministic in its index)."""

    def __init__(self, n: int = 1_000_000, features: int = FEATURES) -> None:
        self.n, self.features = n, features
        self.freq = torch.linspace(0.5, 3.0, features, dtype=torch.float64)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.sin(self.freq * (i % 9973) + i * 1e-3).float(), i % 3


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, 4), nn.Tanh(), nn.Linear(4, 3))
