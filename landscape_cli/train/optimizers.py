"""The SAM family's formula, and the steppers `landscape train` builds from a TrainConfig.

Every variant takes the same two passes per step: the gradient g at w on the batch, then the
gradient at w + eps; the base optimizer then steps *from w* with the descent gradient. The
variants differ only in eps and in the descent gradient:

    sam       eps = rho g / ||g||                                  (Foret et al. 2021)
    asam      eps = rho T^2 g / ||T g||, T = |w| + eta             (Kwon et al. 2021)
    ssam      as sam (or eps = rho g with ascent="unnormalized"), descent gradient rescaled to
              ||g(w)|| / ||g(w + eps)|| times g(w + eps)            (Tan et al. 2024)
    msam      per micro-batch j: eps_j = rho g_j / ||g_j||, descent = mean_j g_j(w + eps_j)
              (Behdin et al. 2023); m = 1 is sam
    eigensam  eps = rho (g_hat + alpha s v_perp) with v the top Hessian eigenvector of the batch
              loss by power iteration every `eigen_every` steps (Luo et al. 2024)
    usam      eps = rho g (unnormalized SAM; the edge-of-stability literature's USAM)

The optimizers themselves are `landscape_cli.optim`'s, the same classes users take into their own loops;
`perturbation` below is the one formula they use.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .parallel import GradientSync

VARIANTS = ("sam", "asam", "ssam", "msam", "eigensam", "usam")
ASCENTS = ("normalized", "unnormalized")
#: ASAM's T = |w| + eta keeps zero weights perturbable (the ASAM paper's eta).
ASAM_ETA = 0.01


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Global 2-norm as a 0-d tensor (no host sync), with one fused kernel over the list."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def perturbation(
    variant: str,
    params: list[torch.Tensor],
    g: list[torch.Tensor],
    g_norm: torch.Tensor,
    rho: float,
    ascent: str = "normalized",
    eigenvector: list[torch.Tensor] | None = None,
    alpha: float = 0.2,
) -> list[torch.Tensor]:
    """eps of each variant from the batch gradient g (see the module docstring): the one formula the trainer and
    the drop-in optimizers of `landscape_cli.optim` share."""
    if variant == "usam" or (variant == "ssam" and ascent == "unnormalized"):
        return torch._foreach_mul(g, rho)
    if variant == "asam":
        scale = [p.detach().abs() + ASAM_ETA for p in params]
        denom = _norm([s * t for s, t in zip(scale, g, strict=True)]).clamp_min(1e-12)
        return [rho * s * s * t / denom for s, t in zip(scale, g, strict=True)]
    g_hat = torch._foreach_div(g, g_norm.clamp_min(1e-12))
    if variant == "eigensam" and eigenvector is not None:
        along = _dot(g_hat, eigenvector)
        sign = torch.sign(_dot(g, eigenvector))
        v_perp = [vi - along * gi for vi, gi in zip(eigenvector, g_hat, strict=True)]
        return [rho * (gi + alpha * sign * vi) for gi, vi in zip(g_hat, v_perp, strict=True)]
    return torch._foreach_mul(g_hat, rho)


class BatchNormFreeze:
    """Snapshot every BatchNorm buffer and put it back: the perturbed pass must not move them."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules = [m for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self._saved: list[dict[str, torch.Tensor]] = []

    def __enter__(self) -> BatchNormFreeze:
        self._saved = [{k: b.detach().clone() for k, b in m.named_buffers(recurse=False)} for m in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for module, saved in zip(self.modules, self._saved, strict=True):
                for name, value in saved.items():
                    getattr(module, name).copy_(value)


class PlainStep:
    """The base optimizer alone (`--opt sgd`), with the gradient summed over ranks and clipped as the SAM family's."""

    variant = "sgd"

    def __init__(self, base: torch.optim.Optimizer, clip_grad_norm: float | None = None) -> None:
        self.base = base
        self.param_groups = base.param_groups
        self.params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        self.clip_grad_norm = clip_grad_norm
        self.last_perturbation: list[torch.Tensor] | None = None
        self.sync = GradientSync(None)

    def descend(self) -> None:
        """The base optimizer's step with the gradient in `.grad`."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            self.sync.gradients(grads)
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
        self.base.step()
        self.base.zero_grad(set_to_none=True)


def make_optimizer(config, model: nn.Module) -> Any:  # noqa: ANN001 - a TrainConfig (imports this module)
    """The stepper a TrainConfig asks for, around its base optimizer over `model`'s parameters."""
    from .. import optim

    params = [p for p in model.parameters() if p.requires_grad]
    if config.base == "sgd":
        base: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay
        )
    elif config.base == "adam":
        base = torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    else:
        base = torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    if config.opt == "sgd":
        return PlainStep(base, config.clip_grad_norm)
    common: dict[str, Any] = {"model": model, "clip_grad_norm": config.clip_grad_norm}
    classes = {"sam": optim.SAM, "asam": optim.ASAM, "usam": optim.USAM}
    if config.opt in classes:
        return classes[config.opt](params, base, config.rho, **common)
    if config.opt == "ssam":
        return optim.SSAM(params, base, config.rho, ascent=config.ascent, **common)
    if config.opt == "msam":
        return optim.MSAM(params, base, config.rho, micro_batches=config.micro_batches, **common)
    return optim.EigenSAM(params, base, config.rho, alpha=config.alpha, eigen_every=config.eigen_every,
                          eigen_iters=config.eigen_iters, seed=config.seed, **common)  # fmt: skip


def trainer_state(optimizer: Any) -> dict[str, Any]:
    """What a run's checkpoint records of its optimizer (the format `eos` and resumption read)."""
    state: dict[str, Any] = {"base": optimizer.base.state_dict()}
    if getattr(optimizer, "variant", "sgd") != "sgd":
        vector = getattr(optimizer, "eigenvector", None)
        state["steps"] = getattr(optimizer, "steps", 0)
        state["eigenvector"] = None if vector is None else [t.detach().cpu() for t in vector]
    return state


def load_trainer_state(optimizer: Any, state: dict[str, Any]) -> None:
    optimizer.base.load_state_dict(state["base"])
    if hasattr(optimizer, "steps"):
        optimizer.steps = int(state.get("steps", 0))
    if hasattr(optimizer, "eigenvector"):
        vector = state.get("eigenvector")
        params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        optimizer.eigenvector = None if vector is None else [t.to(p) for t, p in zip(vector, params, strict=True)]
