"""The SAM family as one torch.optim wrapper around any base optimizer.

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

The closure computes the loss of micro-batch ``j`` of ``m`` (``closure(j, m)``; ``(0, 1)`` is the
whole batch) and returns it *without* calling backward: the optimizer differentiates it itself,
which is what lets Eigen-SAM take Hessian-vector products of the same loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import LandscapeError, ParameterError
from ..linalg.power import power_iteration
from .parallel import GradientSync

VARIANTS = ("sam", "asam", "ssam", "msam", "eigensam", "usam")
ASCENTS = ("normalized", "unnormalized")
#: ASAM's T = |w| + eta keeps zero weights perturbable (the ASAM paper's eta).
ASAM_ETA = 0.01
Closure = Callable[[int, int], torch.Tensor]


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


class SharpnessAware(torch.optim.Optimizer):
    """A SAM-family step around `base` (any torch.optim optimizer over the same parameters).

    ``param_groups`` are the base optimizer's, so learning-rate schedulers work on this object.
    Pass ``model`` so that BatchNorm statistics move only on the unperturbed pass.
    """

    def __init__(
        self,
        base: torch.optim.Optimizer,
        *,
        variant: str = "sam",
        rho: float = 0.05,
        ascent: str = "normalized",
        micro_batches: int = 1,
        eigen_iters: int = 5,
        eigen_every: int = 100,
        alpha: float = 0.2,
        clip_grad_norm: float | None = None,
        model: nn.Module | None = None,
        seed: int = 0,
    ) -> None:
        if variant not in VARIANTS:
            raise LandscapeError(f"unknown SAM variant '{variant}'; choose one of {', '.join(VARIANTS)}")
        if not rho > 0:
            raise ParameterError("rho", f"rho must be positive, got {rho}")
        if ascent not in ASCENTS:
            raise ParameterError("ascent", f"ascent must be normalized or unnormalized, got '{ascent}'")
        if micro_batches < 1:
            raise ParameterError("micro_batches", f"micro_batches must be at least 1, got {micro_batches}")
        if variant == "eigensam" and (eigen_iters < 1 or eigen_every < 1):
            raise ParameterError(("eigen_iters", "eigen_every"), "eigen_iters and eigen_every must be at least 1")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ParameterError("clip_grad_norm", f"clip_grad_norm must be positive, got {clip_grad_norm}")
        self.base = base
        #: Sums over the ranks of a data-parallel run (identity in one process); see train.parallel.
        self.sync = GradientSync(None)
        self.variant, self.rho, self.ascent = variant, float(rho), ascent
        self.micro_batches = micro_batches if variant == "msam" else 1
        self.eigen_iters, self.eigen_every, self.alpha = eigen_iters, eigen_every, float(alpha)
        self.clip_grad_norm = clip_grad_norm
        self.model = model
        self.seed = seed
        super().__init__([p for g in base.param_groups for p in g["params"]], {})
        self.param_groups = base.param_groups
        self.params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        self.steps = 0
        self.eigenvector: list[torch.Tensor] | None = None
        #: eps of the last step (for alignment diagnostics), and the gradient norms it saw.
        self.last_perturbation: list[torch.Tensor] | None = None
        self._ascent_norm: torch.Tensor | None = None
        self._descent: list[torch.Tensor] | None = None

    @property
    def last_ascent_grad_norm(self) -> float:
        """Root mean square over micro-batches of ||g_j|| in the last step (||g|| for m = 1)."""
        return math.nan if self._ascent_norm is None else float(self._ascent_norm)

    @property
    def last_descent_grad_norm(self) -> float:
        """Norm of the descent gradient the base optimizer received in the last step (after clipping)."""
        return math.nan if self._descent is None else float(_norm(self._descent))

    # -- the pieces ------------------------------------------------------------------------------
    def _frozen_batchnorm(self) -> BatchNormFreeze:
        return BatchNormFreeze(list(self.model.modules()) if self.model is not None else [])

    def _grads(self, loss: torch.Tensor, create_graph: bool = False) -> list[torch.Tensor]:
        grads = torch.autograd.grad(loss, self.params, create_graph=create_graph, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads, strict=True)]

    def _perturbation(self, g: list[torch.Tensor], g_norm: torch.Tensor) -> list[torch.Tensor]:
        return perturbation(self.variant, self.params, g, g_norm, self.rho, self.ascent, self.eigenvector, self.alpha)

    def _update_eigenvector(self, closure: Closure) -> None:
        """Power iteration on the batch loss's Hessian (an operator over the batch's gradient graph, built once),
        warm-started from the last estimate."""
        if self.eigenvector is None:
            generator = torch.Generator().manual_seed(self.seed)
            start = torch.cat([torch.randn(p.numel(), generator=generator, dtype=torch.float64) for p in self.params])
        else:
            start = torch.cat([t.reshape(-1) for t in self.eigenvector])
        shapes = [p.shape for p in self.params]
        sizes = [p.numel() for p in self.params]
        with self._frozen_batchnorm(), torch.enable_grad():
            g = self._grads(closure(0, 1), create_graph=True)

            def hessian(v: torch.Tensor) -> torch.Tensor:
                parts = [t.reshape(s) for t, s in zip(v.split(sizes), shapes, strict=True)]
                hv = torch.autograd.grad(_dot(g, parts), self.params, retain_graph=True, allow_unused=True)
                hv = self.sync.gradients([torch.zeros_like(p) if h is None else h.detach()
                                          for p, h in zip(self.params, hv, strict=True)])  # fmt: skip
                return torch.cat([h.reshape(-1) for h in hv])

            v, _ = power_iteration(hessian, start.to(self.params[0]), self.eigen_iters)
        self.eigenvector = [t.reshape(s) for t, s in zip(v.split(sizes), shapes, strict=True)]

    def _gradient_at(self, closure: Closure, j: int, m: int, eps: list[torch.Tensor] | None) -> list[torch.Tensor]:
        """Gradient of micro-batch j at w (eps None) or at w + eps (BatchNorm statistics frozen)."""
        if eps is None:
            with torch.enable_grad():
                return [t.detach() for t in self._grads(closure(j, m))]
        saved = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_add_(self.params, eps)
        try:
            with self._frozen_batchnorm(), torch.enable_grad():
                return [t.detach() for t in self._grads(closure(j, m))]
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, saved)

    # -- the step ----------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> torch.Tensor:  # type: ignore[override]
        """One SAM-family step. Returns the loss at w (the unperturbed batch loss)."""
        if closure is None:
            raise LandscapeError("SAM-family optimizers need a closure computing the batch loss")
        if self.variant == "eigensam" and self.steps % self.eigen_every == 0:
            self._update_eigenvector(closure)
        m = self.micro_batches
        losses, ascent_sq = [], []
        descent: list[torch.Tensor] = []
        perturbation: list[torch.Tensor] = []
        for j in range(m):
            with torch.enable_grad():
                loss = closure(j, m)
                g = self.sync.ascent([t.detach() for t in self._grads(loss)])
            losses.append(self.sync.value(loss))
            g_norm = _norm(g)
            ascent_sq.append(g_norm**2)
            eps = self._perturbation(g, g_norm)
            g_sam = self.sync.gradients(self._gradient_at(closure, j, m, eps))
            if m == 1:
                descent, perturbation = g_sam, eps
            elif j == 0:
                descent, perturbation = torch._foreach_div(g_sam, m), torch._foreach_div(eps, m)
            else:
                torch._foreach_add_(descent, g_sam, alpha=1.0 / m)
                torch._foreach_add_(perturbation, eps, alpha=1.0 / m)
        if self.variant == "ssam":  # on every rank alike: with a rank-scope ascent, the RMS of the ranks' norms
            torch._foreach_mul_(descent, self.sync.root_mean_square(g_norm) / _norm(descent).clamp_min(1e-12))
        self._ascent_norm = self.sync.root_mean_square(torch.stack(ascent_sq).mean().sqrt())
        self._descent = descent
        self.last_perturbation = perturbation
        for p, d in zip(self.params, descent, strict=True):
            p.grad = d
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
        self.base.step()
        self.steps += 1
        return torch.stack(losses).mean()

    # -- state, so that a resumed run continues exactly ----------------------------------------------
    def state_dict(self) -> dict:  # type: ignore[override]
        return {
            "base": self.base.state_dict(),
            "steps": self.steps,
            "eigenvector": None if self.eigenvector is None else [t.detach().cpu() for t in self.eigenvector],
        }

    def load_state_dict(self, state: dict) -> None:  # type: ignore[override]
        self.base.load_state_dict(state["base"])
        self.steps = int(state["steps"])
        vec = state.get("eigenvector")
        self.eigenvector = None if vec is None else [t.to(p) for t, p in zip(vec, self.params, strict=True)]


class PlainStep:
    """The base optimizer alone, behind the same `step(closure)` as the SAM family."""

    def __init__(self, base: torch.optim.Optimizer, clip_grad_norm: float | None = None) -> None:
        self.base = base
        self.param_groups = base.param_groups
        self.params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        self.clip_grad_norm = clip_grad_norm
        self.last_perturbation: list[torch.Tensor] | None = None
        self.sync = GradientSync(None)

    def step(self, closure: Closure) -> torch.Tensor:
        with torch.enable_grad():
            loss = closure(0, 1)
            grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        grads = self.sync.gradients([torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads,
                                                                                             strict=True)])  # fmt: skip
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
        self.base.step()
        return self.sync.value(loss.detach())

    def state_dict(self) -> dict:
        return {"base": self.base.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state["base"])


def make_optimizer(config, model: nn.Module) -> PlainStep | SharpnessAware:
    """The stepper a TrainConfig asks for, around its base optimizer over `model`'s parameters."""
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
    return SharpnessAware(
        base,
        variant=config.opt,
        rho=config.rho,
        ascent=config.ascent,
        micro_batches=config.micro_batches,
        eigen_iters=config.eigen_iters,
        eigen_every=config.eigen_every,
        alpha=config.alpha,
        clip_grad_norm=config.clip_grad_norm,
        model=model,
        seed=config.seed,
    )
