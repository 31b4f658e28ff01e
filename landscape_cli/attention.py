"""Attention that autograd can differentiate twice.

PyTorch's fused attention kernels (flash, memory-efficient, cuDNN; on the CPU
`_scaled_dot_product_flash_attention_for_cpu`) have neither forward-mode AD nor a double backward, and
`F.scaled_dot_product_attention` picks them by default: so does every HuggingFace model built with its default
`attn_implementation="sdpa"`. Hessian-vector products, the Gauss-Newton product and Eigen-SAM's power iteration
run inside `differentiable_attention()`, which restricts the choice to the math kernel: the same attention up
to rounding, exact second derivatives, and the attention matrix held in memory (sequence length squared per
head), as the eager implementations hold it anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch.nn.attention import SDPBackend, sdpa_kernel


@contextlib.contextmanager
def differentiable_attention() -> Iterator[None]:
    """Within the block `F.scaled_dot_product_attention` uses its math kernel (the previous choice comes back
    after it)."""
    with sdpa_kernel([SDPBackend.MATH]):
        yield
