"""`landscape compare BASE NEW`: the same measurements on two checkpoints (or read from two results
files), their deltas, and a gate on how much sharper NEW may be. Exit 0 / 1 / 2 as `check`."""

import time
from pathlib import Path
from typing import Annotated

import typer

from ..atomic import claim_outputs
from ..choices import MEASURES
from ..limits import memory_limit
from . import common as c


def compare_command(
    base: Annotated[Path, typer.Argument(help="The reference: a checkpoint, or a spectrum/surface/eos file.")],
    new: Annotated[Path, typer.Argument(help="The candidate, of the same kind as BASE.")],
    what: Annotated[
        str | None,
        typer.Option(
            "--what",
            help=f"Comma-separated measurements: {', '.join(MEASURES)}. Default for checkpoints: top,surface; "
            "for results files: what they hold.",
        ),
    ] = None,
    max_increase: Annotated[
        str | None,
        typer.Option("--max-increase", help="Fail when NEW is sharper than BASE by more than this (10% or 0.1)."),
    ] = None,
    radius: Annotated[float, typer.Option("--radius", help="Radius of the surface measurement.")] = 0.5,
    tol: Annotated[float, typer.Option("--tol", help="Lanczos tolerance.")] = 1e-4,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Compare two results files even when they were measured with other settings (data, samples, "
            "loss, mode, curvature; a surface's dimension, radius or directions), with a warning.",
        ),
    ] = False,
    model: c.ModelOpt = None,
    model_arg: c.ModelArgOpt = None,
    data: c.DataOpt = None,
    data_arg: c.DataArgOpt = None,
    loss: c.LossOpt = None,
    curvature: c.CurvatureOpt = "hessian",
    params: c.ParamsOpt = None,
    ignore_index: c.IgnoreIndexOpt = -100,
    label_smoothing: c.LabelSmoothingOpt = 0.0,
    split: c.SplitOpt = None,
    samples: c.SamplesOpt = None,
    batch_size: c.BatchSizeOpt = 2048,
    device: c.DeviceOpt = "auto",
    dtype: c.DtypeOpt = "float32",
    seed: c.SeedOpt = 0,
    junit: Annotated[
        Path | None,
        typer.Option(
            "--junit", help="Also write JUnit XML (one test case per measurement).", rich_help_panel=c.OUTPUT_PANEL
        ),
    ] = None,
    trust_remote_code: c.TrustOpt = False,
    max_memory: c.MaxMemoryOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --junit file.", rich_help_panel=c.OUTPUT_PANEL)
    ] = False,
    json_out: c.JsonOpt = False,
    quiet: c.QuietOpt = False,
) -> None:
    """Compare the sharpness of two checkpoints (same data, seed and, for surfaces, the same directions:
    NEW is swept on BASE's) or of two results files (refused when they were measured with other settings,
    unless --force); exit 1 when NEW is sharper by more than --max-increase.
    """
    from ..api import compare
    from ..check.junit import delta_cases, write_junit
    from ..progress import progress_bar
    from ..report import print_compare
    from ..text import print_json

    started = time.perf_counter()
    reports = [junit] if junit is not None else []
    inputs = [base, new, *c.named_inputs(model, data, c.loss_file(loss))]
    described = c.described_problem(
        model, model_arg, data, data_arg, loss, seed, c.loss_options(ignore_index, label_smoothing)
    )
    with claim_outputs(reports, inputs, overwrite), memory_limit(max_memory), progress_bar(quiet) as tracker:
        result = compare(
            base,
            new,
            what=what,
            max_increase=max_increase,
            radius=radius,
            tol=tol,
            seed=seed,
            tracker=tracker,
            split=split,
            samples=samples,
            batch_size=batch_size,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            force=force,
            curvature=curvature,
            params=params,
            **described,
        )
        seconds = time.perf_counter() - started
        if junit is not None:
            write_junit(junit, delta_cases(result.deltas), f"landscape compare {base.name} {new.name}", seconds,
                        "landscape.compare")  # fmt: skip
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if json_out:
        print_json({**result.to_dict(), "base": str(base), "new": str(new), "seconds": seconds})
    else:
        print_compare(result.deltas, base.name, new.name, seconds)
    if not result.passed:
        raise typer.Exit(1)
