"""Rich tables for people and JSON for machines; both go to stdout."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from .spectrum import SpectrumResult


def _num(x: float | None, digits: int = 6) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}"


def spectrum_dict(result: SpectrumResult, outputs: dict[str, str]) -> dict[str, Any]:
    """The JSON form of a spectrum result (stable keys for scripts)."""
    out: dict[str, Any] = {
        "loss": result.loss,
        "accuracy": result.accuracy,
        "grad_norm": result.grad_norm,
        "problem": result.problem,
        "hvps_total": result.hvps,
        "seconds": result.seconds,
        "outputs": outputs,
    }
    if result.lanczos is not None:
        lz = result.lanczos
        for which in ("top", "bottom"):
            ritz = getattr(lz, which)
            if len(ritz.values):
                out[which] = [
                    {"eigenvalue": float(v), "residual_bound": float(r), "error_bound": float(e), "converged": bool(c)}
                    for v, r, e, c in zip(
                        ritz.values, ritz.residual_bounds, ritz.error_bounds, ritz.converged, strict=True
                    )
                ]
        out["lanczos"] = {
            "hvps": lz.matvecs,
            "iterations": lz.iterations,
            "converged": lz.converged,
            "tol": result.options.tol,
        }
    if result.trace is not None:
        out["trace"] = {"estimate": result.trace.estimate, "stderr": result.trace.stderr, "hvps": result.trace.matvecs}
    if result.density is not None:
        d = result.density
        out["density"] = {
            "runs": int(d.nodes.shape[0]),
            "steps": int(d.nodes.shape[1]),
            "sigma": d.sigma,
            "mean": d.mean,
            "hvps": d.matvecs,
        }
    return out


def print_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, indent=2, default=float))


def print_spectrum(result: SpectrumResult, title: str, outputs: dict[str, str], console: Console | None = None) -> None:
    console = console or Console()
    p = result.problem
    acc = f", accuracy {result.accuracy:.2f}%" if result.accuracy is not None else ""
    console.print(
        f"[bold]{title}[/bold]: {p['n_params']:,} parameters, {p['n_samples']:,} samples "
        f"({p['mode']} mode, {p['dtype']}, {p['device']}, HVP by {p['hvp_method']})"
    )
    console.print(f"loss {result.loss:.6g}{acc}, gradient norm {result.grad_norm:.4g}")
    if result.lanczos is not None:
        lz = result.lanczos
        table = Table(title=f"Hessian eigenvalues (Lanczos, {lz.matvecs} HVPs, tol {result.options.tol:g})")
        for col in ("", "#", "eigenvalue", "error bound", "residual bound", "converged"):
            table.add_column(col, justify="right" if col not in ("", "converged") else "left")
        for which in ("top", "bottom"):
            ritz = getattr(lz, which)
            for i, (v, r, e, c) in enumerate(
                zip(ritz.values, ritz.residual_bounds, ritz.error_bounds, ritz.converged, strict=True)
            ):
                table.add_row(
                    which if i == 0 else "",
                    str(i + 1),
                    _num(float(v), 8),
                    _num(float(e), 2),
                    _num(float(r), 2),
                    "yes" if c else "[red]no[/red]",
                )
        console.print(table)
    if result.trace is not None:
        t = result.trace
        console.print(f"trace (Hutch++, {t.matvecs} HVPs): {t.estimate:.6g} ± {t.stderr:.2g} (standard error)")
    if result.density is not None:
        d = result.density
        console.print(
            f"density (SLQ, {d.nodes.shape[0]} runs x {d.nodes.shape[1]} steps, {d.matvecs} HVPs): "
            f"support [{_num(float(d.grid[0]), 4)}, {_num(float(d.grid[-1]), 4)}], mean {d.mean:.4g}"
        )
    for label, path in outputs.items():
        console.print(f"{label}: {path}")
