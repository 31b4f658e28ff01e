"""The `landscape` command: thin Typer commands over library calls.

Errors the user can fix become one line on stderr and exit code 2; no tracebacks.
"""

from __future__ import annotations

import os
import sys

import typer

from .._version import __version__
from ..errors import LandscapeError
from . import common
from ._compat import Abort, ClickException, Exit, NoArgsIsHelpError
from .check import check_command
from .compare import compare_command
from .eos import eos_command
from .info import info_command
from .plot import plot_command
from .spectrum import spectrum_command
from .surface import surface_command
from .train import train_command

app = typer.Typer(
    name="landscape",
    help="Loss-landscape analysis of PyTorch models: Hessian spectra of checkpoints, and training that "
    "writes self-describing checkpoints. Exit codes: 0 success, 2 bad input or usage, 130 interrupted, "
    "1 internal error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("spectrum")(spectrum_command)
app.command("surface")(surface_command)
app.command("info")(info_command)
app.command("train")(train_command)
app.command("eos")(eos_command)
app.command("check")(check_command)
app.command("compare")(compare_command)
app.command("plot")(plot_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"landscape {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Loss-landscape analysis of PyTorch models."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning every user error into one line and exit code 2."""
    command = typer.main.get_command(app)
    argv = list(sys.argv[1:] if argv is None else argv)
    common.ARGV[:] = argv
    try:
        result = command.main(args=argv, prog_name="landscape", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        # Building the exception rendered the help: Typer's rich help is printed then (on stdout), plain
        # help is the message. Asking for it again would print the rich help a second time.
        message = exc.format_message()
        if message.strip():
            typer.echo(message, err=True)
        return 2
    except Exit as exc:
        return int(exc.exit_code)
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        where = f"landscape {ctx.info_name}" if ctx is not None and ctx.info_name != "landscape" else "landscape"
        typer.echo(f"error: {exc.format_message()} (see {where} --help)", err=True)
        return exc.exit_code if exc.exit_code else 2
    except LandscapeError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except (KeyboardInterrupt, Abort):
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:  # a bug in landscape: one line unless the user asks for the traceback
        if os.environ.get("LANDSCAPE_DEBUG"):
            raise
        typer.echo(
            f"error: internal error: {type(exc).__name__}: {exc} (set LANDSCAPE_DEBUG=1 for the traceback "
            "and please report it)",
            err=True,
        )
        return 1
    return result if isinstance(result, int) else 0
