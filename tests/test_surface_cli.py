"""`landscape surface` end to end, against ground truth: the checkpoint's own loss at the centre, the
exact quadratic of a linear model under mse, Hessian eigenpairs, interpolation anchors (BatchNorm
statistics included), PCA projections, the grid's orientation, resumption after an interrupt or a
kill -9, NaN points, the file format, and one-line refusals of bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from landscape_cli.checkpoint import Checkpoint, instantiate, load_checkpoint, save_checkpoint
from landscape_cli.session import problem_from_checkpoint
from landscape_cli.surface import store, sweep
from landscape_cli.zoo.data import Dataset, data_spec
from landscape_cli.zoo.models import MLP, model_spec

from .conftest import SAMPLE_DIR, assert_user_error, listing
from .helpers import dense_hessian

MLP_CKPT = SAMPLE_DIR / "mlp_digits.pt"
RESNET_CKPT = SAMPLE_DIR / "resnet_digits.pt"
SAM, SSAM, CNN = (SAMPLE_DIR / f"{name}.pt" for name in ("mlp_digits_sam", "mlp_digits_ssam", "cnn_digits"))
ROOT_ATTRS = {
    "kind", "dims", "splits", "array_shape", "directions_kind", "config", "nonfinite_points", "points_per_pass",
    "tool_version", "command", "created", "checkpoint", "checkpoint_sha256", "model_spec", "data_spec",
    "loss_function", "seed", "device", "dtype", "mode", "n_params", "n_samples", "batch_size", "torch_version",
    "python_version",
}  # fmt: skip
SUMMARY_2D = {"split", "center_loss", "radius", "rise_mean", "rise_max", "curvature", "fit_halfwidth", "fit_hessian",
              "fit_hessian_eigenvalues"}  # fmt: skip


#: Every number here is compared with a CPU evaluation: keep the sweeps there on a machine with a GPU too.
CPU = ["--device", "cpu"]


def surface(cli, *args) -> dict:
    """Run `landscape surface ARGS --json --quiet` on the CPU, expect success, return the JSON."""
    result = cli("surface", *args, *CPU, "--json", "--quiet")
    assert result.code == 0, result.err
    assert "error" not in result.err
    return json.loads(result.out)


def read(path: Path) -> SimpleNamespace:
    """A surface file: root datasets, attributes (JSON decoded), directions by name, summary, groups."""

    def attrs(obj) -> dict:
        out = {}
        for key, value in obj.attrs.items():
            value = value.item() if isinstance(value, np.generic) else value
            if isinstance(value, str) and value[:1] in ("[", "{"):
                value = json.loads(value)
            out[key] = value
        return out

    with h5py.File(path, "r") as f:
        datasets = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}
        directions = {
            key: {n: f[f"directions/{key}/{n}"][()] for n in f[f"directions/{key}"] if n != "buffers"}
            for key in f["directions"]
        }
        buffers = {
            key: {n: f[f"directions/{key}/buffers/{n}"][()] for n in f[f"directions/{key}/buffers"]}
            for key in f["directions"]
            if "buffers" in f[f"directions/{key}"]
        }
        groups = {
            g: {n: f[f"{g}/{n}"][()] for n in f[g]} | {"attrs": attrs(f[g])}
            for g in ("trajectory", "anchors")
            if g in f
        }
        return SimpleNamespace(
            **datasets,
            datasets=datasets,
            attrs=attrs(f),
            directions=directions,
            direction_attrs={key: attrs(f[f"directions/{key}"]) for key in f["directions"]},
            buffers=buffers,
            summary=attrs(f["summary"]),
            groups=groups,
        )


def assert_close(a, b, rel: float = 1e-12) -> None:
    """Nested dicts and lists of numbers (and strings) equal, numbers to `rel`."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (a, b)
        for key in a:
            assert_close(a[key], b[key], rel)
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), (a, b)
        for u, v in zip(a, b, strict=True):
            assert_close(u, v, rel)
    elif isinstance(a, str):
        assert a == b
    else:
        assert a == pytest.approx(b, rel=rel)


def flat(arrays: dict[str, np.ndarray], problem) -> torch.Tensor:
    """Arrays by parameter name -> a flat float64 vector in the problem's layout."""
    assert set(arrays) == set(problem.layout.names)
    return torch.cat([torch.as_tensor(arrays[n]).reshape(-1).double() for n in problem.layout.names])


def problem(path: Path, **kw):
    kw.setdefault("device", "cpu")
    loss = kw.pop("loss", None)
    return problem_from_checkpoint(load_checkpoint(path, loss=loss, trust_remote_code=True), **kw)


# ------------------------------------------------------------------------------------------------
# Shared runs
# ------------------------------------------------------------------------------------------------

PLANE = ["--2d", "--x", "-1:1:5", "--y", "-0.5:0.5:3", "--samples", "200", "--seed", "3"]


@pytest.fixture(scope="module")
def mlp_plane(tmp_path_factory, cli):
    """The MLP sample on a 5 x 3 grid, train and test splits, one point per pass."""
    d = tmp_path_factory.mktemp("plane")
    payload = surface(cli, MLP_CKPT, *PLANE, "--split", "train,test", "--points-per-pass", "1", "--out", d / "p.h5")
    return SimpleNamespace(dir=d, path=d / "p.h5", payload=payload, file=read(d / "p.h5"))


@pytest.fixture(scope="module")
def resnet_plane(tmp_path_factory, cli):
    """The BatchNorm ResNet sample on a 9 x 9 grid, uninterrupted (the kill -9 test's reference)."""
    d = tmp_path_factory.mktemp("resnet")
    args = [RESNET_CKPT, "--2d", "--x", "-1:1:9", "--y", "-1:1:9", "--samples", "400", "--points-per-pass", "1", *CPU]
    payload = surface(cli, *args, "--out", d / "r.h5")
    return SimpleNamespace(dir=d, args=args, path=d / "r.h5", payload=payload, file=read(d / "r.h5"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cli):
    """A short training run of a small MLP (64-8-10) with checkpoints at steps 0, 2, 4 and final.pt."""
    d = tmp_path_factory.mktemp("train") / "run"
    result = cli(
        "train", "--model", "mlp", "--model-arg", "widths=[64,8,10]", "--data", "digits", "--data-arg", "limit=200",
        "--steps", "6", "--save-every", "2", "--quiet", "--device", "cpu", "--out", d,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert {p.name for p in d.glob("*.pt")} == {"step_0000000.pt", "step_0000002.pt", "step_0000004.pt", "final.pt"}
    return d


@pytest.fixture(scope="module")
def resnet_pair(tmp_path_factory):
    """The ResNet sample (A) and a copy (B) whose weights and BatchNorm running statistics both moved."""
    d = tmp_path_factory.mktemp("pair")
    ckpt = load_checkpoint(RESNET_CKPT)
    g = torch.Generator().manual_seed(11)
    state = {}
    for name, t in ckpt.state_dict.items():
        if name.endswith("running_mean"):
            t = t + 0.2 * torch.randn(t.shape, generator=g)
        elif name.endswith("running_var"):
            t = t * torch.exp(0.3 * torch.randn(t.shape, generator=g))
        elif t.is_floating_point():
            t = t + 0.02 * t.std() * torch.randn(t.shape, generator=g)
        state[name] = t
    ckpt.state_dict = state
    return RESNET_CKPT, save_checkpoint(ckpt, d / "resnet_b.pt")


# ------------------------------------------------------------------------------------------------
# 2. The centre is the checkpoint
# ------------------------------------------------------------------------------------------------


def test_centre_is_the_mlp_checkpoints_loss_on_each_split(mlp_plane):
    f = mlp_plane.file
    assert f.xcoordinates[2] == 0 and f.ycoordinates[1] == 0
    for split in ("train", "test"):
        truth = problem(MLP_CKPT, split=split, samples=200, seed=3).evaluate()
        assert f.datasets[f"{split}_loss"][1, 2] == pytest.approx(truth["loss"], rel=1e-6)
        assert f.datasets[f"{split}_acc"][1, 2] == pytest.approx(truth["accuracy"], abs=1e-9)
    train = problem(MLP_CKPT, samples=200, seed=3).evaluate()
    assert f.summary["center_loss"] == pytest.approx(train["loss"], rel=1e-6)
    assert f.summary["split"] == "train"


def test_centre_is_the_resnet_checkpoints_loss(resnet_plane):
    f = resnet_plane.file
    truth = problem(RESNET_CKPT, samples=400).evaluate()
    assert f.xcoordinates[4] == 0 and f.ycoordinates[4] == 0
    assert f.train_loss[4, 4] == pytest.approx(truth["loss"], rel=1e-6)
    assert f.summary["center_loss"] == pytest.approx(truth["loss"], rel=1e-6)
    assert f.train_acc[4, 4] == pytest.approx(truth["accuracy"], abs=1e-9)
    # BatchNorm in eval mode, the running statistics untouched: the loss rises away from the centre
    assert np.nanmin(f.train_loss) == pytest.approx(truth["loss"], rel=1e-6)


# ------------------------------------------------------------------------------------------------
# 3. A linear model under mse: the surface is an exact quadratic
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quadratic(tmp_path_factory):
    d = tmp_path_factory.mktemp("quadratic")
    torch.manual_seed(0)
    model = MLP([64, 10])
    ckpt = Checkpoint(
        state_dict=model.state_dict(),
        model=model_spec("mlp", {"widths": [64, 10]}),
        data=data_spec("digits", "train", 0, {"limit": 200}),
        loss="mse",
    )
    path = save_checkpoint(ckpt, d / "linear.pt")
    p = problem(path, dtype="float64")
    assert p.n_samples == 200 and p.n_params == 650
    hessian = dense_hessian(instantiate(load_checkpoint(path)), Dataset(p.x, p.y), loss="mse")
    loss0, grad = p.loss_and_gradient()
    return SimpleNamespace(dir=d, path=path, problem=p, H=hessian, L0=loss0, g=grad.double())


def test_linear_model_line_is_the_exact_quadratic(cli, quadratic):
    q = quadratic
    out = q.dir / "line.h5"
    payload = surface(cli, q.path, "--x", "-1:1:21", "--dtype", "float64", "--out", out)
    f = read(out)
    assert f.attrs["array_shape"] == "(len(xcoordinates),)" and "ycoordinates" not in f.datasets
    d = flat(f.directions["d1"], q.problem)
    assert not d[-10:].any()  # the bias (last in the layout) stays put under --ignore biasbn
    dhd, gd = float(d @ q.H @ d), float(q.g @ d)
    assert abs(gd) > 1e-3 * dhd  # the linear term is really there
    x = f.xcoordinates
    np.testing.assert_allclose(f.train_loss, q.L0 + x * gd + 0.5 * x**2 * dhd, rtol=1e-9)
    s = f.summary
    assert s["curvature"][0] == pytest.approx(dhd, rel=1e-6)
    assert s["radius"] == 0.5  # half way to the nearest edge
    assert s["rise_mean"] == pytest.approx(0.5 * 0.25 * dhd, rel=1e-6)  # the linear terms cancel
    assert s["rise_max"] == pytest.approx(0.5 * 0.25 * dhd + 0.5 * abs(gd), rel=1e-6)
    assert_close(payload["summary"], s)


def test_linear_model_plane_is_the_exact_quadratic(cli, quadratic):
    q = quadratic
    out = q.dir / "plane.h5"
    surface(cli, q.path, "--2d", "--x", "-1:1:7", "--y", "-0.5:0.5:5", "--ignore", "none", "--seed", "1",
            "--dtype", "float64", "--out", out)  # fmt: skip
    f = read(out)
    d1, d2 = flat(f.directions["d1"], q.problem), flat(f.directions["d2"], q.problem)
    assert d1[-10:].any() and d2[-10:].any()  # --ignore none: the bias moves too
    h = np.array([[d1 @ q.H @ d1, d1 @ q.H @ d2], [d2 @ q.H @ d1, d2 @ q.H @ d2]], dtype=float)
    assert abs(h[0, 1]) > 1e-4 * h[0, 0]  # a cross term far above the tolerance below
    gx, gy = np.meshgrid(f.xcoordinates, f.ycoordinates)
    linear = q.L0 + gx * float(q.g @ d1) + gy * float(q.g @ d2)
    expected = linear + 0.5 * (h[0, 0] * gx**2 + 2 * h[0, 1] * gx * gy + h[1, 1] * gy**2)
    np.testing.assert_allclose(f.train_loss, expected, rtol=1e-9)
    s = f.summary
    np.testing.assert_allclose(s["fit_hessian"], h, rtol=1e-6, atol=1e-6 * abs(h).max())
    np.testing.assert_allclose(s["curvature"], np.diag(h), rtol=1e-6)
    np.testing.assert_allclose(s["fit_hessian_eigenvalues"], np.linalg.eigvalsh(h), rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# 5. Eigen directions
# ------------------------------------------------------------------------------------------------

EIGEN = ["--x", "-0.01:0.01:11", "--dtype", "float64", "--samples", "200"]


def read_eigenvector(path: Path, index: int = 0) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        g = f[f"eigenvectors/top/{index}"]
        return {name: g[name][()] for name in g}


def spectrum_with_vectors(directory: Path, cli, top_k: int) -> SimpleNamespace:
    path = directory / f"top{top_k}.h5"
    result = cli(
        "spectrum", MLP_CKPT, "--save-eigenvectors", "--top-k", top_k, "--samples", "200", "--dtype", "float64",
        "--no-plot", "--quiet", "--out", path,
    )  # fmt: skip
    assert result.code == 0, result.err
    with h5py.File(path, "r") as f:
        values = f["top/eigenvalues"][()]
    return SimpleNamespace(path=path, values=values)


@pytest.fixture(scope="module")
def spectrum_file(tmp_path_factory, cli):
    """`landscape spectrum --save-eigenvectors` with the options the surface's own eigen run uses."""
    return spectrum_with_vectors(tmp_path_factory.mktemp("spectrum"), cli, 1)


def test_curvature_along_the_top_eigenvector_is_its_eigenvalue(cli, tmp_path, spectrum_file):
    computed = surface(cli, MLP_CKPT, "--dirs", "eigen", *EIGEN, "--out", tmp_path / "computed.h5")
    stored = surface(cli, MLP_CKPT, "--dirs", f"eigen:{spectrum_file.path}", *EIGEN, "--out", tmp_path / "stored.h5")
    a, b = read(tmp_path / "computed.h5"), read(tmp_path / "stored.h5")
    p = problem(MLP_CKPT, samples=200, dtype="float64")
    u, v = flat(a.directions["d1"], p), flat(b.directions["d1"], p)
    assert float(u.norm()) == pytest.approx(1.0, abs=1e-9) and float(v.norm()) == pytest.approx(1.0, abs=1e-9)
    assert abs(float(u @ v)) > 1 - 1e-6  # the same eigenvector up to sign
    w = flat(read_eigenvector(spectrum_file.path), p)
    np.testing.assert_array_equal(v.numpy(), w.numpy())  # stored as the spectrum file has it
    eigenvalue = a.direction_attrs["d1"]["eigenvalue"]
    assert a.direction_attrs["d1"]["kind"] == "eigen" and b.direction_attrs["d1"]["source"] == str(spectrum_file.path)
    assert eigenvalue == pytest.approx(spectrum_file.values[0], rel=1e-4)
    assert b.direction_attrs["d1"]["eigenvalue"] == pytest.approx(spectrum_file.values[0], rel=1e-12)
    # and the eigenvalue is the Rayleigh quotient of the true Hessian
    assert float(u @ p.hvp(u.clone())) == pytest.approx(eigenvalue, rel=1e-4)
    for payload in (computed, stored):
        assert payload["summary"]["curvature"][0] == pytest.approx(eigenvalue, rel=1e-3)


def test_plane_of_two_eigenvectors_has_a_diagonal_hessian(cli, tmp_path, spectrum_file):
    spectrum = spectrum_with_vectors(tmp_path, cli, 2)
    surface(cli, MLP_CKPT, "--2d", "--dirs", f"eigen:{spectrum.path}", *EIGEN, "--y", "-0.01:0.01:11",
            "--out", tmp_path / "e2.h5")  # fmt: skip
    f = read(tmp_path / "e2.h5")
    l1, l2 = spectrum.values
    assert l1 > l2 > 0
    assert [f.direction_attrs[k]["eigenvalue"] for k in ("d1", "d2")] == [l1, l2]
    np.testing.assert_allclose(f.summary["curvature"], [l1, l2], rtol=1e-3)
    assert abs(f.summary["fit_hessian"][0][1]) < 1e-3 * l1
    # the first is the top-1 file's eigenvector, to Lanczos' accuracy
    p = problem(MLP_CKPT, samples=200, dtype="float64")
    u = flat(f.directions["d1"], p)
    v = flat(read_eigenvector(spectrum_file.path), p)
    assert abs(float(u @ v)) > 0.999


# ------------------------------------------------------------------------------------------------
# 6. Interpolation
# ------------------------------------------------------------------------------------------------


def test_interpolation_plane_puts_b_at_1_0_and_c_at_0_1(cli, tmp_path):
    b, c = SAM, SSAM
    out = tmp_path / "i.h5"
    payload = surface(cli, MLP_CKPT, "--2d", "--dirs", f"interp:{b},{c}", "--x", "0:1:2", "--y", "0:1:3",
                      "--samples", "200", "--out", out)  # fmt: skip
    f = read(out)
    losses = {p: problem(p, samples=200).evaluate()["loss"] for p in (MLP_CKPT, b, c)}
    assert f.train_loss.shape == (3, 2)
    assert f.train_loss[0, 0] == pytest.approx(losses[MLP_CKPT], rel=1e-6)
    assert f.train_loss[0, 1] == pytest.approx(losses[b], rel=1e-6)
    assert f.train_loss[2, 0] == pytest.approx(losses[c], rel=1e-6)
    assert len({round(v, 6) for v in losses.values()}) == 3  # three different checkpoints
    anchors = f.groups["anchors"]
    assert [s.decode() if isinstance(s, bytes) else s for s in anchors["label"]] == [
        "mlp_digits.pt", "mlp_digits_sam.pt", "mlp_digits_ssam.pt",
    ]  # fmt: skip
    np.testing.assert_array_equal(anchors["x"], [0, 1, 0])
    np.testing.assert_array_equal(anchors["y"], [0, 0, 1])
    assert f.attrs["directions_kind"] == "interp"
    assert [d["source"] for d in payload["directions"]] == [str(b), str(c)]
    assert {d["norm"] for d in payload["directions"]} == {"none"}


def test_interpolation_moves_batchnorm_statistics_so_x1_is_b(cli, tmp_path, resnet_pair):
    a, b = resnet_pair
    out = tmp_path / "ib.h5"
    surface(cli, a, "--dirs", f"interp:{b}", "--x", "-0.5:1.5:5", "--samples", "200", "--points-per-pass", "1",
            "--out", out)  # fmt: skip
    f = read(out)
    pa, pb = problem(a, samples=200), problem(b, samples=200)
    np.testing.assert_array_equal(f.xcoordinates, [-0.5, 0, 0.5, 1, 1.5])
    assert f.train_loss[1] == pytest.approx(pa.evaluate()["loss"], rel=1e-6)
    assert f.train_loss[3] == pytest.approx(pb.evaluate()["loss"], rel=1e-6)
    # B's weights with A's statistics give another loss: the statistics must move for x = 1 to be B
    assert abs(pa.evaluate(w=pb.w)["loss"] - pb.evaluate()["loss"]) > 1e-3 * pb.evaluate()["loss"]
    buffers = f.buffers["d1"]
    assert any(n.endswith("running_var") for n in buffers) and not any("num_batches" in n for n in buffers)
    for name, delta in buffers.items():
        np.testing.assert_allclose(delta, (pb.buffers[name] - pa.buffers[name]).numpy(), rtol=1e-6, atol=1e-7)
    # the direction in the parameters is B - A
    np.testing.assert_allclose(flat(f.directions["d1"], pa).numpy(), (pb.w - pa.w).double().numpy(), atol=1e-6)
    assert f.summary["center_loss"] == pytest.approx(pa.evaluate()["loss"], rel=1e-6)


# ------------------------------------------------------------------------------------------------
# 7. PCA of a training run
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pca(tmp_path_factory, cli, run_dir):
    d = tmp_path_factory.mktemp("pca")
    payload = surface(cli, run_dir / "final.pt", "--2d", "--dirs", f"pca:{run_dir}", "--x", "-1:1:5", "--y", "-1:1:3",
                      "--samples", "200", "--out", d / "pca.h5")  # fmt: skip
    return SimpleNamespace(path=d / "pca.h5", payload=payload, file=read(d / "pca.h5"))


def test_pca_directions_and_trajectory(pca, run_dir):
    f = pca.file
    p = problem(run_dir / "final.pt", samples=200)
    d1, d2 = flat(f.directions["d1"], p), flat(f.directions["d2"], p)
    assert float(d1 @ d1) == pytest.approx(1, abs=1e-6) and float(d2 @ d2) == pytest.approx(1, abs=1e-6)
    assert abs(float(d1 @ d2)) < 1e-6
    t = f.groups["trajectory"]
    np.testing.assert_array_equal(t["step"], [0, 2, 4, 6])
    assert abs(t["x"][-1]) < 1e-6 and abs(t["y"][-1]) < 1e-6  # the final checkpoint is the centre
    assert t["x"][0] < 0  # the run starts on the negative side
    ratios = [f.direction_attrs[k]["explained_variance_ratio"] for k in ("d1", "d2")]
    assert all(0 < r <= 1 for r in ratios) and sum(ratios) <= 1 + 1e-12 and ratios[0] >= ratios[1]
    assert t["attrs"]["explained_variance_ratio"] == pytest.approx(ratios)

    # ground truth: the SVD of the checkpoints' offsets from the final weights, by numpy
    paths = [*sorted(run_dir.glob("step_*.pt")), run_dir / "final.pt"]
    weights = np.stack([flat({k: v.numpy() for k, v in load_checkpoint(q).state_dict.items()}, p).numpy()
                        for q in paths])  # fmt: skip
    offsets = weights - weights[-1]
    _, singular, vt = np.linalg.svd(offsets[:-1], full_matrices=False)
    energy = singular**2 / (singular**2).sum()
    np.testing.assert_allclose(ratios, energy[:2], rtol=1e-6)
    assert abs(float(d1.numpy() @ vt[0])) == pytest.approx(1, abs=1e-6)
    assert abs(float(d2.numpy() @ vt[1])) == pytest.approx(1, abs=1e-6)
    # the trajectory is each checkpoint projected on the stored directions
    reach = np.linalg.norm(offsets, axis=1).max()
    np.testing.assert_allclose(t["x"], offsets @ d1.numpy(), atol=1e-5 * reach)
    np.testing.assert_allclose(t["y"], offsets @ d2.numpy(), atol=1e-5 * reach)
    assert f.summary["center_loss"] == pytest.approx(p.evaluate()["loss"], rel=1e-6)
    assert f.attrs["directions_kind"] == "pca"


def test_pca_trajectory_follows_renormalized_directions(cli, tmp_path, run_dir):
    out = tmp_path / "pf.h5"
    surface(cli, run_dir / "final.pt", "--2d", "--dirs", f"pca:{run_dir}", "--norm", "filter", "--x", "-1:1:3",
            "--y", "-1:1:3", "--samples", "100", "--out", out)  # fmt: skip
    f = read(out)
    assert f.direction_attrs["d1"]["norm"] == "filter"
    p = problem(run_dir / "final.pt", samples=100)
    basis = torch.stack([flat(f.directions[k], p) for k in ("d1", "d2")], dim=1).numpy()
    paths = [*sorted(run_dir.glob("step_*.pt")), run_dir / "final.pt"]
    weights = np.stack([flat({k: v.numpy() for k, v in load_checkpoint(q).state_dict.items()}, p).numpy()
                        for q in paths])  # fmt: skip
    offsets = weights - weights[-1]
    # the coordinates of each checkpoint in the plane of the stored directions (least squares)
    coords, *_ = np.linalg.lstsq(basis, offsets.T, rcond=None)
    reach = np.abs(coords).max()
    t = f.groups["trajectory"]
    np.testing.assert_allclose(t["x"], coords[0], atol=1e-4 * reach)
    np.testing.assert_allclose(t["y"], coords[1], atol=1e-4 * reach)


# ------------------------------------------------------------------------------------------------
# 8. Directions reused from a file
# ------------------------------------------------------------------------------------------------


def test_file_directions_are_reused_bit_for_bit(cli, tmp_path, mlp_plane):
    out = tmp_path / "again.h5"
    payload = surface(cli, MLP_CKPT, "--2d", "--dirs", f"file:{mlp_plane.path}", "--samples", "200", "--seed", "3",
                      "--points-per-pass", "1", "--out", out)  # fmt: skip
    old, new = mlp_plane.file, read(out)
    assert new.attrs["directions_kind"] == "file"
    for key in ("d1", "d2"):
        assert set(new.directions[key]) == set(old.directions[key])
        for name, array in old.directions[key].items():
            assert new.directions[key][name].dtype == array.dtype
            np.testing.assert_array_equal(new.directions[key][name], array)
    # the file's grid by default, and so the same numbers
    np.testing.assert_array_equal(new.xcoordinates, old.xcoordinates)
    np.testing.assert_array_equal(new.ycoordinates, old.ycoordinates)
    np.testing.assert_allclose(new.train_loss, old.train_loss, rtol=1e-6)
    assert payload["directions"][0]["source"] == str(mlp_plane.path)


def test_file_directions_carry_batchnorm_statistics(cli, tmp_path, resnet_pair):
    a, b = resnet_pair
    first, second = tmp_path / "i.h5", tmp_path / "f.h5"
    surface(cli, a, "--dirs", f"interp:{b}", "--x", "0:1:3", "--samples", "200", "--out", first)
    surface(cli, a, "--dirs", f"file:{first}", "--samples", "200", "--out", second)
    one, two = read(first), read(second)
    assert set(two.buffers["d1"]) == set(one.buffers["d1"])
    np.testing.assert_allclose(two.train_loss, one.train_loss, rtol=1e-6)
    assert two.train_loss[-1] == pytest.approx(problem(b, samples=200).evaluate()["loss"], rel=1e-6)


def test_file_from_another_architecture_is_refused(cli, tmp_path, pca):
    # pca.h5 is of an MLP 64-8-10; the sample is 64-32-10: same names, other shapes
    result = cli("surface", MLP_CKPT, "--2d", "--dirs", f"file:{pca.path}", "--out", tmp_path / "x.h5", "--quiet")
    assert_user_error(result, "layers.0.weight", str(pca.path))
    assert listing(tmp_path) == set()


# ------------------------------------------------------------------------------------------------
# 9, 10. Batched passes, and the orientation of a non-square grid
# ------------------------------------------------------------------------------------------------


def test_points_per_pass_does_not_change_the_numbers(cli, tmp_path, mlp_plane):
    out = tmp_path / "p7.h5"
    payload = surface(cli, MLP_CKPT, *PLANE, "--split", "train,test", "--points-per-pass", "7", "--out", out)
    f = read(out)
    assert payload["evaluation"]["method"] == "batched" and payload["evaluation"]["points_per_pass"] == 7
    assert f.attrs["points_per_pass"] == 7 and mlp_plane.file.attrs["points_per_pass"] == 1
    for name in ("train_loss", "test_loss"):
        np.testing.assert_allclose(f.datasets[name], mlp_plane.file.datasets[name], rtol=1e-5)
    for name in ("train_acc", "test_acc"):
        np.testing.assert_allclose(f.datasets[name], mlp_plane.file.datasets[name], atol=0.5 + 1e-9)


def test_auto_keeps_the_points_it_timed(cli, tmp_path):
    """auto times a batched pass against single passes on the first points of the grid and keeps
    their values; every point must still land in its place."""
    args = [MLP_CKPT, "--2d", "--x", "-1:1:13", "--y", "-0.6:0.6:11", "--samples", "100"]
    auto = surface(cli, *args, "--out", tmp_path / "auto.h5")
    surface(cli, *args, "--points-per-pass", "1", "--out", tmp_path / "loop.h5")
    assert set(auto["evaluation"]["seconds_per_point_measured"]) == {"batched", "loop"}
    assert auto["evaluation"]["computed"] == 143
    np.testing.assert_allclose(read(tmp_path / "auto.h5").train_loss, read(tmp_path / "loop.h5").train_loss, rtol=1e-5)


def test_non_square_grid_is_rows_y_columns_x(cli, tmp_path):
    out = tmp_path / "o.h5"
    surface(cli, MLP_CKPT, "--2d", "--x", "-1:1:5", "--y", "-0.3:0.6:3", "--samples", "200", "--dtype", "float64",
            "--points-per-pass", "2", "--out", out)  # fmt: skip
    f = read(out)
    assert f.train_loss.shape == f.train_acc.shape == (3, 5)
    assert f.attrs["array_shape"] == "(len(ycoordinates), len(xcoordinates))"
    np.testing.assert_array_equal(f.xcoordinates, np.linspace(-1, 1, 5))
    np.testing.assert_allclose(f.ycoordinates, [-0.3, 0.15, 0.6], rtol=0, atol=1e-15)
    p = problem(MLP_CKPT, samples=200, dtype="float64")
    d1, d2 = flat(f.directions["d1"], p), flat(f.directions["d2"], p)
    for i, y in enumerate(f.ycoordinates):
        for j, x in enumerate(f.xcoordinates):
            truth = p.evaluate(w=p.w + x * d1 + y * d2)
            assert f.train_loss[i, j] == pytest.approx(truth["loss"], rel=1e-10), (i, j)
            assert f.train_acc[i, j] == truth["accuracy"]
    assert np.ptp(f.train_loss, axis=1).min() > 0 and np.ptp(f.train_loss, axis=0).min() > 0


# ------------------------------------------------------------------------------------------------
# 11. Resume
# ------------------------------------------------------------------------------------------------

GRID_5X7 = [MLP_CKPT, "--2d", "--x", "-1:1:5", "--y", "-0.6:0.6:7", "--samples", "200", *CPU]
GRID_SIZE = 35


class Counter:
    """Wraps Sweep.evaluate (count the points evaluated) and Journal.append (raise KeyboardInterrupt
    after the record of the n-th call is written, as if Ctrl-C came right then)."""

    def __init__(self, monkeypatch):
        self.points = 0
        self.appends = 0
        self.stop_after: int | None = None
        evaluate, append = sweep.Sweep.evaluate, store.Journal.append

        def counting_evaluate(this, indices, batched):
            self.points += len(indices)
            return evaluate(this, indices, batched)

        def interrupting_append(this, indices, values):
            append(this, indices, values)
            self.appends += 1
            if self.stop_after is not None and self.appends >= self.stop_after:
                self.stop_after = None
                raise KeyboardInterrupt

        monkeypatch.setattr(sweep.Sweep, "evaluate", counting_evaluate)
        monkeypatch.setattr(store.Journal, "append", interrupting_append)

    def interrupt_at(self, n: int) -> None:
        self.appends, self.stop_after = 0, n


def partials(out: Path) -> tuple[Path, Path]:
    return out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.points")


@pytest.fixture(scope="module")
def references(tmp_path_factory, cli):
    """Uninterrupted runs of the 5 x 7 grid, one and four points per pass."""
    d = tmp_path_factory.mktemp("reference")
    for n in (1, 4):
        surface(cli, *GRID_5X7, "--points-per-pass", n, "--out", d / f"{n}.h5")
    return {n: read(d / f"{n}.h5") for n in (1, 4)}


@pytest.mark.parametrize("per_pass", [1, 4])
def test_interrupted_sweep_resumes_to_the_same_bits(cli, tmp_path, monkeypatch, references, per_pass):
    from landscape_cli.surface.sweep import LOOP_BLOCK

    block = per_pass if per_pass > 1 else LOOP_BLOCK  # points journaled together
    counter = Counter(monkeypatch)
    out = tmp_path / "s.h5"
    header, journal = partials(out)
    counter.interrupt_at(4)  # the method record, then three blocks
    result = cli("surface", *GRID_5X7, "--points-per-pass", per_pass, "--out", out, "--quiet")
    assert result.code == 130, result.err
    assert "--resume" in result.err and "Traceback" not in result.err
    assert header.exists() and journal.exists() and not out.exists()
    assert counter.points == 3 * block
    assert journal.stat().st_size == (1 + 3 * block) * 24  # index + loss + accuracy, 8 bytes each

    payload = surface(cli, *GRID_5X7, "--points-per-pass", "9", "--out", out, "--resume")  # the recorded method wins
    assert counter.points == GRID_SIZE  # nothing computed twice
    assert payload["evaluation"]["resumed"] == 3 * block
    assert payload["evaluation"]["computed"] == GRID_SIZE - 3 * block
    assert payload["evaluation"]["points_per_pass"] == per_pass
    assert listing(tmp_path) == {"s.h5"}
    f, ref = read(out), references[per_pass]
    for name in ("train_loss", "train_acc", "xcoordinates", "ycoordinates"):
        np.testing.assert_array_equal(f.datasets[name], ref.datasets[name])
    for key in ("d1", "d2"):
        for name, array in ref.directions[key].items():
            np.testing.assert_array_equal(f.directions[key][name], array)
    assert f.summary == ref.summary
    assert f.attrs["config"] == ref.attrs["config"]


INTERP_LINE = [MLP_CKPT, "--dirs", f"interp:{SAM}", "--x", "-0.5:1.5:9", "--samples", "100", "--points-per-pass", "1",
               *CPU]  # fmt: skip


def test_resumed_run_reports_the_directions_it_was_started_with(cli, tmp_path, monkeypatch):
    counter = Counter(monkeypatch)
    out = tmp_path / "s.h5"
    counter.interrupt_at(3)
    assert cli("surface", *INTERP_LINE, "--out", out, "--quiet").code == 130
    resumed = surface(cli, *INTERP_LINE, "--out", out, "--resume")
    plain = surface(cli, *INTERP_LINE, "--out", tmp_path / "plain.h5")
    assert read(out).direction_attrs == read(tmp_path / "plain.h5").direction_attrs  # the file is right
    assert resumed["directions"][0]["source"] == str(SAM)
    assert resumed["directions"] == plain["directions"]


def test_resume_is_refused_when_the_interpolation_target_changed(cli, tmp_path, monkeypatch):
    counter = Counter(monkeypatch)
    target = tmp_path / "b.pt"
    target.write_bytes(SAM.read_bytes())
    args = [*INTERP_LINE[:2], f"interp:{target}", *INTERP_LINE[3:], "--out", tmp_path / "s.h5", "--quiet"]
    counter.interrupt_at(3)
    assert cli("surface", *args).code == 130
    target.write_bytes(SSAM.read_bytes())
    assert_user_error(cli("surface", *args, "--resume"), "cannot resume", "dirs_sources was")
    target.write_bytes(SAM.read_bytes())
    assert cli("surface", *args, "--resume").code == 0


def test_torn_last_record_is_dropped(cli, tmp_path, monkeypatch, references):
    counter = Counter(monkeypatch)
    out = tmp_path / "s.h5"
    _, journal = partials(out)
    from landscape_cli.surface.sweep import LOOP_BLOCK

    counter.interrupt_at(3)  # the method record and two blocks
    assert cli("surface", *GRID_5X7, "--points-per-pass", "1", "--out", out, "--quiet").code == 130
    with open(journal, "ab") as fh:
        fh.write(b"\x07" * 13)  # half a record: what a kill during a write could leave
    # resume, get interrupted again: the torn bytes must be cut off before new records follow them
    counter.interrupt_at(2)  # two more blocks
    assert cli("surface", *GRID_5X7, "--out", out, "--resume", "--quiet").code == 130
    assert journal.stat().st_size == (1 + 4 * LOOP_BLOCK) * 24
    payload = surface(cli, *GRID_5X7, "--out", out, "--resume")
    assert payload["evaluation"]["resumed"] == 4 * LOOP_BLOCK
    assert counter.points == GRID_SIZE
    f, ref = read(out), references[1]
    np.testing.assert_array_equal(f.train_loss, ref.train_loss)
    np.testing.assert_array_equal(f.train_acc, ref.train_acc)


@pytest.fixture
def interrupted(cli, tmp_path, monkeypatch):
    counter = Counter(monkeypatch)
    out = tmp_path / "s.h5"
    counter.interrupt_at(4)
    assert cli("surface", *GRID_5X7, "--points-per-pass", "1", "--out", out, "--quiet").code == 130
    header, journal = partials(out)
    return SimpleNamespace(out=out, counter=counter, saved={p: p.read_bytes() for p in (header, journal)})


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (["--x", "-1:1:6"], ["x was -1:1:5, now -1:1:6"]),
        (["--y", "-0.6:0.7:7"], ["y was -0.6:0.6:7"]),
        (["--seed", "1"], ["seed was 0, now 1"]),
        (["--samples", "150"], ["samples was [200], now [150]"]),
        (["--dtype", "float64"], ["dtype was float32, now float64"]),
        (["--norm", "layer"], ["norm was filter, now layer"]),
        (["--ignore", "none"], ["ignore was biasbn, now none"]),
        (["--split", "train,test"], ["splits was"]),
        (["--dirs", f"interp:{SAM}"], ["dirs was random, now interp"]),
    ],
)
def test_resume_with_another_config_is_refused(cli, interrupted, change, fragments):
    args = [*GRID_5X7, "--out", interrupted.out, "--resume", "--quiet"]
    for i in range(0, len(change), 2):  # replace the option where the base command has it
        if change[i] in args:
            args[args.index(change[i]) + 1] = change[i + 1]
        else:
            args += change[i : i + 2]
    result = cli("surface", *args)
    assert_user_error(result, "cannot resume", *fragments)
    assert {p: p.read_bytes() for p in interrupted.saved} == interrupted.saved
    assert not interrupted.out.exists()


def test_resume_with_another_checkpoint_is_refused(cli, interrupted):
    result = cli("surface", SAM, *GRID_5X7[1:], "--out", interrupted.out, "--resume")
    assert_user_error(result, "cannot resume", "checkpoint_sha256 was")
    assert {p: p.read_bytes() for p in interrupted.saved} == interrupted.saved


def test_partial_sweep_needs_resume_or_overwrite(cli, interrupted, references):
    result = cli("surface", *GRID_5X7, "--out", interrupted.out, "--quiet")
    assert_user_error(result, "--resume", "--overwrite", str(interrupted.out) + ".partial")
    assert {p: p.read_bytes() for p in interrupted.saved} == interrupted.saved
    interrupted.counter.points = 0
    payload = surface(cli, *GRID_5X7, "--points-per-pass", "1", "--out", interrupted.out, "--overwrite")
    assert payload["evaluation"]["resumed"] == 0 and interrupted.counter.points == GRID_SIZE
    assert listing(interrupted.out.parent) == {"s.h5"}
    np.testing.assert_array_equal(read(interrupted.out).train_loss, references[1].train_loss)


def test_resume_without_a_partial_sweep_is_refused(cli, tmp_path):
    result = cli("surface", *GRID_5X7, "--out", tmp_path / "s.h5", "--resume")
    assert_user_error(result, "nothing to resume")
    assert listing(tmp_path) == set()


def test_kill_9_then_resume(cli, tmp_path, resnet_plane):
    """A real SIGKILL in the middle of a sweep; --resume finishes it with the uninterrupted numbers."""
    out = tmp_path / "k.h5"
    header, journal = partials(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "landscape_cli", "surface", *map(str, resnet_plane.args), "--out", str(out), "-q"]
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if journal.exists() and journal.stat().st_size >= 5 * 24:  # the method and 4 points
                    break
                time.sleep(0.002)
            if proc.poll() is not None or not journal.exists():
                pytest.fail(f"the sweep ended before it could be killed: {(tmp_path / 'stderr.txt').read_text()}")
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert header.exists() and not out.exists()
    done = journal.stat().st_size // 24 - 1
    assert 4 <= done < 81
    payload = surface(cli, *resnet_plane.args, "--out", out, "--resume")
    assert payload["evaluation"]["resumed"] == done
    assert payload["evaluation"]["computed"] == 81 - done
    f = read(out)
    np.testing.assert_allclose(f.train_loss, resnet_plane.file.train_loss, rtol=1e-6)
    np.testing.assert_allclose(f.train_acc, resnet_plane.file.train_acc, atol=1e-9)
    assert not header.exists() and not journal.exists()


# ------------------------------------------------------------------------------------------------
# 12. Bad input
# ------------------------------------------------------------------------------------------------

MODELS_PY = '''
import torch
from torch import nn


class SqrtScaled(nn.Module):
    """A Linear layer whose outputs are scaled by sqrt(scale): NaN where a scale goes negative."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)
        self.scale = nn.Parameter(torch.ones(10))

    def forward(self, x):
        return self.lin(x.flatten(1)) * torch.sqrt(self.scale)


class OnlyVectors(nn.Module):
    """No tensor with more than one dimension."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 64))
        self.bias = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        return (x.flatten(1) * self.scale)[:, :10] + self.bias


def sqrt_scaled():
    return SqrtScaled()


def only_vectors():
    return OnlyVectors()
'''


@pytest.fixture(scope="module")
def user_models(tmp_path_factory):
    """Checkpoints of the models above on 100 digits: the centre (scale 1) and one with scale -1."""
    d = tmp_path_factory.mktemp("user")
    (d / "surface_models.py").write_text(MODELS_PY)
    data = data_spec("digits", "train", 0, {"limit": 100})
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 10)
    state = {"lin.weight": lin.weight.detach(), "lin.bias": lin.bias.detach(), "scale": torch.ones(10)}

    def save(name, state, factory):
        spec = {"entrypoint": f"{d}/surface_models.py:{factory}", "kwargs": {}}
        ckpt = Checkpoint(state_dict=state, model=spec, data=data, loss="cross_entropy")
        return save_checkpoint(ckpt, d / name)

    return SimpleNamespace(
        centre=save("centre.pt", state, "sqrt_scaled"),
        negative=save("negative.pt", {**state, "scale": -torch.ones(10)}, "sqrt_scaled"),
        vectors=save("vectors.pt", {"scale": torch.linspace(0.5, 1.5, 64), "bias": torch.zeros(10)}, "only_vectors"),
    )


@pytest.fixture(scope="module")
def spectrum_without_vectors(tmp_path_factory, cli):
    d = tmp_path_factory.mktemp("novectors")
    result = cli("spectrum", MLP_CKPT, "--top-k", "1", "--samples", "100", "--max-iter", "30", "--no-plot", "--quiet",
                 "--out", d / "plain.h5")  # fmt: skip
    assert result.code == 0, result.err
    return d / "plain.h5"


BAD = {
    "zero-norm interp": (["--dirs", "interp:{mlp}"], ["direction 1 has zero norm", "same weights"]),
    "N below 2": (["--x", "-1:1:1"], ["--x", "N must be at least 2"]),
    "MIN not below MAX": (["--x", "1:-1:5"], ["--x", "MIN must be below MAX"]),
    "MIN equals MAX": (["--2d", "--y", "0:0:5"], ["--y", "MIN must be below MAX"]),
    "not a number": (["--x", "-1:one:5"], ["--x", "must be numbers", "-1:one:5"]),
    "N not whole": (["--x", "-1:1:5.5"], ["--x", "N must be a whole number"]),
    "two parts": (["--x", "-1:1"], ["--x", "MIN:MAX:N"]),
    "infinite": (["--x", "-inf:1:5"], ["--x", "finite"]),
    "y without 2d": (["--y", "-1:1:5"], ["--y needs a 2D surface"]),
    "1d and 2d": (["--1d", "--2d"], ["--1d and --2d exclude each other"]),
    "unknown kind": (["--dirs", "hessian"], ["unknown direction kind 'hessian'"]),
    "random with argument": (["--dirs", "random:3"], ["--dirs random takes no argument"]),
    "interp without argument": (["--dirs", "interp"], ["--dirs interp needs an argument"]),
    "interp of three": (["--2d", "--dirs", "interp:{mlp},{mlp},{mlp}"], ["one checkpoint", "or two"]),
    "plane needs two": (["--2d", "--dirs", "interp:{sam}"], ["2D interpolation needs two checkpoints"]),
    "interp other architecture": (["--dirs", "interp:{cnn}"], ["cnn_digits.pt", "layers.0.weight"]),
    "interp missing file": (["--dirs", "interp:{tmp}/nowhere.pt"], ["file not found", "nowhere.pt"]),
    "norm with interp": (["--dirs", "interp:{sam}", "--norm", "filter"], ["--norm does not apply to interp"]),
    "norm with file": (["--dirs", "file:{spectrum}", "--norm", "layer"], ["--norm does not apply to file"]),
    "unknown norm": (["--norm", "unit"], ["unknown --norm 'unit'"]),
    "unknown ignore": (["--ignore", "bn"], ["unknown --ignore 'bn'"]),
    "radius zero": (["--radius", "0"], ["--radius must be positive"]),
    "radius negative": (["--radius", "-0.5"], ["--radius must be positive"]),
    "points per pass zero": (["--points-per-pass", "0"], ["--points-per-pass"]),
    "points per pass word": (["--points-per-pass", "many"], ["--points-per-pass", "many"]),
    "unknown split": (["--split", "train,valid"], ["unknown split 'valid'"]),
    "pca without final": (["--dirs", "pca:{tmp}"], ["final.pt"]),
    "pca of a file": (["--dirs", "pca:{mlp}"], ["not a run directory"]),
    "eigen without vectors": (["--dirs", "eigen:{spectrum}"], ["holds no eigenvectors", "--save-eigenvectors"]),
    "eigen of a surface": (["--dirs", "eigen:{mlp}"], ["mlp_digits.pt"]),
    "file not a surface": (["--dirs", "file:{spectrum}"], ["holds no directions"]),
    "file of another model": (["--dirs", "file:{cnn_surface}"], ["does not have this model's parameters", "missing"]),
}


@pytest.fixture(scope="module")
def cnn_surface(tmp_path_factory, cli):
    d = tmp_path_factory.mktemp("cnn")
    surface(cli, CNN, "--x", "-1:1:3", "--samples", "50", "--out", d / "cnn.h5")
    return d / "cnn.h5"


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_error_line(cli, tmp_path, case, spectrum_without_vectors, cnn_surface):
    options, fragments = BAD[case]
    names = {
        "mlp": MLP_CKPT, "sam": SAM, "cnn": CNN,
        "tmp": tmp_path, "spectrum": spectrum_without_vectors, "cnn_surface": cnn_surface,
    }  # fmt: skip
    options = [o.format(**names) for o in options]
    result = cli("surface", MLP_CKPT, *options, "--samples", "100", "--out", tmp_path / "bad.h5", "--quiet")
    assert_user_error(result, *[f.format(**names) for f in fragments])
    assert listing(tmp_path) == set()


@pytest.mark.parametrize("dirs", ["interp:{tmp}", "eigen:{tmp}"])
def test_directory_given_as_a_file_is_named_as_such(cli, tmp_path, dirs):
    (tmp_path / "d").mkdir()
    result = cli("surface", MLP_CKPT, "--dirs", dirs.format(tmp=tmp_path / "d"), "--out", tmp_path / "x.h5", "-q")
    line = assert_user_error(result, str(tmp_path / "d"))
    assert "pca" not in line and "final.pt" not in line


def test_parallel_interpolation_plane_is_refused(cli, tmp_path):
    """C - A = 2 (B - A): the two directions span a line, not a plane."""
    a, b = load_checkpoint(MLP_CKPT), load_checkpoint(SAM)
    a.state_dict = {k: a.state_dict[k] + 2 * (b.state_dict[k] - a.state_dict[k]) for k in a.state_dict}
    c = save_checkpoint(a, tmp_path / "c.pt")
    out = tmp_path / "p.h5"
    result = cli("surface", MLP_CKPT, "--2d", "--dirs", f"interp:{b.path},{c}", "--samples", "50", "--out", out)
    assert_user_error(result, "directions 1 and 2 are parallel")
    assert listing(tmp_path) == {"c.pt"}


def test_zero_norm_random_direction(cli, tmp_path, user_models):
    """A model whose every tensor is a vector: under --ignore biasbn nothing would move."""
    result = cli("surface", user_models.vectors, "--out", tmp_path / "v.h5", "--quiet", "--trust-remote-code")
    assert_user_error(result, "zero norm", "--ignore none")
    assert listing(tmp_path) == set()
    payload = surface(cli, user_models.vectors, "--ignore", "none", "--x", "-0.5:0.5:3", "--out", tmp_path / "v.h5",
                      "--trust-remote-code")  # fmt: skip
    assert payload["nonfinite_points"] == 0


def test_missing_checkpoint(cli, tmp_path):
    result = cli("surface", tmp_path / "absent.pt", "--out", tmp_path / "a.h5")
    assert_user_error(result, "file not found", "absent.pt")
    assert listing(tmp_path) == set()


def test_existing_output_is_kept_without_overwrite(cli, tmp_path):
    out = tmp_path / "taken.h5"
    out.write_bytes(b"not mine to replace")
    result = cli("surface", MLP_CKPT, "--x", "-1:1:3", "--samples", "100", "--out", out, "--quiet")
    assert_user_error(result, str(out), "exists", "--overwrite")
    assert out.read_bytes() == b"not mine to replace"
    assert listing(tmp_path) == {"taken.h5"}
    surface(cli, MLP_CKPT, "--x", "-1:1:3", "--samples", "100", "--out", out, "--overwrite")
    assert read(out).attrs["kind"] == "surface"


def test_default_output_name_and_a_single_split(cli, tmp_path, monkeypatch, local_mlp):
    monkeypatch.chdir(tmp_path)
    payload = surface(cli, "mlp_digits.pt", "--2d", "--x", "-1:1:3", "--y", "-1:1:3", "--split", "test", "--samples",
                      "100")  # fmt: skip
    assert payload["output"] == "mlp_digits.surface2d.h5"  # beside the checkpoint
    assert listing(tmp_path) == {"mlp_digits.pt", "mlp_digits.surface2d.h5"}
    f = read(tmp_path / "mlp_digits.surface2d.h5")
    assert set(f.datasets) == {"xcoordinates", "ycoordinates", "test_loss", "test_acc"}
    assert f.attrs["splits"] == ["test"] and f.summary["split"] == "test"
    assert f.test_loss[1, 1] == pytest.approx(problem(MLP_CKPT, split="test", samples=100).evaluate()["loss"], rel=1e-6)
    surface(cli, MLP_CKPT, "--x", "-1:1:3", "--samples", "100", "--out", "line")
    assert listing(tmp_path) == {"mlp_digits.pt", "mlp_digits.surface2d.h5", "line.h5"}


def test_foreign_checkpoint_with_model_and_data_options(cli, tmp_path, mlp_plane):
    """A bare state_dict and the options that describe it give the native checkpoint's surface."""
    foreign = tmp_path / "bare.pt"
    torch.save(load_checkpoint(MLP_CKPT).state_dict, foreign)
    out = tmp_path / "f.h5"
    surface(cli, foreign, *PLANE, "--points-per-pass", "1", "--model", "mlp", "--model-arg", "widths=[64,32,10]",
            "--model-arg", "activation=tanh", "--data", "digits", "--loss", "cross_entropy", "--out", out)  # fmt: skip
    np.testing.assert_allclose(read(out).train_loss, mlp_plane.file.train_loss, rtol=1e-6)
    result = cli("surface", foreign, "--out", tmp_path / "g.h5", "--quiet")
    assert_user_error(result, "does not record its model", "--model")


def test_regression_data_has_no_accuracy(cli, tmp_path):
    torch.manual_seed(0)
    model = MLP([16, 8, 1], activation="tanh")
    ckpt = Checkpoint(
        state_dict=model.state_dict(),
        model=model_spec("mlp", {"widths": [16, 8, 1], "activation": "tanh"}),
        data=data_spec("teacher-student", "train", 0, {"n": 200}),
        loss="mse",
    )
    path = save_checkpoint(ckpt, tmp_path / "reg.pt")
    grid = ["--2d", "--x", "-1:1:5", "--y", "-1:1:3"]
    surface(cli, path, *grid, "--points-per-pass", "1", "--out", tmp_path / "one.h5")
    surface(cli, path, *grid, "--points-per-pass", "6", "--out", tmp_path / "six.h5")
    one, six = read(tmp_path / "one.h5"), read(tmp_path / "six.h5")
    assert set(one.datasets) == {"xcoordinates", "ycoordinates", "train_loss"}
    np.testing.assert_allclose(six.train_loss, one.train_loss, rtol=1e-5)
    assert one.train_loss[1, 2] == pytest.approx(problem(path).evaluate()["loss"], rel=1e-6)


DROPOUT_PY = """
from torch import nn


def factory():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 10))
"""


def test_train_mode_with_dropout_is_one_point_per_pass_with_fixed_masks(cli, tmp_path):
    (tmp_path / "dropout_model.py").write_text(DROPOUT_PY)
    spec = {"entrypoint": f"{tmp_path}/dropout_model.py:factory", "kwargs": {}}
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(16, 10))  # fmt: skip
    ckpt = Checkpoint(state_dict=net.state_dict(), model=spec, data=data_spec("digits", "train", 0, {"limit": 100}),
                      loss="cross_entropy")  # fmt: skip
    path = save_checkpoint(ckpt, tmp_path / "drop.pt")
    grid = ["--x", "-1:1:5", "--train-mode", "--batch-size", "40", "--trust-remote-code"]
    four = surface(cli, path, *grid, "--points-per-pass", "4", "--out", tmp_path / "four.h5")
    surface(cli, path, *grid, "--points-per-pass", "1", "--out", tmp_path / "one.h5")
    assert four["evaluation"]["points_per_pass"] == 1
    f = read(tmp_path / "four.h5")
    assert f.attrs["mode"] == "train" and "dropout" in f.attrs["evaluation"]["fallback_reason"]
    np.testing.assert_array_equal(f.train_loss, read(tmp_path / "one.h5").train_loss)
    # the same masks as the Problem's own train-mode loss, and not the eval-mode loss
    train = problem(path, train_mode=True, batch_size=40).evaluate()["loss"]
    assert f.train_loss[2] == pytest.approx(train, rel=1e-6)
    assert abs(problem(path).evaluate()["loss"] - train) > 1e-3


# ------------------------------------------------------------------------------------------------
# 13. NaN points
# ------------------------------------------------------------------------------------------------


def test_nan_points_along_an_interpolation(cli, tmp_path, user_models):
    out = tmp_path / "n.h5"
    result = cli("surface", user_models.centre, "--dirs", f"interp:{user_models.negative}", "--ignore", "none",
                 "--trust-remote-code",
                 "--x", "-0.5:1.5:9", *CPU, "--out", out, "--json", "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    # scale(x) = 1 - 2x: negative (sqrt -> NaN) at x = 0.75, 1, 1.25, 1.5; zero at 0.5 is fine
    warnings = [line for line in result.err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: 4 of 9 grid points gave a non-finite loss; stored as NaN"]
    f = read(out)
    np.testing.assert_array_equal(np.isnan(f.train_loss), f.xcoordinates > 0.5)
    assert f.attrs["nonfinite_points"] == 4 and json.loads(result.out)["nonfinite_points"] == 4
    p = problem(user_models.centre)
    d = flat(f.directions["d1"], p).float()
    for j in np.flatnonzero(f.xcoordinates <= 0.5):
        truth = p.evaluate(w=p.w + float(f.xcoordinates[j]) * d)["loss"]
        assert f.train_loss[j] == pytest.approx(truth, rel=1e-6)
    assert np.isfinite([f.summary["center_loss"], f.summary["rise_mean"], *f.summary["curvature"]]).all()


def test_nan_points_along_a_random_direction(cli, tmp_path, user_models):
    out = tmp_path / "r.h5"
    result = cli("surface", user_models.centre, "--2d", "--ignore", "none", "--x", "-1:1:5", "--y", "-1:1:5", *CPU,
                 "--trust-remote-code",
                 "--out", out, "--quiet")  # fmt: skip
    assert result.code == 0, result.err
    f = read(out)
    gx, gy = np.meshgrid(f.xcoordinates, f.ycoordinates)
    d1, d2 = f.directions["d1"]["scale"], f.directions["d2"]["scale"]
    scale = 1 + gx[..., None] * d1 + gy[..., None] * d2  # the scales at every grid point
    negative = (scale < 0).any(axis=-1)
    assert 0 < negative.sum() < 25
    np.testing.assert_array_equal(np.isnan(f.train_loss), negative)
    assert f.attrs["nonfinite_points"] == negative.sum()
    assert f"warning: {negative.sum()} of 25 grid points gave a non-finite loss" in result.err


# ------------------------------------------------------------------------------------------------
# 14. The file
# ------------------------------------------------------------------------------------------------


def test_li_et_al_datasets_and_attributes(mlp_plane):
    f = mlp_plane.file
    assert set(f.datasets) == {"xcoordinates", "ycoordinates", "train_loss", "train_acc", "test_loss", "test_acc"}
    for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert f.datasets[name].shape == (3, 5) and f.datasets[name].dtype == np.float64
    for name in ("train_acc", "test_acc"):
        acc = f.datasets[name]
        assert ((acc >= 0) & (acc <= 100)).all()
        np.testing.assert_allclose(acc * 2, np.round(acc * 2), atol=1e-9)  # k of 200 samples, in %
    assert f.train_acc[1, 2] > 95 and f.train_acc.min() < 90  # a trained model, and the loss rises away from it
    assert ROOT_ATTRS <= set(f.attrs)
    a = f.attrs
    assert a["kind"] == "surface" and a["dims"] == 2 and a["splits"] == ["train", "test"]
    assert a["directions_kind"] == "random" and a["nonfinite_points"] == 0 and a["points_per_pass"] == 1
    assert a["n_params"] == 2410 and a["n_samples"] == 200 and a["seed"] == 3 and a["mode"] == "eval"
    assert a["config"]["x"] == "-1:1:5" and a["config"]["y"] == "-0.5:0.5:3" and a["config"]["norm"] == "filter"
    assert a["checkpoint_sha256"] == load_checkpoint(MLP_CKPT).sha256
    assert a["command"].startswith("landscape surface ")


def test_directions_are_stored_by_parameter_name(mlp_plane):
    f = mlp_plane.file
    p = problem(MLP_CKPT, samples=200, seed=3)
    from landscape_cli.surface.directions import random_directions

    expected = random_directions(p, 2, seed=3, norm="filter", ignore="biasbn")
    for key, direction in zip(("d1", "d2"), expected, strict=True):
        arrays = f.directions[key]
        assert list(arrays) == sorted(p.layout.names)
        for name, shape in zip(p.layout.names, p.layout.shapes, strict=True):
            assert arrays[name].shape == tuple(shape)
        np.testing.assert_array_equal(flat(arrays, p).float().numpy(), direction.vector.numpy())
        attrs = f.direction_attrs[key]
        assert attrs["kind"] == "random" and attrs["norm"] == "filter" and attrs["ignore"] == "biasbn"
        assert attrs["l2_norm"] == pytest.approx(float(flat(arrays, p).norm()), rel=1e-6)
        assert not arrays["layers.0.bias"].any() and not arrays["layers.2.bias"].any()


def test_summary_group_and_json(mlp_plane):
    from landscape_cli.surface import summarize

    f, payload = mlp_plane.file, mlp_plane.payload
    assert set(f.summary) == SUMMARY_2D
    assert {"output", "summary", "evaluation", "directions", "problem"} <= set(payload)
    assert payload["output"] == str(mlp_plane.path)
    assert_close(payload["summary"], f.summary)
    assert payload["evaluation"]["computed"] == 15 and payload["evaluation"]["resumed"] == 0
    assert payload["dims"] == 2 and payload["points"] == 15 and payload["splits"] == ["train", "test"]
    # a pure function of the stored arrays: recomputed from the file it is the same
    again = summarize(f.xcoordinates, f.ycoordinates, f.train_loss, f.summary["center_loss"], f.summary["radius"])
    assert_close(again | {"split": "train"}, f.summary)
    assert f.summary["radius"] == 0.25  # half the way to the nearest edge (y = +-0.5)
    assert f.summary["rise_max"] >= f.summary["rise_mean"] > 0
