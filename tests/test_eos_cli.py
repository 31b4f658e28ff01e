"""`landscape eos` on checkpoints and runs: the edge each optimizer gets, the sharpness it is compared
with (Adam's preconditioned one against a dense Hessian), verdicts, exit codes and bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from landscape_cli.checkpoint import instantiate, load_checkpoint
from landscape_cli.eos.thresholds import gd_edge, heavy_ball_edge, msam_edge, sam_edge
from landscape_cli.session import problem_from_checkpoint
from landscape_cli.spectrum import SpectrumOptions, compute_spectrum
from landscape_cli.zoo.data import load_data

from .conftest import SAMPLE_DIR, assert_user_error
from .helpers import dense_hessian

FAST = ["--samples", "200", "--device", "cpu", "--quiet"]
TINY_RUN = ["--model", "mlp", "--model-arg", "widths=[64,8,10]", "--data", "digits", "--data-arg", "limit=120",
            "--batch-size", "full", "--device", "cpu", "--quiet"]  # fmt: skip


def eos_json(cli, *args) -> dict:
    result = cli("eos", *args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_sgd_momentum_checkpoint_against_its_heavy_ball_edge(cli, tmp_path) -> None:
    ckpt_path = SAMPLE_DIR / "mlp_digits.pt"
    got = eos_json(cli, ckpt_path, *FAST, "--out", tmp_path / "e.h5")
    problem = problem_from_checkpoint(load_checkpoint(ckpt_path), device="cpu", samples=200)
    top = compute_spectrum(problem, SpectrumOptions(top_k=1, tol=1e-6)).lanczos.top.values[0]
    assert got["setting"]["rule"] == "heavy-ball"
    assert got["edge"] == pytest.approx(heavy_ball_edge(0.1, 0.9), rel=1e-12)
    assert got["sharpness"] == pytest.approx(top, rel=1e-4)
    assert got["ratio"] == pytest.approx(got["sharpness"] / got["edge"], rel=1e-12)
    assert got["verdict"] == "below"
    with h5py.File(tmp_path / "e.h5") as f:
        assert f.attrs["kind"] == "eos" and f.attrs["edge"] == pytest.approx(got["edge"])


def test_sam_checkpoint_edge_moves_with_its_gradient_norm(cli, tmp_path) -> None:
    ckpt_path = SAMPLE_DIR / "mlp_digits_sam.pt"
    got = eos_json(cli, ckpt_path, *FAST, "--out", tmp_path / "e.h5")
    problem = problem_from_checkpoint(load_checkpoint(ckpt_path), device="cpu", samples=200)
    _, gradient = problem.loss_and_gradient()
    norm = float(gradient.double().norm())
    assert got["grad_norm"] == pytest.approx(norm, rel=1e-6)
    assert got["edge"] == pytest.approx(sam_edge(0.1, 0.05, norm, momentum=0.9), rel=1e-6)
    # mSAM over the same weights: the SAM edge at the harmonic mean of 4 micro-batch gradient norms
    msam = eos_json(cli, ckpt_path, *FAST, "--opt", "msam", "--micro-batches", "4", "--out", tmp_path / "m.h5")
    assert len(msam["micro_grad_norms"]) == 4
    assert msam["edge"] == pytest.approx(msam_edge(0.1, 0.05, msam["micro_grad_norms"], 0.9), rel=1e-12)


@pytest.mark.parametrize("factor, verdict, code", [(0.5, "below", 0), (1.0, "at", 0), (1.5, "above", 1)])
def test_verdict_and_fail_above_at_chosen_learning_rates(cli, tmp_path, factor: float, verdict: str, code: int):
    """With plain GD and lr = factor * 2 / sharpness the ratio is exactly factor."""
    ckpt_path = SAMPLE_DIR / "mlp_digits.pt"
    first = eos_json(cli, ckpt_path, *FAST, "--opt", "sgd", "--momentum", "0", "--out", tmp_path / "a.h5")
    lr = factor * 2 / first["sharpness"]
    args = [ckpt_path, *FAST, "--momentum", "0", "--lr", repr(lr), "--fail-above", "1.2", "--out", tmp_path / "b.h5"]
    result = cli("eos", *args, "--json")
    assert result.code == code, result.err
    got = json.loads(result.out)
    assert got["edge"] == pytest.approx(gd_edge(lr), rel=1e-12)
    assert got["ratio"] == pytest.approx(factor, rel=1e-6)
    assert got["verdict"] == verdict
    assert ("exceeds --fail-above" in result.err) == (code == 1)


def test_adam_preconditioned_sharpness_matches_a_dense_hessian(cli, tmp_path) -> None:
    run = tmp_path / "adam"
    assert cli("train", *TINY_RUN, "--base", "adam", "--lr", "0.01", "--steps", "5", "--out", run).code == 0
    got = eos_json(cli, run / "final.pt", "--device", "cpu", "--dtype", "float64", "--tol", "1e-8",
                   "--quiet", "--out", tmp_path / "e.h5")  # fmt: skip
    assert got["preconditioned"] and got["setting"]["rule"] == "adam"
    assert got["edge"] == pytest.approx(38 / 0.01, rel=1e-12)
    ckpt = load_checkpoint(run / "final.pt")
    data = load_data(ckpt.data)
    hessian = dense_hessian(instantiate(ckpt), data, ckpt.loss)
    state = ckpt.optimizer["state"]["base"]
    beta2, eps = state["param_groups"][0]["betas"][1], state["param_groups"][0]["eps"]
    v_hat = [s["exp_avg_sq"].double().reshape(-1) / (1 - beta2 ** float(s["step"])) for s in state["state"].values()]
    scale = (torch.cat(v_hat).sqrt() + eps).rsqrt()
    expected = torch.linalg.eigvalsh(scale[:, None] * hessian * scale[None, :])[-1]
    assert got["sharpness"] == pytest.approx(float(expected), rel=1e-6)
    # `check` gates the same preconditioned ratio (it once measured Adam without the saved state)
    gated = cli("check", run / "final.pt", "--max-eos-ratio", "1e9", "--device", "cpu", "--dtype", "float64",
                "--tol", "1e-8", "--quiet", "--json")  # fmt: skip
    assert gated.code == 0, gated.err
    assert json.loads(gated.out)["gates"][0]["value"] == pytest.approx(got["ratio"], rel=1e-6)


def test_run_directory_edges_follow_the_schedule(cli, tmp_path) -> None:
    run = tmp_path / "run"
    args = [*TINY_RUN, "--lr", "0.5", "--steps", "12", "--track-sharpness-every", "3", "--lr-schedule", "cosine"]
    assert cli("train", *args, "--out", run).code == 0
    got = eos_json(cli, run, "--out", tmp_path / "e.h5")
    with h5py.File(run / "train.h5") as f:
        steps, sharp = f["sharpness/step"][()], f["sharpness/top_eigenvalue"][()]
    lr = 0.5 * 0.5 * (1 + np.cos(np.pi * steps / 12))
    with h5py.File(tmp_path / "e.h5") as f:
        assert f.attrs["kind"] == "eos-run"
        np.testing.assert_allclose(f["lr"][()], lr, rtol=1e-12)
        finite = lr > 0
        np.testing.assert_allclose(f["edge"][()][finite], 2 / lr[finite], rtol=1e-12)
        np.testing.assert_allclose(f["ratio"][()][finite], sharp[finite] * lr[finite] / 2, rtol=1e-12)
    assert got["tracked_steps"] == len(steps)
    assert 0.0 <= got["fraction_at_edge"] <= 1.0


def test_bad_input(cli, tmp_path) -> None:
    sample = SAMPLE_DIR / "mlp_digits.pt"
    assert_user_error(cli("eos", sample, "--opt", "asam", *FAST, "--out", tmp_path / "a.h5"), "no edge-of-stability")
    assert_user_error(cli("eos", sample, "--opt", "sam", "--nesterov", *FAST, "--out", tmp_path / "b.h5"), "Nesterov")
    assert_user_error(cli("eos", sample, "--band", "0", *FAST), "--band")
    ckpt = load_checkpoint(sample)  # a bare state_dict records no optimizer: --lr is missing
    torch.save(ckpt.state_dict, tmp_path / "bare.pt")
    bare = [tmp_path / "bare.pt", "--model", "mlp", "--model-arg", "widths=[64,32,10]", "--model-arg",
            "activation=tanh", "--data", "digits", "--loss", "cross_entropy", *FAST]  # fmt: skip
    assert_user_error(cli("eos", *bare, "--out", tmp_path / "c.h5"), "--lr")
    run = tmp_path / "run"
    assert cli("train", *TINY_RUN, "--steps", "2", "--out", run).code == 0
    assert_user_error(cli("eos", run, "--out", tmp_path / "d.h5"), "no tracked sharpness")
    assert_user_error(cli("eos", tmp_path / "missing_dir" / "x.pt", *FAST), "not found")
    for name in ("a.h5", "b.h5", "c.h5", "d.h5"):
        assert not (tmp_path / name).exists()


@pytest.mark.parametrize("opt", ["sgd", "sam", "ssam"])
def test_edge_of_stability_reproduced_small(opt: str, tmp_path) -> None:
    """The phenomenon on real data, small enough for the suite (the full-size run, tanh MLP
    64-200-200-10 on 1000 digits for 2000 steps, is bench/eos_reproduction.py): a tanh MLP 64-100-100-10
    on 500 digits, MSE, full batch, lr 0.4. Progressive sharpening takes GD to 2/lr, SAM (rho 0.02) to
    its own edge and SSAM (rho 0.02) to 2/lr; after step 200 each stays at its edge (measured on this
    CPU: every ratio within 9.3%, medians within 7%; chaotic dynamics make the last digits machine
    dependent, so the bound on single steps is 12%)."""
    from landscape_cli import TrainConfig, train_model
    from landscape_cli.eos.run import run_edges, summarize_run
    from landscape_cli.zoo import data_spec, model_spec

    config = TrainConfig(
        model=model_spec("mlp", {"widths": [64, 100, 100, 10], "activation": "tanh"}),
        data=data_spec("digits", "all", 0, {"limit": 500}),
        out_dir=tmp_path / opt,
        loss="half_sse",
        opt=opt,
        rho=0.02,
        lr=0.4,
        batch_size=None,
        epochs=None,
        steps=300,
        eval_every=300,
        track_sharpness_every=20,
        track_samples=500,
        seed=0,
    )
    train_model(config, quiet=True)
    edges = run_edges(tmp_path / opt, {})
    summary = summarize_run(edges, band=0.1, after=200)
    late = np.abs(edges.ratio[edges.step >= 200] - 1)
    assert edges.ratio[0] < 0.75  # it starts well below the edge: the sharpening is the training's doing
    assert summary["first_step_at_edge"] is not None and summary["first_step_at_edge"] <= 200
    assert np.median(late) <= 0.1
    assert late.max() <= 0.12
    if opt == "sam":  # SAM's own edge, clearly below 2/lr
        assert edges.edge[-1] < 0.9 * 2 / 0.4


def test_training_log_figure_draws_the_edge(cli, tmp_path) -> None:
    """Cohen et al.'s Figure 1: a constant edge as a line at 2/lr; SAM's moving edge as a curve through
    the tracked steps, equal to the formula at the logged gradient norms; no line far off the scale."""
    from landscape_cli.plotting.trainlog import edge_references, read_train_log, train_figure

    far = tmp_path / "far"  # the edge 2/0.01 = 200, far above the sharpness: not drawn
    args = [*TINY_RUN, "--lr", "0.01", "--steps", "2", "--track-sharpness-every", "1"]
    assert cli("train", *args, "--out", far).code == 0
    assert edge_references(read_train_log(far / "train.h5")) == []
    for opt, lr in (("sgd", 1.0), ("sam", 1.0)):
        run = tmp_path / opt
        args = [
            *TINY_RUN,
            "--opt",
            opt,
            "--rho",
            "0.05",
            "--lr",
            str(lr),
            "--steps",
            "6",
            "--track-sharpness-every",
            "2",
        ]
        assert cli("train", *args, "--out", run).code == 0
        log = read_train_log(run / "train.h5")
        (reference,) = edge_references(log)
        figure = train_figure(log, references=[reference])
        sharpness_axes = figure.axes[-1]
        lines = {line.get_label(): line for line in sharpness_axes.get_lines()}
        if opt == "sgd":
            assert reference.label == "2 / lr"
            np.testing.assert_allclose(lines["2 / lr"].get_ydata(), 2 / lr)
        else:
            steps, norms = log.table("sharpness")["step"], log.table("sharpness")["grad_norm"]
            expected = [sam_edge(lr, 0.05, g) for g in norms]
            np.testing.assert_allclose(lines["SAM edge"].get_xdata(), steps)
            np.testing.assert_allclose(lines["SAM edge"].get_ydata(), expected, rtol=1e-12)
        assert cli("plot", run, "--out", tmp_path / f"{opt}.png").code == 0
        assert (tmp_path / f"{opt}.png").read_bytes()[:4] == b"\x89PNG"
