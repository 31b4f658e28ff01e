"""`landscape info`: what a checkpoint or an HDF5 results file holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..checkpoint import load_checkpoint
from ..files import require_regular_file
from ..results import describe_results
from ..text import literal, stdout_console
from . import common as c

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def checkpoint_summary(path: Path) -> dict:
    ckpt = load_checkpoint(path)
    summary = {
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
    if ckpt.untrusted:
        # shown, never imported: info builds nothing
        summary["entry_points"] = {what: f"{entry} (code named in the file; not run)"
                                   for what, entry in ckpt.untrusted.items()}  # fmt: skip
    return summary


def info_command(
    file: Annotated[Path, typer.Argument(help="A checkpoint (.pt) or an HDF5 results file.")],
    json_out: c.JsonOpt = False,
) -> None:
    """Show what a checkpoint holds (model, parameters, data, loss, optimizer, metrics) or what an HDF5
    results file holds (datasets, shapes, attributes)."""
    require_regular_file(file, "checkpoint or results file")
    with open(file, "rb") as fh:
        is_hdf5 = fh.read(8) == HDF5_MAGIC
    summary = describe_results(file) if is_hdf5 else checkpoint_summary(file)
    if json_out:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    console = stdout_console()
    table = Table(title=str(file), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    if is_hdf5:
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
                literal(", ".join(f"{k}={v}" for k, v in d["attrs"].items())[:120]),
            )
        console.print(ds)
        return
    for key, value in summary.items():
        if value in (None, {}, ""):
            continue
        shown = json.dumps(value, default=str) if isinstance(value, dict) else str(value)
        table.add_row(key, literal(shown))
    console.print(table)
