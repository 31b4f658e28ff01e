"""Rich tables for people and JSON for machines; both go to stdout."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.table import Table

from .spectrum import SpectrumResult
from .surface import SurfaceResult


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


def surface_dict(result: SurfaceResult) -> dict[str, Any]:
    """The JSON form of a surface result (stable keys for scripts)."""
    grid = result.grid
    return {
        "output": str(result.path),
        "dims": grid.dims,
        "x": grid.x.spec(),
        "y": grid.y.spec() if grid.y is not None else None,
        "points": grid.size,
        "splits": result.splits,
        "directions": result.directions,
        "summary": result.summary,
        "nonfinite_points": result.nonfinite,
        "evaluation": {
            "method": result.stats.method,
            "points_per_pass": result.stats.points_per_pass,
            "computed": result.stats.computed,
            "resumed": result.stats.resumed,
            "seconds": result.stats.seconds,
            "seconds_per_point_measured": result.stats.calibration,
        },
        "problem": result.problem,
    }


def print_surface(result: SurfaceResult, title: str, console: Console | None = None) -> None:
    console = console or Console()
    p, grid, stats, s = result.problem, result.grid, result.stats, result.summary
    console.print(
        f"[bold]{title}[/bold]: {p['n_params']:,} parameters, {p['n_samples']:,} samples "
        f"({p['mode']} mode, {p['dtype']}, {p['device']})"
    )
    kinds = ", ".join(
        f"d{i + 1} {d.get('kind', '?')}"
        + (f" (eigenvalue {d['eigenvalue']:.4g})" if "eigenvalue" in d else "")
        + (f" ({100 * d['explained_variance_ratio']:.1f}% of variance)" if "explained_variance_ratio" in d else "")
        for i, d in enumerate(result.directions)
    )
    shape = f"{grid.x.n}" if grid.y is None else f"{grid.x.n} x {grid.y.n}"
    console.print(
        f"{grid.dims}D surface, {shape} points on x {grid.x.spec()}" + (f", y {grid.y.spec()}" if grid.y else "")
    )
    console.print(f"directions: {kinds}")
    rate = stats.computed / stats.seconds if stats.seconds > 0 else float("nan")
    how = "one point per pass" if stats.points_per_pass == 1 else f"{stats.points_per_pass} points per pass (vmap)"
    resumed = f", {stats.resumed} resumed" if stats.resumed else ""
    console.print(f"evaluated {stats.computed} points in {stats.seconds:.2f} s ({rate:.1f} points/s, {how}){resumed}")
    table = Table(title=f"Sharpness summary ({s.get('split', '')} loss)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("loss at the centre", _num(s.get("center_loss")))
    if "rise_mean" in s:
        table.add_row(f"mean loss rise at radius {s['radius']:.3g}", _num(s["rise_mean"]))
        table.add_row(f"largest loss rise at radius {s['radius']:.3g}", _num(s["rise_max"]))
    for i, value in enumerate(s.get("curvature", [])):
        table.add_row(f"curvature along d{i + 1} (quadratic fit)", _num(value))
    if "fit_hessian_eigenvalues" in s:
        table.add_row(
            "eigenvalues of the fitted 2x2 Hessian", ", ".join(_num(v, 4) for v in s["fit_hessian_eigenvalues"])
        )
    console.print(table)
    console.print(f"results: {result.path}")
