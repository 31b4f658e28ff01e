"""The report as one self-contained HTML file: the figures' data as JSON in the page, Plotly's JavaScript
embedded (the page makes no network request), rendered when the page opens."""

from __future__ import annotations

import datetime as _dt
import json
from html import escape
from importlib import resources

import numpy as np

from .._version import __version__
from ..errors import LandscapeError
from . import figures as fg
from . import tables as tb
from .collect import Group, Item, Unreadable

KIND_TITLES = {
    "surface": "Loss surface", "spectrum": "Spectrum", "train-log": "Training", "sharpness-log": "Tracked sharpness",
    "eos": "Edge of stability", "eos-run": "Edge of stability over the run", "sharpness": "Sharpness measures",
    "check": "Sharpness gates (check)",
    "compare": "Comparison gates (compare)", "junit": "Gates (JUnit)",
}  # fmt: skip


def plotly_js() -> str:
    """The plotly.min.js that Plotly's Python package ships (the optional extra `[report]`)."""
    try:
        return (resources.files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        raise LandscapeError(
            "landscape report needs Plotly's JavaScript: pip install 'landscape-cli[report]'"
        ) from None


class Page:
    """Sections of HTML and the figures they refer to by id."""

    def __init__(self) -> None:
        self.figures: dict[str, fg.Figure] = {}

    def figure(self, figure: fg.Figure, css: str = "fig") -> str:
        fid = f"fig-{len(self.figures) + 1}"
        self.figures[fid] = figure
        return f'<div class="{css}" id="{fid}"></div>'


def build(groups: list[Group], unreadable: list[Unreadable], title: str) -> str:
    page = Page()
    body = [f"<header><h1>{escape(title)}</h1><p class='meta'>landscape {escape(__version__)}, "
            f"{escape(_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds'))}; "
            f"{len(groups)} input{'s' if len(groups) != 1 else ''}</p></header>"]  # fmt: skip
    links = ([("compare", "Comparison")] if len(groups) > 1 else []) + [(_anchor(g), g.name) for g in groups]
    body.append("<nav>" + " · ".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in links) + "</nav>")
    if unreadable:
        items = "".join(f"<li><code>{escape(str(u.path))}</code>: {escape(u.reason)}</li>" for u in unreadable)
        body.append(f"<section class='problems' id='unreadable'><h2>Not shown</h2><ul>{items}</ul></section>")
    if len(groups) > 1:
        body.append(_comparison(page, groups))
    for group in groups:
        body.append(_group(page, group))
    data = json.dumps(page.figures, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return TEMPLATE.format(title=escape(title), style=STYLE, plotly=plotly_js().replace("</script", "<\\/script"),
                           body="\n".join(body), data=data, script=SCRIPT)  # fmt: skip


def _label(group: Group, item: Item, kind: str) -> str:
    """The run's name, and the file's where the run has several files of the kind (surfaces: of its dimension)."""
    alike = [i for i in group.of(kind) if kind != "surface" or i.data.dims == item.data.dims]
    return group.name if len(alike) == 1 else f"{group.name} ({item.path.stem})"


def _anchor(group: Group) -> str:
    return "run-" + "".join(c if c.isalnum() else "-" for c in group.name)


def _comparison(page: Page, groups: list[Group]) -> str:
    parts = ["<section id='compare'><h2>Comparison</h2>",
             f"<p>Changes are from <b>{escape(groups[0].name)}</b>, in the direction of sharper curvature "
             "(a larger top eigenvalue, trace, surface rise or sharpness measure; a more negative bottom eigenvalue); "
             "other rows show the "
             "plain difference.</p>",
             tb.comparison(groups)]  # fmt: skip
    # 1D surfaces overlaid; without any, the cuts through y = 0 of the 2D ones
    for dims, title in ((1, "1D surfaces on shared axes"), (2, "2D surfaces cut through y = 0, on shared axes")):
        lines = [(_label(g, item, "surface"), i, item.data) for i, g in enumerate(groups) for item in g.of("surface")
                 if item.data.dims == dims]  # fmt: skip
        if len(lines) > 1:
            parts.append(page.figure(fg.surfaces_1d(lines, title)))
            break
    runs = [(g.name, item.data, _edge(item)) for g in groups for item in [*g.of("train-log"), *g.of("sharpness-log")]]
    if len(runs) > 1:
        parts.append(page.figure(fg.runs_overlaid(runs, "Runs on linked step axes")))
    spectra = [(g.name, item.data) for g in groups for item in g.of("spectrum")]
    if len(spectra) > 1:
        parts.append(page.figure(fg.spectrum_eigenvalues(spectra, "Eigenvalues side by side")))
        dense = [(n, s) for n, s in spectra if "density" in s]
        if len(dense) > 1:
            parts.append(page.figure(fg.spectrum_density(dense, "Spectral densities (SLQ)")))
    return "\n".join(parts) + "</section>"


def _group(page: Page, group: Group) -> str:
    parts = [f"<section class='run' id='{_anchor(group)}'><h2>{escape(group.name)}</h2>"
             f"<p class='meta'><code>{escape(str(group.path))}</code></p>"]  # fmt: skip
    for item in group.items:
        parts.append(f"<article class='item {item.kind}'><h3>{escape(KIND_TITLES[item.kind])} "
                     f"<span class='file'>{escape(item.path.name)}</span></h3>")  # fmt: skip
        parts.append(_item(page, item, group.name))
        parts.append(tb.provenance(item) + "</article>")
    return "\n".join(parts) + "</section>"


def _item(page: Page, item: Item, name: str) -> str:
    data = item.data
    if item.kind == "surface":
        if data.dims == 2:
            return "<div class='pair'>" + page.figure(fg.surface_3d(data, f"{name}: {data.primary()}"), "fig half") + \
                page.figure(fg.surface_contour(data, f"{name}: contours"), "fig half") + "</div>"  # fmt: skip
        return page.figure(fg.surfaces_1d([(name, 0, data)], f"{name}: 1D surface"))
    if item.kind == "spectrum":
        parts = [tb.spectrum_summary(data)]
        if "top" in data or "bottom" in data:
            parts.append(page.figure(fg.spectrum_eigenvalues([(name, data)], "Extreme eigenvalues")))
        if "density" in data:
            parts.append(page.figure(fg.spectrum_density([(name, data)], "Spectral density (SLQ)")))
        if "layers" in data:
            parts.append(page.figure(fg.spectrum_layers(data, "Per-layer blocks")))
        return "\n".join(parts)
    if item.kind in ("train-log", "sharpness-log"):
        return page.figure(fg.training(data, f"{name}: training", _edge(item)))
    if item.kind == "eos":
        return tb.eos_verdict(data)
    if item.kind == "sharpness":
        return tb.sharpness_measures(data)
    if item.kind == "eos-run":
        summary = data["summary"] if isinstance(data["summary"], dict) else {}
        return tb.eos_run_summary(summary) + page.figure(fg.eos_run(data, f"{name}: sharpness against the edge"))
    if item.kind == "check":
        verdict = "all gates pass" if data.get("passed") else "a gate fails"
        return f"<p>{escape(str(data.get('checkpoint', '')))}: {verdict}</p>" + tb.gates(data)
    if item.kind == "compare":
        return f"<p>{escape(str(data.get('base', '')))} → {escape(str(data.get('new', '')))}</p>" + tb.deltas(data)
    return tb.junit(data["cases"])


def _edge(item: Item) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The run's edge of stability per tracked step, as `landscape eos RUN` computes it (None where no formula
    applies); a tracker's CSV table gives the edge it recorded."""
    from ..eos.run import run_edges

    sharp = item.data.table("sharpness")
    if not len(sharp.get("step", ())):
        return None
    try:
        edges = run_edges(item.path, {})
    except LandscapeError:
        recorded = sharp.get("edge")
        if recorded is None or not np.isfinite(recorded).any():
            return None
        return sharp["step"], recorded, "recorded"
    return edges.step, np.where(np.isfinite(edges.edge), edges.edge, np.nan), edges.setting.rule()


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="landscape report">
<title>{title}</title>
<style>{style}</style>
<script>{plotly}</script>
</head><body>
{body}
<script type="application/json" id="landscape-figures">{data}</script>
<script>{script}</script>
</body></html>
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 0 20px 40px; color: #222; }
header h1 { margin-bottom: 0; } .meta { color: #666; margin-top: 4px; }
nav { position: sticky; top: 0; background: white; padding: 8px 0; border-bottom: 1px solid #ddd; z-index: 10; }
section { margin-top: 28px; } article { margin: 16px 0 28px; }
h3 .file { font-weight: normal; color: #666; font-size: 0.85em; margin-left: 8px; }
.fig { width: 100%; min-height: 300px; } .pair { display: flex; flex-wrap: wrap; gap: 12px; }
.fig.half { flex: 1 1 560px; width: auto; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td code { word-break: break-all; }
tr.pass td { background: #e7f6e7; } tr.fail td { background: #fbe3e3; } tr.warn td { background: #fff4d6; }
.delta { font-size: 0.9em; color: #555; } .delta.sharper { color: #b00020; } .delta.flatter { color: #1b7f1b; }
.problems { border: 1px solid #e0b0b0; background: #fff6f6; padding: 4px 16px; }
details.prov summary { cursor: pointer; color: #555; }
section, article, .fig { scroll-margin-top: 48px; }
"""

SCRIPT = """
(function () {
  // Figures in view are drawn first, then the others one at a time (the page answers input in between); a
  // figure scrolled to before its turn is drawn at once. window.landscapeReport says when each stage ended.
  var figures = JSON.parse(document.getElementById("landscape-figures").textContent);
  var ids = Object.keys(figures), started = {};
  var config = {responsive: true, displaylogo: false};
  var state = window.landscapeReport = {figures: ids.length, rendered: 0, visibleAt: null, allAt: null};
  function render(id) {
    if (started[id]) return started[id];
    started[id] = Plotly.newPlot(id, figures[id].data, figures[id].layout, config).then(function () {
      state.rendered += 1;
      if (state.rendered === ids.length) {
        state.allAt = performance.now();
        document.body.setAttribute("data-rendered", String(ids.length));
      }
    });
    return started[id];
  }
  function inView(id) {
    var box = document.getElementById(id).getBoundingClientRect();
    return box.bottom > 0 && box.top < window.innerHeight;
  }
  Promise.all(ids.filter(inView).map(render)).then(function () {
    state.visibleAt = performance.now();
    var rest = ids.filter(function (id) { return !started[id]; });
    (function next() {
      if (rest.length) render(rest.shift()).then(function () { setTimeout(next, 0); });
    })();
  });
  if ("IntersectionObserver" in window) {
    var seen = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) { if (entry.isIntersecting) render(entry.target.id); });
    }, {rootMargin: "200px"});
    ids.forEach(function (id) { seen.observe(document.getElementById(id)); });
  }
  if (!ids.length) document.body.setAttribute("data-rendered", "0");
})();
"""
