"""Exclusive locks on outputs, so that two runs writing one file or one run directory cannot interleave.

The second writer is refused at once with the holder's process id; nothing waits. Locks are
`flock`s on small files in a private per-user directory (not beside the output, which may not
exist yet and should not collect clutter), keyed by the output's resolved path. The kernel drops a
lock when its process dies, so a `kill -9` never leaves a stale one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import LandscapeError

try:
    import fcntl
except ImportError:  # not POSIX: no locking, as before
    fcntl = None  # type: ignore[assignment]


def lock_dir() -> Path:
    """$XDG_RUNTIME_DIR/landscape-locks or <tmp>/landscape-locks-<uid>, private to this user."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    base = Path(runtime) / "landscape-locks" if runtime and os.path.isdir(runtime) else None
    if base is None:
        base = Path(tempfile.gettempdir()) / f"landscape-locks-{uid}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(base)
    except OSError as exc:
        raise LandscapeError(f"cannot create the lock directory {base}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != uid):
        raise LandscapeError(f"{base} is not a directory of this user; remove it (it holds landscape's locks)")
    return base


def key_of(path: Path) -> str:
    """The resolved path (symbolic links and '..' followed as far as they exist)."""
    return os.path.realpath(os.path.abspath(path))


class _Lock:
    def __init__(self, target: Path) -> None:
        self.target = target
        self.key = key_of(target)
        self.file = lock_dir() / (hashlib.sha256(self.key.encode()).hexdigest()[:32] + ".lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        for _ in range(20):
            fd = os.open(self.file, flags, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").split("\n")[0].strip()
                os.close(fd)
                who = f" (process {holder})" if holder.isdigit() else ""
                raise LandscapeError(
                    f"another landscape run is writing {self.target}{who}; wait for it to finish or choose "
                    "another output"
                ) from None
            # The holder before us may have unlinked the file after we opened it: then our lock is on a
            # file nobody else will find. Lock the file that is at the path now instead.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.file).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n{self.key}\n".encode(), 0)
                self.fd = fd
                return
            os.close(fd)
        raise LandscapeError(f"could not lock {self.target}: the lock file keeps changing")

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.file)  # while still holding the lock, so no one else holds the unlinked file
        os.close(self.fd)
        self.fd = None


@contextlib.contextmanager
def exclusive(paths: Sequence[Path]) -> Iterator[None]:
    """Hold an exclusive lock on every path for the block; refuse at once if another process holds one."""
    if fcntl is None or not paths:
        yield
        return
    unique = {key_of(p): p for p in paths}
    locks = [_Lock(unique[k]) for k in sorted(unique)]
    held: list[_Lock] = []
    try:
        for lock in locks:
            lock.acquire()
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()
