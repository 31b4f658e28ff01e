"""SIGTERM as an exception where there is something to clean up, so that a terminated run cleans up
exactly as an interrupted one does: a temporary file removed, a replaced run directory restored.

Only there: a Python-level handler runs between bytecodes, so a process stuck in a C library (a damaged
HDF5 file can send libhdf5 into a loop) would ignore SIGTERM if the handler were installed for the whole
run. Outside these sections SIGTERM keeps its default action, and nothing is left half-done by it.
Nested sections keep the handler until the outermost one ends."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(BaseException):
    """The process received SIGTERM (a BaseException, like KeyboardInterrupt, so `except Exception`
    handlers do not swallow it)."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises `Terminated`; the previous handler comes back afterwards.
    Only the main thread can install handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.getsignal(signal.SIGTERM)
    if getattr(previous, "__qualname__", "").startswith("sigterm_raises"):  # nested: the outer one handles it
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
