"""Write files so that a reader never sees half of one and a failure leaves nothing behind, and check every
output before any work is done: writable, not a directory, not one of the command's inputs, not an
existing file unless the user said --overwrite, and not being written by another run at the same time.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path

from .errors import LandscapeError
from .locks import exclusive
from .signals import sigterm_raises

#: Longest file name we create: the output's name inside a temporary name (".{name}.{pid}.{random}.tmp").
_TEMP_OVERHEAD = 32


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    The temporary file lives in the target's directory so the final rename is atomic on POSIX; it is
    created exclusively (never through a planted link), and its name carries our process id so that
    a later run can remove what a killed one left. On any exception (Ctrl-C and SIGTERM included) the
    temporary file is removed and `target` is untouched.
    """
    target = Path(target)
    if not writes_files():
        with tempfile.TemporaryDirectory(prefix="landscape-rank-") as scratch:
            yield Path(scratch) / target.name  # written and dropped: rank 0 writes the file
        return
    check_writable(target)
    if target.exists() and not overwrite:
        raise LandscapeError(f"{target} exists; pass --overwrite to replace it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LandscapeError(f"cannot create the directory of {target}: {exc.strerror or exc}") from None
    remove_stale_temporaries(target)
    with sigterm_raises():
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give the final file the usual permissions
            yield tmp
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def writes_files() -> bool:
    """False on ranks other than 0 under torchrun (RANK), which compute alike but leave every file to rank 0."""
    return os.environ.get("RANK", "0") in ("", "0") or os.environ.get("WORLD_SIZE", "1") in ("", "0", "1")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temporaries(target: Path) -> None:
    """Delete temporary files of `target` left by processes that no longer exist (killed with -9)."""
    pattern = re.compile(re.escape(f".{target.name}.") + r"(\d+)\.[^/]+\.tmp")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return
    for name in names:
        found = pattern.fullmatch(name)
        if found and not _pid_alive(int(found.group(1))):
            with contextlib.suppress(OSError):
                leftover = target.parent / name
                if stat.S_ISREG(os.lstat(leftover).st_mode):
                    leftover.unlink()


def check_writable(path: Path) -> None:
    """Fail when `path` could never become a file: empty, a directory, a parent that is a file or that this
    user cannot write, or a name too long for the file system."""
    if str(path) in ("", ".") or not path.name:
        raise LandscapeError(f"'{path}' is not a file name; give a path such as results.h5")
    if path.is_dir():
        raise LandscapeError(f"{path} is a directory; give a file name")
    if path.exists() and not path.is_file() and not path.is_symlink():
        raise LandscapeError(f"{path} exists and is not a regular file; choose another output")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link: mkdir would fail on it
            raise LandscapeError(f"cannot write {path}: {parent} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise LandscapeError(f"cannot write {path}: {parent} is not a directory")
    _probe(parent, path, make_directory=parent != path.parent)
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    if len(path.name.encode()) + _TEMP_OVERHEAD > name_max:
        raise LandscapeError(f"cannot write {path}: the file name is too long")


def _probe(directory: Path, path: Path, make_directory: bool) -> None:
    """Create and remove a temporary file (or folder, where folders are still to be made) in `directory`:
    the only sure test that the output can be written (permissions say nothing for root, or on a read-only
    file system), made before any work so that a computation never ends in an unwritable place."""
    try:
        if make_directory:
            os.rmdir(tempfile.mkdtemp(prefix=".landscape-probe.", dir=directory))
        else:
            fd, name = tempfile.mkstemp(prefix=".landscape-probe.", dir=directory)
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        raise LandscapeError(f"cannot write {path}: {exc.strerror} in {directory}") from None


def same_file(a: Path, b: Path) -> bool:
    """True when `a` and `b` name one file (through links, '..' or hard links)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(os.path.abspath(a)) == os.path.realpath(os.path.abspath(b))


def check_outputs(outputs: Sequence[Path], inputs: Iterable[Path | None], overwrite: bool | Collection[Path]) -> None:
    """Fail before any work when an output could not be written, is one of the inputs (never replaced, even
    with --overwrite), would clobber a file without --overwrite, or is named twice. `overwrite`: for every
    output, or the outputs that may be replaced."""
    if os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1"):
        _check_on_rank_zero(outputs, inputs, overwrite)
        return
    _check_outputs(outputs, inputs, overwrite)


def _check_on_rank_zero(outputs: Sequence[Path], inputs: Iterable[Path | None], overwrite: bool | Collection[Path]
                        ) -> None:  # fmt: skip
    """Under torchrun rank 0 checks (the others would see its files appear) and every rank stops on its
    refusal, printed once."""
    from .distributed import broadcast_object, current, raise_everywhere

    refusal = None
    if writes_files():
        try:
            _check_outputs(outputs, inputs, overwrite)
        except LandscapeError as exc:
            refusal = str(exc)
    raise_everywhere(broadcast_object(refusal, current()))


def _check_outputs(outputs: Sequence[Path], inputs: Iterable[Path | None], overwrite: bool | Collection[Path]
                   ) -> None:  # fmt: skip
    sources = [p for p in inputs if p is not None]
    for i, path in enumerate(outputs):
        check_writable(path)
        for source in sources:
            if same_file(path, source) or _inside(source, path):
                raise LandscapeError(f"the output {path} is one of the inputs ({source}); choose another output")
        for other in outputs[:i]:
            if same_file(path, other):
                raise LandscapeError(f"two outputs would both be written to {path}; choose another output")
        replaceable = overwrite if isinstance(overwrite, bool) else path in overwrite
        if (path.exists() or path.is_symlink()) and not replaceable:
            raise LandscapeError(f"{path} exists; pass --overwrite to replace it, or choose another output")


def _inside(source: Path, output: Path) -> bool:
    """An input directory (a run directory) is an input too: an output may not replace it or a parent of it."""
    if not source.is_dir():
        return False
    src = os.path.realpath(source)
    out = os.path.realpath(os.path.abspath(output))
    return src == out or src.startswith(out.rstrip(os.sep) + os.sep)


@contextlib.contextmanager
def claim_outputs(
    outputs: Sequence[Path], inputs: Iterable[Path | None] = (), overwrite: bool | Collection[Path] = False
) -> Iterator[None]:
    """Check the outputs, then hold an exclusive lock on each for the block (a second writer is refused at
    once), checking them again under the lock, where another run may just have written one."""
    sources = list(inputs)
    check_outputs(outputs, sources, overwrite)
    if not writes_files():
        yield  # rank 0 holds the locks
        return
    with exclusive(list(outputs)):
        _check_outputs(outputs, sources, overwrite)
        yield


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """Fail before any work is done when an output would clobber a file the user did not offer,
    or could not be written at all."""
    check_outputs(paths, (), overwrite)
