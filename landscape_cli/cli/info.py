"""`landscape info`: what a checkpoint, an HDF5 results file or a run directory holds."""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import LandscapeError
from . import common as c

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: A zip archive (torch.save's format since 1.6) or a pickle (its legacy format).
CHECKPOINT_MAGICS = (b"PK\x03\x04", b"\x80\x02", b"\x80\x04", b"\x80\x05")


def checkpoint_summary(path: Path) -> dict[str, Any]:
    from ..checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    summary: dict[str, Any] = {
        "path": str(path),
        "kind": "checkpoint" if ckpt.native else "foreign state_dict",
        "format_version": ckpt.format_version,
        "sha256": ckpt.sha256,
        "model": ckpt.model,
        "parameters": ckpt.n_params,
        "tensors": len(ckpt.state_dict),
        "data": ckpt.data,
        "loss": ckpt.loss,
        "optimizer": None,
        "step": ckpt.step,
        "epoch": ckpt.epoch,
        "seed": ckpt.seed,
        "metrics": ckpt.metrics,
        "created": ckpt.created,
        "tool_version": ckpt.tool_version,
    }
    if ckpt.optimizer:
        summary["optimizer"] = {
            "name": ckpt.optimizer.get("name"),
            "hparams": ckpt.optimizer.get("hparams"),
            "has_state": bool(ckpt.optimizer.get("state")),
        }
    if ckpt.untrusted:  # shown, never imported: info builds nothing
        summary["entry_points"] = {what: f"{entry} (code named in the file; not run)"
                                   for what, entry in ckpt.untrusted.items()}  # fmt: skip
    return summary


def run_summary(run: Path) -> dict[str, Any]:
    """A run directory: its settings, how far it got, its last evaluation, its checkpoints (no torch)."""
    from ..hdf5 import open_results, read_attrs
    from ..train.rundir import LOG_NAME, is_run_checkpoint

    log = run / LOG_NAME
    checkpoints = sorted(p.name for p in run.iterdir() if is_run_checkpoint(p.name))
    if not log.is_file() and not checkpoints:
        raise LandscapeError(f"{run} is a directory without {LOG_NAME} or checkpoints, so not a run directory")
    summary: dict[str, Any] = {"path": str(run), "kind": "run directory", "checkpoints": checkpoints}
    if log.is_file():
        with open_results(log) as f:
            attrs = read_attrs(f)
            config = json.loads(attrs.get("config", "{}"))
            rows = {name: int(group["step"].shape[0]) for name, group in f.items() if "step" in group}
            last = {}
            if rows.get("eval"):
                last = {k: float(v[-1]) for k, v in f["eval"].items()}
        summary.update(
            config={k: v for k, v in config.items() if k not in ("out_dir", "hparams")}
            if isinstance(config, dict)
            else config,  # fmt: skip
            logged_rows=rows,
            last_evaluation=last,
        )
    return summary


def info_command(
    file: Annotated[
        Path, typer.Argument(help="A checkpoint (.pt), an HDF5 results file, or a run directory.", show_default=False)
    ],
    json_out: c.JsonOpt = False,
) -> None:
    """Show what a checkpoint holds (model, parameters, data, loss, optimizer, metrics), what an HDF5 results
    file holds (datasets, shapes, attributes), or what a run directory holds (settings, progress, checkpoints).
    Reads only: nothing named in a file is run."""
    from ..files import require_regular_file

    if file.is_dir():
        summary, kind = run_summary(file), "run"
    else:
        require_regular_file(file, "checkpoint or results file")
        with open(file, "rb") as fh:
            head = fh.read(8)
        if head == HDF5_MAGIC:
            from ..hdf5 import describe_results

            summary, kind = describe_results(file), "hdf5"
        elif head.startswith(CHECKPOINT_MAGICS):
            summary, kind = checkpoint_summary(file), "checkpoint"
        else:
            raise LandscapeError(
                f"{file} is neither a checkpoint (a torch.save file) nor an HDF5 results file; info reads those "
                "and run directories"
            )
    if json_out:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    _print(file, summary, kind)


def _print(file: Path, summary: dict[str, Any], kind: str) -> None:
    from rich.table import Table

    from ..text import literal, stdout_console

    console = stdout_console()
    table = Table(title=literal(file), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    if kind == "hdf5":
        for key, value in summary["attrs"].items():
            table.add_row(literal(key), literal(value))
        console.print(table)
        ds = Table(title="datasets")
        for col in ("name", "shape", "dtype", "attributes"):
            ds.add_column(col)
        for d in summary["datasets"]:
            ds.add_row(
                literal(d["name"]),
                "" if d["shape"] is None else "x".join(map(str, d["shape"])) or "scalar",
                literal(d["dtype"]),
                literal(", ".join(f"{k}={v}" for k, v in d["attrs"].items())),
            )
        console.print(ds)
        return
    for key, value in summary.items():
        if value in (None, {}, "", []):
            continue
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
        table.add_row(key, literal(shown))
    console.print(table)
