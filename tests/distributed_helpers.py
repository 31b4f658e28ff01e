"""Entry points the torchrun tests name on the command line: a loss that can kill its own rank, and data only
one rank cannot read. Not a test module."""

from __future__ import annotations

import os

import torch.nn.functional as F

_calls = {"n": 0}


def mortal_cross_entropy(output, batch):  # noqa: ANN001, ANN201 - a user's loss, as users write them
    """Cross-entropy as (sum, count); on the rank named by KILL_RANK it ends its process (like an out-of-memory
    kill) at the KILL_AFTER-th call."""
    _calls["n"] += 1
    if os.environ.get("RANK") == os.environ.get("KILL_RANK", "-") and _calls["n"] >= int(
        os.environ.get("KILL_AFTER", "1")
    ):
        os._exit(9)
    return F.cross_entropy(output, batch[1], reduction="sum"), batch[1].numel()


def digits_unless_rank_one():  # noqa: ANN201
    """The digits data, except on rank 1, which cannot read it (a file missing on one node)."""
    if os.environ.get("RANK") == "1":
        raise FileNotFoundError("/data/shard-1.npy is not on this node")
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target)
