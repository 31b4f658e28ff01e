"""The Python API: `load` and `wrap` give the numbers of dense float64 ground truth and of the commands,
never touch the caller's module, and refuse bad input with a LandscapeError."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import landscape_cli as ls
from landscape_cli.eos.thresholds import heavy_ball_edge

from .conftest import SAMPLE_DIR
from .helpers import dense_hessian, tiny_data, tiny_models

CKPT = SAMPLE_DIR / "mlp_digits.pt"


@pytest.fixture(scope="module")
def tiny():
    model = tiny_models()["mlp-tanh"]
    data = tiny_data("mlp-tanh")
    eigenvalues = torch.linalg.eigvalsh(dense_hessian(tiny_models()["mlp-tanh"], data))
    return model, data, eigenvalues


def test_wrap_on_tensors_gives_the_dense_spectrum_and_leaves_the_module_alone(tiny) -> None:
    model, data, eigenvalues = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    scape = ls.wrap(model, (data.x, data.y), "cross_entropy", device="cpu", dtype="float64")
    result = scape.spectrum(top_k=2, bottom_k=1, tol=1e-10)
    np.testing.assert_allclose(result.lanczos.top.values, eigenvalues[-2:].flip(0).numpy(), rtol=1e-8)
    assert result.lanczos.bottom.values[0] == pytest.approx(float(eigenvalues[0]), rel=1e-8, abs=1e-10)
    assert scape.sharpness(tol=1e-10) == pytest.approx(float(eigenvalues[-1]), rel=1e-8)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32


def test_wrap_on_a_dataloader_equals_wrap_on_its_tensors(tiny) -> None:
    model, data, _ = tiny
    loader = DataLoader(TensorDataset(data.x, data.y), batch_size=7, shuffle=False)
    from_loader = ls.wrap(model, loader, device="cpu", dtype="float64")
    from_tensors = ls.wrap(model, (data.x, data.y), device="cpu", dtype="float64")
    assert from_loader.problem.n_samples == len(data)
    assert from_loader.loss() == pytest.approx(from_tensors.loss(), rel=1e-12)
    assert from_loader.sharpness(tol=1e-10) == pytest.approx(from_tensors.sharpness(tol=1e-10), rel=1e-9)


def test_wrap_surface_centre_and_eos_of_a_live_sgd(tiny) -> None:
    model, data, eigenvalues = tiny
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scape = ls.wrap(model, (data.x, data.y), device="cpu", dtype="float64", optimizer=sgd)
    surface = scape.surface(dims=1, x="-0.5:0.5:5")
    assert surface.arrays["train_loss"][2] == pytest.approx(scape.loss(), rel=1e-10)  # x = 0 is the model
    eos = scape.eos(tol=1e-10)
    assert eos.setting["rule"] == "heavy-ball"
    assert eos.edge == pytest.approx(heavy_ball_edge(0.05, 0.9), rel=1e-12)
    assert eos.ratio == pytest.approx(float(eigenvalues[-1]) / eos.edge, rel=1e-8)
    assert scape.eos(lr=0.1, momentum=0.0, tol=1e-10).edge == pytest.approx(20.0, rel=1e-12)  # keywords override


def test_wrap_eos_of_a_live_adam_is_preconditioned_by_its_state(tiny) -> None:
    model, data, _ = tiny
    model = type(model)([6, 12, 4], activation="tanh")  # a fresh module: training it must not touch the fixture's
    model.load_state_dict(tiny[0].state_dict())
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        adam.zero_grad()
        torch.nn.functional.cross_entropy(model(data.x), data.y).backward()
        adam.step()
    scape = ls.wrap(model, (data.x, data.y), device="cpu", dtype="float64", optimizer=adam)
    reference = type(model)([6, 12, 4], activation="tanh")
    reference.load_state_dict(model.state_dict())
    hessian = dense_hessian(reference, data)
    v_hat = [adam.state[p]["exp_avg_sq"].double().reshape(-1) / (1 - 0.999**3) for p in model.parameters()]
    scale = (torch.cat(v_hat).sqrt() + 1e-8).rsqrt()
    expected = torch.linalg.eigvalsh(scale[:, None] * hessian * scale[None, :])[-1]
    eos = scape.eos(tol=1e-10)
    assert eos.preconditioned and eos.sharpness == pytest.approx(float(expected), rel=1e-6)
    assert eos.edge == pytest.approx(38 / 0.01, rel=1e-12)


def test_load_gives_the_commands_numbers(cli, tmp_path) -> None:
    """The CLI is built on the same functions: equal options give equal numbers, bit for bit."""
    scape = ls.load(CKPT, samples=200, device="cpu", hvp="double-backward")  # auto's timed choice could differ
    top = scape.spectrum(top_k=2).lanczos.top.values
    out = cli("spectrum", CKPT, "--samples", "200", "--device", "cpu", "--top-k", "2", "--quiet", "--json",
              "--no-plot", "--out", tmp_path / "s.h5", "--hvp", "double-backward")  # fmt: skip
    assert out.code == 0, out.err
    assert list(top) == [r["eigenvalue"] for r in json.loads(out.out)["top"]]
    check = scape.check(max_top_eig=1e9, max_trace=1e9, max_surface_rise=1e9)
    gated = cli("check", CKPT, "--samples", "200", "--device", "cpu", "--quiet", "--json", "--max-top-eig", "1e9",
                "--max-trace", "1e9", "--max-surface-rise", "1e9")  # fmt: skip
    assert {g["name"]: g["value"] for g in json.loads(gated.out)["gates"]} == {g.name: g.value for g in check.gates}
    assert check.value("max_top_eig") == scape.sharpness()  # both top_k=1; top_k=2 converges elsewhere


def test_check_result_in_pytest() -> None:
    scape = ls.load(CKPT, samples=200, device="cpu")
    top = scape.sharpness()
    scape.check(max_top_eig=top * 1.01).assert_passed()
    result = scape.check(max_top_eig=top * 0.99, min_bottom_eig=-1e9)
    assert not result.passed and [g.name for g in result.failures] == ["max_top_eig"]
    with pytest.raises(AssertionError, match=r"top Hessian eigenvalue .* failed <= "):
        result.assert_passed()
    with pytest.raises(KeyError, match="no gate 'max_trace'"):
        result.value("max_trace")


def test_bad_input_is_a_landscape_error(tiny) -> None:
    model, data, _ = tiny
    with pytest.raises(ls.LandscapeError, match="nn.Module"):
        ls.wrap("model", (data.x, data.y))
    with pytest.raises(ls.LandscapeError, match="unknown loss"):
        ls.wrap(model, (data.x, data.y), "hinge")
    with pytest.raises(ls.LandscapeError, match="tensors .x, y., a Dataset, a DataLoader or an iterable"):
        ls.wrap(model, 3)
    with pytest.raises(ls.LandscapeError, match="share a non-empty leading dimension"):
        ls.wrap(model, (data.x, data.y[:-1]))
    with pytest.raises(ls.LandscapeError, match="does not accept inputs"):
        ls.wrap(model, (torch.randn(5, 7), torch.zeros(5, dtype=torch.long)), device="cpu")
    scape = ls.wrap(model, (data.x, data.y), device="cpu")
    with pytest.raises(ls.LandscapeError, match="learning rate|lr"):
        scape.eos()  # no optimizer given and no lr
    with pytest.raises(ls.LandscapeError, match="unknown optimizer setting"):
        scape.eos(learning_rate=0.1)
    with pytest.raises(ls.LandscapeError, match="no gate given"):
        scape.check()
    with pytest.raises(ls.LandscapeError, match="file not found|no such file"):
        ls.load("missing.pt")


def test_a_loaded_surface_sweeps_other_splits_on_the_same_grid(tiny) -> None:
    """What `landscape surface` does for train and test: the test split's centre is its own loss; a live module
    has no other splits."""
    land = ls.load(CKPT, samples=120, device="cpu")
    result = land.surface(x="-0.5:0.5:3", also_splits=["test"], seed=1)
    assert result.splits == ["train", "test"]
    test_loss = ls.load(CKPT, split="test", samples=120, device="cpu").loss()
    assert result.arrays["test_loss"][1] == pytest.approx(test_loss, rel=1e-6)
    assert result.arrays["train_loss"][1] == pytest.approx(land.loss(), rel=1e-6)
    model, data, _ = tiny
    with pytest.raises(ls.LandscapeError, match="also_splits needs a loaded checkpoint"):
        ls.wrap(model, data).surface(x="-1:1:3", also_splits=["test"])
