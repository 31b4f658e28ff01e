"""Reading HDF5 results files safely, without torch: the one way every command opens a results file.

Only regular files; no external links or virtual datasets (they would read files the user never named);
a damaged global heap (which hangs libhdf5) refused first; and a failure to find or convert what the
caller expects is reported as the file's fault, in one line. Text attributes come back printable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import LandscapeError
from .files import require_regular_file
from .hdf5check import check_global_heaps, is_hdf5
from .text import printable

#: Links and objects a results file may hold before it is refused as not ours (a file of ours has dozens).
MAX_OBJECTS = 100_000


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
    if not is_hdf5(path):
        raise LandscapeError(f"{path} is not a readable HDF5 file (no HDF5 signature); give a results file")
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
