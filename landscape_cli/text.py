"""Text that came from a file, made safe to print: no terminal control sequences, no Rich markup.

A checkpoint's metadata, an HDF5 attribute or an entry point name recorded in a file can hold
escape sequences (``\\x1b]0;...`` retitles the terminal, others move the cursor or hide text) or
Rich markup (``[link=file:///etc/shadow]``). Every string that reaches the terminal from a file
goes through `printable`; Rich tables get `literal` so that brackets are shown, not interpreted.
"""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, and the C1 controls (0x80-0x9f, which some terminals
# read as escape sequences too).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: object, keep_newlines: bool = True) -> str:
    """`text` as a string whose control characters are shown as escapes (\\x1b), not sent."""
    s = str(text)
    s = _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], s)
    if not keep_newlines:
        s = s.replace("\n", "\\n")
    return s


def literal(text: object):  # -> rich.text.Text, imported lazily to keep `--help` fast
    """A Rich `Text` of `text` made printable: Rich shows it as is, markup and all."""
    from rich.text import Text

    return Text(printable(text))


#: Width given to Rich when stdout is a file or a pipe: wide enough that no value is ever wrapped or cut.
PIPE_WIDTH = 10_000


def stdout_console():  # -> rich.console.Console
    """The console for results on stdout. On a terminal, Rich's own width; in a pipe or a CI log, a width
    no line reaches, so that values (a sha256, a path) are never wrapped or truncated."""
    import sys

    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPE_WIDTH, soft_wrap=True)


def print_json(payload: dict) -> None:
    """JSON for scripts on stdout (numpy numbers as floats)."""
    import json

    print(json.dumps(payload, indent=2, default=float))
