"""HTML tables of the report: measured numbers, eos verdicts, check/compare gates with pass/fail colours,
provenance, and the side-by-side comparison of several runs. Every string from a file is escaped."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np

from .collect import Group, Item


def number(value: Any, digits: int = 5) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int | float | np.floating | np.integer):
        v = float(value)
        return "-" if math.isnan(v) else f"{v:.{digits}g}"
    return escape(str(value))


def table(header: Sequence[str], rows: Sequence[Sequence[str]], css: str = "", row_classes: Sequence[str] = ()) -> str:
    """Cells are HTML already (escaped by the caller); header cells are escaped here."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="{row_classes[i] if i < len(row_classes) else ""}">' + "".join(f"<td>{c}</td>" for c in row)
        + "</tr>" for i, row in enumerate(rows)
    )  # fmt: skip
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def provenance(item: Item) -> str:
    """Where every number of the item came from: command, checkpoint and its hash, data, seed, device, versions."""
    if not item.provenance:
        return ""
    rows = []
    for key, value in item.provenance.items():
        text = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)
        rows.append([escape(key), f"<code>{escape(text)}</code>"])
    return f"<details class='prov'><summary>Provenance of {escape(item.path.name)}</summary>" \
        f"{table(['', 'value'], rows, 'kv')}</details>"  # fmt: skip


def spectrum_summary(spec: dict[str, Any]) -> str:
    rows = [["loss", number(spec.get("loss"))], ["gradient norm", number(spec.get("grad_norm"))]]
    for which in ("top", "bottom"):
        part = spec.get(which)
        if part is not None:
            pairs = zip(part["eigenvalues"], part["error_bounds"], strict=True)
            text = ", ".join(f"{number(v)} ± {number(b, 2)}" for v, b in pairs)
            rows.append([f"{which} eigenvalues (± Lanczos bound)", text])
    trace = spec.get("trace")
    if trace is not None:
        rows.append(["trace (Hutch++ ± standard error)", f"{number(trace.get('estimate'))} ± "
                                                          f"{number(trace.get('stderr'), 2)}"])  # fmt: skip
    return table(["measure", "value"], rows, "kv")


def sharpness_measures(data: dict[str, Any]) -> str:
    """`landscape sharpness`: each measure's value, its standard error or that it is a lower bound."""
    rows = []
    for r in data["rows"]:
        note = "lower bound" if r.get("lower_bound") else ""
        if r.get("stderr") is not None:
            note = (note + ", " if note else "") + f"± {number(r['stderr'], 2)}"
        unit = " %" if r.get("measure") == "keskar" else ""
        rows.append([escape(str(r.get("name", ""))), number(r.get("value")) + unit, escape(note) or "-",
                     number(r.get("passes"))])  # fmt: skip
    for key, bound, label in (("top_eigenvalue", "top_error_bound", "top Hessian eigenvalue"),
                              ("trace", "trace_stderr", "Hessian trace (Hutch++)")):  # fmt: skip
        if data.get(key) is not None:
            rows.append([label, number(data[key]), f"± {number(data.get(bound), 2)}", "-"])
    return table(["measure", "value", "± / bound", "passes"], rows, "kv")


def eos_verdict(attrs: dict[str, Any]) -> str:
    """A checkpoint's sharpness against its optimizer's edge (`landscape eos CHECKPOINT`)."""
    setting = attrs.get("setting")
    setting = json.loads(setting) if isinstance(setting, str) else setting or {}
    verdict = str(attrs.get("verdict", ""))
    rows = [[escape(str(setting.get("rule", "?"))), f"{number(attrs.get('sharpness'))} ± "
             f"{number(attrs.get('error_bound'), 2)}", number(attrs.get("edge")), number(attrs.get("ratio"), 4),
             escape(verdict)]]  # fmt: skip
    css = {"above": "fail", "at": "warn", "below": "pass"}.get(verdict, "")
    return table(["edge rule", "sharpness", "edge", "sharpness / edge", "verdict"], rows, "gates", [css])


def eos_run_summary(summary: dict[str, Any]) -> str:
    final = summary.get("final") or {}
    rows = [["tracked steps", number(summary.get("tracked_steps"))],
            ["fraction of steps at the edge (± band)", number(summary.get("fraction_at_edge"), 3)],
            ["first step at the edge", number(summary.get("first_step_at_edge"))],
            ["largest sharpness / edge", number(summary.get("max_ratio"), 4)],
            ["final sharpness / edge", number(final.get("ratio"), 4)]]  # fmt: skip
    return table(["measure", "value"], rows, "kv")


def gates(check: dict[str, Any]) -> str:
    """`landscape check --json`: each gate with its value, uncertainty, limit and verdict."""
    rows, classes = [], []
    for g in check.get("gates", []):
        sign = "≤" if g.get("bound") == "max" else "≥"
        uncertainty = f"{g.get('uncertainty_kind', '')} {number(g.get('uncertainty'), 2)}" \
            if g.get("uncertainty") is not None else "-"  # fmt: skip
        passed = bool(g.get("passed"))
        limit = f"{sign} {number(g.get('limit'))}"
        rows.append([escape(str(g.get("name", ""))), escape(str(g.get("quantity", ""))), number(g.get("value")),
                     escape(uncertainty), limit, "pass" if passed else "FAIL"])  # fmt: skip
        classes.append("pass" if passed else "fail")
    return table(["gate", "quantity", "value", "uncertainty", "limit", "verdict"], rows, "gates", classes)


def deltas(compare: dict[str, Any]) -> str:
    """`landscape compare --json`: BASE and NEW, the change toward sharper, the limit, the verdict."""
    rows, classes = [], []
    for d in compare.get("deltas", []):
        passed = bool(d.get("passed"))
        limit = "-" if d.get("limit") is None else f"{100 * float(d['limit']):.3g}%"
        rows.append([escape(str(d.get("measure", ""))), number(d.get("base")), number(d.get("new")),
                     _percent(d.get("sharper_by")), limit, "pass" if passed else "FAIL"])  # fmt: skip
        classes.append("pass" if passed else "fail")
    return table(["measure", "base", "new", "toward sharper", "limit", "verdict"], rows, "gates", classes)


def junit(cases: list[dict[str, Any]]) -> str:
    rows = [[escape(c["name"]), escape(c["message"]), "pass" if c["passed"] else "FAIL"] for c in cases]
    return table(["case", "message", "verdict"], rows, "gates", ["pass" if c["passed"] else "fail" for c in cases])


def _percent(value: Any) -> str:
    if value is None or not math.isfinite(float(value)):
        return "-"
    return f"{100 * float(value):+.2f}%"


# -- comparison -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quantity:
    name: str
    #: +1: larger is sharper, -1: smaller is sharper, 0: no sharpness direction (a plain difference).
    sharper: int


QUANTITIES = (
    Quantity("top eigenvalue", +1), Quantity("bottom eigenvalue", -1), Quantity("trace", +1),
    Quantity("sharpness / edge (eos)", 0), Quantity("tracked top eigenvalue (last)", +1),
    Quantity("surface: mean rise over the grid", +1), Quantity("worst-case sharpness", +1),
    Quantity("average-case sharpness", +1), Quantity("loss (spectrum)", 0),
    Quantity("final train loss", 0), Quantity("final test loss", 0), Quantity("final test accuracy (%)", 0),
)  # fmt: skip


def measured(group: Group) -> dict[str, float]:
    """The group's value of each comparable quantity (the first file of each kind that has it)."""
    out: dict[str, float] = {}
    for item in group.of("spectrum"):
        spec = item.data
        if "top" in spec:
            out.setdefault("top eigenvalue", float(spec["top"]["eigenvalues"][0]))
        if "bottom" in spec:
            out.setdefault("bottom eigenvalue", float(spec["bottom"]["eigenvalues"][0]))
        if spec.get("trace") and spec["trace"].get("estimate") is not None:
            out.setdefault("trace", float(spec["trace"]["estimate"]))
        if spec.get("loss") is not None:
            out.setdefault("loss (spectrum)", float(spec["loss"]))
    for item in group.of("sharpness"):  # the first plain full-batch row of each measure, as compare takes them
        for row in item.data["rows"]:
            name = {"worst": "worst-case sharpness", "average": "average-case sharpness"}.get(str(row.get("measure")))
            if name and not row.get("m") and row.get("value") is not None:
                out.setdefault(name, float(row["value"]))
        for key, name in (("top_eigenvalue", "top eigenvalue"), ("trace", "trace")):
            if item.data.get(key) is not None:
                out.setdefault(name, float(item.data[key]))
    for item in group.of("eos"):
        out.setdefault("sharpness / edge (eos)", float(item.data.get("ratio", math.nan)))
    for item in group.of("eos-run"):
        out.setdefault("sharpness / edge (eos)", float(item.data["ratio"][-1]))
    for item in [*group.of("train-log"), *group.of("sharpness-log")]:
        sharp, ev = item.data.table("sharpness"), item.data.table("eval")
        if len(sharp.get("top_eigenvalue", ())):
            out.setdefault("tracked top eigenvalue (last)", float(sharp["top_eigenvalue"][-1]))
        for column, name in (("train_loss", "final train loss"), ("test_loss", "final test loss"),
                             ("test_accuracy", "final test accuracy (%)")):  # fmt: skip
            if len(ev.get(column, ())):
                out.setdefault(name, float(ev[column][-1]))
    for item in group.of("surface"):
        surface = item.data
        z = surface.values(surface.primary())
        centre = surface.cut_at_zero().values(surface.primary()) if surface.dims == 2 else z
        x0 = int(np.argmin(np.abs(surface.x)))
        if np.isfinite(centre[x0]):
            out.setdefault("surface: mean rise over the grid", float(np.nanmean(z) - centre[x0]))
    return {k: v for k, v in out.items() if math.isfinite(v)}


def comparison(groups: Sequence[Group]) -> str:
    """Each quantity for every run, and its change from the first run: toward sharper in red, flatter in green."""
    values = [measured(g) for g in groups]
    header = ["quantity", *(g.name for g in groups)]
    rows = []
    for q in QUANTITIES:
        if not any(q.name in v for v in values):
            continue
        base = values[0].get(q.name)
        cells = [escape(q.name)]
        for i, v in enumerate(values):
            value = v.get(q.name)
            cell = number(value)
            if i > 0 and value is not None and base is not None:
                cell += " " + _delta(q, base, value)
            cells.append(cell)
        rows.append(cells)
    if not rows:
        return "<p>These runs share no measured quantity to compare.</p>"
    return table(header, rows, "compare")


def _delta(q: Quantity, base: float, value: float) -> str:
    change = value - base
    if q.sharper == 0 or base == 0:
        return f'<span class="delta">({change:+.4g})</span>'
    toward = q.sharper * change / abs(base)
    css = "sharper" if toward > 0 else "flatter" if toward < 0 else ""
    word = "sharper" if toward > 0 else "flatter"
    return f'<span class="delta {css}">({100 * abs(toward):.1f}% {word})</span>'
