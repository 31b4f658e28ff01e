"""Two checkpoints, or two results files, measured alike and compared: values, deltas, and gates on
how much sharper the new one may be."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py

from ..choices import MEASURES
from ..errors import LandscapeError, ParameterError
from ..hdf5 import open_results, read_attrs


@dataclass
class Delta:
    measure: str
    quantity: str
    base: float
    new: float
    change: float  # new - base
    sharper_by: float  # relative change toward sharper: (new - base)/|base|, sign flipped for `bottom`
    limit: float | None
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def parse_measures(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in MEASURES]
    if unknown or not names:
        raise ParameterError("what", f"takes a comma-separated list of {', '.join(MEASURES)}, got '{text}'")
    return list(dict.fromkeys(names))


def parse_increase(text: str | float | None) -> float | None:
    """'10%', '0.1' or 0.1 -> 0.1."""
    if text is None:
        return None
    try:
        if isinstance(text, str):
            value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        else:
            value = float(text)
    except ValueError:
        raise ParameterError(
            "max_increase", f"takes a percentage like 10% or a fraction like 0.1, got '{text}'"
        ) from None
    if not (value >= 0 and math.isfinite(value)):
        raise ParameterError("max_increase", f"max_increase must be a finite non-negative amount, got '{text}'")
    return value


def deltas(
    base: dict[str, float], new: dict[str, float], quantities: dict[str, str], max_increase: float | None
) -> list[Delta]:
    out = []
    for measure in base:
        b, n = base[measure], new[measure]
        sign = 1.0 if MEASURES[measure][1] else -1.0
        relative = sign * (n - b) / abs(b) if b != 0 else (0.0 if n == b else math.copysign(math.inf, sign * (n - b)))
        relative += 0.0  # no -0.0 in reports
        passed = max_increase is None or relative <= max_increase
        out.append(Delta(measure, quantities[measure], b, n, n - b, relative, max_increase, passed))
    return out


#: What must agree between two results files for their numbers to be comparable (besides their kind).
SETTINGS = (
    "data",
    "samples",
    "loss",
    "mode",
    "curvature",
    "dims",
    "radius",
    "directions",
    "worst setting",
    "average setting",
)


def _spec(text: object) -> object:
    """A JSON spec attribute as a value, the split aside when it is not what differs."""
    try:
        return json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError:
        return text


def settings_of(f: h5py.File, attrs: dict[str, object]) -> dict[str, object]:
    """The settings a results file was measured with that decide whether its numbers compare with another's:
    the data (spec, sample count, loss, train/eval mode), the curvature (matrix and parameter block), and
    for a surface its dimension, the radius of its rise and the recipe of its directions (kind, seed, norm,
    ignore; an earlier file's directions reused with --dirs file: keep the recipe they were made with)."""
    out: dict[str, object] = {
        "data": _spec(attrs.get("data_spec")),
        "samples": attrs.get("n_samples"),
        "loss": attrs.get("loss_function"),
        "mode": attrs.get("mode"),
        "curvature": str(attrs.get("curvature", "hessian")) + (f" of {attrs['params']}" if attrs.get("params") else ""),
    }
    if attrs.get("kind") == "surface":
        out["dims"] = attrs.get("dims")
        out["radius"] = read_attrs(f["summary"]).get("radius") if "summary" in f else None
        directions = f.get("directions")
        recipe = []
        for key in sorted(directions) if directions is not None else []:
            d = read_attrs(directions[key])
            kept = ("kind", "seed", "norm", "ignore", "index") if d.get("kind") in ("random", "eigen") else (
                "kind", "source_sha256", "source")  # fmt: skip
            recipe.append({k: d.get(k) for k in kept})
        out["directions"] = recipe
    return out


def setting_differences(base: dict[str, object], new: dict[str, object]) -> list[str]:
    """'radius 0.5 vs 1.0'-style descriptions of what differs."""
    out = []
    for key in SETTINGS:
        if key in base or key in new:
            if base.get(key) != new.get(key):
                show = _recipe if key == "directions" else _short
                out.append(f"{key} {show(base.get(key))} vs {show(new.get(key))}")
    return out


def _recipe(directions: object) -> str:
    """'random (seed 0, filter, biasbn) x 2'-style: the recipe of a surface's directions, in a few words."""
    if not isinstance(directions, list) or not directions:
        return "none"
    words = []
    for d in directions:
        details = [f"seed {d['seed']}" if d.get("seed") is not None else None, d.get("norm"), d.get("ignore"),
                   Path(str(d["source"])).name if d.get("source") else None]  # fmt: skip
        words.append(f"{d.get('kind')} ({', '.join(w for w in details if w)})")
    same = all(w == words[0] for w in words)
    return f"{words[0]} x {len(words)}" if same and len(words) > 1 else " and ".join(words)


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 70 else text[:33] + "..." + text[-33:]


def measures_of_file(path: Path, what: list[str]) -> tuple[str, dict[str, float], dict[str, str], dict[str, object]]:
    """The comparable numbers a results file holds: spectrum (top, bottom, trace), surface (surface),
    eos (eos); and the settings they were measured with."""
    with open_results(path) as f:
        attrs = read_attrs(f)
        kind = attrs.get("kind")
        settings = settings_of(f, attrs)
        values: dict[str, float] = {}
        if kind == "spectrum":
            if "top" in f:
                values["top"] = float(f["top/eigenvalues"][0])
            if "bottom" in f:
                values["bottom"] = float(f["bottom/eigenvalues"][0])
            if "trace" in f:
                values["trace"] = float(f["trace"].attrs["estimate"])
        elif kind == "surface" and "summary" in f and "rise_mean" in f["summary"].attrs:
            values["surface"] = float(f["summary"].attrs["rise_mean"])
        elif kind == "eos":
            values["eos"] = float(attrs["ratio"])
        elif kind == "sharpness":  # the first plain (full-batch) row of each measure, and the top eigenvalue/trace
            for key in sorted(f.get("measures", {}), key=int):
                row = read_attrs(f["measures"][key])
                if row.get("measure") in ("worst", "average") and not row.get("m") and row["measure"] not in values:
                    values[str(row["measure"])] = float(row["value"])
                    settings[f"{row['measure']} setting"] = {k: row.get(k) for k in ("rho", "norm", "adaptive")}
            if "top_eigenvalue" in attrs:
                values["top"], values["trace"] = float(attrs["top_eigenvalue"]), float(attrs["trace"])
        elif kind not in ("spectrum", "surface", "eos"):
            raise LandscapeError(f"{path} is a '{kind}' file; compare takes spectrum, surface, eos or sharpness files")
    missing = [m for m in what if m not in values]
    if missing:
        raise ParameterError(
            "what", f"{path} ({kind}) holds no {', '.join(missing)}; choose what from {', '.join(values)}"
        )
    names = {"top": "top Hessian eigenvalue", "bottom": "bottom Hessian eigenvalue", "trace": "Hessian trace",
             "eos": "sharpness / edge of stability", "surface": "mean loss rise at the radius",
             "worst": "worst-case sharpness (lower bound)", "average": "average-case sharpness"}  # fmt: skip
    return str(kind), {m: values[m] for m in what}, {m: names[m] for m in what}, settings


def default_measures_of_files(base: Path) -> list[str]:
    with open_results(base) as f:
        kind = read_attrs(f).get("kind")
        if kind == "spectrum":
            return [m for m in ("top", "bottom", "trace") if m in f]
    return {"surface": ["surface"], "eos": ["eos"], "sharpness": ["worst", "average"]}.get(str(kind), ["top"])
