"""Drop-in SAM-family optimizers for your own training loop: `torch.optim.Optimizer`s that work with `.grad`.

    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    loss_fn(model(x), y).backward()
    opt.first_step(zero_grad=True)                  # w -> w + eps, from the gradient in .grad
    with frozen_batchnorm(model):
        loss_fn(model(x), y).backward()             # the gradient at w + eps
    opt.second_step(zero_grad=True)                 # back to w, the base optimizer steps

or `opt.step(closure)` with a torch-style closure (zero_grad, loss, backward, return loss). The base optimizer
is a class (built over the same parameters with the remaining keyword arguments) or an existing instance;
`param_groups` and `state` are the base optimizer's, so LR schedulers, `zero_grad`, `state_dict()` and
`load_state_dict()` behave as in torch.optim. Because gradients arrive in `.grad`, gradient clipping,
`torch.amp.GradScaler` (`first_step(grad_scaler=scaler)`, then `scaler.step(opt)` for the second step; a step
the scaler skips is skipped, and the weights go back to w)
and DistributedDataParallel work (`model.no_sync()` around the first backward keeps each rank's own ascent,
which is mSAM with one micro-batch per rank; without it the ascent is the global batch's).

The perturbations are those of `landscape train` (one formula, `train.optimizers.perturbation`):

    SAM      eps = rho g / ||g||                                  (Foret et al. 2021)
    ASAM     eps = rho T^2 g / ||T g||, T = |w| + 0.01            (Kwon et al. 2021)
    SSAM     SAM's eps; the descent gradient rescaled to ||g(w)|| (Tan et al. 2024)
    USAM     eps = rho g                                          (unnormalized SAM)
    EigenSAM eps = rho (g_hat + alpha s v_perp), v the top Hessian eigenvector by power iteration
    MSAM     SAM per micro-batch of the batch given to `step`, descent = their mean (Behdin et al. 2023)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .attention import differentiable_attention
from .batches import batch_size_of, rows
from .linalg.power import power_iteration
from .train.optimizers import ASCENTS, BatchNormFreeze, _norm, perturbation
from .train.parallel import GradientSync

__all__ = ["ASAM", "MSAM", "SAM", "SSAM", "USAM", "EigenSAM", "SharpnessAwareOptimizer", "frozen_batchnorm"]


@contextlib.contextmanager
def frozen_batchnorm(model: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics as they were before the block: the perturbed pass must not move them."""
    with BatchNormFreeze(list(model.modules())):
        yield


def _overflowed(grads: list[torch.Tensor], norm: torch.Tensor) -> bool:
    """Whether a gradient holds inf or NaN. One host sync on the global norm, which is finite whenever every
    entry is and their squares do not overflow; only then are the tensors themselves looked at."""
    if bool(torch.isfinite(norm)):
        return False
    return not all(bool(torch.isfinite(g).all()) for g in grads)


class SharpnessAwareOptimizer(torch.optim.Optimizer):
    """What the six share: the two-step convention, the closure convention, the base optimizer's groups and state."""

    variant = "sam"
    #: GradScaler.step then hands the scale and its overflow flag to `step` (as `grad_scale`, `found_inf`) instead
    #: of unscaling and skipping itself: a skipped second step must still take the weights back to w.
    _step_supports_amp_scaling = True

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer] | torch.optim.Optimizer = torch.optim.SGD,
        rho: float = 0.05,
        *,
        model: nn.Module | None = None,
        clip_grad_norm: float | None = None,
        **base_kwargs: Any,
    ) -> None:
        if not (isinstance(rho, int | float) and 0 < rho < math.inf):
            raise ValueError(f"rho must be positive and finite, got {rho}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be positive, got {clip_grad_norm}")
        if isinstance(base_optimizer, torch.optim.Optimizer):
            if base_kwargs:
                raise ValueError(f"an optimizer instance takes no further arguments, got {sorted(base_kwargs)}")
            self.base = base_optimizer
        elif isinstance(base_optimizer, type) and issubclass(base_optimizer, torch.optim.Optimizer):
            self.base = base_optimizer(params, **base_kwargs)
        else:
            raise ValueError(f"base_optimizer must be a torch.optim.Optimizer class or instance: {base_optimizer!r}")
        super().__init__(self.base.param_groups, {"rho": float(rho)})  # rho joins the base's groups
        self.param_groups = self.base.param_groups
        self.state = self.base.state
        self.defaults.update(self.base.defaults)
        self.model = model
        #: The descent gradient is clipped to this global norm before the base optimizer's step (None: not).
        self.clip_grad_norm = clip_grad_norm
        self._descent_norm: torch.Tensor | None = None
        #: Sums over the ranks of a data-parallel run made without DDP (`landscape train`); identity otherwise.
        self.sync = GradientSync(None)
        self.last_perturbation: list[torch.Tensor] | None = None
        #: w while the weights are at w + eps (between first_step and second_step), else None.
        self._saved: list[torch.Tensor] | None = None
        #: Steps taken (a skipped one included, as torch's schedulers count it).
        self.steps = 0
        self._skip = False
        self._ascent_norm: torch.Tensor | None = None

    # -- the two-step convention -------------------------------------------------------------------------
    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def _perturb(self, grads: list[torch.Tensor], params: list[torch.Tensor], rho: float) -> list[torch.Tensor]:
        assert self._ascent_norm is not None
        return perturbation(self.variant, params, grads, self._ascent_norm, rho, self._ascent_kind())

    def _ascent_kind(self) -> str:
        return "normalized"

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False, grad_scaler: Any = None) -> None:
        """Move to w + eps along the gradient in `.grad` (each parameter group with its own rho). With
        `grad_scaler`, `.grad` holds scaled gradients: the ascent divides by the scale (GradScaler allows one
        `unscale_` per step, which `scaler.step(opt)` makes for the second gradient)."""
        params = self._params()
        if self._saved is not None:  # the last second step was skipped (a GradScaler found inf): back to w first
            torch._foreach_copy_(params, self._saved)
        grads = self.sync.ascent([torch.zeros_like(p) if p.grad is None else p.grad for p in params])
        if grad_scaler is not None and grad_scaler.is_enabled():
            grads = torch._foreach_div(grads, float(grad_scaler.get_scale()))
        self._saved = [p.detach().clone() for p in params]
        self._ascent_norm = _norm(grads)
        # A scaled gradient that overflowed: no ascent, and this step will be skipped, as GradScaler skips it
        self._skip = _overflowed(grads, self._ascent_norm)
        if self._skip:
            self.last_perturbation = None
        else:
            eps = self._perturbation(grads, params)
            torch._foreach_add_(params, eps)
            self.last_perturbation = eps
        if zero_grad:
            self.zero_grad()

    def _perturbation(self, grads: list[torch.Tensor], params: list[torch.Tensor]) -> list[torch.Tensor]:
        """eps with each parameter group's rho; the direction is normalized over all parameters, as in one group."""
        rhos = {group["rho"] for group in self.param_groups}
        if len(rhos) == 1:
            return self._perturb(grads, params, rhos.pop())
        eps = self._perturb(grads, params, 1.0)  # eps is linear in rho
        index = {id(p): i for i, p in enumerate(params)}
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) in index:
                    eps[index[id(p)]].mul_(group["rho"])
        return eps

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Back to w, and the base optimizer's step with the gradient taken at w + eps (in `.grad`)."""
        if self._saved is None:
            raise RuntimeError("second_step needs first_step before it")
        params = self._params()
        torch._foreach_copy_(params, self._saved)
        self._saved = None
        self.steps += 1
        self._opt_called = True  # an LR scheduler's check that the optimizer stepped
        if not self._skip:
            self._descend([p.grad for p in params if p.grad is not None])
        if zero_grad:
            self.zero_grad()

    def _descend(self, grads: list[torch.Tensor]) -> None:
        """The base optimizer's step with the descent gradient in `.grad`: summed over ranks, rescaled (SSAM),
        clipped."""
        if grads:
            self.sync.gradients(grads)
            self._rescale_descent(grads)
            if self.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self._params(), self.clip_grad_norm)
            self._descent_norm = _norm(grads)
        self.base.step()

    def _rescale_descent(self, grads: list[torch.Tensor]) -> None:
        """SSAM's hook; the others step with the gradient as it is."""

    # -- the torch.optim convention --------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        """Both passes with a torch-style closure (it zeroes the gradients, computes the loss, calls backward and
        returns the loss). Returns the loss at w."""
        if closure is None:
            if self._saved is not None:  # after first_step: GradScaler.step(opt) calls step() for the second step
                self._unscale_second_gradient()
                self.second_step()
                return None  # type: ignore[return-value]
            raise ValueError(f"{type(self).__name__}.step needs a closure; or call first_step and second_step")
        closure = torch.enable_grad()(closure)
        loss = closure()
        self.first_step(zero_grad=True)
        with frozen_batchnorm(self.model) if self.model is not None else contextlib.nullcontext():
            closure()
        self.second_step()
        return loss

    def _unscale_second_gradient(self) -> None:
        """What GradScaler.step leaves to an optimizer that handles scaling: divide by the scale, skip on overflow."""
        scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        if found_inf is not None and float(found_inf) > 0:
            self._skip = True
        elif scale is not None:
            grads = [p.grad for p in self._params() if p.grad is not None]
            torch._foreach_div_(grads, float(scale))
        self.grad_scale = self.found_inf = None

    @property
    def last_ascent_grad_norm(self) -> float:
        """||g|| of the last ascent (the root mean square over micro-batches for mSAM)."""
        return math.nan if self._ascent_norm is None else float(self._ascent_norm)

    @property
    def last_descent_grad_norm(self) -> float:
        """Norm of the gradient the base optimizer received in the last step (after rescaling and clipping)."""
        return math.nan if self._descent_norm is None else float(self._descent_norm)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)
        self.state, self.param_groups = self.base.state, self.base.param_groups


class SAM(SharpnessAwareOptimizer):
    """Sharpness-aware minimization (Foret et al. 2021): eps = rho g / ||g||."""

    variant = "sam"


class ASAM(SharpnessAwareOptimizer):
    """Adaptive SAM (Kwon et al. 2021): eps = rho T^2 g / ||T g|| with T = |w| + 0.01."""

    variant = "asam"


class USAM(SharpnessAwareOptimizer):
    """Unnormalized SAM: eps = rho g."""

    variant = "usam"


class SSAM(SharpnessAwareOptimizer):
    """Stable SAM (Tan et al. 2024): SAM's ascent (or rho g with ascent='unnormalized'), and the descent gradient
    rescaled to the norm of the gradient at w."""

    variant = "ssam"

    def __init__(self, params: Iterable[Any], base_optimizer: Any = torch.optim.SGD, rho: float = 0.05, *,
                 ascent: str = "normalized", **kwargs: Any) -> None:  # fmt: skip
        if ascent not in ASCENTS:
            raise ValueError(f"ascent must be normalized or unnormalized, got {ascent!r}")
        self.ascent = ascent
        super().__init__(params, base_optimizer, rho, **kwargs)

    def _ascent_kind(self) -> str:
        return self.ascent

    def _rescale_descent(self, grads: list[torch.Tensor]) -> None:
        assert self._ascent_norm is not None
        norm = self.sync.root_mean_square(self._ascent_norm)
        torch._foreach_mul_(grads, norm / _norm(grads).clamp_min(1e-12))


class EigenSAM(SharpnessAwareOptimizer):
    """Eigen-SAM (Luo et al. 2024): SAM's eps plus alpha times the top Hessian eigenvector's component
    orthogonal to the gradient, signed along it. The eigenvector is refreshed every `eigen_every` steps by
    `eigen_iters` power iterations on the Hessian of `loss_fn()` (a function of no arguments returning the
    batch loss, without backward), passed to `first_step` or `step`."""

    variant = "eigensam"

    def __init__(self, params: Iterable[Any], base_optimizer: Any = torch.optim.SGD, rho: float = 0.05, *,
                 alpha: float = 0.2, eigen_every: int = 100, eigen_iters: int = 5, seed: int = 0,
                 **kwargs: Any) -> None:  # fmt: skip
        if eigen_every < 1 or eigen_iters < 1:
            raise ValueError("eigen_every and eigen_iters must be at least 1")
        self.alpha, self.eigen_every, self.eigen_iters, self.seed = float(alpha), eigen_every, eigen_iters, seed
        self.eigenvector: list[torch.Tensor] | None = None
        super().__init__(params, base_optimizer, rho, **kwargs)

    def _perturb(self, grads: list[torch.Tensor], params: list[torch.Tensor], rho: float) -> list[torch.Tensor]:
        vector = self.eigenvector if self.eigenvector is not None and len(params) == len(self._params()) else None
        assert self._ascent_norm is not None
        return perturbation("eigensam", params, grads, self._ascent_norm, rho, "normalized", vector, self.alpha)

    def first_step(self, zero_grad: bool = False, grad_scaler: Any = None,
                   loss_fn: Callable[[], torch.Tensor] | None = None) -> None:  # fmt: skip
        if self.steps % self.eigen_every == 0:
            if loss_fn is None:
                raise ValueError(f"step {self.steps} refreshes the eigenvector: pass loss_fn to first_step or step")
            self.update_eigenvector(loss_fn)
        super().first_step(zero_grad, grad_scaler)

    def step(self, closure: Callable[[], torch.Tensor] | None = None,  # type: ignore[override]
             loss_fn: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # fmt: skip
        if closure is None:
            return super().step()
        loss = torch.enable_grad()(closure)()
        self.first_step(zero_grad=True, loss_fn=loss_fn)
        with frozen_batchnorm(self.model) if self.model is not None else contextlib.nullcontext():
            torch.enable_grad()(closure)()
        self.second_step()
        return loss

    def update_eigenvector(self, loss_fn: Callable[[], torch.Tensor]) -> None:
        """Power iteration on the Hessian of loss_fn() at the current weights, warm-started from the last."""
        params = self._params()
        shapes, sizes = [p.shape for p in params], [p.numel() for p in params]
        if self.eigenvector is None:
            generator = torch.Generator().manual_seed(self.seed)
            start = torch.cat([torch.randn(n, generator=generator, dtype=torch.float64) for n in sizes])
        else:
            start = torch.cat([t.reshape(-1) for t in self.eigenvector])
        context = frozen_batchnorm(self.model) if self.model is not None else contextlib.nullcontext()
        with context, torch.enable_grad(), differentiable_attention():
            g = torch.autograd.grad(loss_fn(), params, create_graph=True, allow_unused=True)
            used = [(i, t) for i, t in enumerate(g) if t is not None]

            def hessian(v: torch.Tensor) -> torch.Tensor:
                parts = [t.reshape(s) for t, s in zip(v.split(sizes), shapes, strict=True)]
                dot = sum((t * parts[i]).sum() for i, t in used)
                hv = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
                hv = self.sync.gradients([torch.zeros_like(p) if h is None else h.detach()
                                          for p, h in zip(params, hv, strict=True)])  # fmt: skip
                return torch.cat([h.reshape(-1) for h in hv])

            v, _ = power_iteration(hessian, start.to(params[0]), self.eigen_iters)
        self.eigenvector = [t.reshape(s) for t, s in zip(v.split(sizes), shapes, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        vector = None if self.eigenvector is None else [t.detach().cpu() for t in self.eigenvector]
        return {**self.base.state_dict(), "eigensam": {"steps": self.steps, "eigenvector": vector}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("eigensam", {"steps": 0, "eigenvector": None})
        super().load_state_dict(state_dict)
        self.steps = int(extra["steps"])
        vector = extra["eigenvector"]
        self.eigenvector = None if vector is None else [t.to(p) for t, p in zip(vector, self._params(), strict=True)]


class MSAM(SharpnessAwareOptimizer):
    """mSAM (Behdin et al. 2023): the batch given to `step` is cut into `micro_batches` parts; each part ascends
    along its own gradient, and the descent gradient is the mean of the parts' gradients at their perturbed
    weights. `step(closure, batch)`: `closure(part)` zeroes nothing, computes the loss of `part` (a tensor,
    tuple or dict of tensors cut along the first dimension), calls backward on it and returns it."""

    variant = "msam"  # each part's ascent is SAM's

    def __init__(self, params: Iterable[Any], base_optimizer: Any = torch.optim.SGD, rho: float = 0.05, *,
                 micro_batches: int = 2, **kwargs: Any) -> None:  # fmt: skip
        if not (isinstance(micro_batches, int) and micro_batches >= 1):
            raise ValueError(f"micro_batches must be a whole number of at least 1, got {micro_batches!r}")
        self.micro_batches = micro_batches
        super().__init__(params, base_optimizer, rho, **kwargs)

    def first_step(self, zero_grad: bool = False, grad_scaler: Any = None) -> None:
        raise NotImplementedError("MSAM cuts the batch itself: call step(closure, batch)")

    @torch.no_grad()
    def step(self, closure: Callable[[Any], torch.Tensor] | None = None,  # type: ignore[override]
             batch: Any = None) -> torch.Tensor:  # fmt: skip
        if closure is None or batch is None:
            raise ValueError("MSAM.step needs closure(part) and the batch to cut")
        size = batch_size_of(batch)
        each = -(-size // self.micro_batches)  # torch.chunk's parts: equal but the last, when m does not divide
        starts = range(0, size, each)
        m, params = len(starts), self._params()
        losses, descent, eps_mean, squares = [], None, None, []
        for start in starts:
            part = rows(batch, start, each)
            self.zero_grad()
            with torch.enable_grad():
                loss = closure(part)
            if loss is not None:
                losses.append(loss.detach())
            SharpnessAwareOptimizer.first_step(self, zero_grad=True)
            squares.append(self._ascent_norm**2)
            eps = self.last_perturbation
            with frozen_batchnorm(self.model) if self.model is not None else contextlib.nullcontext():
                with torch.enable_grad():
                    closure(part)
            torch._foreach_copy_(params, self._saved)  # type: ignore[arg-type]
            self._saved = None
            grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
            if descent is None:
                descent, eps_mean = torch._foreach_div(grads, m), torch._foreach_div(eps, m)  # type: ignore[arg-type]
            else:
                torch._foreach_add_(descent, grads, alpha=1.0 / m)
                torch._foreach_add_(eps_mean, eps, alpha=1.0 / m)  # type: ignore[arg-type]
        self._ascent_norm = torch.stack(squares).mean().sqrt()
        self.last_perturbation = eps_mean
        for p, d in zip(params, descent, strict=True):  # type: ignore[arg-type]
            p.grad = d
        self._descend([p.grad for p in params])  # type: ignore[misc]
        self.steps += 1
        return torch.stack(losses).mean() if losses else None  # type: ignore[return-value]
