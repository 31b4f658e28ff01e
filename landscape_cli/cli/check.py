"""`landscape check`: sharpness gates for CI. Exit 0 when every gate passes, 1 when one fails, 2 on bad input."""

import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..atomic import check_outputs, claim_outputs
from ..errors import LandscapeError
from . import common as c

GATES = "Gates (override the config file)"


def check_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint to check (.pt).")],
    max_top_eig: Annotated[
        float | None,
        typer.Option("--max-top-eig", help="Fail above this top Hessian eigenvalue.", rich_help_panel=GATES),
    ] = None,
    min_bottom_eig: Annotated[
        float | None,
        typer.Option(
            "--min-bottom-eig", help="Fail below this bottom eigenvalue (negative curvature).", rich_help_panel=GATES
        ),
    ] = None,
    max_trace: Annotated[
        float | None,
        typer.Option("--max-trace", help="Fail above this Hessian trace (Hutch++).", rich_help_panel=GATES),
    ] = None,
    max_eos_ratio: Annotated[
        float | None,
        typer.Option(
            "--max-eos-ratio", help="Fail above this sharpness / edge of stability ratio.", rich_help_panel=GATES
        ),
    ] = None,
    max_surface_rise: Annotated[
        float | None,
        typer.Option(
            "--max-surface-rise",
            help="Fail above this mean loss rise at --radius along two seeded filter-normalized random directions.",
            rich_help_panel=GATES,
        ),
    ] = None,
    max_sharpness_worst: Annotated[
        float | None,
        typer.Option(
            "--max-sharpness-worst",
            help="Fail above this worst-case sharpness at --sharpness-rho (max "
            "loss increase in the L2 ball, a lower bound found by ascent).",
            rich_help_panel=GATES,
        ),  # fmt: skip
    ] = None,
    max_sharpness_avg: Annotated[
        float | None,
        typer.Option(
            "--max-sharpness-avg",
            help="Fail above this average-case sharpness at --sharpness-rho (mean increase under N(0, rho^2 I)).",
            rich_help_panel=GATES,
        ),  # fmt: skip
    ] = None,
    radius: Annotated[
        float | None, typer.Option("--radius", help="Radius of the surface gate (default 0.5).", rich_help_panel=GATES)
    ] = None,
    sharpness_rho: Annotated[
        float | None,
        typer.Option("--sharpness-rho", help="Radius of the sharpness gates (default 0.05).", rich_help_panel=GATES),
    ] = None,
    sharpness_adaptive: Annotated[
        bool,
        typer.Option(
            "--sharpness-adaptive", help="Scale the sharpness gates' perturbations by |w|.", rich_help_panel=GATES
        ),  # fmt: skip
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Config file with the gates. Default: the nearest landscape.toml, or pyproject.toml with "
            "[tool.landscape.check], from the current directory up.",
            rich_help_panel=GATES,
        ),
    ] = None,
    tol: Annotated[float | None, typer.Option("--tol", help="Lanczos tolerance (default 1e-4).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate for the eos gate, if not recorded.")] = None,
    model: c.ModelOpt = None,
    model_arg: c.ModelArgOpt = None,
    data: c.DataOpt = None,
    data_arg: c.DataArgOpt = None,
    split: c.SplitOpt = None,
    loss: c.LossOpt = None,
    curvature: Annotated[
        str | None,
        typer.Option(
            "--curvature",
            help="Matrix of the eigenvalue and trace gates: hessian (default), ggn or fisher. The eos gate "
            "always measures the Hessian.",
            rich_help_panel=c.PROBLEM_PANEL,
        ),
    ] = None,
    params: c.ParamsOpt = None,
    ignore_index: c.IgnoreIndexOpt = -100,
    label_smoothing: c.LabelSmoothingOpt = 0.0,
    samples: c.SamplesOpt = None,
    batch_size: c.BatchSizeOpt = 2048,
    device: Annotated[
        str | None,
        typer.Option("--device", help="auto (default), cpu, cuda or cuda:N.", rich_help_panel=c.COMPUTE_PANEL),
    ] = None,
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="float32 (default) or float64.", rich_help_panel=c.COMPUTE_PANEL)
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Seed of every random choice (default 0).",
            rich_help_panel=c.COMPUTE_PANEL,
            min=0,
            max=c.SEED_MAX,
        ),
    ] = None,
    junit: Annotated[
        Path | None,
        typer.Option("--junit", help="Also write JUnit XML (one test case per gate).", rich_help_panel=c.OUTPUT_PANEL),
    ] = None,
    trust_remote_code: c.TrustOpt = False,
    max_memory: c.MaxMemoryOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --junit file.", rich_help_panel=c.OUTPUT_PANEL)
    ] = False,
    json_out: c.JsonOpt = False,
    quiet: c.QuietOpt = False,
) -> None:
    """Gate a checkpoint's sharpness in CI: each measurement is made once, each gate reported as pass or
    fail with its value, its own uncertainty and its limit. Exit 0 all pass, 1 any fails, 2 bad input.
    """
    from ..api import landscape_of
    from ..check.config import load_config
    from ..check.gates import KINDS, validate_limits
    from ..check.junit import gate_cases, write_junit
    from ..choices import CURVATURES
    from ..eos.setting import OptimizerSetting
    from ..limits import peak_memory
    from ..progress import progress_bar
    from ..report import print_checks
    from ..spectrum import validate_lanczos
    from ..text import print_json

    started = time.perf_counter()
    settings, source = load_config(config, Path.cwd())
    given = {
        "max_top_eig": max_top_eig,
        "min_bottom_eig": min_bottom_eig,
        "max_trace": max_trace,
        "max_eos_ratio": max_eos_ratio,
        "max_surface_rise": max_surface_rise,
        "max_sharpness_worst": max_sharpness_worst,
        "max_sharpness_avg": max_sharpness_avg,
    }
    limits = validate_limits({k: given[k] if given[k] is not None else settings.get(k) for k in KINDS})
    chosen: dict[str, Any] = {
        "radius": _pick(radius, settings, "radius", 0.5),
        "samples": _pick(samples, settings, "samples", None),
        "seed": _pick(seed, settings, "seed", 0),
        "split": _pick(split, settings, "split", None),
        "tol": _pick(tol, settings, "tol", 1e-4),
        "device": _pick(device, settings, "device", "auto"),
        "dtype": _pick(dtype, settings, "dtype", "float32"),
        "curvature": _pick(curvature, settings, "curvature", "hessian"),
        "params": _pick(params, settings, "params", None),
        "sharpness_rho": _pick(sharpness_rho, settings, "sharpness_rho", 0.05),
        "sharpness_adaptive": _pick(sharpness_adaptive or None, settings, "sharpness_adaptive", False),
    }
    if chosen["curvature"] not in CURVATURES:
        raise LandscapeError(f"unknown --curvature '{chosen['curvature']}'; choose one of {', '.join(CURVATURES)}")
    if not 0 < chosen["radius"] < math.inf:
        raise LandscapeError(f"--radius must be positive and finite, got {chosen['radius']}")
    if not 0 < chosen["sharpness_rho"] < math.inf:
        raise LandscapeError(f"--sharpness-rho must be positive and finite, got {chosen['sharpness_rho']}")
    validate_lanczos(chosen["tol"], 200)
    OptimizerSetting(lr=lr).validate()
    reports = [junit] if junit is not None else []
    inputs = [*c.named_inputs(checkpoint, model, data, c.loss_file(loss)), *([source] if source else [])]
    ckpt = c.open_checkpoint(checkpoint, model, model_arg, data, data_arg, loss, chosen["seed"], trust_remote_code,
                             max_memory, loss_options=c.loss_options(ignore_index, label_smoothing))  # fmt: skip
    check_outputs(reports, inputs, overwrite)
    with claim_outputs(reports, inputs + c.recorded_inputs(ckpt), overwrite):
        scape = landscape_of(ckpt, chosen["split"], chosen["samples"], batch_size, chosen["device"], chosen["dtype"],
                             chosen["seed"])  # fmt: skip
        with progress_bar(quiet) as tracker:
            check = scape.check(**limits, radius=chosen["radius"], tol=chosen["tol"], tracker=tracker, lr=lr,
                                curvature=chosen["curvature"], params=chosen["params"],
                                sharpness_rho=chosen["sharpness_rho"],
                                sharpness_adaptive=chosen["sharpness_adaptive"])  # fmt: skip
        results, measured = check.gates, check.measured
        seconds = time.perf_counter() - started
        if junit is not None:
            write_junit(junit, gate_cases(results), f"landscape check {checkpoint.name}", seconds)
    passed = all(r.passed for r in results)
    if json_out:
        print_json(
            {
                "checkpoint": str(checkpoint),
                "passed": passed,
                "gates": [r.to_dict() for r in results],
                "settings": chosen,
                "config": str(source) if source else None,
                "measured": measured,
                "seconds": seconds,
                "memory": peak_memory(scape.problem.device),
            }
        )
    else:
        print_checks(results, checkpoint.name, str(source) if source else None, seconds)
    if not passed:
        raise typer.Exit(1)


def _pick(given: Any, settings: dict[str, Any], key: str, default: Any) -> Any:
    """The command line wins over the config file, which wins over the default."""
    if given is not None:
        return given
    return settings.get(key, default)
