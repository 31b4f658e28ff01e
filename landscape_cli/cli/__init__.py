"""The `landscape` command: thin Typer commands over library calls.

Errors the user can fix become one line on stderr and exit code 2; no tracebacks.
"""

import contextlib
import contextvars
import errno
import functools
import os
import sys
import warnings

import typer

from .._version import __version__
from ..errors import LandscapeError, LandscapeWarning, ParameterError, ParameterWarning
from ..signals import Terminated
from ..text import printable
from . import common
from ._compat import Abort, ClickException, Exit, NoArgsIsHelpError
from .check import check_command
from .compare import compare_command
from .eos import eos_command
from .info import info_command
from .plot import plot_command
from .report import report_command
from .sharpness import sharpness_command
from .spectrum import spectrum_command
from .surface import surface_command
from .train import train_command

app = typer.Typer(
    name="landscape",
    help="Loss-landscape analysis of PyTorch models: Hessian spectra, loss surfaces and figures, the edge of "
    "stability, sharpness gates for CI, and sharpness-aware training with self-describing checkpoints. Exit codes: "
    "0 success, 1 a gate failed, 2 bad input or usage, 3 internal error (--debug shows the traceback), "
    "130 interrupted, 143 terminated.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # paragraphs reflow; brackets such as [tool.landscape.check] are shown as they are
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("spectrum")(spectrum_command)
app.command("surface")(surface_command)
app.command("info")(info_command)
app.command("train")(train_command)
app.command("sharpness")(sharpness_command)
app.command("eos")(eos_command)
app.command("check")(check_command)
app.command("compare")(compare_command)
app.command("plot")(plot_command)
app.command("report")(report_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"landscape {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback of an internal error (also accepted after the command)."
    ),
) -> None:
    """Loss-landscape analysis of PyTorch models."""


#: Exit codes, as `--help` and the README state them.
EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143
#: Errors of the environment rather than of landscape: the user can act on them (free space, permissions).
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EMFILE}


@functools.lru_cache(maxsize=1)
def _click_command():  # -> click.Command; built once per process
    """The Click command tree, with the help's metavars made plain: flags show no `<bool>`, arguments their
    name in capitals (CHECKPOINT, not {checkpoint}). Only these objects change, nothing of Typer's."""
    group = typer.main.get_command(app)
    for command in [group, *group.commands.values()]:
        for param in command.params:
            _plain_metavar(param)
        make_help = command.get_help_option

        def help_option(ctx, make_help=make_help):
            option = make_help(ctx)
            if option is not None:
                option.metavar = ""
            return option

        command.get_help_option = help_option
    return group


#: Options whose value may be left out: the value they then take, and the values they accept. (Typer's
#: parser has no optional option values; the command line is completed before it parses.)
OPTIONAL_VALUES = {"--per-layer": ("tensor", ("tensor", "module"))}


def _complete_optional_values(args: list[str]) -> list[str]:
    """'--per-layer' not followed by one of its values becomes '--per-layer tensor'."""
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg in OPTIONAL_VALUES:
            default, accepted = OPTIONAL_VALUES[arg]
            if i + 1 == len(args) or args[i + 1] not in accepted:
                out.append(default)
    return out


def _plain_metavar(param) -> None:
    if getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""
    elif param.param_type_name == "argument":
        param.__class__ = type("PlainArgument", (param.__class__,), {"_usage_display_name": _argument_usage})
        param.metavar = param.metavar or param.name.upper()


def _argument_usage(self) -> str:
    name = self.metavar or self.name.upper()
    name = name if self.required else f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


_python_showwarning = warnings.showwarning


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise): only rank 0 prints results, warnings and progress."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings as one 'warning:' line on stderr; anything else as Python shows it."""
    if _rank() != 0:
        return
    if issubclass(category, LandscapeWarning):
        text = message.for_cli() if isinstance(message, ParameterWarning) else str(message)
        typer.echo(f"warning: {printable(text, keep_newlines=False)}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


def _error(message: str, exc: BaseException | None = None) -> None:
    """One 'error:' line; under torchrun ranks other than 0 name themselves, and stay silent on a refusal
    every rank reached alike (rank 0 prints it)."""
    rank = _rank()
    if rank != 0 and getattr(exc, "on_every_rank", False):
        return
    where = f"rank {rank}: " if rank != 0 else ""
    typer.echo(f"error: {where}{printable(message, keep_newlines=False)}", err=True)


def _pop_option(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    """The value of a global option (`--dist-backend gloo` or `--dist-backend=gloo`) and argv without it."""
    value, rest, i = None, [], 0
    while i < len(argv):
        if argv[i] == name and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith(name + "="):
            value = argv[i].split("=", 1)[1]
        else:
            rest.append(argv[i])
        i += 1
    return value, rest


def _run_command(command, argv: list[str], backend: str | None):  # noqa: ANN001, ANN202
    """The command, inside the torchrun process group when launched as one of several ranks (NCCL on CUDA,
    Gloo on CPUs, or --dist-backend); ranks other than 0 print nothing but their own errors (after the command)."""
    launched = os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1")
    if not launched:
        return command.main(args=argv, prog_name="landscape", standalone_mode=False)
    from .. import distributed

    distributed.init_from_env(backend or os.environ.get("LANDSCAPE_DIST_BACKEND") or "auto")
    try:
        if _rank() == 0:
            return command.main(args=argv, prog_name="landscape", standalone_mode=False)
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return command.main(args=argv, prog_name="landscape", standalone_mode=False)
    finally:
        distributed.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Entry point. Exit codes: 0 success, 1 a gate failed (check, compare, eos --fail-above), 2 bad input or
    usage, 3 internal error (a bug in landscape; the traceback with --debug), 130 interrupted, 143 terminated."""
    command = _click_command()
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:split] or bool(os.environ.get("LANDSCAPE_DEBUG"))
    backend, options = _pop_option([a for a in argv[:split] if a != "--debug"], "--dist-backend")
    argv = _complete_optional_values(options) + argv[split:]
    common.ARGV[:] = argv
    try:
        # A context of its own: settings a command makes for its duration (the memory limit) end with it.
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            warnings.simplefilter("always", LandscapeWarning)
            result = contextvars.copy_context().run(_run_command, command, argv, backend)
    except NoArgsIsHelpError as exc:
        # Building the exception rendered the help: Typer's rich help is printed then (on stdout), plain
        # help is the message. Asking for it again would print the rich help a second time.
        message = exc.format_message()
        if message.strip():
            typer.echo(message, err=True)
        return EXIT_BAD_INPUT
    except Exit as exc:
        return int(exc.exit_code)
    except ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        where = f"landscape {ctx.info_name}" if ctx is not None and ctx.info_name != "landscape" else "landscape"
        _error(f"{exc.format_message()} (see {where} --help)")
        return EXIT_BAD_INPUT
    except LandscapeError as exc:
        _error(exc.for_cli() if isinstance(exc, ParameterError) else str(exc), exc)
        return EXIT_BAD_INPUT
    except (KeyboardInterrupt, Abort):
        typer.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except Terminated:
        typer.echo("terminated", err=True)
        return EXIT_TERMINATED
    except Exception as exc:
        if debug:
            raise
        known = _environment_error(exc)
        if known is not None:
            if not (_rank() != 0 and _lost_another_rank(exc)):  # rank 0 says it; the one that failed says why
                _error(known)
            return EXIT_BAD_INPUT
        # a bug in landscape: one line, and the traceback on request
        _error(f"internal error: {type(exc).__name__}: {exc} (run again with --debug for the traceback, and please "
               "report it)")  # fmt: skip
        return EXIT_INTERNAL
    return result if isinstance(result, int) else EXIT_OK


def _lost_another_rank(exc: Exception) -> bool:
    """A collective that failed because a peer process is gone (torchrun then stops this one too)."""
    if os.environ.get("WORLD_SIZE", "1") in ("", "0", "1"):
        return False
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = str(exc).lower()
    return bool(names & {"DistError", "DistBackendError", "DistNetworkError", "DistStoreError"}) or (
        isinstance(exc, RuntimeError) and any(w in text for w in ("gloo", "nccl", "connection reset", "timed out"))
    )


def _environment_error(exc: Exception) -> str | None:
    """A message for failures the user can fix outside landscape (memory, disk space, permissions), else None."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        first = str(exc).splitlines()[0] if str(exc) else "out of memory"
        return f"out of memory ({first[:160]}); lower --batch-size or --samples, or use a larger machine"
    if _lost_another_rank(exc):
        return ("lost contact with another rank, which failed or was stopped (its own line says why); a stopped "
                "surface sweep continues with --resume")  # fmt: skip
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot write{where}: {exc.strerror}"
    return None
