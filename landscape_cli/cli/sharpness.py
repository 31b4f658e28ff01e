"""`landscape sharpness`: the measures of the sharpness literature (worst-case, average-case, adaptive, L2 and
L-inf, m-sharpness, Keskar's) at a checkpoint, beside its top eigenvalue and trace."""

from pathlib import Path
from typing import Annotated

import typer

from . import common as c

MEASURE = "Measures"


def sharpness_command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint (.pt) or state_dict.", show_default=False)],
    measure: Annotated[
        list[str] | None,
        typer.Option(
            "--measure",
            help="worst (max loss increase within rho, a lower bound), average (mean increase "
            "under N(0, rho^2 I)), keskar (epsilon-sharpness, %). Repeat or comma-separate. Default: worst, "
            "average.",
            rich_help_panel=MEASURE,
        ),  # fmt: skip
    ] = None,
    rho: Annotated[
        list[float] | None,
        typer.Option(
            "--rho",
            help="Radius (keskar: the box's epsilon); repeat for several. Default 0.05.",
            rich_help_panel=MEASURE,
        ),  # fmt: skip
    ] = None,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive", help="Scale the perturbation elementwise by |w| (Kwon et al.).", rich_help_panel=MEASURE
        ),  # fmt: skip
    ] = False,
    norm: Annotated[
        list[str] | None,
        typer.Option("--norm", help="worst: l2 or linf ball; repeat for both. Default l2.", rich_help_panel=MEASURE),
    ] = None,
    m: Annotated[
        int | None,
        typer.Option(
            "--m",
            help="m-sharpness: the measure on each batch of m samples, averaged (m must divide the samples).",
            rich_help_panel=MEASURE,
        ),  # fmt: skip
    ] = None,
    perturbations: Annotated[
        int,
        typer.Option(
            "--perturbations", help="average: Gaussian perturbations (in antithetic pairs).", rich_help_panel=MEASURE
        ),  # fmt: skip
    ] = 64,
    steps: Annotated[
        int, typer.Option("--steps", help="worst, keskar: ascent steps per restart.", rich_help_panel=MEASURE)
    ] = 20,
    restarts: Annotated[int, typer.Option("--restarts", help="worst, keskar: restarts.", rich_help_panel=MEASURE)] = 3,
    spectrum: Annotated[
        bool,
        typer.Option(
            "--spectrum/--no-spectrum",
            help="Also the top eigenvalue and the trace, for comparison.",
            rich_help_panel=MEASURE,
        ),  # fmt: skip
    ] = True,
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
            help="HDF5 output. Default: <checkpoint name>.sharpness.h5 beside the checkpoint.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),  # fmt: skip
    ] = None,
    overwrite: c.OverwriteOpt = False,
    json_out: c.JsonOpt = False,
    quiet: c.QuietOpt = False,
) -> None:
    """Sharpness as the literature measures it: the worst-case loss increase within a radius (L2 or L-inf
    ball, found by projected gradient ascent with restarts: a lower bound), the average increase under
    Gaussian perturbations (with its standard error), each adaptive (scaled by |w|) or not, m-sharpness, and
    Keskar's epsilon-sharpness; beside the top Hessian eigenvalue and trace. Definitions: docs/sharpness.md.
    """
    from ..api import landscape_of
    from ..atomic import atomic_path, claim_outputs
    from ..errors import LandscapeError
    from ..progress import progress_bar
    from ..report import print_sharpness
    from ..results import provenance
    from ..sharpness import SharpnessSettings, write_sharpness
    from ..text import print_json

    measures = [p.strip() for text in (measure or ["worst,average"]) for p in text.split(",") if p.strip()]
    norms = [p.strip() for text in (norm or ["l2"]) for p in text.split(",") if p.strip()]
    radii = rho or [0.05]
    settings = []
    for name in dict.fromkeys(measures):
        for radius in radii:
            for n in norms if name == "worst" else ["l2"]:
                settings.append(SharpnessSettings(name, radius, n, adaptive and name != "keskar", m, perturbations,
                                                  steps, restarts, seed))  # fmt: skip
    for s in settings:
        s.validate()  # bad options are refused before anything is loaded
    path = c.results_path(out, checkpoint.with_name(f"{checkpoint.stem}.sharpness.h5"))
    ckpt = c.open_checkpoint(checkpoint, model, model_arg, data, data_arg, loss, seed, trust_remote_code, max_memory,
                             loss_options=c.loss_options(ignore_index, label_smoothing))  # fmt: skip
    inputs = c.named_inputs(checkpoint, model, data, c.loss_file(loss))
    with claim_outputs([path], inputs + c.recorded_inputs(ckpt), overwrite):
        scape = landscape_of(ckpt, split, samples, batch_size, device, dtype, seed, train_mode, hvp)
        for s in settings:
            s.validate(scape.problem.n_samples)
        results = []
        with progress_bar(quiet) as tracker:
            for i, s in enumerate(settings):
                tracker.start(f"sharpness: {s.name()}", len(settings))
                tracker.update(i)
                results.append(scape.measure(s.measure, s.rho, norm=s.norm, adaptive=s.adaptive, m=s.m,
                                             perturbations=s.perturbations, steps=s.steps, restarts=s.restarts,
                                             seed=s.seed))  # fmt: skip
            extra: dict[str, float] = {}
            if spectrum:
                tracker.start("spectrum: top eigenvalue and trace", None)
                spec = scape.spectrum(1, trace=True, seed=seed)
                assert spec.lanczos is not None and spec.trace is not None
                extra = {"top_eigenvalue": float(spec.lanczos.top.values[0]),
                         "top_error_bound": float(spec.lanczos.top.error_bounds[0]),
                         "trace": spec.trace.estimate, "trace_stderr": spec.trace.stderr}  # fmt: skip
        if not results:
            raise LandscapeError("no measure chosen")
        with atomic_path(path, overwrite=overwrite) as tmp:
            write_sharpness(tmp, results, extra, provenance(ckpt, scape.problem.describe(), seed, c.command_line()))
    if json_out:
        print_json({"measures": [r.to_dict() for r in results], **extra, "output": str(path)})
    else:
        print_sharpness(results, extra, checkpoint.name, str(path))
