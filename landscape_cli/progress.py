"""Progress on stderr: a bar on a terminal; in a log (stderr not a terminal), a plain line at most every
30 s once the work has run 30 s, so a cluster job does not look hung and short runs print nothing;
nothing with --quiet."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Tracker:
    """A handle the numerical code can call without knowing whether anything is displayed."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._task: int | None = None

    def start(self, description: str, total: int | None) -> None:
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=total)

    def update(self, completed: int, total: int | None = None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, total=total)


#: Seconds of work before the first plain progress line, and between lines.
PLAIN_INTERVAL_S = 30.0


class LogTracker(Tracker):
    """Plain progress lines for logs, rate-limited."""

    def __init__(self, interval: float = PLAIN_INTERVAL_S) -> None:
        super().__init__(None)
        self.interval = interval
        self.started = time.monotonic()
        self.last = self.started
        self.description = ""
        self.total: int | None = None

    def start(self, description: str, total: int | None) -> None:
        self.description, self.total = description, total

    def update(self, completed: int, total: int | None = None) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        total = total if total is not None else self.total
        count = f"{completed}/{total}" if total else str(completed)
        elapsed = int(now - self.started)
        print(f"landscape: {self.description} {count} ({elapsed // 60}m{elapsed % 60:02d}s)", file=sys.stderr,
              flush=True)  # fmt: skip


@contextmanager
def progress_bar(quiet: bool = False) -> Iterator[Tracker]:
    """A bar on a terminal, plain lines in a log, nothing with `quiet` or on ranks other than 0 (torchrun)."""
    if quiet or os.environ.get("RANK", "0") != "0":
        yield Tracker(None)
        return
    if not sys.stderr.isatty():
        yield LogTracker()
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        yield Tracker(progress)
