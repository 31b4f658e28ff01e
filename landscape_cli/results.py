"""The HDF5 schema of results files, in one place.

Every file is written to a temporary name and renamed when complete, and carries its
provenance as root attributes: tool version, command line, checkpoint sha256, model and data
specs, seed, device, dtype, mode.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ._version import __version__
from .atomic import atomic_path
from .checkpoint import Checkpoint
from .spectrum import SpectrumResult

SCHEMA_VERSION = 1


def provenance(
    ckpt: Checkpoint, problem_info: dict[str, Any], seed: int, command: list[str] | None = None
) -> dict[str, Any]:
    """Everything needed to reproduce a result, as flat JSON-friendly values."""
    return {
        "tool": "landscape",
        "tool_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "command": shlex.join(command if command is not None else ["landscape", *sys.argv[1:]]),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(ckpt.path) if ckpt.path else "",
        "checkpoint_sha256": ckpt.sha256 or "",
        "model_spec": json.dumps(ckpt.model, sort_keys=True),
        "data_spec": json.dumps(ckpt.data, sort_keys=True),
        "loss_function": ckpt.loss or "",  # "loss" is the value at the checkpoint
        "seed": int(seed),
        "device": problem_info.get("device", ""),
        "dtype": problem_info.get("dtype", ""),
        "mode": problem_info.get("mode", ""),
        "n_params": int(problem_info.get("n_params", 0)),
        "n_samples": int(problem_info.get("n_samples", 0)),
        "batch_size": int(problem_info.get("batch_size", 0)),
        "hvp_method": problem_info.get("hvp_method") or "",
        "curvature": problem_info.get("curvature") or "hessian",
        "params": problem_info.get("params") or "",
        "world_size": int(problem_info.get("world_size", 1)),
        "backend": problem_info.get("backend") or "none",
        "torch_version": str(torch.__version__),
        "python_version": platform.python_version(),
    }


def _set_attrs(obj: h5py.Group, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        if value is None:
            continue
        obj.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value


def write_spectrum(path: Path, result: SpectrumResult, prov: dict[str, Any], overwrite: bool = False) -> Path:
    """Write atomically: the file appears complete or not at all."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        write_spectrum_file(tmp, result, prov)
    return path


def write_spectrum_file(path: Path, result: SpectrumResult, prov: dict[str, Any]) -> None:
    """Write a spectrum results file at `path` as it is (callers see to atomicity)."""
    with h5py.File(path, "w") as f:
        _set_attrs(f, {"kind": "spectrum", **prov})
        opts = result.options
        _set_attrs(f, {"options": {k: getattr(opts, k) for k in opts.__dataclass_fields__}})
        f.attrs["loss"] = result.loss
        f.attrs["grad_norm"] = result.grad_norm
        if result.accuracy is not None:
            f.attrs["accuracy"] = result.accuracy
        f.attrs["hvps_total"] = result.hvps
        _set_attrs(f, {"seconds": result.seconds})
        if result.lanczos is not None:
            lz = result.lanczos
            for which in ("top", "bottom"):
                ritz = getattr(lz, which)
                if len(ritz.values) == 0:
                    continue
                g = f.create_group(which)
                g["eigenvalues"] = ritz.values
                g["residual_bounds"] = ritz.residual_bounds
                g["error_bounds"] = ritz.error_bounds
                g["converged"] = ritz.converged.astype(np.bool_)
                _set_attrs(g, {"hvps": lz.matvecs, "iterations": lz.iterations, "tol": opts.tol})
        if result.trace is not None:
            g = f.create_group("trace")
            g["residual_samples"] = result.trace.residual_samples
            _set_attrs(
                g,
                {
                    "estimate": result.trace.estimate,
                    "stderr": result.trace.stderr,
                    "hvps": result.trace.matvecs,
                    "low_rank_part": result.trace.low_rank_part,
                    "method": "hutch++",
                },
            )
        if result.layers is not None:
            layers = result.layers
            g = f.create_group("layers")
            g["names"] = np.array(layers.names, dtype=h5py.string_dtype())
            for key in ("sizes", "top", "top_error", "trace", "trace_stderr"):
                g[key] = getattr(layers, key)
            _set_attrs(g, {"by": layers.by, "matvecs": layers.matvecs})
        if result.density is not None:
            d = result.density
            g = f.create_group("density")
            for name in ("nodes", "weights", "grid", "density"):
                g[name] = getattr(d, name)
            _set_attrs(g, {"sigma": d.sigma, "hvps": d.matvecs, "mean": d.mean, "method": "slq"})
        for which, vectors in result.eigenvectors.items():
            for i, by_name in enumerate(vectors):
                g = f.create_group(f"eigenvectors/{which}/{i}")
                g.attrs["eigenvalue"] = float(getattr(result.lanczos, which).values[i])
                for name, array in by_name.items():
                    g[name] = array
