"""Progress bars on stderr that stay silent when stderr is not a terminal or with --quiet."""

from __future__ import annotations

import sys
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


@contextmanager
def progress_bar(quiet: bool = False) -> Iterator[Tracker]:
    enabled = not quiet and sys.stderr.isatty()
    if not enabled:
        yield Tracker(None)
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
