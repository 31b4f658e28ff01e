"""`landscape info` on checkpoints and results files, and `landscape train`."""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings

import h5py
import pytest
import torch

from landscape_cli.checkpoint import load_checkpoint

from .conftest import FAST, MLP_PARAMS, assert_user_error, listing

TINY = ["--model", "mlp", "--model-arg", "widths=[64,8,10]", "--data", "digits", "--epochs", "1"]
TINY += ["--batch-size", "256", "--device", "cpu", "--quiet"]
STEPS_PER_EPOCH = math.ceil(1438 / 256)


# -- info -------------------------------------------------------------------------------------------


def test_info_checkpoint_json(cli, mlp_ckpt):
    result = cli("info", mlp_ckpt, "--json")
    assert result.code == 0 and result.err == ""
    s = json.loads(result.out)
    assert s["kind"] == "checkpoint" and s["format_version"] == 1
    assert s["sha256"] == hashlib.sha256(mlp_ckpt.read_bytes()).hexdigest()
    assert s["parameters"] == MLP_PARAMS and s["tensors"] == 4
    assert s["model"] == {"name": "mlp", "kwargs": {"widths": [64, 32, 10], "activation": "tanh"}}
    assert s["data"]["name"] == "digits" and s["data"]["split"] == "train"
    assert s["loss"] == "cross_entropy"
    assert s["optimizer"] == {
        "name": "sgd",
        "hparams": {
            "base": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "nesterov": False,
            "weight_decay": 0.0005,
            "schedule": "constant",
            "clip_grad_norm": None,
            "batch_size": 64,
        },
        "has_state": True,
    }
    assert s["epoch"] == 20 and s["step"] == 20 * math.ceil(1438 / 64) and s["seed"] == 0
    assert set(s["metrics"]) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert s["metrics"]["train_accuracy"] == 100.0


def test_info_checkpoint_table(cli, mlp_ckpt):
    result = cli("info", mlp_ckpt)
    assert result.code == 0 and result.err == ""
    rows = result.out.splitlines()
    assert any("parameters" in row and f"{MLP_PARAMS}" in row for row in rows)
    assert any("loss" in row and "cross_entropy" in row for row in rows)
    for fragment in ('"sgd"', '"digits"', "train_accuracy", '"mlp"', "sha256"):
        assert fragment in result.out, fragment


def test_info_foreign_state_dict(cli, mlp_ckpt, tmp_path):
    torch.save(load_checkpoint(mlp_ckpt).state_dict, tmp_path / "bare.pt")
    s = json.loads(cli("info", tmp_path / "bare.pt", "--json").out)
    assert s["kind"] == "foreign state_dict" and s["parameters"] == MLP_PARAMS
    assert s["model"] is None and s["optimizer"] is None and s["format_version"] is None


@pytest.fixture(scope="module")
def spectrum_file(tmp_path_factory, cli, mlp_ckpt):
    path = tmp_path_factory.mktemp("info") / "s.h5"
    result = cli(
        "spectrum", mlp_ckpt, *FAST, "--top-k", "3", "--trace", "--trace-hvps", "6", "--no-plot", "--out", path
    )
    assert result.code == 0, result.err
    return path


def test_info_results_file_json(cli, spectrum_file):
    result = cli("info", spectrum_file, "--json")
    assert result.code == 0 and result.err == ""
    s = json.loads(result.out)
    assert s["attrs"]["kind"] == "spectrum" and s["attrs"]["n_params"] == MLP_PARAMS
    shapes = {d["name"]: d["shape"] for d in s["datasets"]}
    assert shapes["top/eigenvalues"] == [3] and shapes["top/converged"] == [3]
    assert shapes["trace/"] is None  # a group, listed for its attributes
    dtypes = {d["name"]: d["dtype"] for d in s["datasets"]}
    assert dtypes["top/eigenvalues"] == "float64" and dtypes["top/converged"] == "bool"
    with h5py.File(spectrum_file, "r") as f:
        assert {f"top/{name}" for name in f["top"]} <= set(shapes)


def test_info_results_file_table(cli, spectrum_file):
    result = cli("info", spectrum_file)
    assert result.code == 0 and result.err == ""
    assert "top/eigenvalues" in result.out and "checkpoint_sha256" in result.out
    assert any("top/eigenvalues" in line and "│ 3 " in line for line in result.out.splitlines())


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (None, ["file not found"]),
        ("dir", ["not a run directory"]),
        ("text", ["neither a checkpoint"]),
        ("bad_h5", ["not a readable HDF5 file"]),
    ],
)
def test_info_bad_input(cli, tmp_path, make, fragments):
    target = tmp_path / "thing"
    if make == "dir":
        target.mkdir()
    elif make == "text":
        target.write_text("hello\n")
    elif make == "bad_h5":
        target.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)  # the signature, then nothing
    before = listing(tmp_path)
    assert_user_error(cli("info", target), *fragments)
    assert_user_error(cli("info", target, "--json"), *fragments)
    assert listing(tmp_path) == before


# -- train ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cli):
    run = tmp_path_factory.mktemp("train") / "run"
    result = cli("train", "--out", run, *TINY)
    assert result.code == 0, result.err
    return run, result


def test_train_writes_a_native_checkpoint(trained):
    run, result = trained
    assert result.out.strip() == str(run / "final.pt")
    assert listing(run) == {"final.pt", "train.h5"}
    ckpt = load_checkpoint(run / "final.pt")
    assert ckpt.native and ckpt.model == {"name": "mlp", "kwargs": {"widths": [64, 8, 10]}}
    assert ckpt.data["name"] == "digits" and ckpt.data["split"] == "train" and ckpt.data["seed"] == 0
    assert ckpt.loss == "cross_entropy" and ckpt.seed == 0
    assert ckpt.step == STEPS_PER_EPOCH and ckpt.epoch == 1
    assert ckpt.optimizer["name"] == "sgd"
    assert ckpt.optimizer["hparams"] == {
        "base": "sgd",
        "schedule": "constant",
        "clip_grad_norm": None,
        "lr": 0.1,
        "momentum": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
        "batch_size": 256,
    }
    assert set(ckpt.metrics) == {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    # Six steps from a random start: better than chance (2.30 nats, 10%) but far from trained.
    assert 0.5 < ckpt.metrics["train_loss"] < math.log(10) + 0.1
    assert 0 <= ckpt.metrics["test_accuracy"] <= 100
    assert ckpt.n_params == 64 * 8 + 8 + 8 * 10 + 10


def test_train_metrics_are_the_loss_of_the_saved_weights(trained):
    from landscape_cli.checkpoint import instantiate
    from landscape_cli.zoo.data import load_data

    ckpt = load_checkpoint(trained[0] / "final.pt")
    data = load_data({**ckpt.data, "split": "test"})
    with torch.no_grad():
        out = instantiate(ckpt)(data.x)
    assert ckpt.metrics["test_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(out, data.y)), rel=1e-5)
    assert ckpt.metrics["test_accuracy"] == pytest.approx(100.0 * float((out.argmax(1) == data.y).double().mean()))


def test_train_files_have_normal_permissions(trained):
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(trained[0] / "final.pt").st_mode & 0o777 == 0o666 & ~umask


def test_train_same_seed_same_weights(cli, trained, tmp_path):
    assert cli("train", "--out", tmp_path / "again", *TINY).code == 0
    assert cli("train", "--out", tmp_path / "other", *TINY, "--seed", "1").code == 0
    first = load_checkpoint(trained[0] / "final.pt").state_dict
    again = load_checkpoint(tmp_path / "again" / "final.pt").state_dict
    other = load_checkpoint(tmp_path / "other" / "final.pt").state_dict
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["layers.0.weight"], other["layers.0.weight"])


def test_train_then_spectrum(cli, trained, tmp_path):
    result = cli("spectrum", trained[0] / "final.pt", *FAST, "--json", "--no-plot", "--out", tmp_path / "s.h5")
    assert result.code == 0, result.err
    assert json.loads(result.out)["problem"]["n_params"] == 610


def test_train_save_every_and_full_batch(cli, tmp_path):
    run = tmp_path / "run"
    args = ["--out", run, *TINY, "--batch-size", "full", "--epochs", "5", "--save-every", "2"]
    assert cli("train", *args).code == 0
    assert listing(run) == {"step_0000000.pt", "step_0000002.pt", "step_0000004.pt", "final.pt", "train.h5"}
    assert load_checkpoint(run / "step_0000002.pt").step == 2
    final = load_checkpoint(run / "final.pt")
    assert final.step == 5 and final.optimizer["hparams"]["batch_size"] == "full"


def test_train_refuses_a_non_empty_run_directory(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert_user_error(cli("train", "--out", run, *TINY), "run directory", "not empty", "--overwrite")
    assert listing(run) == {"notes.txt"}
    # --overwrite replaces only a run directory of ours: notes.txt is not something landscape wrote
    assert_user_error(cli("train", "--out", run, *TINY, "--overwrite"), "notes.txt", "landscape did not write")
    assert listing(run) == {"notes.txt"}
    (run / "notes.txt").unlink()
    assert cli("train", "--out", run, *TINY).code == 0
    (run / "final.surface1d.h5").write_bytes(b"a surface made from the run")
    result = cli("train", "--out", run, *TINY, "--overwrite")
    assert result.code == 0, result.err
    assert listing(run) == {"final.pt", "train.h5"}
    assert listing(tmp_path) == {"run", "run/final.pt", "run/train.h5"}  # no backup left beside it


def test_train_into_an_empty_directory(cli, tmp_path):
    (tmp_path / "run").mkdir()
    assert cli("train", "--out", tmp_path / "run", *TINY).code == 0
    assert listing(tmp_path / "run") == {"final.pt", "train.h5"}


def test_failed_train_with_overwrite_keeps_the_previous_run(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "final.pt").write_bytes(b"last week's model")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cli("train", "--out", run, *TINY, "--lr", "1e6", "--overwrite")  # diverges
    assert_user_error(result, "the training loss became nan", "lower --lr")
    assert not [w for w in caught if "requires_grad" in str(w.message)]  # the message, not a torch warning
    assert listing(tmp_path) == {"run", "run/final.pt"}
    assert (run / "final.pt").read_bytes() == b"last week's model"


def test_failed_train_leaves_nothing(cli, tmp_path):
    result = cli("train", "--out", tmp_path / "run", *TINY, "--lr", "1e6")
    assert_user_error(result, "the training loss became")
    assert listing(tmp_path) == set()


def test_interrupted_train_keeps_the_checkpoints_it_wrote(cli, tmp_path, monkeypatch):
    """Ctrl-C after three periodic checkpoints (steps 0, 2, 4): all stay, complete and loadable."""
    import landscape_cli.train.loop as loop

    saved: list[str] = []
    real_save = loop.save_checkpoint

    def save_then_interrupt(ckpt, path, **kw):
        out = real_save(ckpt, path, **kw)
        saved.append(path.name)
        if len(saved) == 3:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(loop, "save_checkpoint", save_then_interrupt)
    result = cli("train", "--out", tmp_path / "run", *TINY, "--save-every", "2")
    assert result.code == 130
    assert listing(tmp_path / "run") == {"step_0000000.pt", "step_0000002.pt", "step_0000004.pt", "train.h5"}
    assert load_checkpoint(tmp_path / "run" / "step_0000004.pt").step == 4


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--lr", "0"], ["--lr must be positive and finite, got 0.0"]),
        (["--lr", "-0.1"], ["--lr must be positive"]),
        (["--batch-size", "abc"], ["--batch-size must be a positive integer or 'full', got 'abc'"]),
        (["--batch-size", "0"], ["--batch-size must be at least 1"]),
        (["--epochs", "0"], ["--epochs and --steps must be at least 1"]),
        (["--epochs", "-2"], ["--epochs and --steps must be at least 1"]),
        (["--steps", "3"], ["give exactly one of --epochs and --steps"]),
        (["--momentum", "1"], ["--momentum must lie in [0, 1)"]),
        (["--weight-decay", "-1"], ["--weight-decay must be non-negative"]),
        (["--nesterov"], ["--nesterov needs --momentum > 0"]),
        (["--save-every", "0"], ["--save-every must be at least 1"]),
        (["--loss", "hinge"], ["unknown loss 'hinge'"]),
        (["--model", "transformer"], ["unknown model 'transformer'"]),
        (["--data", "imagenet"], ["unknown dataset 'imagenet'"]),
        (["--device", "tpu"], ["unknown device 'tpu'"]),
        (["--dtype", "float16"], ["unknown dtype 'float16'"]),
        (["--model-arg", "activation=swish"], ["unknown activation 'swish'"]),
        (["--data", "spirals"], ["does not accept inputs of shape (2,)"]),
        (["--model-arg", "widths=[64,8,5]"], ["5 outputs but the data has labels up to 9"]),
    ],
)
def test_train_bad_input(cli, tmp_path, args, fragments):
    assert_user_error(cli("train", "--out", tmp_path / "run", *TINY, *args), *fragments)
    assert listing(tmp_path) == set()


def test_train_out_is_a_file(cli, tmp_path):
    (tmp_path / "taken").write_text("x")
    assert_user_error(cli("train", "--out", tmp_path / "taken", *TINY), "is a file, not a run directory")
    assert_user_error(cli("train", "--out", tmp_path / "taken" / "run", *TINY), "taken is not a directory")
    assert listing(tmp_path) == {"taken"} and (tmp_path / "taken").read_text() == "x"


def test_train_requires_out(cli):
    assert_user_error(cli("train", *TINY), "Missing option '--out'")
