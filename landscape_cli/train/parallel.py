"""Data-parallel training steps: each rank takes its share of every global batch, and gradients are summed.

The closure returns each rank's share of the global batch mean (its loss sum over the global batch size), so
the all-reduced sum of the ranks' gradients is the gradient of the global batch mean: one process's step
on the same batch. For the SAM family the ascent is global by default (the first-pass gradient is summed
too, and every rank perturbs alike); with the rank scope each rank ascends along its own batch's gradient
(davda54/sam's `no_sync` recipe), which is mSAM with one micro-batch per rank. The gradients at the
perturbed weights are always summed, so the weights stay identical on every rank.

(DistributedDataParallel's hooks fire on `.backward()`; the SAM passes take `torch.autograd.grad`, so the
sums are made here, with the same all-reduce DDP would make.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..distributed import Group, all_reduce_sum_

ASCENT_SCOPES = ("global", "rank")


class GradientSync:
    """Sums gradients over the ranks at the points of a step that need it (a no-op in one process)."""

    def __init__(self, group: Group | None, ascent_scope: str = "global") -> None:
        if ascent_scope not in ASCENT_SCOPES:
            raise ValueError(f"ascent_scope must be global or rank, got {ascent_scope}")
        self.group = group
        self.ascent_scope = ascent_scope
        #: This rank's share of the current (micro-)batch, set by the closure: the rank-scope ascent uses the
        #: rank's own mean gradient, i.e. its contribution divided by its share.
        self.local_fraction = 1.0

    def gradients(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The global batch's gradient from each rank's contribution (descent, Hessian-vector products)."""
        if self.group is not None:
            flat = torch.cat([g.reshape(-1) for g in grads])
            all_reduce_sum_(flat, self.group)
            torch._foreach_copy_(grads, [t.view_as(g) for t, g in zip(flat.split([g.numel() for g in grads]), grads,
                                                                      strict=True)])  # fmt: skip
        return grads

    def ascent(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The gradient the perturbation follows: the global batch's, or (rank scope) this rank's own mean."""
        if self.group is None:
            return grads
        if self.ascent_scope == "rank":
            return torch._foreach_div(grads, max(self.local_fraction, 1e-30))
        return self.gradients(grads)

    def root_mean_square(self, norm: torch.Tensor) -> torch.Tensor:
        """The ascent gradient's norm as every rank sees it: global already, or (rank scope) the root mean
        square of the ranks' own norms, as mSAM averages its micro-batches'."""
        if self.group is None or self.ascent_scope == "global":
            return norm
        squared = (norm.detach().to(torch.float64) ** 2).reshape(1)
        all_reduce_sum_(squared, self.group)
        return (squared[0] / self.group.world_size).sqrt().to(norm.dtype)

    def value(self, loss: torch.Tensor) -> torch.Tensor:
        """The global batch's loss from each rank's contribution."""
        if self.group is None:
            return loss
        total = loss.detach().clone().reshape(1).to(torch.float64)
        all_reduce_sum_(total, self.group)
        return total[0]

    def same_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics, which each rank updates on its own share) on every
        rank, as DistributedDataParallel's broadcast_buffers does, so the ranks' models stay identical."""
        if self.group is None:
            return
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)
