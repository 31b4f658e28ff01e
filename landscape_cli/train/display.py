"""What a run shows while it trains: a Rich live table on a terminal, plain lines otherwise."""

from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.live import Live
from rich.table import Table

COLUMNS = ("step", "epoch", "loss", "accuracy", "lr", "test_loss", "test_accuracy", "sharpness")


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or float(value).is_integer() and abs(value) > 1:
        return str(int(value))
    return f"{value:.4g}"


class Display:
    """Live table when stderr is a terminal; one plain line per evaluation otherwise; nothing if quiet."""

    def __init__(self, total_steps: int, quiet: bool = False) -> None:
        self.total = total_steps
        self.quiet = quiet
        self.live: Live | None = None
        self.state: dict[str, float] = {}
        self.console = Console(stderr=True)
        if not quiet and sys.stderr.isatty():
            self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=False)
            self.live.start()

    def _table(self) -> Table:
        table = Table(title=f"training: step {int(self.state.get('step', 0))}/{self.total}")
        for column in COLUMNS:
            table.add_column(column, justify="right")
        table.add_row(*(_fmt(self.state.get(c)) for c in COLUMNS))
        return table

    def update(self, **values: float) -> None:
        self.state.update(values)
        if self.live is not None:
            self.live.update(self._table())

    def line(self) -> None:
        """At evaluation points, print the state as one line when not live."""
        if self.quiet or self.live is not None:
            return
        print(" ".join(f"{c} {_fmt(self.state.get(c))}" for c in COLUMNS if c in self.state), file=sys.stderr)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
