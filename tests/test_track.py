"""SharpnessTracker in a user's own loop: its numbers equal a direct measurement at the same weights, warm
starts save products, and the CSV and TensorBoard logs hold what it measured."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F

import landscape_cli as ls
from landscape_cli import optim
from landscape_cli.track import SharpnessTracker

from .conftest import assert_user_error


def problem(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(120, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (120,), generator=g)
    return model, x, y


def train(model, x, y, opt, tracker, steps: int) -> None:
    for step in range(1, steps + 1):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if isinstance(opt, optim.SharpnessAwareOptimizer):
            opt.first_step(zero_grad=True)
            F.cross_entropy(model(x), y).backward()
            opt.second_step(zero_grad=True)
        else:
            opt.step()
            opt.zero_grad()
        tracker.step(step, opt)


def test_tracked_values_equal_a_direct_measurement_at_the_same_weights(tmp_path) -> None:
    model, x, y = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    tracker = SharpnessTracker(model, (x, y), every=10, measures=("top", "trace", "grad_norm", "eos"),
                               samples=None, tol=1e-8, trace_hvps=150, csv=tmp_path / "s.csv")  # fmt: skip
    train(model, x, y, opt, tracker, 30)
    assert [row["step"] for row in tracker.rows] == [10.0, 20.0, 30.0]
    direct = ls.wrap(model, (x, y), dtype=torch.float64, device="cpu")
    spectrum = direct.spectrum(1, tol=1e-10, trace=True, trace_hvps=150)
    last = tracker.rows[-1]
    assert last["top_eigenvalue"] == pytest.approx(float(spectrum.lanczos.top.values[0]), rel=1e-7)
    dense_trace = float(torch.autograd.functional.hessian(
        lambda w: F.cross_entropy(torch.func.functional_call(model, _unflat(model, w), (x,)), y),
        torch.cat([p.detach().reshape(-1) for p in model.parameters()])).trace())  # fmt: skip
    assert (
        abs(last["trace"] - dense_trace) <= 4 * last["trace_stderr"] + 1e-9
        and last["trace_stderr"] < 0.01 * dense_trace
    )
    _, gradient = direct.problem.loss_and_gradient()
    assert last["grad_norm"] == pytest.approx(float(gradient.norm()), rel=1e-10)
    assert last["edge"] == pytest.approx(2 / 0.2) and last["eos_ratio"] == pytest.approx(last["top_eigenvalue"] * 0.1)
    with (tmp_path / "s.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["step"]) for r in rows] == [10, 20, 30]
    assert float(rows[-1]["top_eigenvalue"]) == pytest.approx(last["top_eigenvalue"], rel=1e-12)


def _unflat(model, w):
    out, i = {}, 0
    for name, p in model.named_parameters():
        out[name] = w[i : i + p.numel()].view_as(p)
        i += p.numel()
    return out


def test_warm_starts_save_products_and_keep_the_answer() -> None:
    counts = {}
    for warm in (True, False):
        model, x, y = problem(1)
        opt = optim.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
        tracker = SharpnessTracker(model, (x, y), every=5, measures=("top", "alignment"), samples=None,
                                   tol=1e-6, warm_start=warm)  # fmt: skip
        train(model, x, y, opt, tracker, 60)
        counts[warm] = (sum(r["hvps"] for r in tracker.rows[1:]), [r["top_eigenvalue"] for r in tracker.rows])
        assert all(0 <= r["alignment"] <= 1 for r in tracker.rows)
    assert counts[True][0] < 0.8 * counts[False][0], counts
    assert counts[True][1] == pytest.approx(counts[False][1], rel=1e-5)


def test_tensorboard_event_files_hold_the_tracked_values(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, x, y = problem(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with SharpnessTracker(model, (x, y), every=4, samples=None, tensorboard=tmp_path / "tb") as tracker:
        train(model, x, y, opt, tracker, 12)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    scalars = events.Scalars("sharpness/top_eigenvalue")
    assert [e.step for e in scalars] == [4, 8, 12]
    for event, row in zip(scalars, tracker.rows, strict=True):
        assert event.value == pytest.approx(row["top_eigenvalue"], rel=1e-6)  # stored as float32


def test_bad_arguments_and_an_optimizer_without_a_formula() -> None:
    model, x, y = problem()
    for bad in ({"every": 0}, {"measures": ("sharpest",)}, {"measures": ()}, {"tol": 2.0}):
        with pytest.raises(ValueError):
            SharpnessTracker(model, (x, y), **bad)
    tracker = SharpnessTracker(model, (x, y), every=1, measures=("top", "eos"), samples=None)
    asam = optim.ASAM(model.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.warns(ls.LandscapeWarning, match="no edge of stability tracked"):
        row = tracker.step(1, asam)
    assert "eos_ratio" not in row and row["top_eigenvalue"] > 0


def test_landscape_eos_and_plot_read_a_trackers_log(cli, tmp_path) -> None:
    """The tracker's HDF5 log is read by `landscape eos` as train.h5 is: the same edges the tracker computed
    (SAM's moves with the gradient norm; the learning rate comes from the rows, under the user's scheduler),
    and `landscape plot` draws it and its CSV table; eos refuses the CSV, which records no optimizer."""
    model, x, y = problem(3)
    opt = optim.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.2, momentum=0.5)
    schedule = torch.optim.lr_scheduler.StepLR(opt.base, step_size=10, gamma=0.5)
    log, table = tmp_path / "sharp.h5", tmp_path / "sharp.csv"
    with SharpnessTracker(model, (x, y), every=5, measures=("top", "grad_norm", "eos"), samples=None,
                          log=log, csv=table) as tracker:  # fmt: skip
        for step in range(1, 31):
            F.cross_entropy(model(x), y).backward()
            opt.first_step(zero_grad=True)
            F.cross_entropy(model(x), y).backward()
            opt.second_step(zero_grad=True)
            schedule.step()
            tracker.step(step, opt)
    assert [r["lr"] for r in tracker.rows] == pytest.approx([0.2, 0.1, 0.1, 0.05, 0.05, 0.025])
    result = cli("eos", str(log), "--json")
    assert result.code == 0, result.err
    summary = json.loads(result.out)
    assert summary["tracked_steps"] == 6 and summary["setting"]["rule"] == "sam"
    last = tracker.rows[-1]
    assert summary["final"]["edge"] == pytest.approx(last["edge"], rel=1e-12)
    assert summary["final"]["ratio"] == pytest.approx(last["eos_ratio"], rel=1e-12)
    assert (tmp_path / "sharp.eos.h5").is_file()
    plotted = cli("plot", str(log), str(table))
    assert plotted.code == 0, plotted.err
    assert plotted.out.split() == [str(tmp_path / "sharp.png"), str(tmp_path / "sharp.csv.png")]
    assert all((tmp_path / name).stat().st_size > 10_000 for name in ("sharp.png", "sharp.csv.png"))
    assert_user_error(cli("eos", str(table)), "CSV table", "does not record the optimizer")
