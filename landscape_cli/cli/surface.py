"""`landscape surface`: a 1D or 2D loss surface around a checkpoint, written as Li et al.'s HDF5 file."""

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from ..atomic import check_outputs, claim_outputs
from ..errors import LandscapeError
from ..signals import Terminated
from . import common as c

DIRS = "Directions"
GRID = "Grid"


def default_output(checkpoint: Path, out: Path | None, dims: int) -> Path:
    """<checkpoint stem>.surface1d.h5 / .surface2d.h5 beside the checkpoint unless --out says otherwise."""
    return c.results_path(out, checkpoint.with_name(f"{checkpoint.stem}.surface{dims}d.h5"))


def parse_points_per_pass(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise LandscapeError(f"--points-per-pass must be auto or a whole number, got '{text}'") from None


def surface_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint at the centre of the surface (.pt).")],
    one_d: Annotated[bool, typer.Option("--1d", help="A line through the checkpoint (the default).")] = False,
    two_d: Annotated[bool, typer.Option("--2d", help="A plane through the checkpoint.")] = False,
    dirs: Annotated[
        str,
        typer.Option(
            "--dirs",
            help="random (Gaussian, filter-normalized); eigen (top Hessian eigenvectors, computed) or "
            "eigen:SPECTRUM.h5 (saved with --save-eigenvectors); interp:B.pt (toward B; a plane with "
            "interp:B.pt,C.pt); pca:RUN_DIR (principal directions of a training run); file:SURFACE.h5 "
            "(the directions of an earlier surface).",
            rich_help_panel=DIRS,
        ),
    ] = "random",
    norm: Annotated[
        str | None,
        typer.Option(
            "--norm",
            help="filter (every output channel/row gets its weight's norm, Li et al.), layer, or none. "
            "Default: filter for random directions, none for the others.",
            rich_help_panel=DIRS,
        ),
    ] = None,
    ignore: Annotated[
        str,
        typer.Option(
            "--ignore",
            help="biasbn: biases and BatchNorm parameters stay at the checkpoint (Li et al.'s setting); "
            "none: perturb them too.",
            rich_help_panel=DIRS,
        ),
    ] = "biasbn",
    x: Annotated[
        str | None,
        typer.Option(
            "--x",
            help="MIN:MAX:N along direction 1. Default -1:1:51 (interp -0.5:1.5:51; pca: around the "
            "trajectory; file: the file's grid).",
            rich_help_panel=GRID,
        ),
    ] = None,
    y: Annotated[
        str | None, typer.Option("--y", help="MIN:MAX:N along direction 2 (--2d).", rich_help_panel=GRID)
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="Comma-separated splits to evaluate, e.g. train,test; the first is the one summarized. "
            "Default: the checkpoint's split.",
            rich_help_panel=c.PROBLEM_PANEL,
        ),
    ] = None,
    radius: Annotated[
        float | None,
        typer.Option(
            "--radius",
            help="Distance from the centre at which the summary reports the loss rise. Default: half "
            "the way to the nearest edge of the grid.",
            rich_help_panel=GRID,
        ),
    ] = None,
    points_per_pass: Annotated[
        str,
        typer.Option(
            "--points-per-pass",
            help="Grid points evaluated per pass over the data: auto (time batched passes against a "
            "plain loop on the first points, keep the faster), 1 (a plain loop) or N (vmap over N points).",
            rich_help_panel=c.COMPUTE_PANEL,
        ),
    ] = "auto",
    model: c.ModelOpt = None,
    model_arg: c.ModelArgOpt = None,
    data: c.DataOpt = None,
    data_arg: c.DataArgOpt = None,
    loss: c.LossOpt = None,
    ignore_index: c.IgnoreIndexOpt = -100,
    label_smoothing: c.LabelSmoothingOpt = 0.0,
    samples: c.SamplesOpt = None,
    train_mode: c.TrainModeOpt = False,
    batch_size: c.BatchSizeOpt = 2048,
    device: c.DeviceOpt = "auto",
    dtype: c.DtypeOpt = "float32",
    seed: c.SeedOpt = 0,
    trust_remote_code: c.TrustOpt = False,
    max_memory: c.MaxMemoryOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="HDF5 output path. Default: <checkpoint name>.surface1d.h5 or .surface2d.h5 beside the checkpoint; "
            "an existing directory takes that name inside it.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue a stopped sweep from its partial file (<out>.partial); refused if any option that "
            "changes the numbers differs.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = False,
    overwrite: c.OverwriteOpt = False,
    json_out: c.JsonOpt = False,
    quiet: c.QuietOpt = False,
) -> None:
    """Loss surface around a checkpoint along filter-normalized random, eigen, interpolation, PCA or
    stored directions: loss (and accuracy) on a 1D line or a 2D grid, written as Li et al.'s HDF5
    file with the directions, a sharpness summary and provenance. Draw it with `landscape plot`.
    """
    from ..api import landscape_of
    from ..progress import progress_bar
    from ..report import print_surface, surface_dict
    from ..surface import SurfaceOptions
    from ..surface.store import check_partial_files, partial_paths
    from ..text import print_json

    if one_d and two_d:
        raise LandscapeError("--1d and --2d exclude each other")
    options = SurfaceOptions(
        dims=2 if two_d else 1,
        dirs=dirs,
        x=x,
        y=y,
        norm=norm,
        ignore=ignore,
        radius=radius,
        points_per_pass=parse_points_per_pass(points_per_pass),
        seed=seed,
    )
    spec, _, _ = options.validate()  # a typo should not cost the model's load time
    path = default_output(checkpoint, out, options.dims)
    header, journal = partial_paths(path)
    inputs = [*c.named_inputs(checkpoint, model, data, c.loss_file(loss)), *spec.paths]
    if resume:
        if path.exists() and not overwrite:
            raise LandscapeError(f"{path} exists; pass --overwrite as well to replace it when the sweep finishes")
    elif header.exists() and not overwrite:
        raise LandscapeError(
            f"a stopped sweep left {header}; pass --resume to continue it or --overwrite to start over"
        )
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
    check_outputs([path], inputs, overwrite or resume)
    check_partial_files(path, inputs)
    splits = _splits(split, ckpt.data)
    with claim_outputs([path], inputs + c.recorded_inputs(ckpt), overwrite or resume):
        land = landscape_of(ckpt, splits[0], samples, batch_size, device, dtype, seed, train_mode)
        if ckpt.data is not None:
            ckpt.data = {**ckpt.data, "split": splits[0]}
        with progress_bar(quiet) as tracker:
            try:
                result = land.surface(
                    also_splits=splits[1:],
                    out=path,
                    resume=resume,
                    overwrite=overwrite,
                    command=c.command_line(),
                    tracker=tracker,
                    **dataclasses.asdict(options),
                )
            except (KeyboardInterrupt, Terminated):
                if header.exists():
                    typer.echo(
                        f"the finished points are kept in {header}; continue with the same command and --resume",
                        err=True,
                    )
                raise
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if json_out:
        print_json(surface_dict(result))
    else:
        print_surface(result, checkpoint.name)


def _splits(option: str | None, data_spec: dict | None) -> list[str]:
    if option is None:
        return [str((data_spec or {}).get("split", "train"))]
    names = [s.strip() for s in option.split(",") if s.strip()]
    for name in names:
        if name not in ("train", "test", "all"):
            raise LandscapeError(f"unknown split '{name}' in --split; choose from train, test, all")
    if not names or len(set(names)) != len(names):
        raise LandscapeError(f"--split expects distinct names such as train,test, got '{option}'")
    return names
