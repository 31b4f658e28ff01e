"""Options shared by several commands, and their translation into library calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..choices import LOSSES
from ..errors import LandscapeError
from ..limits import set_memory_limit
from ..zoo.entrypoints import is_entrypoint

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint

#: The arguments of the command line being run (set by `main`), recorded in results as provenance.
ARGV: list[str] = []

#: Seeds lie in [0, 2^32): derived seeds must fit torch's 64-bit generator.
SEED_MAX = (1 << 32) - 1
PROBLEM_PANEL = "Data and model"
COMPUTE_PANEL = "Computation"
OUTPUT_PANEL = "Output"


def parse_kv(pairs: list[str] | None, option: str) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE is read as JSON when it parses (numbers, lists), else as a string."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise LandscapeError(f"{option} expects KEY=VALUE, got '{pair}'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Model for a checkpoint that does not record one (or to override it): a built-in name "
        "(mlp, cnn, resnet) or an entry point 'pkg.module:factory' / 'file.py:factory'.",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
ModelArgOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model-arg",
        metavar="KEY=VALUE",
        help="KEY=VALUE keyword argument for the model factory (VALUE read as JSON, e.g. "
        "widths=[64,32,10]); repeatable.",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Dataset, when the checkpoint does not record one (or to override it): digits, "
        "gaussian-mixture, spirals, teacher-student, a .npz/.pt file with x and y, or 'pkg.module:function'.",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
DataArgOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data-arg",
        metavar="KEY=VALUE",
        help="KEY=VALUE argument for the dataset (e.g. limit=1000, n=500); repeatable.",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
SplitOpt = Annotated[
    str | None,
    typer.Option(
        "--split",
        help="train, test or all. Default: the split the checkpoint records (train for --data).",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
LossOpt = Annotated[
    str | None,
    typer.Option(
        "--loss",
        help="cross_entropy, mse (PyTorch's MSELoss), half_sse (0.5 ||f - y||^2 summed over outputs), "
        "bce_with_logits, model (the model's own .loss, as HuggingFace models compute it), or your function "
        "as file.py:fn or pkg.module:fn, fn(output, batch) returning the batch's mean or (sum, count). "
        "Default: what the checkpoint records.",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
CurvatureOpt = Annotated[
    str,
    typer.Option(
        "--curvature",
        help="The matrix: hessian, ggn (the generalized Gauss-Newton J^T H_loss J) or fisher (the empirical "
        "Fisher, the mean of g g^T over samples).",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
ParamsOpt = Annotated[
    str | None,
    typer.Option(
        "--params",
        help="Only the block of the matrix over the parameters whose names match these globs, comma "
        "separated (e.g. 'layers.0.*,fc.weight'). Default: every parameter.",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
IgnoreIndexOpt = Annotated[
    int,
    typer.Option(
        "--ignore-index",
        help="cross_entropy: targets with this value count for nothing (padding).",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
LabelSmoothingOpt = Annotated[
    float,
    typer.Option(
        "--label-smoothing",
        help="cross_entropy: PyTorch's label smoothing, in [0, 1).",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
SamplesOpt = Annotated[
    int | None,
    typer.Option(
        "--samples",
        help="Use a fixed seeded subset of N samples instead of the whole split.",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
BatchSizeOpt = Annotated[
    int,
    typer.Option(
        "--batch-size",
        help="Samples per chunk held in memory at once. Only memory and speed change: every result is over "
        "all the samples, weighted exactly, whatever the chunk size.",
        rich_help_panel=COMPUTE_PANEL,
    ),
]
TrainModeOpt = Annotated[
    bool,
    typer.Option(
        "--train-mode",
        help="Evaluate in train mode (BatchNorm uses each chunk's batch statistics, dropout on "
        "with fixed masks). Default: eval mode.",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
HvpOpt = Annotated[
    str,
    typer.Option(
        "--hvp",
        help="Hessian-vector product method: auto (time the two exact ones, keep the faster; finite "
        "differences when neither works), jvp (forward-over-reverse), double-backward, or finite-difference "
        "(two gradients, for ops without second derivatives such as fused attention; about 1e-4 relative "
        "in float32).",
        rich_help_panel=COMPUTE_PANEL,
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="auto (CUDA when available), cpu, cuda or cuda:N.", rich_help_panel=COMPUTE_PANEL),
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="float32 or float64.", rich_help_panel=COMPUTE_PANEL)]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed",
        help="Seed of every random choice (subset, start vectors, probes).",
        rich_help_panel=COMPUTE_PANEL,
        min=0,
        max=SEED_MAX,
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.", rich_help_panel=OUTPUT_PANEL)]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout instead of a table.", rich_help_panel=OUTPUT_PANEL)
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing output files.", rich_help_panel=OUTPUT_PANEL)
]


TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Run the model and data entry points the checkpoint names. Without it, code named in a file runs "
        "only when you name it yourself with --model or --data; built-in models and datasets need neither.",
        rich_help_panel=PROBLEM_PANEL,
    ),
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--max-memory",
        help="Refuse a model, dataset or grid estimated to need more memory than this (e.g. 64G), before "
        "allocating it. Default: LANDSCAPE_MAX_MEMORY, else 80% of the machine's memory.",
        rich_help_panel=COMPUTE_PANEL,
    ),
]


def open_checkpoint(
    path: Path,
    model: str | None,
    model_args: list[str] | None,
    data: str | None,
    data_args: list[str] | None,
    loss: str | None,
    seed: int = 0,
    trust_remote_code: bool = False,
    max_memory: str | None = None,
    loss_options: dict[str, Any] | None = None,
) -> Checkpoint:
    """Load a checkpoint with the command line's overrides applied (and the memory limit set)."""
    from ..checkpoint import load_checkpoint
    from ..zoo.data import data_spec
    from ..zoo.models import model_spec

    set_memory_limit(max_memory)
    for option, value in (("--model", model), ("--data", data)):
        if value is not None and not value.strip():
            raise LandscapeError(f"{option} is empty; name a built-in, a file or an entry point")
    check_loss_name(loss)
    m_spec = model_spec(model, parse_kv(model_args, "--model-arg")) if model else None
    d_spec = data_spec(data, "train", seed, parse_kv(data_args, "--data-arg")) if data else None
    ckpt = load_checkpoint(path, model=m_spec, data=d_spec, loss=loss, trust_remote_code=trust_remote_code)
    if model is None and model_args:
        if ckpt.model is None:
            raise LandscapeError("--model-arg needs --model: the checkpoint does not record its model")
        ckpt.model = {**ckpt.model, "kwargs": {**ckpt.model.get("kwargs", {}), **parse_kv(model_args, "--model-arg")}}
    if data is None and data_args:
        if ckpt.data is None:
            raise LandscapeError("--data-arg needs --data: the checkpoint does not record its data")
        ckpt.data = {**ckpt.data, "kwargs": {**ckpt.data.get("kwargs", {}), **parse_kv(data_args, "--data-arg")}}
    ckpt.spec("model")  # what is missing or untrusted is said now, before any output is checked or claimed
    ckpt.spec("data")
    ckpt.loss_spec()
    ckpt.loss_options = dict(loss_options or {})
    return ckpt


def check_loss_name(loss: str | None) -> None:
    if loss is not None and loss not in LOSSES and not is_entrypoint(loss):
        raise LandscapeError(
            f"unknown loss '{loss}'; choose one of {', '.join(LOSSES)}, or name a function as file.py:fn"
        )


def loss_options(ignore_index: int, label_smoothing: float) -> dict[str, Any]:
    """--ignore-index and --label-smoothing as the loss's options (only what differs from the defaults)."""
    if not 0.0 <= label_smoothing < 1.0:
        raise LandscapeError(f"--label-smoothing must lie in [0, 1), got {label_smoothing}")
    options: dict[str, Any] = {}
    if ignore_index != -100:
        options["ignore_index"] = ignore_index
    if label_smoothing:
        options["label_smoothing"] = label_smoothing
    return options


def command_line() -> list[str]:
    """The command line being run, as the user typed it (for provenance)."""
    return ["landscape", *ARGV]


def named_inputs(*given: Path | str | None) -> list[Path]:
    """The files a command reads that the user named: paths, data files, and the files of entry points
    ('file.py:fn'). Outputs may never be one of them."""
    out: list[Path] = []
    for item in given:
        if item is None:
            continue
        text = str(item)
        if is_entrypoint(text):
            module = text.rpartition(":")[0]
            if module.endswith(".py"):
                out.append(Path(module))
            continue
        out.append(Path(text))
    return out


def loss_file(loss: str | None) -> str | None:
    """--loss as an input when it names a function in a file (file.py:fn), else None."""
    return loss if loss is not None and is_entrypoint(loss) else None


def recorded_inputs(ckpt: Checkpoint) -> list[Path]:
    """The checkpoint and the data file it records (if any)."""
    paths = [ckpt.path] if ckpt.path is not None else []
    if isinstance(ckpt.data, dict) and isinstance(ckpt.data.get("path"), str):
        paths.append(Path(ckpt.data["path"]))
    return paths


def results_path(out: Path | None, default: Path) -> Path:
    """Where a results file goes: `default` without --out; with --out, the path given (an existing directory
    takes the default name inside it; a name without .h5/.hdf5 gets .h5 appended)."""
    if out is None:
        return default
    if out.is_dir():
        return out / default.name
    return out if out.suffix in (".h5", ".hdf5") else out.with_name(out.name + ".h5")


def described_problem(
    model: str | None,
    model_args: list[str] | None,
    data: str | None,
    data_args: list[str] | None,
    loss: str | None,
    seed: int,
    loss_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """--model/--data/--loss as `ls.load` keyword arguments (for a command that loads several checkpoints)."""
    check_loss_name(loss)
    for option, value in (("--model", model), ("--data", data)):
        if value is not None and not value.strip():
            raise LandscapeError(f"{option} is empty; name a built-in, a file or an entry point")
    if model_args and model is None:
        raise LandscapeError("--model-arg needs --model here")
    if data_args and data is None:
        raise LandscapeError("--data-arg needs --data here")
    return {
        "model": model,
        "model_kwargs": parse_kv(model_args, "--model-arg") or None,
        "data": data,
        "data_kwargs": parse_kv(data_args, "--data-arg") or None,
        "loss": loss,
        "loss_options": loss_options or None,
    }
