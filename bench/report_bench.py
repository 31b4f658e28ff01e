"""`landscape report` on the shipped samples and a tracked run: how long the page takes to build, how long a
real (headless) Chromium takes to draw it against a page holding only Plotly, and the screenshots in docs/.

    python bench/report_bench.py          # needs the [report] extra and Debian's chromium

The three sample checkpoints (SGD, SAM, SSAM on digits) each get a 51x51 surface, a 1D surface and a spectrum;
a fourth run is trained here with sharpness tracking. Build time is measured in-process after start-up (the
imports are not counted), as the issue asks; the browser times are from navigation start to the figures in
view being drawn, and to all of them. Results go to bench/results/report_bench.{md,json} and screenshots to
docs/img/report_*.png.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from landscape_cli.cli import main  # noqa: E402
from landscape_cli.webreport.page import plotly_js  # noqa: E402
from tests.browser import Chromium, find_chromium  # noqa: E402

SAMPLES = {"sgd": "mlp_digits.pt", "sam": "mlp_digits_sam.pt", "ssam": "mlp_digits_ssam.pt"}
RESULTS, IMAGES = ROOT / "bench" / "results", ROOT / "docs" / "img"


def landscape(*args: object) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main([str(a) for a in args])
    if code not in (0, 1):
        raise SystemExit(f"landscape {' '.join(map(str, args))} exited {code}")
    return out.getvalue()


def prepare(work: Path) -> dict[str, Path]:
    runs = {}
    for name, sample in SAMPLES.items():
        run = work / name
        run.mkdir()
        ckpt = run / "final.pt"
        shutil.copy(ROOT / "sample_checkpoints" / sample, ckpt)
        landscape("surface", ckpt, "--2d", "--x=-1:1:51", "--y=-1:1:51", "--samples", 300, "--out",
                  run / "surface2d.h5", "--quiet")  # fmt: skip
        landscape("surface", ckpt, "--1d", "--samples", 300, "--out", run / "surface1d.h5", "--quiet")
        landscape("spectrum", ckpt, "--top-k", 3, "--bottom-k", 2, "--trace", "--density", "--samples", 500, "--out",
                  run / "spectrum.h5", "--no-plot", "--quiet")  # fmt: skip
        landscape("eos", ckpt, "--samples", 500, "--quiet", "--out", run / "eos.h5")
        (run / "check.json").write_text(landscape("check", ckpt, "--max-top-eig", "5", "--samples", 500, "--json",
                                                  "--quiet"))  # fmt: skip
        runs[name] = run
    base, new = runs["sgd"] / "final.pt", runs["sam"] / "final.pt"
    compared = landscape("compare", base, new, "--what", "top,trace", "--samples", 500, "--json", "--quiet")
    (runs["sam"] / "compare.json").write_text(compared)
    tracked = work / "tracked"
    landscape("train", "--out", tracked, "--opt", "sam", "--steps", 300, "--eval-every", 25,
              "--track-sharpness-every", 25, "--save-every", 50, "--lr", 0.2, "--momentum", 0.5, "--quiet")  # fmt: skip
    landscape("surface", tracked / "final.pt", "--2d", "--dirs", f"pca:{tracked}", "--samples", 300, "--out",
              tracked / "surface2d.h5", "--quiet")  # fmt: skip
    landscape("eos", tracked, "--quiet")
    runs["tracked"] = tracked
    return runs


def build(inputs: list[Path], out: Path, title: str, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        landscape("report", *inputs, "--out", out, "--title", title, "--overwrite")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def open_in_browser(chromium: str, page: Path, shots: dict[str, str | None], repeats: int = 3) -> dict[str, float]:
    visible, drawn = [], []
    for i in range(repeats):
        with tempfile.TemporaryDirectory() as profile, Chromium(chromium, 1280, 1000, Path(profile)) as browser:
            browser.open(page.resolve().as_uri())
            state = browser.wait_for("window.landscapeReport && window.landscapeReport.allAt && window.landscapeReport",
                                     120)  # fmt: skip
            visible.append(state["visibleAt"])
            drawn.append(state["allAt"])
            assert browser.console_errors() == [], browser.console_errors()
            if i == 0:
                for name, element in shots.items():
                    (IMAGES / name).write_bytes(browser.screenshot(element=element))
    return {"visible_ms": statistics.median(visible), "all_ms": statistics.median(drawn)}


def bare_plotly(chromium: str, work: Path, repeats: int = 3) -> float:
    """A page holding only Plotly and one three-point line: the floor of any Plotly page on this machine."""
    page = work / "bare.html"
    page.write_text(f"<!doctype html><html><head><script>{plotly_js()}</script></head><body><div id='a'></div>"
                    "<script>Plotly.newPlot('a', [{y: [1, 2, 3]}]).then(() => { window.done = performance.now(); });"
                    "</script></body></html>")  # fmt: skip
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as profile, Chromium(chromium, 1280, 1000, Path(profile)) as browser:
            browser.open(page.as_uri())
            times.append(browser.wait_for("window.done", 60))
    return statistics.median(times)


def main_bench() -> None:
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no Chromium: apt-get install chromium")
    IMAGES.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = prepare(work)
        three = [runs["sgd"], runs["sam"], runs["ssam"]]
        compare_page, tracked_page = work / "samples.html", work / "tracked.html"
        build_three = build(three, compare_page, "Shipped samples: SGD, SAM and SSAM on digits")
        build(([runs["tracked"]]), tracked_page, "A tracked SAM run", repeats=1)
        size = compare_page.stat().st_size
        floor = bare_plotly(chromium, work)
        three_times = open_in_browser(chromium, compare_page, {"report_compare.png": "compare",
                                                               "report_surface.png": "fig-8"})  # fmt: skip
        open_in_browser(chromium, tracked_page, {"report_tracked.png": "fig-1", "report_tracked_surface.png": "fig-4"},
                        repeats=1)  # fmt: skip
    rows = {
        "build_seconds": build_three,
        "bytes": size,
        "visible_ms": three_times["visible_ms"],
        "all_ms": three_times["all_ms"],
        "bare_plotly_ms": floor,
    }
    (RESULTS / "report_bench.json").write_text(json.dumps(rows, indent=2))
    table = [
        "| measure (3 runs, 51x51 surfaces, 2 cores, software WebGL) | value |",
        "|---|---|",
        f"| page built, after start-up (median of 5) | {build_three:.2f} s |",
        f"| page size | {size / 1e6:.2f} MB (Plotly's JavaScript: {len(plotly_js()) / 1e6:.2f} MB) |",
        f"| figures in view drawn, from navigation (median of 3) | {three_times['visible_ms']:.0f} ms |",
        f"| a page holding only Plotly and one line, same measure | {floor:.0f} ms |",
        f"| in view / Plotly alone | {three_times['visible_ms'] / floor:.2f}x |",
        f"| all figures drawn (the rest one at a time, after those in view) | {three_times['all_ms']:.0f} ms |",
    ]
    (RESULTS / "report_bench.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main_bench()
