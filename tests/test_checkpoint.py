"""The checkpoint format: round trip, atomic saving, safe loading, foreign files, fitting a model."""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from landscape_cli import __version__
from landscape_cli.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    Checkpoint,
    check_fit,
    instantiate,
    load_checkpoint,
    require,
    save_checkpoint,
)
from landscape_cli.errors import LandscapeError
from landscape_cli.zoo.models import MLP

from .conftest import MLP_PARAMS, SAMPLE_DIR, listing


def _example() -> Checkpoint:
    torch.manual_seed(0)
    model = MLP([4, 5, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    return Checkpoint(
        state_dict=model.state_dict(),
        model={"name": "mlp", "kwargs": {"widths": [4, 5, 3]}},
        data={"name": "spirals", "split": "train", "seed": 7, "kwargs": {"n": 100}, "preprocessing": "none"},
        loss="mse",
        optimizer={"name": "sgd", "hparams": {"lr": 0.1, "momentum": 0.9}, "state": optimizer.state_dict()},
        step=12,
        epoch=3,
        seed=7,
        metrics={"train_loss": 0.25, "train_accuracy": 87.5},
        created="2024-01-02T03:04:05+00:00",
    )


def test_round_trip_keeps_every_field(tmp_path):
    original = _example()
    path = save_checkpoint(original, tmp_path / "c.pt")
    loaded = load_checkpoint(path)
    assert loaded.native is True
    assert loaded.format_version == FORMAT_VERSION
    assert loaded.tool_version == __version__
    assert loaded.path == path
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    for name in ("model", "data", "loss", "step", "epoch", "seed", "metrics", "created"):
        assert getattr(loaded, name) == getattr(original, name), name
    assert loaded.state_dict.keys() == original.state_dict.keys()
    for key, tensor in original.state_dict.items():
        assert torch.equal(loaded.state_dict[key], tensor)
    assert loaded.optimizer["name"] == "sgd" and loaded.optimizer["hparams"] == {"lr": 0.1, "momentum": 0.9}
    momentum = loaded.optimizer["state"]["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, original.optimizer["state"]["state"][0]["momentum_buffer"])
    assert loaded.n_params == 4 * 5 + 5 + 5 * 3 + 3
    # The file is plain data: the safe loader reads it without any help.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == FORMAT_VERSION


def test_created_is_stamped_when_missing(tmp_path):
    ckpt = _example()
    ckpt.created = None
    loaded = load_checkpoint(save_checkpoint(ckpt, tmp_path / "c.pt"))
    assert loaded.created is not None and loaded.created.startswith("20")


def test_atomic_save_leaves_no_temporary_file(tmp_path):
    save_checkpoint(_example(), tmp_path / "c.pt")
    save_checkpoint(_example(), tmp_path / "c.pt")  # overwrite=True by default
    assert listing(tmp_path) == {"c.pt"}
    mode = os.stat(tmp_path / "c.pt").st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint(_example(), tmp_path / "c.pt")
    before = path.read_bytes()

    def half_written(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", half_written)
    changed = _example()
    changed.step = 99
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(changed, path)
    assert path.read_bytes() == before
    assert listing(tmp_path) == {"c.pt"}
    assert load_checkpoint(path).step == 12


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint(_example(), tmp_path / "c.pt")
    before = path.read_bytes()

    def interrupted(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_example(), path)
    assert path.read_bytes() == before and listing(tmp_path) == {"c.pt"}


def test_save_without_overwrite_refuses_an_existing_file(tmp_path):
    path = save_checkpoint(_example(), tmp_path / "c.pt")
    before = path.read_bytes()
    with pytest.raises(LandscapeError, match="exists"):
        save_checkpoint(_example(), path, overwrite=False)
    assert path.read_bytes() == before and listing(tmp_path) == {"c.pt"}


def test_newer_format_is_refused(tmp_path):
    raw = _example().to_dict()
    raw["format_version"] = FORMAT_VERSION + 1
    torch.save(raw, tmp_path / "future.pt")
    with pytest.raises(LandscapeError, match=f"format {FORMAT_VERSION + 1}.*up to {FORMAT_VERSION}.*upgrade"):
        load_checkpoint(tmp_path / "future.pt")


def test_native_checkpoint_without_weights_is_refused(tmp_path):
    raw = _example().to_dict()
    raw["state_dict"] = {}
    torch.save(raw, tmp_path / "empty.pt")
    with pytest.raises(LandscapeError, match="without a state_dict"):
        load_checkpoint(tmp_path / "empty.pt")


class Gadget:
    def __reduce__(self):
        return (os.system, ("touch gadget_ran",))


def test_code_in_a_pickle_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": Gadget()}, tmp_path / "evil.pt")
    with pytest.raises(LandscapeError, match=r"arbitrary code .*(posix|os|nt)\.system.*weights_only=True"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "gadget_ran").exists()


def test_plain_pickle_gets_an_honest_message(tmp_path):
    """A pickle the safe loader cannot parse is not called dangerous when it references no code."""
    with open(tmp_path / "plain.pkl", "wb") as fh:
        pickle.dump({"a": 1}, fh, protocol=4)
    with warnings.catch_warnings(), pytest.raises(LandscapeError) as info:
        warnings.simplefilter("ignore")  # torch warns about pickle protocol 4
        load_checkpoint(tmp_path / "plain.pkl")
    assert "weights_only=True" in str(info.value) and "arbitrary code" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "truncated or corrupt"),
        (b"just some text\n", "not a PyTorch checkpoint"),
        ("half", "truncated or corrupt"),
    ],
)
def test_unreadable_files(tmp_path, content, message):
    if content == "half":
        blob = (SAMPLE_DIR / "mlp_digits.pt").read_bytes()
        content = blob[: len(blob) // 2]
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(LandscapeError, match=message):
        load_checkpoint(tmp_path / "bad.pt")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(LandscapeError, match="file not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(LandscapeError, match="is a directory"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model", "model_state_dict"])
def test_foreign_files(tmp_path, wrapper):
    state = MLP([4, 5, 3]).state_dict()
    obj = state if wrapper is None else {wrapper: state, "epoch": 3, "best_acc": 0.9}
    torch.save(obj, tmp_path / "f.pt")
    ckpt = load_checkpoint(tmp_path / "f.pt")
    assert ckpt.native is False and ckpt.format_version is None
    assert ckpt.model is None and ckpt.data is None and ckpt.loss is None
    assert ckpt.state_dict.keys() == state.keys()
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in state.items())
    with pytest.raises(LandscapeError, match="does not record its model; pass --model"):
        require(ckpt, "model")
    with pytest.raises(LandscapeError, match="pass --data"):
        require(ckpt, "data")


def test_foreign_file_without_tensors(tmp_path):
    torch.save({"epoch": 3, "weights": [1.0, 2.0]}, tmp_path / "f.pt")
    with pytest.raises(LandscapeError, match="holds no state_dict.*'state_dict', 'model_state_dict', 'model'"):
        load_checkpoint(tmp_path / "f.pt")


def test_overrides_and_loss_check(tmp_path):
    path = save_checkpoint(_example(), tmp_path / "c.pt")
    spec = {"name": "mlp", "kwargs": {"widths": [4, 5, 3], "activation": "tanh"}}
    ckpt = load_checkpoint(path, model=spec, data={"name": "digits"}, loss="cross_entropy")
    assert ckpt.model == spec and ckpt.data == {"name": "digits"} and ckpt.loss == "cross_entropy"
    with pytest.raises(LandscapeError, match="unknown loss 'hinge'"):
        load_checkpoint(path, loss="hinge")


def test_check_fit_names_missing_unexpected_and_misshaped_keys():
    module = MLP([64, 16, 10])
    state = {k: v.clone() for k, v in MLP([64, 32, 10]).state_dict().items()}
    del state["layers.2.bias"]
    state["head.weight"] = torch.zeros(3)
    with pytest.raises(LandscapeError) as info:
        check_fit(module, state, Path("ckpt.pt"))
    message = str(info.value)
    assert message.startswith("state_dict in ckpt.pt does not fit the model: ")
    assert "missing: layers.2.bias" in message
    assert "unexpected: head.weight" in message
    assert "mis-shaped (file vs model): layers.0.weight (32, 64) vs (16, 64), layers.0.bias (32,) vs (16,)" in message
    assert "layers.2.weight (10, 32) vs (10, 16)" in message
    assert "\n" not in message


def test_check_fit_shortens_long_lists():
    module = MLP([2, 3, 3, 3, 3, 3])  # 10 tensors
    with pytest.raises(LandscapeError, match=r"missing: layers\.0\.weight, .* and 4 more$"):
        check_fit(module, {}, None)
    check_fit(module, module.state_dict(), None)  # a perfect fit passes


@pytest.mark.parametrize(
    ("file", "model", "optimizer", "n_params", "train_accuracy"),
    [
        ("mlp_digits", "mlp", "sgd", MLP_PARAMS, 100.0),
        ("mlp_digits_sam", "mlp", "sam", MLP_PARAMS, 100.0),
        ("mlp_digits_ssam", "mlp", "ssam", MLP_PARAMS, 100.0),
        ("cnn_digits", "cnn", "sgd", 1898, 99.0),
        ("resnet_digits", "resnet", "sgd", 19810, 100.0),
    ],
)
def test_sample_checkpoints(file, model, optimizer, n_params, train_accuracy):
    path = SAMPLE_DIR / f"{file}.pt"
    assert path.stat().st_size < 1_000_000
    ckpt = load_checkpoint(path)
    assert ckpt.native and ckpt.model["name"] == model
    assert ckpt.data["name"] == "digits" and ckpt.data["split"] == "train"
    assert ckpt.loss == "cross_entropy" and ckpt.optimizer["name"] == optimizer
    module = instantiate(ckpt)
    assert sum(p.numel() for p in module.parameters()) == n_params
    assert not module.training  # eval mode: a stray forward cannot move BatchNorm statistics
    assert ckpt.metrics["train_accuracy"] == pytest.approx(train_accuracy, abs=0.05)
    assert ckpt.metrics["test_accuracy"] > 95
