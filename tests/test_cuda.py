"""CUDA paths (skipped without a GPU): the same operator and the same spectrum as on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape_cli import SpectrumOptions, compute_spectrum, load_checkpoint, problem_from_checkpoint
from landscape_cli.session import resolve_device

from .conftest import SAMPLE_DIR

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("name", ["mlp_digits", "resnet_digits"])
def test_cuda_hvps_match_cpu(name: str) -> None:
    ckpt = load_checkpoint(SAMPLE_DIR / f"{name}.pt")
    cpu = problem_from_checkpoint(ckpt, device="cpu", dtype="float64", samples=500)
    gpu = problem_from_checkpoint(ckpt, device="cuda", dtype="float64", samples=500)
    v = torch.randn(cpu.n_params, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for method in ("jvp", "double-backward"):
        a, b = cpu.hvp(v, method=method), gpu.hvp(v, method=method).cpu()
        assert float((a - b).norm() / a.norm()) < 1e-10, method


def test_cuda_float32_spectrum_matches_cpu_without_tf32() -> None:
    """cuDNN defaults to TF32 convolutions; the Problem turns that off, so float32 agrees to ~1e-6."""
    ckpt = load_checkpoint(SAMPLE_DIR / "resnet_digits.pt")
    opts = SpectrumOptions(top_k=3, tol=1e-6)
    cpu = compute_spectrum(problem_from_checkpoint(ckpt, device="cpu"), opts).lanczos.top.values
    gpu = compute_spectrum(problem_from_checkpoint(ckpt, device="cuda"), opts).lanczos.top.values
    np.testing.assert_allclose(gpu, cpu, rtol=2e-5)
    assert torch.backends.cudnn.allow_tf32  # the user's global setting is restored afterwards


def test_auto_device_picks_cuda() -> None:
    assert resolve_device("auto").type == "cuda"


def test_cuda_training_is_deterministic(tmp_path) -> None:
    """cuDNN's default convolution kernels are nondeterministic; the trainer asks for deterministic ones."""
    from landscape_cli.train import TrainConfig, train_model
    from landscape_cli.zoo import data_spec, model_spec

    def run(name: str):
        config = TrainConfig(
            model=model_spec("resnet", {"width": 4}), data=data_spec("digits", kwargs={"limit": 300}),
            out_dir=tmp_path / name, opt="sam", lr=0.05, momentum=0.9, batch_size=64, steps=8, epochs=None,
            device="cuda",
        )  # fmt: skip
        return load_checkpoint(train_model(config)).state_dict

    a, b = run("a"), run("b")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["mlp_digits", "resnet_digits"])
def test_cuda_surface_points_match_cpu_batched_and_looped(name: str) -> None:
    """The same directions on both devices (drawn on the CPU), both evaluation methods: one surface."""
    from landscape_cli.surface.directions import random_directions
    from landscape_cli.surface.evaluate import PointEvaluator

    ckpt = load_checkpoint(SAMPLE_DIR / f"{name}.pt")
    coefficients = np.array([[0.0, 0.0], [0.5, -0.25], [-1.0, 1.0], [0.1, 0.9]])
    values = {}
    for device in ("cpu", "cuda"):
        problem = problem_from_checkpoint(ckpt, device=device, samples=600)
        evaluator = PointEvaluator(problem, random_directions(problem, 2, 3, "filter", "biasbn"))
        values[device, "loop"] = evaluator.evaluate_loop(coefficients)
        values[device, "batched"] = evaluator.evaluate_batched(coefficients)
    reference = values["cpu", "loop"]
    for key, got in values.items():
        np.testing.assert_allclose(got[:, 0], reference[:, 0], rtol=2e-5, err_msg=str(key))
        np.testing.assert_allclose(got[:, 1], reference[:, 1], atol=0.2, err_msg=str(key))  # one sample at most


def test_cuda_surface_cli_resume(tmp_path) -> None:
    """A CUDA sweep interrupted and resumed equals an unbroken one, and the file records the device."""
    import h5py

    from landscape_cli.cli import main

    base = ["surface", str(SAMPLE_DIR / "resnet_digits.pt"), "--2d", "--x", "-1:1:6", "--y", "-1:1:4"]
    base += ["--samples", "300", "--device", "cuda", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "whole.h5")]) == 0
    import landscape_cli.surface.store as store

    real, calls = store.Journal.append, {"n": 0}

    def interrupt(self, indices, values):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, indices, values)

    store.Journal.append = interrupt
    try:
        assert main([*base, "--points-per-pass", "1", "--out", str(tmp_path / "cut.h5")]) == 130
    finally:
        store.Journal.append = real
    assert main([*base, "--points-per-pass", "1", "--out", str(tmp_path / "cut.h5"), "--resume"]) == 0
    with h5py.File(tmp_path / "whole.h5") as a, h5py.File(tmp_path / "cut.h5") as b:
        np.testing.assert_allclose(b["train_loss"][()], a["train_loss"][()], rtol=2e-5)
        assert "cuda" in a.attrs["device"]


def test_cuda_api_check_and_compare_match_cpu() -> None:
    """The API on the GPU (`device="auto"` picks it): gates equal the CPU's, a self-comparison is zero."""
    import landscape_cli as ls

    path = str(SAMPLE_DIR / "resnet_digits.pt")
    gates = {"max_top_eig": 1e9, "max_trace": 1e9, "max_surface_rise": 1e9}
    cpu = ls.load(path, device="cpu", samples=500).check(**gates)
    scape = ls.load(path, samples=500)
    assert scape.problem.device.type == "cuda"
    gpu = scape.check(**gates)
    for gate in ("max_top_eig", "max_surface_rise"):
        assert gpu.value(gate) == pytest.approx(cpu.value(gate), rel=1e-4), gate
    assert gpu.value("max_trace") == pytest.approx(cpu.value("max_trace"), rel=1e-3)  # Hutch++ probes on device
    same = ls.compare(path, path, what="top,trace,surface", samples=500, max_increase=0.0)
    assert same.passed and all(d.change == 0.0 for d in same.deltas)


@pytest.mark.parametrize("backend", ["nccl", "gloo"])
def test_torchrun_on_the_gpu_equals_one_process(backend, tmp_path) -> None:
    """Two ranks on the GPU(s) (NCCL needs one GPU per rank; Gloo reduces CUDA tensors on one GPU): the
    spectrum of one process on the same GPU, to float32 rounding."""
    from .test_distributed import payload, single, torchrun

    if backend == "nccl" and torch.cuda.device_count() < 2:
        pytest.skip("NCCL needs a GPU per rank")
    args = ["spectrum", SAMPLE_DIR / "resnet_digits.pt", "--samples", "301", "--top-k", "2", "--trace",
            "--hvp", "double-backward", "--device", "cuda", "--no-plot", "--json", "--quiet"]  # fmt: skip
    one = payload(single(*args, "--out", tmp_path / "one.h5", cwd=tmp_path))
    two = payload(torchrun(2, *args, "--dist-backend", backend, "--out", tmp_path / "two.h5", cwd=tmp_path))
    assert two["problem"]["backend"] == backend and two["problem"]["world_size"] == 2
    for a, b in zip(one["top"], two["top"], strict=True):
        assert abs(a["eigenvalue"] - b["eigenvalue"]) <= 1e-4 * abs(a["eigenvalue"])
    assert abs(one["trace"]["estimate"] - two["trace"]["estimate"]) <= 1e-3 * abs(one["trace"]["estimate"])
