"""Click's exception classes, wherever this Typer keeps them (vendored since Typer 0.22)."""

import typer

try:
    from typer._click import exceptions as _exc
except ImportError:  # Typer that depends on the click package
    import click.exceptions as _exc  # type: ignore[no-redef]

ClickException = _exc.ClickException
NoArgsIsHelpError = getattr(_exc, "NoArgsIsHelpError", _exc.UsageError)
Exit = getattr(_exc, "Exit", typer.Exit)
Abort = getattr(_exc, "Abort", typer.Abort)

__all__ = ["Abort", "ClickException", "Exit", "NoArgsIsHelpError"]
