"""Resolve user entry points: "pkg.module:attr" or "path/to/file.py:attr"."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from ..errors import LandscapeError


def is_entrypoint(spec: str) -> bool:
    """True when `spec` names an attribute of a module or a Python file."""
    if ":" not in spec:
        return False
    module, _, attr = spec.rpartition(":")
    return bool(module) and bool(attr) and attr.isidentifier()


def resolve_entrypoint(spec: str) -> Any:
    """Import the object named by `spec`; every failure becomes a one-line LandscapeError."""
    if not is_entrypoint(spec):
        raise LandscapeError(f"'{spec}' is not an entry point; expected 'pkg.module:name' or 'file.py:name'")
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            module = _import_file(Path(module_name))
        else:
            module = importlib.import_module(module_name)
    except LandscapeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's module's
        raise LandscapeError(
            f"cannot import '{module_name}' for entry point '{spec}': {type(exc).__name__}: {exc}"
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise LandscapeError(f"module '{module_name}' has no attribute '{attr}'") from None


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise LandscapeError(f"entry point file not found: {path}")
    name = f"landscape_user_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LandscapeError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
    return module
