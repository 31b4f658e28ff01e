"""What a run directory is, so that `train --overwrite` replaces only one of ours, and the backup an
interrupted replacement leaves behind."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ..errors import LandscapeError

LOG_NAME = "train.h5"
#: Files `landscape` writes into a run directory: the run's own, and results, figures and reports made
#: from it (spectra, surfaces, eos files, plots, JUnit/JSON reports), their partial sweeps and temporaries.
OURS = re.compile(
    r"(train\.h5|final\.pt|step_\d+\.pt"
    r"|[^/]+\.(h5|hdf5|png|pdf|svg|vtp|html|json|xml)"
    r"|[^/]+\.h5\.partial(\.points)?"
    r"|\.[^/]+\.\d+\.[^/]+\.tmp)"
)
BACKUP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.old")


def is_run_checkpoint(name: str) -> bool:
    return name == "final.pt" or re.fullmatch(r"step_\d+\.pt", name) is not None


def backup_path(out: Path) -> Path:
    """Where `--overwrite` keeps the previous run until the new one succeeds."""
    return out.with_name(f".{out.name}.{os.getpid()}.old")


def stale_backups(out: Path) -> list[Path]:
    """Backups of `out` left by an --overwrite run that was killed (SIGKILL, power loss)."""
    try:
        names = os.listdir(out.parent if str(out.parent) else ".")
    except OSError:
        return []
    found = []
    for name in names:
        match = BACKUP.fullmatch(name)
        if match and match.group("name") == out.name:
            found.append(out.with_name(name))
    return sorted(found)


def refuse_stale_backup(out: Path) -> None:
    """A killed `train --overwrite` left the previous run hidden beside `out`: say where, and how to restore
    it, before anything else touches `out`. (Called under the run's lock, so its writer is gone.)"""
    backups = stale_backups(out)
    if not backups:
        return
    old = backups[0]
    restore = f"rm -rf '{out}' && mv '{old}' '{out}'" if out.exists() else f"mv '{old}' '{out}'"
    raise LandscapeError(
        f"a 'train --overwrite' into {out} was killed before it finished and left the previous run in {old}: "
        f"restore it with: {restore}; or keep {out} as it is and delete {old}"
    )


def require_run_directory(out: Path) -> None:
    """Refuse to replace a directory that is not recognisably a run directory of ours: it must hold a
    training log or a checkpoint, and nothing but files landscape writes (no folders, no links)."""
    entries = sorted(os.listdir(out))
    hint = "--overwrite replaces only run directories of landscape train; remove it yourself or choose another --out"
    for name in entries:
        info = os.lstat(out / name)
        if stat.S_ISLNK(info.st_mode):
            raise LandscapeError(f"{out} holds a symbolic link, {name}; {hint}")
        if stat.S_ISDIR(info.st_mode):
            raise LandscapeError(f"{out} holds a folder, {name}; {hint}")
        if not stat.S_ISREG(info.st_mode) or not OURS.fullmatch(name):
            raise LandscapeError(f"{out} holds {name}, which landscape did not write; {hint}")
    if not any(name == LOG_NAME or is_run_checkpoint(name) for name in entries):
        raise LandscapeError(f"{out} is not a run directory (no {LOG_NAME} and no checkpoint of a run); {hint}")
