"""Data parallelism over torch.distributed: which rank this is, its share of the samples, and sums over ranks.

Every measurement is a sum over samples divided by a count, so a process group makes it exact: each rank
sums over its contiguous share of the same seeded sample set and the sums (and counts) are all-reduced
before dividing. Random vectors come from seeded CPU generators, so every rank's Lanczos, Hutch++ and SLQ
take the same steps. Nothing here starts a process group on import; `init_from_env` does, when the CLI
runs under torchrun (WORLD_SIZE > 1). Inside a user's own job the group they started is used.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .errors import LandscapeError, ParameterError

BACKENDS = ("auto", "gloo", "nccl")
#: Seconds a collective may wait for the other ranks (LANDSCAPE_DIST_TIMEOUT): a rank that died or hangs
#: ends the others with an error instead of a hang. torchrun also stops every rank when one fails.
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Group:
    """The ranks working together: this one's rank, how many, the backend."""

    rank: int
    world_size: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> tuple[int, int]:
        """This rank's contiguous positions [start, stop) of n samples; shares differ by at most one."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)


def current() -> Group | None:
    """The active process group when it has more than one rank, else None (one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size()
    if world < 2:
        return None
    return Group(dist.get_rank(), world, str(dist.get_backend()))


def is_main() -> bool:
    """True on rank 0 and in a single process: the one that prints and writes files."""
    group = current()
    return group is None or group.is_main


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several ranks."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def env_rank() -> int:
    """The launcher's rank for this process (0 when not launched), readable before a group exists."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def init_from_env(backend: str = "auto") -> Group | None:
    """Start the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR, ...), once. `auto` is NCCL
    when CUDA is there, else Gloo; each rank then works on its local GPU (LOCAL_RANK)."""
    if backend not in BACKENDS:
        raise ParameterError("dist_backend", f"'{backend}' is not one of {', '.join(BACKENDS)}")
    if not launched():
        return None
    if dist.is_initialized():
        return current()
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ParameterError("dist_backend", "nccl needs CUDA, which is not available; use gloo")
        torch.cuda.set_device(local_device())
    try:
        timeout = float(os.environ.get("LANDSCAPE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        raise LandscapeError("LANDSCAPE_DIST_TIMEOUT must be a number of seconds") from None
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return current()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def local_device() -> torch.device:
    """This rank's GPU (LOCAL_RANK) when CUDA is there, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        index = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        index = 0
    return torch.device("cuda", index % torch.cuda.device_count())


def _collective_device(group: Group, like: torch.device) -> torch.device:
    """NCCL reduces CUDA tensors only; Gloo either."""
    if group.backend == "nccl":
        return like if like.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    return like


def all_reduce_sum_(tensor: torch.Tensor, group: Group | None) -> torch.Tensor:
    """Sum `tensor` over the ranks in place (a no-op in one process). Every rank gets the same bits."""
    if group is None:
        return tensor
    device = _collective_device(group, tensor.device)
    if device == tensor.device:
        dist.all_reduce(tensor)
        return tensor
    moved = tensor.to(device)
    dist.all_reduce(moved)
    tensor.copy_(moved)
    return tensor


def sum_floats(values: list[float], group: Group | None, device: torch.device | None = None) -> list[float]:
    """Python numbers summed over the ranks (counts, loss sums), in float64."""
    if group is None:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device or torch.device("cpu"))
    return [float(v) for v in all_reduce_sum_(tensor, group)]


def agree(values: list[float], group: Group | None, how: str = "max", device: torch.device | None = None
          ) -> list[float]:  # fmt: skip
    """The same decision on every rank from per-rank measurements (timings, memory limits): max or min."""
    if group is None:
        return list(values)
    op = {"max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[how]
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device(group, device or torch.device("cpu")))
    dist.all_reduce(tensor, op=op)
    return [float(v) for v in tensor.cpu()]


def broadcast_object(value: Any, group: Group | None) -> Any:
    """Rank 0's value on every rank (a plan read from a file, a choice made once)."""
    if group is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def raise_everywhere(message: str | None) -> None:
    """Raise a refusal every rank reached alike (after `broadcast_object`): marked so that only rank 0 prints
    it, instead of one identical line per rank."""
    if message:
        error = LandscapeError(message)
        error.on_every_rank = True  # type: ignore[attr-defined]
        raise error


def share_file(path: Path, group: Group | None) -> None:
    """Rank 0's file, written only there, copied to the same path on every other rank (a scratch file)."""
    if group is None:
        return
    data = broadcast_object(path.read_bytes() if group.is_main else None, group)
    if not group.is_main:
        path.write_bytes(data)


def barrier(group: Group | None) -> None:
    if group is not None:
        dist.barrier()
