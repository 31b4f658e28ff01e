"""Input files checked before they are read: a regular file (a FIFO would hang the read, a device never
end), a zip archive whose members match their checksums and fit in memory, and the file's digest."""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from pathlib import Path

from .errors import LandscapeError
from .limits import require_memory


def require_regular_file(path: Path, what: str = "file") -> None:
    """Refuse a missing path, a directory, and anything that is not a regular file (a FIFO would hang the
    read, a device would never end)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise LandscapeError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise LandscapeError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise LandscapeError(f"{path} is a directory, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise LandscapeError(f"{path} is not a regular file (a pipe, socket or device); give a {what}")
    if not os.access(path, os.R_OK):
        raise LandscapeError(f"cannot read {path}: permission denied")


def verify_archive(path: Path) -> None:
    """A zip checkpoint's members are checked against their CRCs (torch.load does not, so a flipped bit
    would silently change a weight) and their unpacked size against the memory limit (a compressed member
    could unpack to gigabytes). Files in torch's legacy format have no checksums and pass as they are."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            require_memory(f"unpacking {path}", sum(m.file_size for m in members))
            bad = archive.testzip()
    except LandscapeError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise LandscapeError(f"{path} is truncated or corrupt ({str(exc)[:120] or type(exc).__name__})") from None
    if bad is not None:
        raise LandscapeError(f"{path} is corrupt: {bad} fails its checksum (a damaged copy?)")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
