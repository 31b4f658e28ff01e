"""The HDF5 schema of results files, in one place.

Every file is written to a temporary name and renamed when complete, and carries its
provenance as root attributes: tool version, command line, checkpoint sha256, model and data
specs, seed, device, dtype, mode.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import platform
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ._version import __version__
from .atomic import atomic_path
from .checkpoint import Checkpoint
from .errors import LandscapeError
from .files import require_regular_file
from .hdf5check import check_global_heaps
from .spectrum import SpectrumResult
from .text import printable

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


def read_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    """Attributes as plain Python values; text is made printable here, once, for every consumer (tables,
    figures, error messages): a file's strings never send control sequences to the terminal."""
    out = {}
    for key, value in obj.attrs.items():
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, np.ndarray):
            value = value.tolist()
        out[printable(key)] = printable(value) if isinstance(value, str) else value
    return out


#: Links and objects a results file may hold before it is refused as not ours (a file of ours has dozens).
MAX_OBJECTS = 100_000


#: What reading a damaged or foreign file raises inside h5py and numpy: a missing dataset (KeyError), a
#: wrong dtype or shape (TypeError, ValueError, IndexError), a broken structure (OSError, RuntimeError, and
#: SystemError from h5py's locks), a bad JSON attribute.
READ_ERRORS = (KeyError, TypeError, ValueError, IndexError, AttributeError, OSError, RuntimeError, SystemError)


@contextlib.contextmanager
def open_results(path: Path) -> Iterator[h5py.File]:
    """Open an HDF5 results file for reading, refusing one that reaches into other files: an external link
    or a virtual dataset would make us read a file the user never named. What the block reads from it is
    input: a failure to find or convert what it expects is reported as the file's fault, in one line."""
    require_regular_file(path, "results file")
    check_global_heaps(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise LandscapeError(f"{path} is not a readable HDF5 file ({str(exc).splitlines()[0]})") from None
    try:
        _refuse_foreign_references(f, path)
        yield f
    except READ_ERRORS as exc:
        detail = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise LandscapeError(
            f"{path} is damaged or not a results file of the kind expected ({type(exc).__name__}: {detail})"
        ) from None
    finally:
        f.close()


def _refuse_foreign_references(f: h5py.File, path: Path) -> None:
    links: list[tuple[str, object]] = []

    def visit(name: str, link: object) -> bool | None:  # collect only: raising inside h5py's visit is unsafe
        links.append((name, link))
        return True if len(links) > MAX_OBJECTS else None  # a value other than None stops the visit

    f.visititems_links(visit)
    if len(links) > MAX_OBJECTS:
        raise LandscapeError(f"{path} holds over {MAX_OBJECTS:,} objects; it is not a results file of landscape")
    for name, link in links:
        if isinstance(link, h5py.ExternalLink):
            raise LandscapeError(
                f"{path} links to another file ({link.filename}) at '{name}'; landscape reads no file you did not name"
            )
        if isinstance(link, h5py.HardLink):
            obj = f.get(name)
            if isinstance(obj, h5py.Dataset) and obj.is_virtual:
                raise LandscapeError(
                    f"{path} holds a virtual dataset '{name}' that reads other files; landscape reads no file you "
                    "did not name"
                )


def describe_results(path: Path) -> dict[str, Any]:
    """Datasets (shape, dtype), groups and attributes of an HDF5 results file."""
    with open_results(path) as f:
        datasets: list[dict[str, Any]] = []

        def visit(name: str, obj: h5py.HLObject) -> None:
            if isinstance(obj, h5py.Dataset):
                datasets.append(
                    {"name": name, "shape": list(obj.shape), "dtype": str(obj.dtype), "attrs": read_attrs(obj)}
                )
            elif read_attrs(obj):
                datasets.append({"name": name + "/", "shape": None, "dtype": "group", "attrs": read_attrs(obj)})

        f.visititems(visit)
        return {"path": str(path), "attrs": read_attrs(f), "datasets": datasets}
