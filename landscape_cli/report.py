"""Rich tables for people and JSON for machines; both go to stdout."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.console import Console
from rich.markup import escape as esc
from rich.table import Table

from .check.compare import MEASURES, Delta
from .check.gates import GateResult
from .eos.measure import EosResult
from .eos.run import RunEdges
from .spectrum import SpectrumResult
from .surface import SurfaceResult
from .text import literal, stdout_console


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
        "memory": result.memory,
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
    if result.layers is not None:
        out["layers"] = {"by": result.layers.by, "matvecs": result.layers.matvecs, "blocks": result.layers.rows()}
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


MATRIX_NAMES = {"hessian": "Hessian", "ggn": "Gauss-Newton", "fisher": "Empirical Fisher"}


def print_spectrum(result: SpectrumResult, title: str, outputs: dict[str, str], console: Console | None = None) -> None:
    console = console or stdout_console()
    p = result.problem
    acc = f", accuracy {result.accuracy:.2f}%" if result.accuracy is not None else ""
    console.print(
        f"[bold]{esc(title)}[/bold]: {p['n_params']:,} parameters, {p['n_samples']:,} samples "
        f"({p['mode']} mode, {p['dtype']}, {p['device']}, HVP by {p['hvp_method']})"
    )
    console.print(f"loss {result.loss:.6g}{acc}, gradient norm {result.grad_norm:.4g}")
    matrix = MATRIX_NAMES.get(p.get("curvature", "hessian"), "Hessian")
    if p.get("params"):
        console.print(f"block over {p['block_size']:,} parameters matching {esc(p['params'])}")
    if result.lanczos is not None:
        lz = result.lanczos
        products = "HVPs" if matrix == "Hessian" else "products"
        table = Table(title=f"{matrix} eigenvalues (Lanczos, {lz.matvecs} {products}, tol {result.options.tol:g})")
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
    if result.layers is not None:
        layers = result.layers
        table = Table(title=f"{matrix} blocks per {layers.by} ({layers.matvecs} products)")
        for col in ("block", "parameters", "top eigenvalue", "error bound", "trace", "± (s.e.)"):
            table.add_column(col, justify="left" if col == "block" else "right")
        for row in layers.rows():
            stderr = "exact" if row["trace_stderr"] == 0 else _num(float(row["trace_stderr"]), 2)
            table.add_row(esc(str(row["name"])), f"{row['size']:,}", _num(float(row["top"]), 6),
                          _num(float(row["top_error"]), 2), _num(float(row["trace"]), 6), stderr)  # fmt: skip
        console.print(table)
    for label, path in outputs.items():
        console.print(f"{label}: {esc(path)}")


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
    console = console or stdout_console()
    p, grid, stats, s = result.problem, result.grid, result.stats, result.summary
    console.print(
        f"[bold]{esc(title)}[/bold]: {p['n_params']:,} parameters, {p['n_samples']:,} samples "
        f"({p['mode']} mode, {p['dtype']}, {p['device']})"
    )
    kinds = ", ".join(
        f"d{i + 1} {d.get('kind', '?')}"
        + (f" from {Path(str(d['source'])).name}" if d.get("kind") in ("random", "eigen") and d.get("source") else "")
        + (f" (eigenvalue {d['eigenvalue']:.4g})" if "eigenvalue" in d else "")
        + (f" ({100 * d['explained_variance_ratio']:.1f}% of variance)" if "explained_variance_ratio" in d else "")
        for i, d in enumerate(result.directions)
    )
    shape = f"{grid.x.n}" if grid.y is None else f"{grid.x.n} x {grid.y.n}"
    console.print(
        f"{grid.dims}D surface, {shape} points on x {grid.x.spec()}" + (f", y {grid.y.spec()}" if grid.y else "")
    )
    console.print(f"directions: {esc(kinds)}")
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
    console.print(f"results: {esc(str(result.path))}")


def print_eos(result: EosResult, title: str, output: str, console: Console | None = None) -> None:
    console = console or stdout_console()
    p, s = result.problem, result.setting
    console.print(
        f"[bold]{esc(title)}[/bold]: {p['n_params']:,} parameters, {p['n_samples']:,} samples "
        f"({p['mode']} mode, {p['dtype']}, {p['device']}); loss {result.loss:.6g}, gradient norm {result.grad_norm:.4g}"
    )
    keys = ["lr", "beta1"] if s["base"] == "adam" else ["lr", "momentum"]
    keys += ["rho"] if s["opt"] in ("sam", "usam", "ssam", "msam") and s.get("rho") is not None else []
    hp = ", ".join(f"{k} {s[k]:g}" for k in keys)
    console.print(f"optimizer: {s['opt']} over {s['base']} ({hp}); edge: {s['formula']}")
    table = Table(title=f"Edge of stability ({result.hvps} HVPs)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    what = "preconditioned sharpness" if result.preconditioned else "sharpness (top eigenvalue)"
    table.add_row(what, f"{result.sharpness:.6g} ± {result.error_bound:.2g}")
    table.add_row(f"edge ({s['rule']})", _num(result.edge))
    if result.micro_grad_norms:
        table.add_row("micro-batch gradient norms", ", ".join(_num(v, 4) for v in result.micro_grad_norms))
    table.add_row("sharpness / edge", _num(result.ratio, 4))
    colour = {"below": "green", "at": "yellow", "above": "red"}[result.verdict]
    table.add_row(f"verdict (band ±{result.band:g})", f"[{colour}]{result.verdict}[/{colour}]")
    console.print(table)
    console.print(f"results: {esc(output)}")


def print_eos_run(edges: RunEdges, summary: dict[str, Any], title: str, output: str) -> None:
    console = stdout_console()
    s = summary["setting"]
    console.print(f"[bold]{esc(title)}[/bold]: {s['opt']} over {s['base']}; edge: {s['formula']}")
    table = Table(
        title=f"Sharpness against the edge ({summary['tracked_steps']} tracked steps from step {summary['after_step']})"
    )
    for col in ("step", "lr", "sharpness", "edge", "ratio"):
        table.add_column(col, justify="right")
    shown = np.unique(np.linspace(0, len(edges.step) - 1, min(12, len(edges.step))).astype(int))
    for i in shown:
        table.add_row(
            str(int(edges.step[i])),
            _num(float(edges.lr[i]), 4),
            _num(float(edges.sharpness[i]), 5),
            _num(float(edges.edge[i]), 5),
            _num(float(edges.ratio[i]), 4),
        )
    console.print(table)
    first = summary["first_step_at_edge"]
    console.print(
        f"at the edge (±{summary['band']:g}) at {100 * summary['fraction_at_edge']:.0f}% of tracked steps; "
        + (f"sharpening first reached it at step {first}" if first is not None else "it never reached the edge")
    )
    console.print(f"results: {esc(output)}")


def print_checks(results: list[GateResult], title: str, config: str | None, seconds: float) -> None:
    console = stdout_console()
    table = Table(title=literal(f"Sharpness gates for {title}"), box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("gate", "value", "±", "limit", "result"):
        table.add_column(col, justify="left" if col in ("gate", "result") else "right", no_wrap=True)
    kinds: dict[str, list[str]] = {}
    for r in results:
        name = SHORT_NAMES[GATE_MEASURE[r.name]]
        sign = "<=" if r.bound == "max" else ">="
        verdict = "[green]pass[/green]" if r.passed else "[red]FAIL[/red]"
        table.add_row(name, _num(r.value), "-" if r.uncertainty is None else f"{r.uncertainty:.2g}",
                      f"{sign} {r.limit:g}", verdict)  # fmt: skip
        exact = "a lower bound found by ascent, exact given the seed" if "lower bound" in r.uncertainty_kind else \
            "exact given the seed"  # fmt: skip
        kinds.setdefault(r.uncertainty_kind if r.uncertainty is not None else exact, []).append(name)
    console.print(table)
    console.print("±: " + "; ".join(f"{kind} ({', '.join(names)})" for kind, names in kinds.items()))
    if config:
        console.print(f"config: {esc(config)}")
    failed = sum(not r.passed for r in results)
    console.print(f"{len(results) - failed} of {len(results)} gates passed in {seconds:.1f} s")


def print_compare(rows: list[Delta], base: str, new: str, seconds: float) -> None:
    console = stdout_console()
    table = Table(title=literal(f"{base} (base) against {new} (new)"), box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("measurement", "base", "new", "change", "sharper", "limit", "result"):
        table.add_column(col, justify="left" if col in ("measurement", "result") else "right", no_wrap=True)
    for r in rows:
        verdict = "-" if r.limit is None else ("[green]pass[/green]" if r.passed else "[red]FAIL[/red]")
        limit = "-" if r.limit is None else f"{100 * r.limit:.3g}%"
        table.add_row(
            SHORT_NAMES.get(r.measure, r.measure),
            _num(r.base, 5),
            _num(r.new, 5),
            f"{r.change:+.3g}",
            f"{100 * r.sharper_by:+.2f}%",
            limit,
            verdict,
        )
    console.print(table)
    failed = sum(not r.passed for r in rows)
    verdict = f"{failed} of {len(rows)} sharper than allowed" if failed else "none sharper than allowed"
    console.print(f"compared in {seconds:.1f} s; {verdict if rows[0].limit is not None else 'no --max-increase'}")


#: Column-width names of the measurements, and the check gate that measures each.
SHORT_NAMES = {
    "top": "top eig",
    "bottom": "bottom eig",
    "trace": "trace",
    "eos": "eos ratio",
    "surface": "surface rise",
    "worst": "worst sharpness",
    "average": "avg sharpness",
}
GATE_MEASURE = {gate: measure for measure, (gate, _) in MEASURES.items()}


def print_sharpness(results: list[Any], extra: dict[str, float], title: str, output: str) -> None:
    """One row per measure: value (± standard error, or '>=' for a lower bound), the loss and passes made."""
    console = stdout_console()
    table = Table(title=f"Sharpness of {esc(title)}", box=box.SIMPLE_HEAVY)
    for column in ("measure", "value", "± / bound", "passes"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for r in results:
        note = "lower bound" if r.lower_bound else "-" if r.stderr is None else f"± {r.stderr:.2g}"
        if r.lower_bound and r.stderr is not None:
            note = f"lower bound, ± {r.stderr:.2g} over batches"
        unit = " %" if r.settings.measure == "keskar" else ""
        table.add_row(esc(r.settings.name()), f"{r.value:.6g}{unit}", note, str(r.passes))
    if "top_eigenvalue" in extra:
        table.add_row("top Hessian eigenvalue", _num(extra["top_eigenvalue"]), f"± {extra['top_error_bound']:.2g}", "-")
    if "trace" in extra:
        table.add_row("Hessian trace (Hutch++)", _num(extra["trace"]), f"± {extra['trace_stderr']:.2g}", "-")
    console.print(table)
    if results:
        console.print(f"loss at the checkpoint: {results[0].loss:.6g}")
    console.print(f"results: {esc(output)}")
