"""What a run shows while it trains: a Rich live table on a terminal, plain lines otherwise.

The live table is transient (it leaves no ghost behind) and every message of the run (a checkpoint
written) goes through its console, so nothing else writes over it. Measured values (evaluation,
sharpness) are shown with the step they were measured at, and a plain line carries a measurement only
at the step it was made, never a stale value repeated as if fresh.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

from rich.console import Console
from rich.live import Live
from rich.table import Table

#: Mini-batch values, updated every step.
STEP_COLUMNS = ("step", "epoch", "loss", "accuracy", "lr")
#: Values measured every so often (full evaluation, sharpness tracking).
MEASURED_COLUMNS = ("test_loss", "test_accuracy", "sharpness")


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


class Display:
    """Live table when stderr is a terminal; one plain line per evaluation otherwise; nothing if quiet."""

    def __init__(self, total_steps: int, quiet: bool = False, echo: Callable[[str], None] | None = None) -> None:
        self.total = total_steps
        self.quiet = quiet
        self.echo = echo or (lambda text: print(text, file=sys.stderr))
        self.live: Live | None = None
        self.state: dict[str, float] = {}
        self.measured_at: dict[str, int] = {}  # column -> the step its value was measured at
        self.fresh: set[str] = set()  # measured since the last plain line
        self.console = Console(stderr=True)
        if not quiet and sys.stderr.isatty():
            self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=True)
            self.live.start()

    def _table(self) -> Table:
        table = Table(title=f"training: step {int(self.state.get('step', 0))}/{self.total}")
        for column in (*STEP_COLUMNS, *MEASURED_COLUMNS):
            table.add_column(column, justify="right")
        measured = [
            _fmt(self.state.get(c)) + (f" @{self.measured_at[c]}" if c in self.measured_at else "")
            for c in MEASURED_COLUMNS
        ]
        table.add_row(*(_fmt(self.state.get(c)) for c in STEP_COLUMNS), *measured)
        return table

    def update(self, **values: float) -> None:
        """Values of the current step (mini-batch loss, accuracy, lr, step, epoch)."""
        self.state.update(values)
        if self.live is not None:
            self.live.update(self._table())

    def measured(self, step: int, **values: float) -> None:
        """Values measured at `step` (evaluation, sharpness): shown with their step, printed once."""
        self.state.update(values)
        for key in values:
            self.measured_at[key] = step
            self.fresh.add(key)
        self.update(step=step)

    def line(self) -> None:
        """At evaluation points, the state as one plain line when not live: the step's values and what was
        measured at this step."""
        if self.quiet or self.live is not None:
            self.fresh.clear()
            return
        shown = [c for c in STEP_COLUMNS if c in self.state] + [c for c in MEASURED_COLUMNS if c in self.fresh]
        self.echo(" ".join(f"{c} {_fmt(self.state.get(c))}" for c in shown))
        self.fresh.clear()

    def log(self, text: str) -> None:
        """A message of the run, above the live table (or as a line)."""
        if self.quiet:
            return
        if self.live is not None:
            self.live.console.print(text, markup=False, highlight=False)
        else:
            self.echo(text)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
