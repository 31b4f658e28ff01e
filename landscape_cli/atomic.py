"""Write files so that a reader never sees half of one and a failure leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import LandscapeError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    The temporary file lives in the target's directory so the final rename is atomic on POSIX.
    On any exception (Ctrl-C included) the temporary file is removed and `target` is untouched.
    """
    target = Path(target)
    check_writable(target)
    if target.exists() and not overwrite:
        raise LandscapeError(f"{target} exists; pass --overwrite to replace it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LandscapeError(f"cannot create the directory of {target}: {exc.strerror or exc}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the final file the usual permissions
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: Path) -> None:
    """Fail when `path` could never become a file: it is a directory, or a parent is a file."""
    if path.is_dir():
        raise LandscapeError(f"{path} is a directory; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise LandscapeError(f"cannot write {path}: {parent} is not a directory")


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """Fail before any work is done when an output would clobber a file the user did not offer,
    or could not be written at all."""
    for path in paths:
        check_writable(path)
        if path.exists() and not overwrite:
            raise LandscapeError(f"{path} exists; pass --overwrite to replace it, or choose --out")
