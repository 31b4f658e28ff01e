"""Built-in models, registered by name, and construction from a model spec.

A model spec is a plain dict stored in every checkpoint:
``{"name": "mlp", "kwargs": {...}}`` for a built-in model, or
``{"entrypoint": "pkg.module:factory", "kwargs": {...}}`` for a user factory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import LandscapeError
from .entrypoints import is_entrypoint, resolve_entrypoint

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
}


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise LandscapeError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}") from None


class MLP(nn.Module):
    """Fully connected network; `widths` = [inputs, hidden..., outputs]."""

    def __init__(self, widths: Sequence[int] = (64, 64, 10), activation: str = "relu") -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise LandscapeError(f"mlp widths must list at least inputs and outputs, got {widths}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(_activation(activation))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


def _as_image(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Accept flat inputs (digits are stored as 64 features) as well as images."""
    if x.dim() == 2:
        return x.view(x.shape[0], channels, size, size)
    return x


class SmallCNN(nn.Module):
    """Two 3x3 conv layers with ReLU and max-pooling, then a linear classifier."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        channels: Sequence[int] = (16, 32),
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size = int(in_channels), int(image_size)
        blocks: list[nn.Module] = []
        c_in, size = self.in_channels, self.image_size
        for c_out in channels:
            blocks += [nn.Conv2d(c_in, int(c_out), 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, size = int(c_out), size // 2
        if size < 1:
            raise LandscapeError(
                f"cnn: {len(channels)} pooling stages are too many for {image_size}x{image_size} inputs"
            )
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(c_in * size * size, int(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(_as_image(x, self.in_channels, self.image_size))
        return self.classifier(x.flatten(1))


class BasicBlock(nn.Module):
    """The two-convolution residual block of He et al., with BatchNorm."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A three-stage ResNet with BatchNorm; global pooling makes it work on 8x8 and 32x32."""

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        width: int = 16,
        blocks: Sequence[int] = (1, 1, 1),
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.in_channels, self.image_size = int(in_channels), int(image_size)
        width = int(width)
        self.stem = nn.Sequential(
            nn.Conv2d(self.in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        c_in = width
        for stage, n_blocks in enumerate(blocks):
            c_out = width * 2**stage
            for b in range(int(n_blocks)):
                stride = 2 if (stage > 0 and b == 0) else 1
                stages.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c_in, int(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(_as_image(x, self.in_channels, self.image_size)))
        return self.head(x.mean(dim=(2, 3)))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": SmallCNN,
    "resnet": SmallResNet,
}


def model_spec(name_or_entrypoint: str, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec dict for a built-in name or an entry point."""
    kwargs = dict(kwargs or {})
    if name_or_entrypoint in MODELS:
        return {"name": name_or_entrypoint, "kwargs": kwargs}
    if is_entrypoint(name_or_entrypoint):
        return {"entrypoint": name_or_entrypoint, "kwargs": kwargs}
    raise LandscapeError(
        f"unknown model '{name_or_entrypoint}'; built-in models are {', '.join(MODELS)}, "
        "or give an entry point 'pkg.module:factory' or 'file.py:factory'"
    )


def build_model(spec: dict[str, Any], device: str | torch.device | None = None) -> nn.Module:
    """Instantiate the model a spec describes; `device="meta"` builds its shapes without allocating memory."""
    if not isinstance(spec, dict):
        raise LandscapeError(f"a model spec is a mapping, got {type(spec).__name__}")
    kwargs = spec.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise LandscapeError(f"the model spec's kwargs must be a mapping, got {type(kwargs).__name__}")
    kwargs = dict(kwargs)
    if "name" in spec:
        factory = MODELS.get(spec["name"])
        if factory is None:
            raise LandscapeError(f"unknown model '{spec['name']}'; built-in models are {', '.join(MODELS)}")
        label = spec["name"]
    elif "entrypoint" in spec:
        factory = resolve_entrypoint(spec["entrypoint"])
        label = spec["entrypoint"]
    else:
        raise LandscapeError("model spec names neither a built-in model nor an entry point")
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = factory(**kwargs)
    except LandscapeError:
        raise
    except Exception as exc:  # noqa: BLE001 - user factories can fail any way
        raise LandscapeError(f"building model '{label}' with {kwargs} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"model factory '{label}' returned {type(model).__name__}, not an nn.Module")
    return model


def count_parameters(spec: dict[str, Any]) -> int | None:
    """Parameters of a built-in model, counted on the meta device (no memory); None for an entry point,
    whose code may not build there."""
    if "name" not in spec:
        return None
    return sum(p.numel() for p in build_model(spec, device="meta").parameters())
