"""Gates kept with the project: `[tool.landscape.check]` in pyproject.toml or `[check]` in
landscape.toml (the nearer file wins, landscape.toml before pyproject.toml in one folder), so CI
needs only `landscape check CHECKPOINT`. Options on the command line override the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import LandscapeError

#: Keys a config file may set, beyond the gates themselves.
SETTINGS = (
    "radius",
    "samples",
    "seed",
    "split",
    "tol",
    "device",
    "dtype",
    "curvature",
    "params",
    "sharpness_rho",
    "sharpness_adaptive",
)
#: The types each key takes (gates: numbers).
SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "radius": (int, float),
    "tol": (int, float),
    "samples": (int,),
    "seed": (int,),
    "split": (str,),
    "device": (str,),
    "dtype": (str,),
    "curvature": (str,),
    "params": (str,),
    "sharpness_rho": (int, float),
    "sharpness_adaptive": (bool,),
}


def _toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise LandscapeError(f"cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LandscapeError(f"{path} is not valid TOML: {exc}") from None


def section(path: Path) -> dict[str, Any] | None:
    """The check settings in `path`, or None when the file has no landscape section."""
    data = _toml(path)
    if path.name == "pyproject.toml":
        table = data.get("tool", {}).get("landscape")
        table = table.get("check", table) if isinstance(table, dict) else None
    else:
        table = data.get("check", data)
    if table is None:
        return None
    if not isinstance(table, dict):
        raise LandscapeError(f"{path}: the landscape section must be a table")
    return {str(k).replace("-", "_"): v for k, v in table.items()}


def find_config(start: Path) -> Path | None:
    """landscape.toml, or a pyproject.toml with a [tool.landscape] table, in `start` or a parent."""
    for folder in (start, *start.parents):
        for name in ("landscape.toml", "pyproject.toml"):
            path = folder / name
            if path.is_file() and section(path) is not None:
                return path
    return None


def load_config(explicit: Path | None, start: Path) -> tuple[dict[str, Any], Path | None]:
    """The settings of `explicit`, or of the nearest config file; unknown keys are refused."""
    from .gates import KINDS

    if explicit is not None and not explicit.is_file():
        raise LandscapeError(f"config file not found: {explicit}")
    path = explicit or find_config(start)
    if path is None:
        return {}, None
    values = section(path) or {}
    unknown = [k for k in values if k not in KINDS and k not in SETTINGS]
    if unknown:
        raise LandscapeError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join([*KINDS, *SETTINGS])}")
    for key, value in values.items():
        wanted = SETTING_TYPES.get(key, (int, float))
        if isinstance(value, bool) or not isinstance(value, wanted):
            names = " or ".join("a number" if t in (int, float) else "a string" for t in dict.fromkeys(wanted))
            raise LandscapeError(f"{path}: {key} must be {names}, got {value!r}")
    if "seed" in values and not 0 <= values["seed"] < 1 << 32:
        raise LandscapeError(f"{path}: seed must lie in [0, 2^32), got {values['seed']}")
    if "samples" in values and values["samples"] < 1:
        raise LandscapeError(f"{path}: samples must be at least 1, got {values['samples']}")
    return values, path
