"""`landscape spectrum`: extremal eigenvalues, trace and density of a checkpoint's Hessian."""

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from ..atomic import atomic_path, check_outputs, claim_outputs
from . import common as c

EIG = "Eigenvalues"
EST = "Trace and density"


def default_outputs(checkpoint: Path, out: Path | None) -> tuple[Path, Path]:
    """<checkpoint stem>.spectrum.h5 beside the checkpoint unless --out says otherwise; the figure beside it."""
    h5 = c.results_path(out, checkpoint.with_name(f"{checkpoint.stem}.spectrum.h5"))
    return h5, h5.with_suffix(".png")


def spectrum_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file (.pt): native, or a state_dict with --model.")],
    top_k: Annotated[int, typer.Option("--top-k", help="Largest eigenvalues to compute.", rich_help_panel=EIG)] = 5,
    bottom_k: Annotated[
        int, typer.Option("--bottom-k", help="Smallest (most negative) eigenvalues to compute.", rich_help_panel=EIG)
    ] = 0,
    tol: Annotated[
        float,
        typer.Option(
            "--tol",
            help="Stop when every requested eigenvalue's error bound is below TOL relative to its size.",
            rich_help_panel=EIG,
        ),
    ] = 1e-4,
    max_iter: Annotated[
        int,
        typer.Option("--max-iter", help="At most this many Lanczos iterations (one HVP each).", rich_help_panel=EIG),
    ] = 200,
    save_eigenvectors: Annotated[
        bool,
        typer.Option(
            "--save-eigenvectors",
            help="Store the Ritz vectors in the HDF5 file by parameter name.",
            rich_help_panel=EIG,
        ),
    ] = False,
    trace: Annotated[bool, typer.Option("--trace", help="Estimate the trace by Hutch++.", rich_help_panel=EST)] = False,
    trace_hvps: Annotated[
        int,
        typer.Option(
            "--trace-hvps", help="HVPs for Hutch++ (rounded down to a multiple of 3; at least 6).", rich_help_panel=EST
        ),
    ] = 90,
    density: Annotated[
        bool, typer.Option("--density", help="Spectral density by stochastic Lanczos quadrature.", rich_help_panel=EST)
    ] = False,
    density_runs: Annotated[
        int, typer.Option("--density-runs", help="Random starts for the density.", rich_help_panel=EST)
    ] = 5,
    density_steps: Annotated[
        int, typer.Option("--density-steps", help="Lanczos steps per density run.", rich_help_panel=EST)
    ] = 80,
    density_sigma: Annotated[
        float | None,
        typer.Option(
            "--density-sigma",
            help="Gaussian broadening width (default: 1% of the spectrum's spread).",
            rich_help_panel=EST,
        ),
    ] = None,
    model: c.ModelOpt = None,
    model_arg: c.ModelArgOpt = None,
    data: c.DataOpt = None,
    data_arg: c.DataArgOpt = None,
    split: c.SplitOpt = None,
    loss: c.LossOpt = None,
    curvature: c.CurvatureOpt = "hessian",
    params: c.ParamsOpt = None,
    per_layer: Annotated[
        str | None,
        typer.Option(
            "--per-layer",
            help="Also the top eigenvalue and trace of each parameter tensor's block of the matrix ('--per-layer' "
            "or '--per-layer tensor'), or of each module's ('--per-layer module'): a table, the HDF5 file's "
            "'layers' group and a panel of the figure.",
            rich_help_panel=EST,
        ),
    ] = None,
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
            help="HDF5 output path (the figure goes beside it as .png). Default: <checkpoint name>.spectrum.h5 "
            "beside the checkpoint; an existing directory takes that name inside it.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None,
    plot: Annotated[
        bool, typer.Option("--plot/--no-plot", help="Write the PNG figure.", rich_help_panel=c.OUTPUT_PANEL)
    ] = True,
    overwrite: c.OverwriteOpt = False,
    json_out: c.JsonOpt = False,
    quiet: c.QuietOpt = False,
) -> None:
    """Hessian spectrum of a checkpoint: top/bottom eigenvalues by Lanczos, trace, density; or of its
    Gauss-Newton matrix or empirical Fisher (--curvature), or of a block of parameters (--params).

    Writes a table (or JSON) to stdout, an HDF5 file with every number and its provenance, and a
    PNG figure.
    """
    from ..api import landscape_of
    from ..plotting import draw_spectrum
    from ..progress import progress_bar
    from ..report import print_spectrum, spectrum_dict
    from ..results import provenance, write_spectrum_file
    from ..spectrum import SpectrumOptions
    from ..text import print_json

    h5_path, png_path = default_outputs(checkpoint, out)
    outputs = [h5_path, png_path] if plot else [h5_path]
    inputs = c.named_inputs(checkpoint, model, data, c.loss_file(loss))
    options = SpectrumOptions(
        top_k=top_k,
        bottom_k=bottom_k,
        tol=tol,
        max_iter=max_iter,
        trace=trace,
        trace_hvps=trace_hvps,
        density=density,
        density_runs=density_runs,
        density_steps=density_steps,
        density_sigma=density_sigma,
        save_eigenvectors=save_eigenvectors,
        seed=seed,
        curvature=curvature,
        params=params,
        per_layer=per_layer,
    )
    options.validate()  # before any loading: a typo in an option should not cost the model's load time
    ckpt = c.open_checkpoint(
        checkpoint,
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
    check_outputs(outputs, inputs, overwrite)
    if split is not None and ckpt.data is not None:
        ckpt.data = {**ckpt.data, "split": split}  # the provenance names the split that was used
    with claim_outputs(outputs, inputs + c.recorded_inputs(ckpt), overwrite):
        land = landscape_of(ckpt, split, samples, batch_size, device, dtype, seed, train_mode, hvp)
        with progress_bar(quiet) as tracker:
            result = land.spectrum(**dataclasses.asdict(options), tracker=tracker)
        written = {"results": str(h5_path)}
        # Both files appear together or not at all: the figure is drawn from the unrenamed HDF5 file.
        with atomic_path(h5_path, overwrite=overwrite) as h5_tmp:
            write_spectrum_file(h5_tmp, result, provenance(ckpt, result.problem, seed, c.command_line()))
            if plot:
                with atomic_path(png_path, overwrite=overwrite) as png_tmp:
                    draw_spectrum(h5_tmp, png_tmp)
                written["figure"] = str(png_path)
    if json_out:
        print_json(spectrum_dict(result, written))
    else:
        print_spectrum(result, checkpoint.name, written)
    if result.lanczos is not None and not result.lanczos.converged:
        typer.echo(
            f"warning: not every eigenvalue reached --tol {tol:g} within --max-iter {max_iter}; "
            "see the converged column",
            err=True,
        )
