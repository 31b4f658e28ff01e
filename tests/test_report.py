"""`landscape report`: one self-contained page for three trained runs (SGD, SAM, SSAM, each with its training log,
tracked sharpness, a 51x51 surface with the PCA trajectory, a 1D surface, a spectrum, its eos file and gate
results), checked as data and in a real headless Chromium."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from .browser import Chromium, find_chromium
from .conftest import _run, assert_user_error

#: The stated size bound for the report of the three runs: Plotly's JavaScript is 4.8 MB of it.
MAX_BYTES = 6_000_000
RUNS = ("sgd", "sam", "ssam")


def _ok(*args: object) -> str:
    result = _run([str(a) for a in args])
    assert result.code == 0, result.err
    return result.out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Three short runs on digits with every kind of results file the report reads."""
    root = tmp_path_factory.mktemp("report")
    for opt in RUNS:
        run = root / opt
        _ok("train", "--out", run, "--opt", opt, "--model-arg", "widths=[64,16,10]", "--steps", 60, "--batch-size",
            64, "--eval-every", 20, "--track-sharpness-every", 20, "--save-every", 20, "--lr", 0.2, "--device", "cpu",
            "--quiet")  # fmt: skip
        final = run / "final.pt"
        _ok("surface", final, "--2d", "--dirs", f"pca:{run}", "--x=-1:1:51", "--y=-1:1:51", "--samples", 100,
            "--out", run / "surface2d.h5", "--device", "cpu", "--quiet")  # fmt: skip
        _ok("surface", final, "--1d", "--x=-1:1:31", "--samples", 100, "--out", run / "surface1d.h5", "--device",
            "cpu", "--quiet")  # fmt: skip
        _ok("spectrum", final, "--top-k", 2, "--bottom-k", 1, "--trace", "--density", "--samples", 200, "--out",
            run / "spectrum.h5", "--device", "cpu", "--quiet", "--no-plot")  # fmt: skip
        _ok("eos", run, "--quiet")
        _ok("sharpness", final, "--samples", 200, "--steps", 5, "--perturbations", 8, "--out", run / "sharpness.h5",
            "--device", "cpu", "--quiet")  # fmt: skip
        check = _run(["check", str(final), "--max-top-eig", "3", "--samples", "200", "--device", "cpu", "--json",
                      "--quiet"])  # fmt: skip
        assert check.code in (0, 1), check.err
        (run / "check.json").write_text(check.out)
    compare = _run(["compare", str(root / "sgd" / "final.pt"), str(root / "sam" / "final.pt"), "--what", "top",
                    "--samples", "200", "--device", "cpu", "--json", "--quiet"])  # fmt: skip
    assert compare.code in (0, 1), compare.err
    (root / "sam" / "compare.json").write_text(compare.out)
    (root / "ssam" / "damaged.h5").write_bytes(b"\x89HDF\r\n\x1a\nnot really")
    return root


def _figures(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="landscape-figures">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match.group(1).replace("<\\/", "</"))


def test_the_page_holds_every_file_and_names_what_it_cannot_read(runs, tmp_path) -> None:
    out = tmp_path / "report.html"
    started = time.perf_counter()
    result = _run(["report", *(runs / r for r in RUNS), runs / "missing", "--out", out, "--title", "SGD vs SAM"])
    seconds = time.perf_counter() - started
    assert result.code == 0, result.err
    assert result.out.strip() == str(out)
    warnings = [line for line in result.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and "damaged.h5" in warnings[0] and "missing" in warnings[1], result.err
    html = out.read_text()
    assert out.stat().st_size < MAX_BYTES, out.stat().st_size
    print(f"report of 3 runs with 51x51 surfaces built in {seconds:.2f} s, {out.stat().st_size / 1e6:.2f} MB")
    assert "<title>SGD vs SAM</title>" in html and "Plotly" in html
    body = html.split("</head>", 1)[1]  # the page's own markup, after the embedded Plotly bundle
    assert not re.search(r"""(src|href)=["']https?:""", body)  # nothing is loaded from elsewhere
    figures = _figures(html)
    surfaces = [f for f in figures.values() if f["data"][0]["type"] == "surface"]
    assert len(surfaces) == 3
    for run, figure in zip(RUNS, surfaces, strict=True):
        with h5py.File(runs / run / "surface2d.h5") as f:
            z = f["train_loss"][()]
            np.testing.assert_array_equal(np.array(figure["data"][0]["z"], dtype=float), z)  # rows are y
            np.testing.assert_array_equal(figure["data"][0]["x"], f["xcoordinates"][()])
    contours = [f for f in figures.values() if f["data"][0]["type"] == "contour"]
    assert len(contours) == 3 and all(any(t["name"] == "trajectory (PCA)" for t in c["data"]) for c in contours)
    # the comparison: 1D surfaces overlaid, the runs on linked step axes, spectra side by side
    titles = [f["layout"]["title"]["text"] for f in figures.values()]
    assert "1D surfaces on shared axes" in titles and "Runs on linked step axes" in titles
    linked = figures[f"fig-{titles.index('Runs on linked step axes') + 1}"]["layout"]
    assert linked["xaxis2"]["matches"] == "x" and linked["xaxis3"]["matches"] == "x"
    for text in ("Comparison", "sharper", "flatter", "Provenance of surface2d.h5", "checkpoint_sha256",
                 "Sharpness measures", "worst-case sharpness", "average rho=0.05",
                 "Sharpness gates (check)", "Comparison gates (compare)", "Edge of stability over the run",
                 "damaged.h5", 'class="pass"'):  # fmt: skip
        assert text in html, text
    with h5py.File(runs / "sgd" / "spectrum.h5") as f:
        top = float(f["top/eigenvalues"][0])
    assert f"{top:.5g}" in html


def test_options_and_refusals(runs, tmp_path) -> None:
    out = tmp_path / "r.html"
    result = _run(["report", runs / "sgd" / "spectrum.h5", "--out", out, "--open"])
    assert result.code == 0 and result.out.strip() == out.resolve().as_uri()
    before = out.read_bytes()
    assert_user_error(_run(["report", runs / "sgd", "--out", out]), "exists")
    assert out.read_bytes() == before  # refused: the report on disk is untouched
    assert_user_error(_run(["report", runs / "sgd" / "spectrum.h5", "--out", runs / "sgd" / "spectrum.h5",
                            "--overwrite"]), "input")  # fmt: skip
    assert_user_error(_run(["report", tmp_path / "nothing", "--out", tmp_path / "x.html"]), "nothing to report")
    assert not (tmp_path / "x.html").exists()
    assert_user_error(_run(["report", runs / "sgd", "--format", "pdf"]), "--format")
    figures = tmp_path / "figs"
    result = _run(["report", runs / "sgd", runs / "sam", "--format", "png", "--out", figures])
    assert result.code == 0, result.err
    assert sorted(p.name for p in figures.iterdir()) == ["sam", "sgd"]
    names = sorted(p.name for p in (figures / "sgd").iterdir())
    assert "train.png" in names and "spectrum.png" in names and len(names) >= 4, names


def test_the_page_in_a_real_browser(runs, tmp_path) -> None:
    """Opened in headless Chromium: no console error, no network request, every plot drawn, the 3D surfaces'
    vertices and heights those of the HDF5 files, and a screenshot that is not blank."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium found (Debian: apt-get install chromium; .ci/run installs it)")
    out = tmp_path / "report.html"
    assert _run(["report", *(runs / r for r in RUNS), "--out", out]).code == 0
    expected = _figures(out.read_text())
    with Chromium(chromium, profile=tmp_path / "profile") as browser:
        browser.open(out.resolve().as_uri())
        state = browser.wait_for("window.landscapeReport && window.landscapeReport.allAt && window.landscapeReport")
        print(f"in view drawn at {state['visibleAt']:.0f} ms, all {state['figures']} figures at {state['allAt']:.0f}"
              " ms after navigation")  # fmt: skip
        shown = browser.evaluate(
            "Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({id: gd.id, "
            "types: gd._fullData.map(t => t.type), z: gd._fullData.filter(t => t.type === 'surface').map(t => t.z),"
            " canvas: gd.querySelectorAll('canvas').length, svg: gd.querySelectorAll('.main-svg').length}))"
        )
        png = browser.screenshot()
        first_surface = min((s for s in shown if "surface" in s["types"]), key=lambda s: int(s["id"].split("-")[1]))
        surface_png = browser.screenshot(element=first_surface["id"])
        errors, requests = browser.console_errors(), browser.requests()
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:", "blob:"))] == []
    assert sorted(s["id"] for s in shown) == sorted(expected)
    for s in shown:
        assert s["types"] == [t["type"] for t in expected[s["id"]]["data"]] and s["svg"] > 0
    surfaces = [s for s in shown if "surface" in s["types"]]
    assert len(surfaces) == 3 and all(s["canvas"] > 0 for s in surfaces)  # drawn with WebGL
    for run, s in zip(RUNS, sorted(surfaces, key=lambda s: int(s["id"].split("-")[1])), strict=True):
        with h5py.File(runs / run / "surface2d.h5") as f:
            z = f["train_loss"][()]
        page_z = np.array(s["z"][0], dtype=float)
        assert page_z.size == z.size == 51 * 51  # vertices
        np.testing.assert_allclose(page_z, z, rtol=1e-12)
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert image.shape[0] >= 600 and image.std() > 20 and (image < 200).mean() > 0.02  # text and plots, not blank
    surface = np.asarray(Image.open(io.BytesIO(surface_png)).convert("RGB"))
    colours = len(np.unique(surface.reshape(-1, 3), axis=0))
    coloured = (surface.max(axis=2) - surface.min(axis=2) > 40).mean()  # viridis, not grey text or white
    print(f"3D surface screenshot: {colours} colours, {100 * coloured:.0f}% coloured pixels")
    assert colours > 200 and coloured > 0.1
