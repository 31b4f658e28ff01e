"""`landscape train`: SGD training that writes self-describing checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import LandscapeError
from ..session import resolve_device, resolve_dtype
from ..train import TrainConfig, train_model
from ..zoo.data import data_spec
from ..zoo.models import model_spec
from . import common as c

OPT = "Optimization"


def train_command(
    out: Annotated[Path, typer.Option("--out", help="Run directory for the checkpoints.")],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Built-in model (mlp, cnn, resnet) or entry point 'pkg.module:factory'.",
            rich_help_panel=c.PROBLEM_PANEL,
        ),
    ] = "mlp",
    model_arg: c.ModelArgOpt = None,
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="digits, gaussian-mixture, spirals, teacher-student, a .npz/.pt file or an entry point.",
            rich_help_panel=c.PROBLEM_PANEL,
        ),
    ] = "digits",
    data_arg: c.DataArgOpt = None,
    loss: Annotated[
        str, typer.Option("--loss", help="cross_entropy or mse.", rich_help_panel=c.PROBLEM_PANEL)
    ] = "cross_entropy",
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.", rich_help_panel=OPT)] = 0.1,
    momentum: Annotated[float, typer.Option("--momentum", help="Heavy-ball momentum.", rich_help_panel=OPT)] = 0.0,
    nesterov: Annotated[bool, typer.Option("--nesterov", help="Nesterov momentum.", rich_help_panel=OPT)] = False,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="L2 weight decay.", rich_help_panel=OPT)] = 0.0,
    batch_size: Annotated[
        str,
        typer.Option(
            "--batch-size", help="Mini-batch size, or 'full' for full-batch gradient descent.", rich_help_panel=OPT
        ),
    ] = "128",
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", help="Epochs to train (default 10 when --steps is not given).", rich_help_panel=OPT),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps to train.", rich_help_panel=OPT)] = None,
    save_every: Annotated[
        int | None,
        typer.Option(
            "--save-every",
            help="Also save a checkpoint every N steps (the final one is always saved).",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", help="Seed of the initialization and of the mini-batch order.", rich_help_panel=c.COMPUTE_PANEL
        ),
    ] = 0,
    device: c.DeviceOpt = "auto",
    dtype: c.DtypeOpt = "float32",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run directory.", rich_help_panel=c.OUTPUT_PANEL)
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", help="Do not log each saved checkpoint on stderr.", rich_help_panel=c.OUTPUT_PANEL
        ),
    ] = False,
) -> None:
    """Train a model with SGD (momentum, weight decay; mini-batch or full batch) and save checkpoints.

    Writes <out>/final.pt and, with --save-every, <out>/step_NNNNNNN.pt, in the native format that
    every other command reads.
    """
    if batch_size == "full":
        size: int | None = None
    else:
        try:
            size = int(batch_size)
        except ValueError:
            raise LandscapeError(f"--batch-size must be a positive integer or 'full', got '{batch_size}'") from None
    if epochs is None and steps is None:
        epochs = 10
    config = TrainConfig(
        model=model_spec(model, c.parse_kv(model_arg, "--model-arg")),
        data=data_spec(data, "train", seed, c.parse_kv(data_arg, "--data-arg")),
        out_dir=out,
        loss=loss,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        batch_size=size,
        epochs=epochs,
        steps=steps,
        save_every=save_every,
        seed=seed,
        device=str(resolve_device(device)),
        dtype=resolve_dtype(dtype),
    )
    if loss not in ("cross_entropy", "mse"):
        raise LandscapeError(f"unknown loss '{loss}'; choose cross_entropy or mse")
    final = train_model(
        config, log=(lambda _: None) if quiet else (lambda line: typer.echo(line, err=True)), overwrite=overwrite
    )
    typer.echo(str(final))
