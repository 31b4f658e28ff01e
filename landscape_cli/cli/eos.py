"""`landscape eos`: where a checkpoint, or every tracked step of a run, sits relative to the edge of
stability of its own optimizer."""

import math
from pathlib import Path
from typing import Annotated

import typer

from ..atomic import atomic_path, check_outputs, claim_outputs
from ..errors import LandscapeError
from . import common as c

OPT = "Optimizer (overrides what the checkpoint or run records)"
EDGE = "Edge"


def eos_command(
    target: Annotated[
        Path,
        typer.Argument(
            help="A checkpoint (.pt), a run directory (or its train.h5), or a SharpnessTracker's log (.h5)."
        ),
    ],
    opt: Annotated[str | None, typer.Option("--opt", help="sgd, sam, usam, ssam or msam.", rich_help_panel=OPT)] = None,
    base: Annotated[str | None, typer.Option("--base", help="sgd or adam.", rich_help_panel=OPT)] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate.", rich_help_panel=OPT)] = None,
    momentum: Annotated[
        float | None, typer.Option("--momentum", help="Heavy-ball momentum.", rich_help_panel=OPT)
    ] = None,
    nesterov: Annotated[
        bool | None, typer.Option("--nesterov/--no-nesterov", help="Nesterov momentum.", rich_help_panel=OPT)
    ] = None,
    rho: Annotated[float | None, typer.Option("--rho", help="SAM radius.", rich_help_panel=OPT)] = None,
    beta1: Annotated[float | None, typer.Option("--beta1", help="Adam's beta1.", rich_help_panel=OPT)] = None,
    micro_batches: Annotated[
        int | None, typer.Option("--micro-batches", help="mSAM's micro-batches.", rich_help_panel=OPT)
    ] = None,
    band: Annotated[
        float,
        typer.Option("--band", help="'at the edge' means within this relative distance of it.", rich_help_panel=EDGE),
    ] = 0.1,
    fail_above: Annotated[
        float | None,
        typer.Option(
            "--fail-above",
            help="Exit 1 when sharpness / edge exceeds R (for a run: at its last tracked step).",
            rich_help_panel=EDGE,
        ),
    ] = None,
    after: Annotated[
        int, typer.Option("--after", help="Runs: count the fraction at the edge from this step.", rich_help_panel=EDGE)
    ] = 0,
    tol: Annotated[float, typer.Option("--tol", help="Lanczos tolerance (relative).", rich_help_panel=EDGE)] = 1e-4,
    max_iter: Annotated[
        int, typer.Option("--max-iter", help="Lanczos iterations at most.", rich_help_panel=EDGE)
    ] = 200,
    model: c.ModelOpt = None,
    model_arg: c.ModelArgOpt = None,
    data: c.DataOpt = None,
    data_arg: c.DataArgOpt = None,
    split: c.SplitOpt = None,
    loss: c.LossOpt = None,
    ignore_index: c.IgnoreIndexOpt = -100,
    label_smoothing: c.LabelSmoothingOpt = 0.0,
    samples: c.SamplesOpt = None,
    train_mode: c.TrainModeOpt = False,
    batch_size: c.BatchSizeOpt = 2048,
    hvp: c.HvpOpt = "auto",
    device: c.DeviceOpt = "auto",
    dtype: c.DtypeOpt = "float32",
    seed: c.SeedOpt = 0,
    trust_remote_code: c.TrustOpt = False,
    max_memory: c.MaxMemoryOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="HDF5 output. Default: <checkpoint name>.eos.h5 beside the checkpoint, or eos.h5 in the run "
            "directory; an existing directory takes that name inside it.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None,
    overwrite: c.OverwriteOpt = False,
    json_out: c.JsonOpt = False,
    quiet: c.QuietOpt = False,
) -> None:
    """Sharpness against the edge of stability of the checkpoint's (or run's) own optimizer: 2/lr for GD,
    (2+2b)/lr with momentum, Nesterov's, 38/lr for Adam's preconditioned sharpness, SAM's edge that moves
    with the gradient norm, USAM's, SSAM's (2/lr) and mSAM's. Exit 1 with --fail-above when above it.
    """
    from ..api import landscape_of
    from ..eos.run import log_path, run_edges, summarize_run
    from ..eos.setting import OptimizerSetting
    from ..eos.store import write_eos_checkpoint, write_eos_run
    from ..progress import progress_bar
    from ..report import print_eos, print_eos_run
    from ..results import provenance
    from ..spectrum import validate_lanczos
    from ..text import print_json

    if not 0 < band < math.inf:
        raise LandscapeError(f"--band must be positive and finite, got {band}")
    if fail_above is not None and not 0 < fail_above < math.inf:
        raise LandscapeError(f"--fail-above must be positive and finite, got {fail_above}")
    if after < 0:
        raise LandscapeError(f"--after must be a step (0 or more), got {after}")
    overrides = {
        "opt": opt,
        "base": base,
        "lr": lr,
        "momentum": momentum,
        "nesterov": nesterov,
        "rho": rho,
        "beta1": beta1,
        "micro_batches": micro_batches,
    }
    validate_lanczos(tol, max_iter)
    OptimizerSetting().override(**overrides).validate()  # a bad value is refused before anything is loaded
    is_run = target.is_dir() or target.suffix.lower() in (".h5", ".hdf5", ".csv")
    if is_run:
        log_path(target)  # a run without a log, or a CSV table, is refused before any output is checked
    default = target / "eos.h5" if target.is_dir() else target.with_name(f"{target.stem}.eos.h5")
    path = c.results_path(out, target.parent / "eos.h5" if target.name == "train.h5" else default)
    inputs = c.named_inputs(target, model, data, c.loss_file(loss))
    if is_run:
        with claim_outputs([path], inputs, overwrite):
            edges = run_edges(target, overrides)
            summary = summarize_run(edges, band, after)
            with atomic_path(path, overwrite=overwrite) as tmp:
                write_eos_run(tmp, edges, summary, c.command_line())
        ratio = summary["final"]["ratio"]
        if json_out:
            print_json({**summary, "output": str(path)})
        else:
            print_eos_run(edges, summary, target.name, str(path))
    else:
        ckpt = c.open_checkpoint(
            target,
            model,
            model_arg,
            data,
            data_arg,
            loss,
            seed,
            trust_remote_code,
            max_memory,
            loss_options=c.loss_options(ignore_index, label_smoothing),
        )
        # an optimizer without a formula fails here, before the model and data are loaded
        OptimizerSetting.from_checkpoint(ckpt.optimizer).override(**overrides).rule()
        check_outputs([path], inputs, overwrite)
        with claim_outputs([path], inputs + c.recorded_inputs(ckpt), overwrite):
            scape = landscape_of(ckpt, split, samples, batch_size, device, dtype, seed, train_mode, hvp)
            with progress_bar(quiet) as tracker:
                result = scape.eos(band=band, tol=tol, max_iter=max_iter, seed=seed, tracker=tracker, **overrides)
            with atomic_path(path, overwrite=overwrite) as tmp:
                write_eos_checkpoint(tmp, result, provenance(ckpt, result.problem, seed, c.command_line()))
        ratio = result.ratio
        if json_out:
            print_json({**result.__dict__, "output": str(path)})
        else:
            print_eos(result, target.name, str(path))
    if fail_above is not None and ratio > fail_above:
        typer.echo(f"sharpness / edge = {ratio:.4g} exceeds --fail-above {fail_above:g}", err=True)
        raise typer.Exit(1)
