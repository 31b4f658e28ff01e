"""`landscape plot`: every figure kind from surface, spectrum and training-log files, the .vtp writer, the
orientation of non-square grids, output names, and the user-error contract."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import PolyCollection, QuadMesh
from matplotlib.contour import ContourSet

from landscape_cli.errors import LandscapeError
from landscape_cli.plotting import (
    ColourScale,
    ReferenceCurve,
    figure_1d,
    figure_2d,
    grid_xyz,
    load_surface,
    read_train_log,
    train_figure,
)
from landscape_cli.train.log import TrainLog

from .conftest import FAST, SAMPLE_DIR, assert_user_error, listing

SAMPLE_MLP = SAMPLE_DIR / "mlp_digits.pt"

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF"}
# A non-square grid with different extents, so that a transposition changes shapes and ranges.
X2 = np.linspace(-1.0, 1.0, 7)
Y2 = np.linspace(-0.5, 0.5, 5)
NAN_AT = (1, 4)  # an interior point: (y = -0.25, x = 1/3)
X1 = np.linspace(-1.0, 2.0, 13)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def bowl(x, y):
    """Asymmetric in x and y, so that a swapped axis gives other values."""
    return 1.0 + x**2 + 3.0 * y**2 + 0.5 * x + 0.2 * x * y


def loss_2d() -> np.ndarray:
    xx, yy = np.meshgrid(X2, Y2)
    z = bowl(xx, yy)
    z[NAN_AT] = np.nan
    return z


def assert_magic(path: Path, fmt: str) -> None:
    data = path.read_bytes()
    if fmt == "svg":
        assert b"<svg" in data[:2000], data[:200]
    else:
        assert data.startswith(MAGIC[fmt]), data[:16]


def write_1d(path: Path, offset: float, anchors: bool = True) -> None:
    with h5py.File(path, "w") as f:
        f.attrs.update(kind="surface", dims=1, splits='["train"]', array_shape="(len(xcoordinates),)")
        f.attrs.update(directions_kind="interp", checkpoint=f"runs/{path.stem}/final.pt")
        f["xcoordinates"] = X1
        f["train_loss"] = (X1 - 1.0) ** 2 * (X1 + 0.5) ** 2 + 0.1 + offset
        f["train_acc"] = 90.0 - 5.0 * np.abs(X1)
        d1 = f.create_group("directions/d1")
        d1.attrs.update(kind="interp", norm="none", ignore="none", source="runs/b/final.pt")
        if anchors:
            g = f.create_group("anchors")
            g["x"], g["y"] = np.array([0.0, 1.0]), np.array([0.0, 0.0])
            g.create_dataset("label", data=["a.pt", "b.pt"], dtype=h5py.string_dtype())


@pytest.fixture(scope="module")
def files(tmp_path_factory, cli, mlp_ckpt):
    d = tmp_path_factory.mktemp("plot_inputs")
    ns = SimpleNamespace(dir=d)

    ns.surf2d = d / "bowl.h5"
    with h5py.File(ns.surf2d, "w") as f:
        f.attrs.update(kind="surface", dims=2, splits='["train", "test"]', directions_kind="pca")
        f.attrs.update(array_shape="(len(ycoordinates), len(xcoordinates))", checkpoint="runs/sgd/final.pt")
        f["xcoordinates"], f["ycoordinates"] = X2, Y2
        f["train_loss"] = loss_2d()
        f["test_loss"] = 1.2 * loss_2d()
        f["train_acc"] = 100.0 - 10.0 * loss_2d()
        for i, ratio in ((1, 0.873), (2, 0.081)):
            g = f.create_group(f"directions/d{i}")
            g.attrs.update(kind="pca", norm="none", ignore="biasbn", explained_variance_ratio=ratio)
        t = f.create_group("trajectory")
        t["x"], t["y"], t["step"] = np.array([0.8, 0.4, 0.1, 0.0]), np.array([0.3, 0.2, 0.05, 0.0]), [0, 10, 20, 30]
        t.attrs["explained_variance_ratio"] = "[0.873, 0.081]"
        a = f.create_group("anchors")
        a["x"], a["y"] = np.array([0.0, 0.5]), np.array([0.0, 0.25])
        a.create_dataset("label", data=["final.pt", "mid.pt"], dtype=h5py.string_dtype())

    ns.line_a, ns.line_b = d / "line_a.h5", d / "line_b.h5"
    write_1d(ns.line_a, 0.0)
    write_1d(ns.line_b, 0.5, anchors=False)

    # Li et al.'s layout: no attributes, the array allocated (len(x), len(y)) but filled through the flat
    # index of meshgrid(x, y), as their crunch() does.
    ns.li = d / "li_bare.h5"
    xx, yy = np.meshgrid(X2, Y2)
    with h5py.File(ns.li, "w") as f:
        f["xcoordinates"], f["ycoordinates"] = X2, Y2
        f["train_loss"] = bowl(xx, yy).ravel().reshape(len(X2), len(Y2))

    ns.run = d / "run"
    ns.run.mkdir()
    log = TrainLog(ns.run / "train.h5", {"kind": "train-log", "config": {"opt": "sgd", "lr": 0.05, "batch_size": 64}})
    for step in range(1, 21):
        log.append("train", {"step": step, "epoch": step / 10, "loss": 2.0 / step, "accuracy": 50 + step, "lr": 0.05})
    for step in (0, 10, 20):
        log.append("eval", {"step": step, "train_loss": 2.0 / (step + 1), "train_accuracy": 50 + step,
                            "test_loss": 2.2 / (step + 1), "test_accuracy": 45 + step})  # fmt: skip
    for step, eig in ((0, 5.0), (10, 20.0), (20, 38.0)):
        log.append("sharpness", {"step": step, "top_eigenvalue": eig, "error_bound": 0.1 * eig})
    log.close()

    ns.spectrum = d / "spec.h5"
    result = cli("spectrum", mlp_ckpt, *FAST, "--out", ns.spectrum, "--no-plot")
    assert result.code == 0, result.err
    return ns


def plot_ok(cli, *args) -> list[Path]:
    result = cli("plot", *args)
    assert result.code == 0, result.err
    assert result.err == ""
    return [Path(line) for line in result.out.splitlines()]


# -- figures of every kind ------------------------------------------------------------------------------


def test_2d_default_names_all_kinds(cli, files, tmp_path):
    paths = plot_ok(cli, files.surf2d, "--out", tmp_path)  # a directory takes the default names
    names = ["bowl.contour.png", "bowl.filled.png", "bowl.heatmap.png", "bowl.3d.png"]
    assert paths == [tmp_path / n for n in names]
    assert listing(tmp_path) == set(names)  # and no temporary file left beside them
    for p in paths:
        assert_magic(p, "png")


def test_figures_go_beside_their_input_named_after_it(cli, files, tmp_path, monkeypatch):
    """The one naming rule: X.h5 gives X.png (X.<kind>.png for a 2D surface), beside X.h5, wherever the
    command runs; a run directory its train.png; and plot redraws its own figures without --overwrite."""
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    (tmp_path / "run").mkdir()
    for source, target in ((files.surf2d, "s.surface2d.h5"), (files.spectrum, "m.spectrum.h5"),
                           (files.run / "train.h5", "run/train.h5")):  # fmt: skip
        (tmp_path / target).write_bytes(source.read_bytes())
    expected = [tmp_path / "s.surface2d.contour.png", tmp_path / "m.spectrum.png", tmp_path / "run" / "train.png"]
    args = [tmp_path / "s.surface2d.h5", tmp_path / "m.spectrum.h5", tmp_path / "run", "--kind", "contour"]
    assert plot_ok(cli, *args) == expected
    assert listing(tmp_path / "here") == set()
    before = {p: p.stat().st_mtime_ns for p in expected}
    time.sleep(0.01)
    assert plot_ok(cli, *args) == expected  # its own figures: redrawn without --overwrite
    assert all(p.stat().st_mtime_ns > before[p] for p in expected)
    expected[1].write_bytes(b"a figure someone else made")
    assert_user_error(cli("plot", *args), "m.spectrum.png exists", "--overwrite")
    assert expected[1].read_bytes() == b"a figure someone else made"


@pytest.mark.parametrize("fmt", ["pdf", "svg"])
def test_formats(cli, files, tmp_path, fmt):
    paths = plot_ok(cli, files.surf2d, "--kind", "filled", "--format", fmt, "--out", tmp_path / "fig")
    assert paths == [tmp_path / "fig"]  # one figure: --out is the exact path
    assert_magic(paths[0], fmt)


def test_log_scale_set_with_out_prefix(cli, files, tmp_path):
    # The format follows --out's extension, and several figures make it a prefix.
    paths = plot_ok(cli, files.surf2d, "--kind", "all", "--log", "--out", tmp_path / "set.pdf")
    assert paths == [tmp_path / f"set.{k}.pdf" for k in ("contour", "filled", "heatmap", "3d")]
    for p in paths:
        assert_magic(p, "pdf")


def test_format_disagreeing_with_out(cli, files, tmp_path):
    assert_user_error(cli("plot", files.surf2d, "--format", "png", "--out", tmp_path / "f.pdf"), ".pdf", "png")
    assert listing(tmp_path) == set()


def test_spectrum_train_log_and_li_file_with_json(cli, files, tmp_path):
    result = cli("plot", files.spectrum, files.run, files.li, "--kind", "heatmap", "--json", "--out", tmp_path)
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    expected = ["spec.png", "train.png", "li_bare.heatmap.png"]
    assert payload == {"figures": [str(tmp_path / name) for name in expected], "vtp": []}
    for name in expected:
        assert_magic(tmp_path / name, "png")
    result = cli("plot", files.run, files.run / "train.h5", "--out", tmp_path)
    assert_user_error(result, "two outputs would both be written to", "train.png")


def test_1d_overlay_of_two_files(cli, files, tmp_path):
    paths = plot_ok(cli, files.line_a, files.line_b, "--label", "SGD", "--label", "SAM", "--log", "--out", tmp_path)
    assert paths == [tmp_path / "line_a.compare.png"]
    assert_magic(paths[0], "png")
    assert plot_ok(cli, files.line_b, "--out", tmp_path) == [tmp_path / "line_b.png"]

    fig = figure_1d([load_surface(files.line_a), load_surface(files.line_b)], ["SGD", "SAM"])
    ax, ax_acc = fig.axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["SGD", "SAM"]
    with h5py.File(files.line_a) as fa, h5py.File(files.line_b) as fb:
        for line, f in zip(lines, (fa, fb), strict=True):
            np.testing.assert_array_equal(line.get_xdata(), f["xcoordinates"][()])
            np.testing.assert_array_equal(line.get_ydata(), f["train_loss"][()])
        assert [line.get_linestyle() for line in ax_acc.get_lines()] == ["--", "--"]
        np.testing.assert_array_equal(ax_acc.get_lines()[0].get_ydata(), fa["train_acc"][()])
    # The anchors of line_a sit on its curve: the loss at x = 0 and x = 1.
    (marks,) = ax.collections
    expected = np.interp([0.0, 1.0], X1, load_surface(files.line_a).data["train_loss"])
    np.testing.assert_allclose(marks.get_offsets(), np.column_stack([[0.0, 1.0], expected]))
    assert [t.get_text() for t in ax.texts] == ["a.pt", "b.pt"]
    assert ax.get_xlabel() == "direction 1 (towards final.pt)"


def test_1d_cut_of_a_2d_surface(cli, files, tmp_path):
    assert plot_ok(cli, files.surf2d, "--1d", "--surface", "test_loss", "--out", tmp_path) == [tmp_path / "bowl.png"]
    cut = load_surface(files.surf2d).cut_at_zero()
    assert cut.dims == 1 and cut.cut_at == 0.0
    np.testing.assert_array_equal(cut.data["test_loss"], 1.2 * loss_2d()[2])  # row of y = 0
    assert cut.anchors.labels == ["final.pt"]  # (0.5, 0.25) is off the row
    fig = figure_1d([cut], name="test_loss")
    (line,) = fig.axes[0].get_lines()
    np.testing.assert_array_equal(line.get_ydata(), 1.2 * loss_2d()[2])
    assert fig.axes[0].get_ylabel() == "test loss"


def test_train_log_panels_and_reference_curves(files):
    log = read_train_log(files.run / "train.h5")
    eos = ReferenceCurve("2/lr", 2 / 0.05)
    fig = train_figure(log, references=[eos])
    loss, acc, sharp = fig.axes
    assert [a.get_title() for a in fig.axes] == ["Loss", "Accuracy", "Sharpness"]
    assert [line.get_label() for line in loss.get_lines()] == ["train (mini-batch)", "train (full)", "test"]
    top, reference = sharp.get_lines()
    np.testing.assert_array_equal(top.get_ydata(), [5.0, 20.0, 38.0])
    assert reference.get_label() == "2/lr" and list(reference.get_ydata()) == [40.0, 40.0]
    (band,) = [c for c in sharp.collections if isinstance(c, PolyCollection)]
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(4.5) and ys.max() == pytest.approx(41.8)  # eigenvalue -+ its bound
    assert fig._suptitle.get_text() == "Training run run: sgd, lr = 0.05, batch 64"


# -- orientation of a non-square grid ---------------------------------------------------------------------


def test_grid_helper_and_li_layout(files):
    xx, yy, z = grid_xyz(X2, Y2, loss_2d())
    assert xx.shape == yy.shape == z.shape == (5, 7)
    np.testing.assert_array_equal(z[np.isfinite(z)], bowl(xx, yy)[np.isfinite(z)])
    with pytest.raises(ValueError):
        grid_xyz(X2, Y2, loss_2d().T)
    li = load_surface(files.li)
    assert li.dims == 2 and li.data["train_loss"].shape == (5, 7)
    np.testing.assert_allclose(li.data["train_loss"], bowl(xx, yy))
    assert li.primary() == "train_loss" and li.axis_label(1) == "direction 1"


def test_heatmap_cells_sit_on_their_grid_points(files):
    surface = load_surface(files.surf2d)
    fig = figure_2d(surface, "heatmap")
    ax = fig.axes[0]
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    corners = mesh.get_coordinates()  # (ny + 1, nx + 1, 2)
    assert corners.shape == (6, 8, 2)
    centres = (corners[:-1, :-1] + corners[1:, 1:]) / 2
    np.testing.assert_allclose(centres[..., 0], np.broadcast_to(X2, (5, 7)), atol=1e-12)
    np.testing.assert_allclose(centres[..., 1], np.broadcast_to(Y2[:, None], (5, 7)), atol=1e-12)
    values = mesh.get_array()
    assert values.shape == (5, 7) and values.mask[NAN_AT] and values.mask.sum() == 1
    np.testing.assert_array_equal(values.filled(np.nan), loss_2d())
    assert ax.get_xlim() == pytest.approx((-1 - 1 / 6, 1 + 1 / 6))
    assert ax.get_ylim() == pytest.approx((-0.625, 0.625))
    assert ax.get_xlabel() == "PC1 (87.3%)" and ax.get_ylabel() == "PC2 (8.1%)"
    assert ax.get_title() == "train loss around final.pt"
    assert fig.axes[1].get_ylabel() == "train loss"  # the colour bar
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["trajectory", "start (step 0)", "end (step 30)", "centre", "checkpoints"]


def test_contour_lines_stay_in_the_grid(files):
    surface = load_surface(files.surf2d)
    fig = figure_2d(surface, "contour")
    ax = fig.axes[0]
    (contours,) = [c for c in ax.collections if isinstance(c, ContourSet)]
    lo, hi = np.nanmin(loss_2d()), np.nanmax(loss_2d())
    # Lines at round levels, evenly spaced, inside the data's range.
    levels = contours.levels
    assert 15 <= len(levels) <= 31 and lo < levels[0] and levels[-1] < hi
    np.testing.assert_allclose(np.diff(levels), 0.1)  # range about 2.9 in at most 30 steps of 1, 2, 2.5 or 5
    vertices = np.concatenate([p.vertices for p in contours.get_paths() if len(p.vertices)])
    # y spans [-0.5, 0.5] and x [-1, 1]: a transposed grid would put lines at |y| up to 1.
    assert np.abs(vertices[:, 1]).max() <= 0.5 + 1e-9 and np.abs(vertices[:, 0]).max() > 0.6
    clabels = [t.get_text() for t in ax.texts if t.get_text() not in ("final.pt", "mid.pt")]
    assert clabels and all(float(t) in np.round(levels, 6) for t in clabels)
    fig3 = figure_2d(surface, "3d", scale=ColourScale(vmax=2.0))
    assert fig3.axes[0].get_zlim() == pytest.approx((lo, 2.0))
    (poly,) = fig3.axes[0].collections[:1]
    assert poly.get_array().max() <= 2.0  # heights clipped at --vmax (unclipped cells reach 2.67)


def test_colour_scale_levels():
    np.testing.assert_allclose(ColourScale(levels=10).level_values(0.0, 1.0), np.linspace(0.0, 1.0, 11))
    np.testing.assert_allclose(ColourScale(levels=4).level_values(0.05, 1.0), [0.05, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(ColourScale(log=True, levels=3).level_values(0.01, 1.0), [0.01, 0.1, 1.0])
    with pytest.raises(LandscapeError, match="vmin"):
        ColourScale(vmin=2.0, vmax=1.0).validate()


# -- the .vtp file ------------------------------------------------------------------------------------------


def parse_vtp(path: Path) -> dict:
    root = ET.parse(path).getroot()
    piece = root.find("PolyData/Piece")

    def array(parent: str, name: str) -> np.ndarray:
        (node,) = [n for n in piece.find(parent).findall("DataArray") if n.get("Name") == name]
        return np.array(node.text.split(), dtype=float)

    return {
        "type": root.get("type"),
        "points": int(piece.get("NumberOfPoints")),
        "polys": int(piece.get("NumberOfPolys")),
        "xyz": array("Points", "Points").reshape(-1, 3),
        "connectivity": array("Polys", "connectivity").astype(int).reshape(-1, 4),
        "offsets": array("Polys", "offsets").astype(int),
        "data": {n.get("Name"): np.array(n.text.split(), dtype=float) for n in piece.find("PointData")},
    }


@pytest.mark.parametrize("log", [False, True])
def test_vtp_of_a_grid_with_a_nan_point(cli, files, tmp_path, log):
    paths = plot_ok(cli, files.surf2d, "--kind", "heatmap", "--vtp", *(["--log"] if log else []), "--out", tmp_path)
    name = "bowl.train_loss_log.vtp" if log else "bowl.train_loss.vtp"
    assert paths == [tmp_path / "bowl.heatmap.png", tmp_path / name]
    vtp = parse_vtp(tmp_path / name)
    assert vtp["type"] == "PolyData"
    assert vtp["points"] == 7 * 5 - 1 and len(vtp["xyz"]) == 34
    assert vtp["polys"] == 6 * 4 - 4 and len(vtp["connectivity"]) == 20  # an interior point touches 4 quads
    np.testing.assert_array_equal(vtp["offsets"], 4 * np.arange(1, 21))
    # Point coordinates, from the file's own arrays: row i is y[i], column j is x[j].
    with h5py.File(files.surf2d) as f:
        x, y, z = f["xcoordinates"][()], f["ycoordinates"][()], f["train_loss"][()]
    expected = np.array([(x[j], y[i], z[i, j]) for i in range(len(y)) for j in range(len(x)) if np.isfinite(z[i, j])])
    if log:
        expected[:, 2] = np.log10(expected[:, 2])
    np.testing.assert_allclose(vtp["xyz"], expected, rtol=1e-15, atol=0)
    (key,) = vtp["data"]
    assert key == ("log10_train_loss" if log else "train_loss")
    np.testing.assert_array_equal(vtp["data"][key], vtp["xyz"][:, 2])
    # Each quad joins the four corners of one grid cell.
    dx, dy = x[1] - x[0], y[1] - y[0]
    for quad in vtp["connectivity"]:
        corners = vtp["xyz"][quad, :2]
        assert np.ptp(corners[:, 0]) == pytest.approx(dx) and np.ptp(corners[:, 1]) == pytest.approx(dy)
        assert len({tuple(c) for c in corners.round(12)}) == 4
    assert not any(np.isnan(vtp["xyz"]).ravel())


# -- output naming and refusal ---------------------------------------------------------------------------


def test_existing_output_is_refused_before_drawing(cli, files, tmp_path):
    (tmp_path / "bowl.heatmap.png").write_text("keep me")
    assert_user_error(cli("plot", files.surf2d, "--out", tmp_path), "bowl.heatmap.png", "--overwrite")
    assert listing(tmp_path) == {"bowl.heatmap.png"}  # not even the contour was drawn
    assert (tmp_path / "bowl.heatmap.png").read_text() == "keep me"
    paths = plot_ok(cli, files.surf2d, "--kind", "heatmap", "--overwrite", "--out", tmp_path)
    assert paths == [tmp_path / "bowl.heatmap.png"]
    assert_magic(tmp_path / "bowl.heatmap.png", "png")


def test_a_failure_midway_leaves_no_file(cli, files, tmp_path, monkeypatch):
    import landscape_cli.cli.plot_jobs as plot_module

    real = plot_module.figure_2d

    def failing(surface, kind, *args, **kwargs):
        if kind == "heatmap":
            raise RuntimeError("boom")
        return real(surface, kind, *args, **kwargs)

    monkeypatch.setattr(plot_module, "figure_2d", failing)
    result = cli("plot", files.surf2d, "--out", tmp_path)
    assert result.code == 3 and "internal error" in result.err and "boom" in result.err
    assert listing(tmp_path) == set()


def test_several_inputs_with_out_prefix(cli, files, tmp_path):
    paths = plot_ok(cli, files.surf2d, files.li, "--kind", "contour", "--vtp", "--out", tmp_path / "p.svg")
    assert paths == [
        tmp_path / "p.bowl.contour.svg",
        tmp_path / "p.bowl.train_loss.vtp",
        tmp_path / "p.li_bare.contour.svg",
        tmp_path / "p.li_bare.train_loss.vtp",
    ]
    assert listing(tmp_path) == {p.name for p in paths}


# -- user errors: one line, exit 2, nothing written ---------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    ["missing", "text", "no_log_dir", "2d_on_1d", "vtp_on_1d", "1d_and_2d", "unknown_kind", "no_dataset", "labels"],
)
def test_user_errors(cli, files, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not HDF5\n")
    (tmp_path / "empty_dir").mkdir()
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["kind"] = "checkpoint-index"
    args, fragments = {
        "missing": ([tmp_path / "nope.h5"], ["file not found", "nope.h5"]),
        "text": ([tmp_path / "notes.txt"], ["notes.txt", "not a readable HDF5 file"]),
        "no_log_dir": ([tmp_path / "empty_dir"], ["empty_dir", "without train.h5"]),
        "2d_on_1d": ([files.line_a, "--2d"], ["line_a.h5 is a 1D surface; drop --2d"]),
        "vtp_on_1d": ([files.line_a, "--vtp"], ["line_a.h5 is a 1D surface", "--vtp"]),
        "1d_and_2d": ([files.surf2d, "--1d", "--2d"], ["--1d and --2d"]),
        "unknown_kind": ([other], ["other.h5", "checkpoint-index"]),
        "no_dataset": ([files.surf2d, "--surface", "all_loss"], ["all_loss", "test_loss, train_acc, train_loss"]),
        "labels": ([files.line_a, files.line_b, "--label", "one"], ["--label given 1 times for 2"]),
    }[case]
    before = listing(tmp_path)
    assert_user_error(cli("plot", *args), *fragments)
    assert listing(tmp_path) == before


# -- figures for papers: what a reader sees at print size ------------------------------------------------


def _drawn(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def test_spectrum_figure_shows_the_trace_and_no_density_floor(cli, files, tmp_path):
    from landscape_cli.plotting import spectrum_figure

    path = tmp_path / "full.h5"
    args = ["--samples", "200", "--max-iter", "40", "--top-k", "5", "--bottom-k", "2", "--hvp", "double-backward"]
    assert cli("spectrum", SAMPLE_MLP, *args, "--trace", "--density", "--no-plot", "-q", "--out", path).code == 0
    fig = spectrum_figure(path)
    renderer = _drawn(fig)
    eig, density = fig.axes
    with h5py.File(path) as f:
        trace = f["trace"].attrs["estimate"]
        peak = f["density/density"][()].max()
        raw = f["density/density"][()]
    assert f"trace {trace:.5g}" in fig._suptitle.get_text()
    # the density is drawn as it is: zeros are gaps, nothing is lifted onto a floor that would look like data
    (line,) = density.get_lines()
    np.testing.assert_array_equal(np.isnan(line.get_ydata()), raw <= 0)
    np.testing.assert_array_equal(line.get_ydata()[raw > 0], raw[raw > 0])
    assert density.get_ylim()[0] == pytest.approx(peak * 1e-6)
    # every eigenvalue label lies inside its panel
    box = eig.get_window_extent(renderer)
    for text in eig.texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, text


def test_log_colour_bar_has_round_labelled_ticks(files):
    fig = figure_2d(load_surface(files.surf2d), "contour", scale=ColourScale(log=True))
    _drawn(fig)
    bar = fig.axes[1]
    labels = [t.get_text() for t in bar.get_yticklabels()]
    values = [float(t) for t in labels]  # plain numbers: no 4.0462x10^-1, no TeX
    assert len(values) >= 3
    for v in values:
        mantissa = v / 10 ** np.floor(np.log10(v))
        assert round(mantissa, 6) in {1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0}
    assert bar.get_yticks(minor=True).size == 0


def test_legends_stay_off_the_data(files):
    for fig in (figure_2d(load_surface(files.surf2d), "contour"), figure_1d([load_surface(files.line_a),
                                                                             load_surface(files.line_b)])):  # fmt: skip
        renderer = _drawn(fig)
        ax = fig.axes[0]
        legend = ax.get_legend().get_window_extent(renderer)
        assert legend.y1 <= ax.get_window_extent(renderer).y0  # under the axes, not over the curves


def test_3d_tick_labels_do_not_run_together(files):
    fig = figure_2d(load_surface(files.surf2d), "3d")
    renderer = _drawn(fig)
    ax = fig.axes[0]
    for axis in (ax.xaxis, ax.yaxis):
        boxes = [t.get_window_extent(renderer) for t in axis.get_ticklabels() if t.get_text()]
        assert 2 <= len(boxes) <= 5
        for a, b in zip(boxes, boxes[1:], strict=False):
            assert not a.overlaps(b)


def test_trajectory_end_shows_beside_the_centre_star(files):
    fig = figure_2d(load_surface(files.surf2d), "filled")
    ax = fig.axes[0]
    markers = {line.get_label(): line for line in ax.get_lines()}
    end = next(line for label, line in markers.items() if label.startswith("end"))
    assert end.get_markersize() > markers["centre"].get_markersize()


def test_accuracy_axes_end_at_100(files):
    fig = figure_1d([load_surface(files.line_a), load_surface(files.line_b)], ["SGD", "SAM"])
    assert fig.axes[1].get_ylim()[1] == 100
    log = read_train_log(files.run / "train.h5")
    assert train_figure(log).axes[1].get_ylim()[1] <= 100


def test_overlay_title_names_what_is_compared(files):
    fig = figure_1d([load_surface(files.line_a), load_surface(files.line_b)], ["SGD", "SAM"])
    title = fig.axes[0].get_title()
    assert title.startswith("train loss around ") and "files" not in title


def test_training_title_names_the_hyper_parameters(tmp_path):
    log = TrainLog(tmp_path / "train.h5", {"kind": "train-log", "config": {
        "opt": "ssam", "base": "sgd", "lr": 0.1, "momentum": 0.9, "rho": 0.05, "weight_decay": 5e-4,
        "batch_size": 64, "model": {"name": "mlp"}}})  # fmt: skip
    log.append("train", {"step": 1, "epoch": 0.1, "loss": 1.0, "lr": 0.1})
    log.close()
    title = train_figure(read_train_log(tmp_path / "train.h5"))._suptitle.get_text()
    assert title == "Training run " + tmp_path.name + ": ssam (sgd), lr = 0.1, momentum 0.9, rho = 0.05, " \
        "weight decay 0.0005, batch 64, mlp"  # fmt: skip


def test_figures_are_drawn_at_print_size(files):
    """One panel about a column wide, a row of panels a page wide (inches), so type prints at 7-10 pt."""
    assert figure_2d(load_surface(files.surf2d), "contour").get_size_inches()[0] <= 5.0
    assert figure_1d([load_surface(files.line_a)]).get_size_inches()[0] <= 5.0
    assert train_figure(read_train_log(files.run / "train.h5")).get_size_inches()[0] <= 7.5
