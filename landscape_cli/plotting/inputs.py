"""What a path given to `landscape plot` holds: a surface, a spectrum, a training or sharpness log or a run
directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py

from ..errors import LandscapeError
from ..hdf5 import open_results

#: The training log's name inside a run directory (the name `landscape train` gives it).
LOG_NAME = "train.h5"

SURFACE, SPECTRUM, TRAIN_LOG = "surface", "spectrum", "train-log"
#: A SharpnessTracker's log (HDF5, or its CSV table): drawn as a training log's sharpness panels.
SHARPNESS_LOG = "sharpness-log"


@dataclass(frozen=True)
class Source:
    """One input: the path as given, the HDF5 file to read, what it holds, and the stem of its figures."""

    path: Path
    file: Path
    kind: str
    stem: str


def detect(path: Path) -> Source:
    """Classify `path`, or raise LandscapeError saying why it cannot be plotted."""
    if path.is_dir():
        log = path / LOG_NAME
        if not log.is_file():
            raise LandscapeError(f"{path} is a directory without {LOG_NAME}, so not a run directory")
        kind = _kind(log)
        if kind != TRAIN_LOG:
            raise LandscapeError(f"{log} is not a training log (kind '{kind}')")
        return Source(path, log, TRAIN_LOG, path.resolve().name or "run")
    if path.suffix.lower() == ".csv":
        return Source(path, path, SHARPNESS_LOG, path.stem)
    return Source(path, path, _kind(path), figure_stem(path))


#: Suffixes landscape's default output names carry, dropped from figure names: mlp.surface2d.h5 draws
#: mlp_2d_contour.png, not mlp.surface2d_2d_contour.png.
DEFAULT_SUFFIXES = (".surface1d", ".surface2d", ".spectrum")


def figure_stem(path: Path) -> str:
    stem = path.stem
    for suffix in DEFAULT_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _kind(path: Path) -> str:
    with open_results(path) as f:
        kind = f.attrs.get("kind")
        if isinstance(kind, bytes):
            kind = kind.decode(errors="replace")
        if kind in (SURFACE, SPECTRUM, TRAIN_LOG, SHARPNESS_LOG):
            return str(kind)
        if kind is None and is_bare_surface(f):
            return SURFACE
    what = f"its kind is '{kind}'" if kind is not None else "it has no kind attribute and no xcoordinates and *_loss"
    raise LandscapeError(
        f"{path} is not a results file landscape can plot ({what}); expected a surface, spectrum, training or "
        "sharpness log"
    )


def is_bare_surface(f: h5py.File) -> bool:
    """A surface written by Li et al.'s code: `xcoordinates` and a `*_loss` dataset, no attributes of ours."""
    return isinstance(f.get("xcoordinates"), h5py.Dataset) and any(
        name.endswith("_loss") and isinstance(f.get(name), h5py.Dataset) for name in f
    )
