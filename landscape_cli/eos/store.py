"""The eos results files: a checkpoint's measurement (kind "eos") or a run's edges per step ("eos-run")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .measure import EosResult
from .run import RunEdges


def _attrs(obj: h5py.HLObject, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if value is None:
            continue
        obj.attrs[key] = json.dumps(value) if isinstance(value, dict | list) else value


def write_eos_checkpoint(path: Path, result: EosResult, prov: dict[str, Any]) -> None:
    """Every number of the measurement as root attributes, with the provenance (callers see to atomicity)."""
    with h5py.File(path, "w") as f:
        _attrs(f, {"kind": "eos", **prov})
        _attrs(f, {k: v for k, v in result.__dict__.items() if k != "problem"})


def write_eos_run(path: Path, edges: RunEdges, summary: dict[str, Any], command: list[str]) -> None:
    """Per tracked step: step, sharpness, error_bound, grad_norm, lr, edge, ratio; the summary as attributes."""
    with h5py.File(path, "w") as f:
        _attrs(f, {"kind": "eos-run", "command": " ".join(command), "summary": summary})
        for key in ("step", "sharpness", "error_bound", "grad_norm", "lr", "edge"):
            f[key] = np.asarray(getattr(edges, key))
        f["ratio"] = edges.ratio
