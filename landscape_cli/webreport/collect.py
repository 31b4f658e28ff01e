"""What the report shows: each path given becomes a group (a run directory: the results files in it; a file:
itself), each results file an item read into plain arrays. A file that cannot be read is kept with the reason,
and the rest of the report still renders."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import LandscapeError
from ..hdf5 import READ_ERRORS, open_results, read_attrs
from ..plotting.surface_data import Surface, load_surface
from ..plotting.trainlog import TrainLogData, read_train_log

#: Files of a run directory the report reads (checkpoints and figures are not results).
RESULT_SUFFIXES = (".h5", ".hdf5", ".json", ".xml", ".csv")
LOG_NAME = "train.h5"


@dataclass
class Item:
    """One results file: its kind (surface, spectrum, train-log, sharpness-log, eos, eos-run, sharpness, check,
    compare, junit), what was read from it, and its provenance (the attributes it records)."""

    kind: str
    path: Path
    data: Any
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass
class Group:
    """What one path given on the command line holds."""

    name: str
    path: Path
    items: list[Item] = field(default_factory=list)

    def of(self, kind: str) -> list[Item]:
        return [item for item in self.items if item.kind == kind]


@dataclass
class Unreadable:
    path: Path
    reason: str


def collect(paths: list[Path]) -> tuple[list[Group], list[Unreadable]]:
    """Groups in the order given, and the files that could not be read with the reason."""
    groups: list[Group] = []
    unreadable: list[Unreadable] = []
    names: dict[str, int] = {}
    for path in paths:
        name = (path.resolve().name or str(path)) if path.is_dir() else path.stem
        names[name] = names.get(name, 0) + 1
        group = Group(name if names[name] == 1 else f"{name} ({names[name]})", path)
        if path.is_dir():
            # a run's CSV tables (train --csv) are copies of its train.h5: read once, from train.h5
            suffixes = [s for s in RESULT_SUFFIXES if s != ".csv" or not (path / LOG_NAME).is_file()]
            files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes),
                           key=lambda p: (p.name != LOG_NAME, p.name))  # fmt: skip
        elif path.exists():
            files = [path]
        else:
            unreadable.append(Unreadable(path, "no such file or directory"))
            continue
        for file in files:
            try:
                item = read_item(file)
            except LandscapeError as exc:
                unreadable.append(Unreadable(file, _reason(str(exc), file)))
                continue
            if item is not None:
                group.items.append(item)
            elif not path.is_dir():
                unreadable.append(Unreadable(file, "not a results file of landscape"))
        if group.items:
            groups.append(group)
        elif path.is_dir() and not any(u.path.parent == path for u in unreadable):
            unreadable.append(Unreadable(path, "holds no results file of landscape"))
    return groups, unreadable


def _reason(message: str, path: Path) -> str:
    """The error without the path it starts with (the report names the file beside it)."""
    return message[len(str(path)) :].lstrip(" :") if message.startswith(str(path)) else message


def read_item(path: Path) -> Item | None:
    """The file read as its kind says; None for a file that is not a results file (e.g. an unrelated CSV)."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".xml":
        return _read_junit(path)
    if suffix == ".csv":
        log = read_train_log(path)
        return Item("sharpness-log", path, log) if "top_eigenvalue" in log.table("sharpness") else None
    with open_results(path) as f:
        attrs = read_attrs(f)
        kind = attrs.get("kind")
        if kind is None and isinstance(f.get("xcoordinates"), h5py.Dataset):
            kind = "surface"  # Li et al.'s files carry no kind
        try:
            if kind == "spectrum":
                return Item("spectrum", path, _spectrum(f), _provenance(attrs))
            if kind == "eos":
                return Item("eos", path, attrs, _provenance(attrs))
            if kind == "sharpness":
                rows = [read_attrs(f["measures"][k]) for k in sorted(f.get("measures", {}), key=int)]
                extra = {k: attrs.get(k) for k in ("top_eigenvalue", "top_error_bound", "trace", "trace_stderr")}
                return Item("sharpness", path, {"rows": rows, **extra}, _provenance(attrs))
            if kind == "eos-run":
                arrays = {k: np.asarray(f[k][()], np.float64) for k in ("step", "sharpness", "edge", "ratio", "lr")}
                return Item("eos-run", path, {**arrays, "summary": _json(attrs.get("summary"))}, _provenance(attrs))
        except READ_ERRORS as exc:
            raise LandscapeError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None
    if kind == "surface":
        surface = load_surface(path)
        return Item("surface", path, surface, _provenance(surface.attrs))
    if kind in ("train-log", "sharpness-log"):
        log = read_train_log(path)
        return Item(kind, path, log, {**_provenance(log.attrs), "config": log.config})
    if kind == "surface-partial":
        raise LandscapeError(f"{path} is an unfinished surface sweep (finish it with landscape surface --resume)")
    return None


def _spectrum(f: h5py.File) -> dict[str, Any]:
    """Eigenvalues with their error bounds, trace, density and per-layer blocks, as they are stored."""
    out: dict[str, Any] = {"loss": f.attrs.get("loss"), "grad_norm": f.attrs.get("grad_norm")}
    for which in ("top", "bottom"):
        if which in f:
            out[which] = {k: np.asarray(f[which][k][()], np.float64) for k in ("eigenvalues", "error_bounds")}
    if "trace" in f:
        out["trace"] = read_attrs(f["trace"])
    if "density" in f:
        out["density"] = {k: np.asarray(f["density"][k][()], np.float64) for k in ("grid", "density")}
    if "layers" in f:
        g = f["layers"]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in g["names"][()]]
        columns = ("top", "top_error", "trace", "trace_stderr")
        out["layers"] = {"names": names, **{k: np.asarray(g[k][()], np.float64) for k in columns}}
    return out


def _read_json(path: Path) -> Item | None:
    """`landscape check --json` or `landscape compare --json` output saved to a file."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LandscapeError(f"{path} is not readable JSON ({exc})") from None
    if isinstance(value, dict) and isinstance(value.get("gates"), list):
        return Item("check", path, value)
    if isinstance(value, dict) and isinstance(value.get("deltas"), list):
        return Item("compare", path, value)
    return None


def _read_junit(path: Path) -> Item | None:
    """JUnit XML written by `landscape check --junit` or `compare --junit`: one case per gate or measure."""
    try:
        root = ET.parse(path).getroot()  # noqa: S314 - the standard parser expands no external entities
    except (OSError, ET.ParseError) as exc:
        raise LandscapeError(f"{path} is not readable XML ({exc})") from None
    cases = []
    for case in root.iter("testcase"):
        if not str(case.get("classname", "")).startswith("landscape."):
            return None
        failure = case.find("failure")
        out = case.find("system-out")
        message = failure.get("message", "") if failure is not None else (out.text or "" if out is not None else "")
        cases.append({"name": case.get("name", ""), "passed": failure is None, "message": message})
    return Item("junit", path, {"cases": cases}) if cases else None


#: The provenance keys shown first (all others follow).
PROVENANCE_KEYS = (
    "command", "created", "checkpoint", "checkpoint_sha256", "data_spec", "model_spec", "loss_function", "seed",
    "device", "dtype", "n_samples", "n_params", "world_size", "tool_version", "torch_version",
)  # fmt: skip


def _provenance(attrs: dict[str, Any]) -> dict[str, Any]:
    """What a results file records about how it was made, without its measured values."""
    skip = {
        "kind",
        "summary",
        "loss",
        "grad_norm",
        "accuracy",
        "hvps_total",
        "config",
        "top_eigenvalue",
        "top_error_bound",
        "trace",
        "trace_stderr",
    }
    keys = [k for k in PROVENANCE_KEYS if k in attrs] + sorted(k for k in attrs if k not in PROVENANCE_KEYS)
    return {k: attrs[k] for k in keys if k not in skip}


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


__all__ = ["Group", "Item", "Surface", "TrainLogData", "Unreadable", "collect", "read_item"]
