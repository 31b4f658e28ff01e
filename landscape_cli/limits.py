"""How much memory a command may ask for, so that a small hostile file cannot make it allocate gigabytes.

Sizes that come from a spec (a model's widths, a synthetic dataset's sample count, a grid) are
estimated before anything is allocated and refused past the limit, which the user can raise:
`--max-memory 64G` on the command line, LANDSCAPE_MAX_MEMORY in the environment, or `max_memory=`
in the Python API. The default is 80% of the machine's physical memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from .errors import LandscapeError

DEFAULT_FRACTION = 0.8
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_limit: contextvars.ContextVar[int | None] = contextvars.ContextVar("landscape_max_memory", default=None)


def parse_size(text: str | int, what: str = "max_memory") -> int:
    """Bytes from '64G', '512M', '1.5T', '1000000' (binary units; a trailing 'iB' or 'B' is accepted)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:I?B)?\s*", str(text), flags=re.IGNORECASE)
        if found is None:
            raise LandscapeError(f"{what} must be a size such as 16G, 512M or a number of bytes, got '{text}'")
        value = float(found.group(1)) * _UNITS[found.group(2).upper()]
    if not value >= 1:
        raise LandscapeError(f"{what} must be at least one byte, got '{text}'")
    return int(value)


def physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def max_memory() -> int:
    """The limit in force: the innermost `memory_limit`, else LANDSCAPE_MAX_MEMORY, else 80% of RAM."""
    scoped = _limit.get()
    if scoped is not None:
        return scoped
    env = os.environ.get("LANDSCAPE_MAX_MEMORY")
    if env:
        return parse_size(env, "LANDSCAPE_MAX_MEMORY")
    total = physical_memory()
    return int(total * DEFAULT_FRACTION) if total else 1 << 40


@contextlib.contextmanager
def memory_limit(limit: str | int | None) -> Iterator[None]:
    """Set the limit for the calls inside the block (None: leave it as it is)."""
    if limit is None:
        yield
        return
    token = _limit.set(parse_size(limit))
    try:
        yield
    finally:
        _limit.reset(token)


def set_memory_limit(limit: str | int | None) -> None:
    """Set the limit for the rest of this context (the CLI runs each command in a context of its own)."""
    if limit is not None:
        _limit.set(parse_size(limit, "--max-memory"))


def peak_memory(device: Any) -> dict[str, int | None]:
    """The process's peak resident memory so far, and the peak memory torch allocated on a CUDA device."""
    host = None
    with contextlib.suppress(ImportError, OSError):
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux, bytes on macOS
        host = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale
    gpu = None
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        gpu = int(torch.cuda.max_memory_allocated(device))
    return {"host_peak_bytes": host, "device_peak_bytes": gpu}


@functools.cache
def _malloc_trim() -> Any:
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None).malloc_trim  # the C library the process already has loaded
    return None


def release_free_host_memory() -> None:
    """Give the heap's free pages back to the system (glibc's malloc_trim) after a throw-away graph.

    glibc keeps freed blocks of large autograd buffers in its heap, so a probe or calibration graph
    would otherwise stay in the resident set for the rest of the run (0.25 GB of a ResNet-18 run's peak
    at 32 images). Changes no setting; a no-op where there is no glibc."""
    if sys.platform.startswith("linux"):
        trim = _malloc_trim()
        if trim is not None:
            trim(0)


def human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.3g} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.3g} PiB"


def require_memory(what: str, nbytes: float) -> None:
    """Refuse `what` when it would need more than the limit, before anything is allocated."""
    limit = max_memory()
    if nbytes > limit:
        raise LandscapeError(
            f"{what} would need about {human(nbytes)}, more than the memory limit of {human(limit)}; "
            "raise it with --max-memory (or LANDSCAPE_MAX_MEMORY) if this is intended"
        )
