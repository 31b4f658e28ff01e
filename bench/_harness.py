"""What every benchmark script shares: the process environment it re-executes itself with, and the
record of where it ran (machine, versions, git state) written beside its results.

Imported before torch on purpose: `reexec_with_env` must run before any library reads the environment.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Read when the process starts, so a script sets them and starts itself again. They apply to every
#: contestant alike.
ENV = {
    # glibc: keep freed activation buffers instead of returning them to the OS and faulting them back
    # in on the next call. glibc ignores an mmap threshold above 32 MiB (HEAP_MAX_SIZE / 2) on 64-bit.
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(4 * 2**30),
    "MALLOC_TOP_PAD_": str(256 * 2**20),
    # NumPy/SciPy's OpenBLAS threads spin after each BLAS call inside ARPACK and take the cores from
    # torch's threads: with them, curvlinops' HVPs inside eigsh took twice as long as alone on the
    # 300k model. One BLAS thread; torch's own thread count is --threads.
    "OPENBLAS_NUM_THREADS": "1",
}


def reexec_with_env() -> None:
    if all(os.environ.get(k) == v for k, v in ENV.items()):
        return
    os.environ.update(ENV)
    os.execv(sys.executable, [sys.executable, *sys.argv])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def json_default(obj: Any) -> Any:
    """For json.dumps: arrays and NumPy scalars as lists and numbers, paths as strings."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj))


def machine(threads: int, load_before: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "platform": platform.platform(),
        "load_average_before": load_before,
    }


def versions(modules: dict[str, str], distributions: tuple[str, ...]) -> dict[str, str]:
    """Python's and the given modules' versions, and the installed peers' ("missing" if absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), **modules}
    for dist in distributions:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "missing"
    return out


def git_state() -> dict[str, Any]:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty_files": git("status", "--porcelain").splitlines()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
