"""Sharpness gates for CI: which measurement each gate needs, its limit, and whether it passed."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import LandscapeError


@dataclass(frozen=True)
class GateKind:
    option: str  # the command-line option and config key
    quantity: str  # what is measured, as reports name it
    bound: str  # "max": fails above the limit; "min": fails below


KINDS = {
    "max_top_eig": GateKind("--max-top-eig", "top Hessian eigenvalue", "max"),
    "min_bottom_eig": GateKind("--min-bottom-eig", "bottom Hessian eigenvalue", "min"),
    "max_trace": GateKind("--max-trace", "Hessian trace", "max"),
    "max_eos_ratio": GateKind("--max-eos-ratio", "sharpness / edge of stability", "max"),
    "max_surface_rise": GateKind("--max-surface-rise", "mean loss rise at the radius", "max"),
    "max_sharpness_worst": GateKind("--max-sharpness-worst", "worst-case sharpness (lower bound)", "max"),
    "max_sharpness_avg": GateKind("--max-sharpness-avg", "average-case sharpness", "max"),
}


@dataclass
class GateResult:
    """One gate: the measured value with its own uncertainty, the limit, and the verdict."""

    name: str
    quantity: str
    value: float
    limit: float
    bound: str
    uncertainty: float | None
    uncertainty_kind: str
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def judge(
    name: str, value: float, limit: float, uncertainty: float | None, uncertainty_kind: str, matrix: str = "Hessian"
) -> GateResult:
    """`matrix` names what the eigenvalue and trace gates measured (Hessian, Gauss-Newton, ...)."""
    kind = KINDS[name]
    passed = value <= limit if kind.bound == "max" else value >= limit
    if value != value:  # NaN never passes
        passed = False
    quantity = kind.quantity.replace("Hessian", matrix)
    return GateResult(name, quantity, float(value), float(limit), kind.bound, uncertainty, uncertainty_kind, passed)


def validate_limits(limits: dict[str, float | None]) -> dict[str, float]:
    """The gates asked for, with finite limits; at least one."""
    chosen = {k: v for k, v in limits.items() if v is not None}
    unknown = [k for k in chosen if k not in KINDS]
    if unknown:
        raise LandscapeError(f"unknown gate(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    for name, value in chosen.items():
        if not isinstance(value, int | float) or value != value or value in (float("inf"), float("-inf")):
            raise LandscapeError(f"{KINDS[name].option} must be a finite number, got {value!r}")
    if not chosen:
        raise LandscapeError(
            "no gate given: pass at least one of "
            + ", ".join(k.option for k in KINDS.values())
            + " (or set them under [tool.landscape.check] in pyproject.toml or in landscape.toml)"
        )
    return {k: float(v) for k, v in chosen.items()}
