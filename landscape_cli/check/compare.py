"""Two checkpoints, or two results files, measured alike and compared: values, deltas, and gates on
how much sharper the new one may be."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import LandscapeError
from ..results import open_results, read_attrs

#: What can be compared: (the check gate that measures it, whether larger is sharper).
MEASURES = {
    "top": ("max_top_eig", True),
    "bottom": ("min_bottom_eig", False),
    "trace": ("max_trace", True),
    "eos": ("max_eos_ratio", True),
    "surface": ("max_surface_rise", True),
}


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
        raise LandscapeError(f"--what takes a comma-separated list of {', '.join(MEASURES)}, got '{text}'")
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
        raise LandscapeError(
            f"--max-increase takes a percentage like 10% or a fraction like 0.1, got '{text}'"
        ) from None
    if not (value >= 0 and math.isfinite(value)):
        raise LandscapeError(f"--max-increase must be a finite non-negative amount, got '{text}'")
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


def measures_of_file(path: Path, what: list[str]) -> tuple[str, dict[str, float], dict[str, str]]:
    """The comparable numbers a results file holds: spectrum (top, bottom, trace), surface (surface),
    eos (eos)."""
    with open_results(path) as f:
        attrs = read_attrs(f)
        kind = attrs.get("kind")
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
        elif kind not in ("spectrum", "surface", "eos"):
            raise LandscapeError(f"{path} is a '{kind}' file; compare takes spectrum, surface or eos files")
    missing = [m for m in what if m not in values]
    if missing:
        raise LandscapeError(f"{path} ({kind}) holds no {', '.join(missing)}; choose --what from {', '.join(values)}")
    names = {"top": "top Hessian eigenvalue", "bottom": "bottom Hessian eigenvalue", "trace": "Hessian trace",
             "eos": "sharpness / edge of stability", "surface": "mean loss rise at the radius"}  # fmt: skip
    return str(kind), {m: values[m] for m in what}, {m: names[m] for m in what}


def default_measures_of_files(base: Path) -> list[str]:
    with open_results(base) as f:
        kind = read_attrs(f).get("kind")
        if kind == "spectrum":
            return [m for m in ("top", "bottom", "trace") if m in f]
    return {"surface": ["surface"], "eos": ["eos"]}.get(str(kind), ["top"])
