"""The training loop: exact resume, determinism, the log, sharpness tracking, and bad input."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from landscape_cli.checkpoint import load_checkpoint
from landscape_cli.train import TrainConfig, train_model
from landscape_cli.zoo.data import data_spec
from landscape_cli.zoo.models import model_spec

from .conftest import assert_user_error

BASE = ["--model", "mlp", "--model-arg", "widths=[64,8,10]", "--data", "digits", "--device", "cpu", "--quiet"]


def config(out, **kw) -> TrainConfig:
    defaults = dict(
        model=model_spec("mlp", {"widths": [64, 8, 10], "activation": "tanh"}),
        data=data_spec("digits", kwargs={"limit": 300}),
        out_dir=out,
        lr=0.05,
        batch_size=64,
        steps=12,
        epochs=None,
        seed=1,
    )
    defaults.update(kw)
    return TrainConfig(**defaults)


def weights(path):
    return load_checkpoint(path).state_dict


@pytest.mark.parametrize("opt", ["sgd", "ssam", "eigensam", "msam"])
def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path, opt, monkeypatch) -> None:
    kw = dict(opt=opt, momentum=0.9, save_every=4, eigen_every=3, micro_batches=2, track_sharpness_every=5,
              track_samples=100)  # fmt: skip
    straight = train_model(config(tmp_path / "straight", **kw))

    import landscape_cli.train.loop as loop

    real = loop.Run.train_step
    calls = {"n": 0}

    def dies_after_seven(self):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt  # as if killed between step 7 and 8 (last checkpoint: step 4)
        return real(self)

    monkeypatch.setattr(loop.Run, "train_step", dies_after_seven)
    with pytest.raises(KeyboardInterrupt):
        train_model(config(tmp_path / "resumed", **kw))
    monkeypatch.setattr(loop.Run, "train_step", real)
    assert sorted(p.name for p in (tmp_path / "resumed").glob("*.pt")) == ["step_0000000.pt", "step_0000004.pt"]
    resumed = train_model(config(tmp_path / "resumed", **kw), resume=True)
    for name, tensor in weights(straight).items():
        assert torch.equal(tensor, weights(resumed)[name]), name
    # The log of the resumed run equals the straight one: rows after step 4 were rewritten, not doubled.
    with h5py.File(tmp_path / "straight" / "train.h5") as a, h5py.File(tmp_path / "resumed" / "train.h5") as b:
        for table in ("train", "eval", "sharpness"):
            for column in a[table]:
                np.testing.assert_array_equal(a[table][column][()], b[table][column][()], err_msg=f"{table}/{column}")


def test_save_every_epochs(tmp_path) -> None:
    final = train_model(config(tmp_path / "run", steps=None, epochs=4, save_every_epochs=2, batch_size=100))
    # 3 steps per epoch
    assert sorted(p.name for p in final.parent.glob("*.pt")) == ["final.pt", "step_0000000.pt", "step_0000006.pt"]
    assert load_checkpoint(final.parent / "step_0000006.pt").epoch == 2


def test_same_seed_same_run_other_seed_other_run(tmp_path) -> None:
    a = weights(train_model(config(tmp_path / "a", opt="sam")))
    b = weights(train_model(config(tmp_path / "b", opt="sam")))
    c = weights(train_model(config(tmp_path / "c", opt="sam", seed=2)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_log_and_sharpness_tracking(tmp_path) -> None:
    final = train_model(
        config(
            tmp_path / "run",
            opt="sam",
            rho=0.05,
            steps=10,
            log_every=2,
            eval_every=5,
            track_sharpness_every=5,
            track_samples=120,
            schedule="cosine",
        )  # fmt: skip
    )
    with h5py.File(final.parent / "train.h5") as f:
        assert f["train/step"][()].tolist() == [2, 4, 6, 8, 10]
        lrs = f["train/lr"][()]
        assert lrs[0] == pytest.approx(0.05 * 0.5 * (1 + np.cos(np.pi * 1 / 10)))  # lr used at step 2
        assert np.all(np.diff(lrs) < 0)
        assert f["eval/step"][()].tolist() == [0, 5, 10]
        assert f["sharpness/step"][()].tolist() == [0, 5, 10]
        top = f["sharpness/top_eigenvalue"][()]
        grad_norm = f["sharpness/grad_norm"][()]
        alignment = f["sharpness/alignment"][()]
    assert np.all(top > 0) and np.all(grad_norm > 0)
    assert np.isnan(alignment[0]) and np.all((alignment[1:] >= 0) & (alignment[1:] <= 1))
    # The tracked value is the top eigenvalue of the subset's Hessian at the final weights.
    from landscape_cli import SpectrumOptions, compute_spectrum, problem_from_checkpoint

    ckpt = load_checkpoint(final)
    problem = problem_from_checkpoint(ckpt, device="cpu", samples=120, seed=1)
    exact = compute_spectrum(problem, SpectrumOptions(top_k=1, tol=1e-8)).lanczos.top.values[0]
    assert top[-1] == pytest.approx(exact, rel=2e-3)
    assert ckpt.metrics["train_loss"] > 0 and "test_accuracy" in ckpt.metrics


def test_batchnorm_model_trains_with_sam_and_resumable_state(tmp_path) -> None:
    final = train_model(
        config(tmp_path / "bn", model=model_spec("resnet", {"width": 4}), opt="sam", steps=3, batch_size=32)
    )
    ckpt = load_checkpoint(final)
    assert ckpt.optimizer["name"] == "sam" and ckpt.optimizer["hparams"]["rho"] == 0.05
    assert ckpt.train_state["optimizer"]["steps"] == 3


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--opt", "lion"], ["unknown optimizer 'lion'"]),
        (["--opt", "sam", "--rho", "0"], ["--rho must be positive"]),
        (["--opt", "sam", "--rho", "-0.1"], ["--rho must be positive"]),
        (["--lr", "0"], ["--lr must be positive"]),
        (["--opt", "msam", "--micro-batches", "3", "--batch-size", "64"], ["--micro-batches 3 does not divide"]),
        (["--opt", "msam", "--micro-batches", "7", "--batch-size", "full"], ["--micro-batches 7 does not divide"]),
        (["--base", "rmsprop"], ["unknown base optimizer"]),
        (["--lr-schedule", "linear"], ["unknown --lr-schedule"]),
        (["--opt", "ssam", "--ascent", "up"], ["--ascent"]),
    ],
)
def test_bad_training_options_exit_2(cli, tmp_path, args, fragments) -> None:
    assert_user_error(cli("train", "--out", tmp_path / "run", *BASE, "--epochs", "1", *args), *fragments)
    assert not (tmp_path / "run").exists()


def test_existing_run_needs_resume_or_overwrite(cli, tmp_path) -> None:
    run = tmp_path / "run"
    assert cli("train", "--out", run, *BASE, "--steps", "2").code == 0
    assert_user_error(cli("train", "--out", run, *BASE, "--steps", "2"), "--resume or --overwrite")
    assert_user_error(cli("train", "--out", run, *BASE, "--steps", "2", "--resume"), "already finished")
    assert_user_error(cli("train", "--out", run, *BASE, "--steps", "2", "--lr", "0.3", "--resume"), "different", "lr")
    assert cli("train", "--out", run, *BASE, "--steps", "2", "--overwrite").code == 0


def test_csv_and_tensorboard_sinks_hold_the_logs_rows_and_follow_a_resume(cli, tmp_path) -> None:
    """--csv writes train.h5's tables as CSV and --tensorboard the same rows as scalars; a run resumed from an
    earlier checkpoint cuts the CSV back as it cuts train.h5, and TensorBoard shows one value per step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, board = tmp_path / "run", tmp_path / "tb"
    args = ["train", "--out", str(out), "--model-arg", "widths=[64,16,10]", "--data-arg", "limit=200",
            "--steps", "40", "--batch-size", "50", "--eval-every", "10", "--track-sharpness-every", "10",
            "--save-every", "20", "--device", "cpu", "--csv", "--tensorboard", str(board), "--quiet"]  # fmt: skip
    assert cli(*args).code == 0

    def tables() -> dict[str, dict[str, np.ndarray]]:
        with h5py.File(out / "train.h5") as f:
            return {t: {c: f[t][c][()] for c in f[t]} for t in ("train", "eval", "sharpness")}

    uninterrupted = tables()
    (out / "final.pt").unlink()  # as if killed after step 40's log rows but before the final checkpoint
    result = cli(*args, "--resume")
    assert result.code == 0, result.err
    resumed = tables()
    for table, columns in resumed.items():
        with (out / f"{table}.csv").open() as f:
            header, *rows = [line.rstrip("\n").split(",") for line in f]
        values = np.array([[float(c) if c else np.nan for c in row] for row in rows])
        assert len(rows) == len(columns["step"]) == len(uninterrupted[table]["step"])
        for i, column in enumerate(header):
            np.testing.assert_array_equal(values[:, i], columns[column])  # repr round-trips a float64
            np.testing.assert_allclose(columns[column], uninterrupted[table][column], rtol=1e-6, equal_nan=True)
    events = EventAccumulator(str(board))
    events.Reload()
    for tag, (table, column) in {"train/loss": ("train", "loss"), "eval/test_loss": ("eval", "test_loss"),
                                 "sharpness/top_eigenvalue": ("sharpness", "top_eigenvalue")}.items():  # fmt: skip
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == [int(s) for s in resumed[table]["step"]]
        np.testing.assert_allclose([e.value for e in scalars], resumed[table][column], rtol=1e-6)
    (tmp_path / "file").write_text("x")
    assert_user_error(cli(*args[:2], str(tmp_path / "r2"), *args[3:-3], "--tensorboard", str(tmp_path / "file")),
                      "is a file", "TensorBoard")  # fmt: skip
    assert not (tmp_path / "r2").exists()
