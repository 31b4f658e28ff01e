"""`landscape spectrum` end to end: outputs, JSON, HDF5 contents and provenance, foreign checkpoints,
user models and data, and the help text."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import typer

from landscape_cli import __version__
from landscape_cli.checkpoint import instantiate, load_checkpoint
from landscape_cli.session import problem_from_checkpoint, resolve_device, subset_indices
from landscape_cli.zoo.data import data_spec, load_data

from .conftest import FAST, MLP_PARAMS, listing

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MLP_FLAGS = ["--model", "mlp", "--model-arg", "widths=[64,32,10]", "--model-arg", "activation=tanh"]
FOREIGN_FLAGS = [*MLP_FLAGS, "--data", "digits", "--loss", "cross_entropy"]


def run_json(cli, *args) -> dict:
    result = cli("spectrum", *args, "--json")
    assert result.code == 0, result.err
    assert "error" not in result.err
    return json.loads(result.out)


def top(payload: dict) -> list[float]:
    return [row["eigenvalue"] for row in payload["top"]]


@pytest.fixture(scope="module")
def full(tmp_path_factory, cli, mlp_ckpt):
    """One run asking for everything: top and bottom eigenvalues, vectors, trace and density."""
    d = tmp_path_factory.mktemp("full")
    args = [
        "spectrum", str(mlp_ckpt), "--json", "--out", str(d / "full.h5"),
        "--top-k", "3", "--bottom-k", "2", "--save-eigenvectors", "--max-iter", "100",
        "--trace", "--trace-hvps", "12", "--density", "--density-runs", "2", "--density-steps", "12",
        "--samples", "200", "--seed", "3", "--hvp", "double-backward", "--quiet",
    ]  # fmt: skip
    result = cli(*args)
    assert result.code == 0, result.err
    return SimpleNamespace(args=args, dir=d, h5=d / "full.h5", payload=json.loads(result.out))


@pytest.fixture(scope="module")
def native(tmp_path_factory, cli, mlp_ckpt):
    """The reference run of the native sample checkpoint with FAST options."""
    d = tmp_path_factory.mktemp("native")
    return run_json(cli, mlp_ckpt, *FAST, "--no-plot", "--out", d / "native.h5")


# -- what one full run reports ------------------------------------------------------------------


def test_json_has_every_section_and_sorted_eigenvalues(full):
    p = full.payload
    assert {"top", "bottom", "lanczos", "trace", "density", "loss", "accuracy", "grad_norm", "problem"} <= set(p)
    values = top(p)
    assert len(values) == 3
    assert values == sorted(values, reverse=True)
    assert values[0] > 0
    bottom = [row["eigenvalue"] for row in p["bottom"]]
    assert len(bottom) == 2
    assert bottom == sorted(bottom)  # most negative first
    assert bottom[0] < values[-1]
    assert p["lanczos"]["converged"] is True
    assert all(row["converged"] and row["error_bound"] <= 1e-4 * abs(row["eigenvalue"]) for row in p["top"])
    assert p["problem"]["n_params"] == MLP_PARAMS
    assert p["problem"]["n_samples"] == 200
    assert p["problem"]["mode"] == "eval"
    assert p["problem"]["hvp_method"] == "double-backward"
    assert p["outputs"] == {"results": str(full.h5), "figure": str(full.h5.with_suffix(".png"))}
    assert 0 < p["loss"] < 0.1 and p["accuracy"] > 95  # a trained model on its own training data


def test_hdf5_holds_what_json_printed(full):
    p = full.payload
    with h5py.File(full.h5, "r") as f:
        np.testing.assert_array_equal(f["top/eigenvalues"][()], top(p))
        np.testing.assert_array_equal(f["bottom/eigenvalues"][()], [row["eigenvalue"] for row in p["bottom"]])
        assert f["top/converged"][()].all()
        assert f["top"].attrs["hvps"] == p["lanczos"]["hvps"]
        assert f.attrs["loss"] == pytest.approx(p["loss"])
        assert f["trace"].attrs["estimate"] == pytest.approx(p["trace"]["estimate"])
        assert f["density/nodes"].shape == (2, 12)
    assert full.h5.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
    assert listing(full.dir) == {"full.h5", "full.png"}


def test_trace_estimate(full):
    trace = full.payload["trace"]
    assert trace["hvps"] == 12
    assert np.isfinite(trace["estimate"]) and trace["stderr"] > 0
    with h5py.File(full.h5, "r") as f:
        assert f["trace"].attrs["method"] == "hutch++"
        assert f["trace/residual_samples"].shape[0] > 0


def test_density_is_a_density_inside_the_spectrum(full):
    p = full.payload
    assert p["density"]["runs"] == 2 and p["density"]["steps"] == 12 and p["density"]["hvps"] == 24
    lo, hi = p["bottom"][0]["eigenvalue"], p["top"][0]["eigenvalue"]
    with h5py.File(full.h5, "r") as f:
        nodes, weights = f["density/nodes"][()], f["density/weights"][()]
        grid, density = f["density/grid"][()], f["density/density"][()]
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    # Ritz values of a symmetric matrix lie between its extreme eigenvalues.
    slack = 1e-3 * (hi - lo)
    assert nodes.min() >= lo - slack and nodes.max() <= hi + slack
    assert (density >= 0).all()
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=0.02)


def test_saved_eigenvectors_are_unit_ritz_vectors_by_parameter_name(full, mlp_ckpt):
    state = load_checkpoint(mlp_ckpt).state_dict
    ckpt = load_checkpoint(mlp_ckpt)
    problem = problem_from_checkpoint(ckpt, samples=200, seed=3, device="cpu", hvp="double-backward")
    vectors = []
    with h5py.File(full.h5, "r") as f:
        assert sorted(f["eigenvectors/top"]) == ["0", "1", "2"]
        assert sorted(f["eigenvectors/bottom"]) == ["0", "1"]
        for i, expected in enumerate(top(full.payload)):
            group = f[f"eigenvectors/top/{i}"]
            assert set(group) == set(state)
            for name, tensor in state.items():
                assert group[name].shape == tuple(tensor.shape)
            assert group.attrs["eigenvalue"] == expected
            flat = np.concatenate([group[name][()].ravel() for name in problem.layout.names])
            assert np.linalg.norm(flat) == pytest.approx(1.0, abs=1e-5)
            v = torch.from_numpy(flat).float()
            rayleigh = float(v @ problem.hvp(v))
            assert rayleigh == pytest.approx(expected, rel=1e-3)
            vectors.append(flat)
    gram = np.array(vectors) @ np.array(vectors).T
    np.testing.assert_allclose(gram, np.eye(3), atol=1e-3)


def test_provenance_attributes(full, mlp_ckpt):
    ckpt = load_checkpoint(mlp_ckpt)
    with h5py.File(full.h5, "r") as f:
        a = dict(f.attrs)
    assert a["kind"] == "spectrum"
    assert a["tool_version"] == __version__
    assert a["command"] == shlex.join(["landscape", *full.args])
    assert a["checkpoint"] == str(mlp_ckpt)
    assert a["checkpoint_sha256"] == hashlib.sha256(mlp_ckpt.read_bytes()).hexdigest()
    assert json.loads(a["data_spec"]) == ckpt.data
    assert json.loads(a["data_spec"])["name"] == "digits"
    assert json.loads(a["model_spec"]) == {"name": "mlp", "kwargs": {"widths": [64, 32, 10], "activation": "tanh"}}
    assert a["loss_function"] == "cross_entropy"
    assert a["loss"] == pytest.approx(full.payload["loss"])
    assert a["seed"] == 3
    assert a["device"] == str(resolve_device("auto"))  # the default --device auto, recorded as resolved
    assert a["dtype"] == "float32"
    assert a["mode"] == "eval"
    assert a["n_params"] == MLP_PARAMS and a["n_samples"] == 200
    assert a["hvp_method"] == "double-backward"
    assert a["torch_version"] == torch.__version__
    assert json.loads(a["options"])["top_k"] == 3


# -- outputs --------------------------------------------------------------------------------


def test_default_outputs_go_beside_the_checkpoint(cli, mlp_ckpt, tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "elsewhere").mkdir()
    ckpt = tmp_path / "models" / "mlp_digits.pt"
    ckpt.write_bytes(mlp_ckpt.read_bytes())
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = cli("spectrum", "../models/mlp_digits.pt", *FAST, "--hvp", "auto")  # auto: time both, keep the faster
    assert result.code == 0, result.err
    assert listing(tmp_path / "models") == {"mlp_digits.pt", "mlp_digits.spectrum.h5", "mlp_digits.spectrum.png"}
    assert listing(tmp_path / "elsewhere") == set()
    assert (tmp_path / "models" / "mlp_digits.spectrum.png").read_bytes()[:8] == PNG_MAGIC
    assert "2,410 parameters, 200 samples" in result.out
    assert "results: ../models/mlp_digits.spectrum.h5" in result.out
    assert "figure: ../models/mlp_digits.spectrum.png" in result.out
    with h5py.File(tmp_path / "models" / "mlp_digits.spectrum.h5", "r") as f:
        assert f.attrs["hvp_method"] in ("jvp", "double-backward")
        assert f["top/eigenvalues"].shape == (2,)


def test_out_creates_folders_and_adds_the_suffix(cli, mlp_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("spectrum", mlp_ckpt, *FAST, "--out", "a/b/result")
    assert result.code == 0, result.err
    assert listing(tmp_path) == {"a", "a/b", "a/b/result.h5", "a/b/result.png"}
    assert "results: a/b/result.h5" in result.out


def test_no_plot_writes_only_the_hdf5_file(cli, mlp_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = run_json(cli, mlp_ckpt, *FAST, "--no-plot", "--out", "r.h5")
    assert payload["outputs"] == {"results": "r.h5"}
    assert listing(tmp_path) == {"r.h5"}


# -- the numbers -------------------------------------------------------------------------------


def test_train_mode_is_recorded(cli, mlp_ckpt, tmp_path, native):
    payload = run_json(cli, mlp_ckpt, *FAST, "--train-mode", "--no-plot", "--out", tmp_path / "t.h5")
    assert payload["problem"]["mode"] == "train"
    with h5py.File(tmp_path / "t.h5", "r") as f:
        assert f.attrs["mode"] == "train"
    # No BatchNorm or dropout in the MLP: train mode is the same function, hence the same Hessian.
    assert top(payload) == pytest.approx(top(native), rel=1e-5)


def test_hvp_methods_agree(cli, mlp_ckpt, tmp_path, native):
    payload = run_json(cli, mlp_ckpt, *FAST, "--hvp", "jvp", "--no-plot", "--out", tmp_path / "j.h5")
    assert payload["problem"]["hvp_method"] == "jvp"
    assert native["problem"]["hvp_method"] == "double-backward"
    assert top(payload) == pytest.approx(top(native), rel=1e-4)


def test_same_seed_same_numbers_other_seed_other_subset(cli, mlp_ckpt, tmp_path, native):
    again = run_json(cli, mlp_ckpt, *FAST, "--no-plot", "--out", tmp_path / "a.h5")
    for key in ("top", "loss", "grad_norm"):
        assert again[key] == native[key]
    other = run_json(cli, mlp_ckpt, *FAST, "--seed", "1", "--no-plot", "--out", tmp_path / "b.h5")
    assert other["top"][0]["eigenvalue"] != native["top"][0]["eigenvalue"]


@pytest.mark.parametrize("wrapper", ["bare", "state_dict", "model", "model_state_dict"])
def test_foreign_checkpoint_gives_the_native_numbers(cli, mlp_ckpt, tmp_path, native, wrapper):
    state = load_checkpoint(mlp_ckpt).state_dict
    if wrapper == "bare":
        obj = state
    else:  # the way other training scripts save: weights under a key, beside other things
        obj = {wrapper: state, "epoch": 20, "note": "saved by someone else's script"}
    torch.save(obj, tmp_path / "foreign.pt")
    payload = run_json(cli, tmp_path / "foreign.pt", *FOREIGN_FLAGS, *FAST, "--no-plot", "--out", tmp_path / "f.h5")
    assert top(payload) == pytest.approx(top(native), rel=1e-6)
    assert payload["loss"] == pytest.approx(native["loss"], rel=1e-6)
    with h5py.File(tmp_path / "f.h5", "r") as f:
        assert json.loads(f.attrs["model_spec"])["kwargs"] == {"widths": [64, 32, 10], "activation": "tanh"}
        assert f.attrs["checkpoint_sha256"] == hashlib.sha256((tmp_path / "foreign.pt").read_bytes()).hexdigest()


# -- user models and data -----------------------------------------------------------------------

USER_MODEL = """
import torch

def factory(hidden=4):
    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 10))
"""


def test_user_model_from_a_file_entry_point_matches_the_dense_hessian(cli, tmp_path):
    (tmp_path / "my_model.py").write_text(USER_MODEL)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 6), torch.nn.Tanh(), torch.nn.Linear(6, 10))
    torch.save(model.state_dict(), tmp_path / "mine.pt")
    payload = run_json(
        cli, tmp_path / "mine.pt", "--model", f"{tmp_path}/my_model.py:factory", "--model-arg", "hidden=6",
        "--data", "digits", "--loss", "cross_entropy", "--samples", "100", "--dtype", "float64",
        "--top-k", "2", "--bottom-k", "1", "--tol", "1e-9", "--max-iter", "200", "--hvp", "jvp",
        "--no-plot", "--out", tmp_path / "mine.h5", "--quiet",
    )  # fmt: skip
    n_params = 64 * 6 + 6 + 6 * 10 + 10
    assert payload["problem"]["n_params"] == n_params
    # Ground truth: the dense float64 Hessian of the mean loss on the same seeded subset.
    data = load_data(data_spec("digits"))
    data = data.subset(subset_indices(len(data), 100, seed=0))
    model = model.double()
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]

    def mean_loss(flat):
        params = {n: t.view(s) for n, t, s in zip(names, flat.split(sizes), shapes, strict=True)}
        out = torch.func.functional_call(model, params, (data.x.double(),))
        return F.cross_entropy(out, data.y)

    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    eigenvalues = np.linalg.eigvalsh(torch.func.hessian(mean_loss)(w).numpy())
    assert top(payload) == pytest.approx(eigenvalues[::-1][:2], rel=1e-6)
    assert payload["bottom"][0]["eigenvalue"] == pytest.approx(eigenvalues[0], rel=1e-6, abs=1e-9)


def _mlp_loss(ckpt_path: Path, x: np.ndarray, y: np.ndarray) -> float:
    model = instantiate(load_checkpoint(ckpt_path))
    with torch.no_grad():
        return float(F.cross_entropy(model(torch.from_numpy(x).float()), torch.from_numpy(y).long()))


def test_user_data_from_an_npz_file(cli, mlp_ckpt, tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 64)).astype(np.float32), rng.integers(0, 10, size=60)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    payload = run_json(cli, mlp_ckpt, *FAST, "--data", tmp_path / "mine.npz", "--no-plot", "--out", tmp_path / "n.h5")
    assert payload["problem"]["n_samples"] == 60  # --samples 200 is more than there are: all of them
    assert payload["loss"] == pytest.approx(_mlp_loss(mlp_ckpt, x, y), rel=1e-5)
    with h5py.File(tmp_path / "n.h5", "r") as f:
        assert json.loads(f.attrs["data_spec"])["path"] == str(tmp_path / "mine.npz")


USER_DATA = """
import numpy as np

def make(n=50, split="train"):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(n, 64)).astype(np.float32), rng.integers(0, 10, size=n)
    return (x, y) if split == "train" else (x[: n // 2], y[: n // 2])
"""


def test_user_data_from_an_entry_point_module(cli, mlp_ckpt, tmp_path, monkeypatch):
    (tmp_path / "landscape_test_userdata.py").write_text(USER_DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "landscape_test_userdata", raising=False)
    entry = "landscape_test_userdata:make"
    payload = run_json(
        cli, mlp_ckpt, *FAST, "--data", entry, "--data-arg", "n=80", "--split", "test",
        "--no-plot", "--out", tmp_path / "e.h5",
    )  # fmt: skip
    assert payload["problem"]["n_samples"] == 40  # the function saw split='test' and n=80
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(80, 64)).astype(np.float32), rng.integers(0, 10, size=80)
    assert payload["loss"] == pytest.approx(_mlp_loss(mlp_ckpt, x[:40], y[:40]), rel=1e-5)
    with h5py.File(tmp_path / "e.h5", "r") as f:
        spec = json.loads(f.attrs["data_spec"])
    assert spec["entrypoint"] == entry and spec["kwargs"] == {"n": 80} and spec["split"] == "test"


# -- help ----------------------------------------------------------------------------------------


def _mentions(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


@pytest.mark.parametrize("command", ["spectrum", "info", "train"])
def test_command_help_mentions_every_option(cli, command):
    from landscape_cli.cli import app

    result = cli(command, "--help")
    assert result.code == 0 and result.err == ""
    params = typer.main.get_command(app).commands[command].params
    assert len(params) > 1
    for param in params:
        names = [*param.opts, *param.secondary_opts]
        if param.param_type_name == "argument":
            assert param.name.lower() in result.out.lower()
            continue
        for name in names:
            assert _mentions(result.out, name), f"{command} --help does not mention {name}"


def test_root_help_and_version(cli):
    result = cli("--help")
    assert result.code == 0
    for word in ("spectrum", "info", "train", "--version"):
        assert word in result.out
    version = cli("--version")
    assert version.code == 0 and version.out.strip() == f"landscape {__version__}"
    bare = cli()  # no command: the help, once, and the usage-error code
    assert bare.code == 2
    assert (bare.out + bare.err).count("Usage: landscape") == 1
    assert "Traceback" not in bare.out + bare.err
