"""Curvature matrices as linear operators: the Hessian, the generalized Gauss-Newton matrix and the
empirical Fisher of the mean loss over a fixed sample set, over all parameters or a block of them.

Every consumer (Lanczos, Hutch++, SLQ, the edge of stability, CI gates) needs only `op @ v`, so it takes
an operator and never asks which matrix it is. Like curvlinops, an operator is a square matrix over a flat
vector; `to_scipy` hands it to SciPy's `eigsh`.

- ``hessian``: H = d^2 L / dw^2, by the Problem's exact HVPs.
- ``ggn``: G = J^T H_L J summed over samples, over the count: J the Jacobian of the model's output, H_L
  the Hessian of the loss with respect to that output. Positive semi-definite for convex losses
  (cross-entropy, MSE, BCE); equal to H where the model is linear. Three backward passes on one forward
  graph (J v by the double-backward trick), so no forward-mode AD is needed.
- ``fisher``: the empirical Fisher, F = (1/N) sum_i g_i g_i^T over the N samples, with g_i the gradient
  of sample i's share of the mean loss (its loss sum times N / count), so that the mean of the g_i is the
  gradient. For a per-sample loss g_i is the per-sample gradient and F = (1/N) sum_i grad l_i grad l_i^T.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

import torch
from torch.func import functional_call, grad, vmap

from .attention import differentiable_attention
from .batches import Batch, as_batch, map_tensors
from .batches import rows as rows_of
from .choices import CURVATURES
from .errors import LandscapeError, ParameterError
from .losses import logits_of
from .problem import Problem, positive_count

KINDS = CURVATURES
#: Per-sample gradients held at once by the Fisher (rows x parameters x bytes).
FISHER_BLOCK_BYTES = 256 << 20


def select_parameters(names: Sequence[str], patterns: str | Sequence[str] | None) -> list[str]:
    """The parameter names matching any of the glob patterns ('layers.0.*', 'fc.weight'), in model order."""
    if patterns is None:
        return list(names)
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    if not patterns:
        raise ParameterError("params", "names no pattern")
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        shown = ", ".join(list(names)[:6]) + (", ..." if len(names) > 6 else "")
        raise ParameterError("params", f"{','.join(patterns)} matches no parameter; the model has {shown}")
    return chosen


class CurvatureOperator:
    """A symmetric curvature matrix of a Problem's mean loss, over all its parameters or a block of them.

    `op @ v` (or `op.matvec(v)`) for a flat vector of `op.size` entries; `op.to_scipy()` for SciPy."""

    def __init__(self, problem: Problem, kind: str = "hessian", params: str | Sequence[str] | None = None) -> None:
        if kind not in KINDS:
            raise ParameterError("curvature", f"'{kind}' is not one of {', '.join(KINDS)}")
        if kind == "ggn" and not problem.loss.has_output_hessian:
            raise LandscapeError(
                f"the Gauss-Newton matrix needs a loss of the model's output; loss '{problem.loss_name}' is computed "
                "inside the model"
            )
        self.problem = problem
        self.kind = kind
        layout = problem.layout
        self.names = select_parameters(layout.names, params)
        self.is_block = len(self.names) != len(layout.names)
        picked = set(self.names)
        self.index = torch.cat(
            [
                torch.arange(layout.offsets[i], layout.offsets[i + 1])
                for i, name in enumerate(layout.names)
                if name in picked
            ]
        ).to(problem.device)
        self.size = int(self.index.numel())
        self.calls = 0
        problem.fit_graph_to_budget()

    # -- the operator protocol ------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)

    @property
    def device(self) -> torch.device:
        return self.problem.device

    @property
    def dtype(self) -> torch.dtype:
        return self.problem.dtype

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        if v.dim() == 2:
            return torch.stack([self.matvec(col) for col in v.T], dim=1)
        return self.matvec(v)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.matvec(v)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        if v.shape != (self.size,):
            raise ParameterError("v", f"must be a flat vector of {self.size} entries, got shape {tuple(v.shape)}")
        full = self._embed(v.to(self.device, self.dtype))
        result = {"hessian": self.problem.hvp, "ggn": self._ggn, "fisher": self._fisher}[self.kind](full)
        self.calls += 1
        return result[self.index] if self.is_block else result

    def to_scipy(self) -> Any:
        """A scipy.sparse.linalg.LinearOperator (float64 NumPy in and out)."""
        import numpy as np
        from scipy.sparse.linalg import LinearOperator

        def apply(x: Any) -> Any:
            out = self.matvec(torch.as_tensor(np.asarray(x).reshape(-1), dtype=self.dtype))
            return out.detach().double().cpu().numpy()

        return LinearOperator(self.shape, matvec=apply, rmatvec=apply, dtype=np.float64)

    def _embed(self, v: torch.Tensor) -> torch.Tensor:
        if not self.is_block:
            return v
        full = torch.zeros(self.problem.n_params, device=self.device, dtype=self.dtype)
        full[self.index] = v
        return full

    def __repr__(self) -> str:
        total = len(self.problem.layout.names)
        block = f" over {len(self.names)} of {total} parameter tensors" if self.is_block else ""
        return f"CurvatureOperator({self.kind}, {self.size} x {self.size}{block})"

    # -- Gauss-Newton ------------------------------------------------------------------------------
    def _ggn(self, v: torch.Tensor) -> torch.Tensor:
        p = self.problem
        tangent = p.layout.unflatten(v)
        total = torch.zeros(p.n_params, device=p.device, dtype=p.dtype)
        count = 0.0
        for index, batch in p.batches():
            with p.chunk_context(index):
                gv, batch_count = self._ggn_batch(batch, tangent)
            total += gv
            count += batch_count
        _, (count,) = p.sum_over_ranks(total, count)
        return total / positive_count(count)

    def _ggn_batch(self, batch: Batch, tangent: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        p = self.problem
        leaves = {k: t.detach().requires_grad_(True) for k, t in p.layout.unflatten(p.w).items()}
        names = tuple(leaves)
        with torch.enable_grad(), differentiable_attention():
            raw = functional_call(p.model, (leaves, p.buffers), batch.args, batch.kwargs)
            out = logits_of(raw)
            # J v by the double-backward trick: d/du <J^T u, v> = J v, linear in u, so u = 0 will do
            u = torch.zeros_like(out, requires_grad=True)
            jt_u = torch.autograd.grad(out, tuple(leaves.values()), u, create_graph=True, allow_unused=True)
            used = [(g, tangent[k]) for k, g in zip(names, jt_u, strict=True) if g is not None]
            jv = torch.autograd.grad([g for g, _ in used], u, [t for _, t in used], retain_graph=True)[0]
            # H_L (J v): the loss's Hessian with respect to the output
            o = out.detach().requires_grad_(True)
            loss_sum, count = p.loss.sum_and_count(o, batch)
            (g_out,) = torch.autograd.grad(loss_sum, o, create_graph=True)
            (h_jv,) = torch.autograd.grad(g_out, o, jv)
            result = torch.autograd.grad(out, tuple(leaves.values()), h_jv, allow_unused=True)
        return p._flatten_grads(leaves, result), float(count)

    # -- empirical Fisher ----------------------------------------------------------------------------
    def _fisher(self, v: torch.Tensor) -> torch.Tensor:
        """sum_i g_i (g_i . v) with g_i each sample's gradient of its loss sum, scaled by N / count^2."""
        p = self.problem
        total = torch.zeros(p.n_params, device=p.device, dtype=p.dtype)
        count = 0.0
        rows = max(1, FISHER_BLOCK_BYTES // max(1, p.n_params * p.w.element_size()))
        for index, batch in p.batches():
            with p.chunk_context(index):
                for start in range(0, batch.size, rows):
                    part = as_batch(rows_of(batch.raw, start, rows))
                    grads, part_count = self._per_sample_gradients(part)
                    total += grads.T @ (grads @ v)
                    count += part_count
        _, (count,) = p.sum_over_ranks(total, count)
        return total * (p.n_samples / positive_count(count) ** 2)

    def _per_sample_gradients(self, batch: Batch) -> tuple[torch.Tensor, float]:
        """(B, n) gradients of each sample's loss sum, by vmap where the model allows, else one by one."""
        p = self.problem
        params = p.layout.unflatten(p.w)
        try:
            return self._vmapped_gradients(params, batch)
        except LandscapeError:
            raise
        except Exception:  # noqa: BLE001 - BatchNorm in train mode, in-place ops: loop instead
            rows, count = [], 0.0
            for i in range(batch.size):
                one = as_batch(rows_of(batch.raw, i, 1))
                leaves = {k: t.detach().requires_grad_(True) for k, t in params.items()}
                with torch.enable_grad():
                    value, c = p._loss_sum(leaves, one)
                    g = torch.autograd.grad(value, tuple(leaves.values()), allow_unused=True)
                rows.append(p._flatten_grads(leaves, g))
                count += float(c)
            return torch.stack(rows), count

    def _vmapped_gradients(self, params: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, float]:
        p = self.problem
        raw = batch.raw

        def one_sample(q: dict[str, torch.Tensor], sample: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
            single = as_batch(map_tensors(sample, lambda t: t.unsqueeze(0)))
            return grad(lambda r: p._loss_sum(r, single), has_aux=True)(q)

        grads, counts = vmap(one_sample, in_dims=(None, 0), randomness="same")(params, raw)
        flat = torch.cat([grads[k].reshape(batch.size, -1) for k in p.layout.names], dim=1)
        return flat, float(counts.sum())
