"""Ground truth for the numerical tests: tiny models and their dense float64 Hessians."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from landscape_cli.problem import ParamLayout, _import_jvp_decompositions_quietly
from landscape_cli.zoo.data import Dataset
from landscape_cli.zoo.models import MLP, SmallCNN, SmallResNet

_import_jvp_decompositions_quietly()  # torch.func.hessian below uses them; torch's import warns 18 times


def tiny_models() -> dict[str, torch.nn.Module]:
    """A few hundred parameters each, so that the dense Hessian takes a fraction of a second."""
    torch.manual_seed(0)
    return {
        "mlp-tanh": MLP([6, 12, 4], activation="tanh"),
        "mlp-gelu": MLP([6, 10, 8, 4], activation="gelu"),
        "cnn": SmallCNN(in_channels=1, image_size=4, channels=[3], num_classes=4),
        "resnet-bn": SmallResNet(in_channels=1, image_size=4, width=2, blocks=[1, 1], num_classes=4),
    }


def tiny_data(model_name: str, n: int = 50, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    features = 6 if model_name.startswith("mlp") else 16
    x = torch.randn(n, features, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return Dataset(x, y)


def dense_hessian(
    model: torch.nn.Module, data: Dataset, loss: str = "cross_entropy", train_mode: bool = False
) -> torch.Tensor:
    """Hessian of the mean loss by torch.func.hessian in float64, independent of Problem's chunking."""
    model = model.double().train(train_mode)
    if train_mode:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.track_running_stats = False
    params = {k: p.detach() for k, p in model.named_parameters()}
    buffers = {k: b.detach() for k, b in model.named_buffers()}
    layout = ParamLayout.of(params)
    x, y = data.x.double(), data.y

    def mean_loss(flat: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (layout.unflatten(flat), buffers), (x,))
        if loss == "cross_entropy":
            return F.cross_entropy(out, y)
        if loss == "mse":
            return F.mse_loss(out, F.one_hot(y, out.shape[-1]).double() if y.dtype == torch.long else y.double())
        return 0.5 * (out - F.one_hot(y, out.shape[-1]).double()).pow(2).sum(dim=1).mean()

    w = layout.flatten(params).clone()
    if train_mode:
        # torch.func.hessian vmaps over BatchNorm in training mode and returns an asymmetric, wrong
        # matrix (seen with torch 2.13); the row-by-row autograd Hessian is exact.
        return torch.autograd.functional.hessian(mean_loss, w)
    return torch.func.hessian(mean_loss)(w)


def symmetric_with_spectrum(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Q diag(eigenvalues) Q^T for a random orthogonal Q (float64)."""
    n = eigenvalues.numel()
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (q * eigenvalues.double()) @ q.T


def sam_step(opt, loss_fn) -> torch.Tensor:  # noqa: ANN001
    """One step of a landscape_cli.optim optimizer in davda54/sam's two-step convention; `loss_fn()` returns the
    batch loss. BatchNorm statistics move on the first pass only."""
    import contextlib

    from landscape_cli import optim

    opt.zero_grad()
    loss = loss_fn()
    loss.backward()
    if isinstance(opt, optim.EigenSAM):
        opt.first_step(zero_grad=True, loss_fn=loss_fn)
    else:
        opt.first_step(zero_grad=True)
    with optim.frozen_batchnorm(opt.model) if opt.model is not None else contextlib.nullcontext():
        loss_fn().backward()
    opt.second_step(zero_grad=True)
    return loss.detach()
