"""CUDA paths (skipped without a GPU): the same operator and the same spectrum as on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape_cli import SpectrumOptions, compute_spectrum, load_checkpoint, problem_from_checkpoint
from landscape_cli.session import resolve_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("name", ["mlp_digits", "resnet_digits"])
def test_cuda_hvps_match_cpu(name: str) -> None:
    ckpt = load_checkpoint(f"sample_checkpoints/{name}.pt")
    cpu = problem_from_checkpoint(ckpt, device="cpu", dtype="float64", samples=500)
    gpu = problem_from_checkpoint(ckpt, device="cuda", dtype="float64", samples=500)
    v = torch.randn(cpu.n_params, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for method in ("jvp", "double-backward"):
        a, b = cpu.hvp(v, method=method), gpu.hvp(v, method=method).cpu()
        assert float((a - b).norm() / a.norm()) < 1e-10, method


def test_cuda_float32_spectrum_matches_cpu_without_tf32() -> None:
    """cuDNN defaults to TF32 convolutions; the Problem turns that off, so float32 agrees to ~1e-6."""
    ckpt = load_checkpoint("sample_checkpoints/resnet_digits.pt")
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
