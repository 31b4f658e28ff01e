"""Every bad input to `landscape spectrum`: exit 2, one 'error:' line, no traceback, no files left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape_cli.checkpoint import load_checkpoint, save_checkpoint

from .conftest import FAST, MLP_PARAMS, assert_user_error, listing


class CustomObject:
    """A class torch.load(weights_only=True) must refuse to instantiate."""

    def __init__(self) -> None:
        self.weights = torch.ones(3)


class Malicious:
    """Unpickling this creates a directory: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def bad(tmp_path_factory, mlp_ckpt):
    """A folder of bad inputs, made once."""
    d = tmp_path_factory.mktemp("bad_inputs")
    (d / "notes.pt").write_text("these are my notes, not a checkpoint\n")
    blob = mlp_ckpt.read_bytes()
    (d / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    (d / "empty.pt").write_bytes(b"")
    torch.save({"state_dict": CustomObject()}, d / "custom.pt")
    torch.save({"payload": Malicious(d / "code_ran")}, d / "malicious.pt")
    native = load_checkpoint(mlp_ckpt)
    torch.save(native.state_dict, d / "foreign.pt")
    nan_ckpt = load_checkpoint(mlp_ckpt)
    nan_ckpt.state_dict = {k: v.clone() for k, v in nan_ckpt.state_dict.items()}
    nan_ckpt.state_dict["layers.2.weight"][3, 5] = float("nan")
    save_checkpoint(nan_ckpt, d / "nan_weight.pt")
    x = np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32)
    x[7, 3] = np.nan
    np.savez(d / "nan_x.npz", x=x, y=np.arange(40) % 10)
    (d / "raises.py").write_text("raise RuntimeError('boom while importing raises.py')\n\ndef factory():\n    pass\n")
    (d / "fine.py").write_text("import torch\n\ndef factory():\n    return torch.nn.Linear(64, 10)\n")
    (d / "a_directory.pt").mkdir()
    (d / "results_dir.h5").mkdir()
    (d / "plainfile").write_text("x")
    os.mkfifo(d / "fifo.h5")
    return d


# name -> (arguments after `spectrum`, fragments the error line must contain). `{bad}` is the folder above.
CASES = {
    "missing file": (["{bad}/nope.pt"], ["not found", "nope.pt"]),
    "directory as checkpoint": (["{bad}/a_directory.pt"], ["a_directory.pt", "directory"]),
    "text file": (["{bad}/notes.pt"], ["notes.pt", "not a PyTorch checkpoint"]),
    "truncated file": (["{bad}/truncated.pt"], ["truncated.pt", "truncated or corrupt"]),
    "empty file": (["{bad}/empty.pt"], ["empty.pt", "truncated or corrupt"]),
    "custom class pickle": (["{bad}/custom.pt"], ["refusing to load", "arbitrary code", "CustomObject"]),
    "code-running pickle": (["{bad}/malicious.pt"], ["refusing to load", "arbitrary code", "weights_only=True"]),
    "architecture mismatch (widths)": (
        ["{mlp}", "--model-arg", "widths=[64,16,10]"],
        ["does not fit the model", "mis-shaped", "layers.0.weight (32, 64) vs (16, 64)", "layers.2.weight"],
    ),
    "architecture mismatch (foreign resnet)": (
        ["{bad}/foreign.pt", "--model", "resnet", "--data", "digits", "--loss", "cross_entropy"],
        ["does not fit the model", "missing: stem.0.weight", "unexpected: layers.0.weight", "more"],
    ),
    "foreign state_dict without --model": (["{bad}/foreign.pt"], ["does not record its model", "--model"]),
    "unknown model": (["{mlp}", "--model", "transformer9000"], ["unknown model 'transformer9000'", "mlp, cnn, resnet"]),
    "unknown dataset": (["{mlp}", "--data", "imagenet"], ["unknown dataset 'imagenet'", "digits"]),
    "entry point module missing": (
        ["{mlp}", "--model", "nosuchpkg.mod:factory"],
        ["cannot import 'nosuchpkg.mod'", "ModuleNotFoundError", "nosuchpkg"],
    ),
    "entry point file raises on import": (
        ["{mlp}", "--model", "{bad}/raises.py:factory"],
        ["raises.py", "RuntimeError", "boom while importing raises.py"],
    ),
    "entry point file missing": (["{mlp}", "--model", "{bad}/absent.py:factory"], ["not found", "absent.py"]),
    "entry point attribute missing": (["{mlp}", "--model", "{bad}/fine.py:nothere"], ["no attribute 'nothere'"]),
    "data entry point missing": (["{mlp}", "--data", "nosuchpkg.data:load"], ["cannot import 'nosuchpkg.data'"]),
    "NaN in the parameters": (["{bad}/nan_weight.pt"], ["layers.2.weight", "NaN"]),
    "NaN loss from the data": (["{mlp}", "--data", "{bad}/nan_x.npz"], ["loss", "nan", "not finite"]),
    "top-k above the parameter count": (
        ["{mlp}", "--top-k", "2411"],
        ["--top-k 2411", f"exceeds the number of parameters ({MLP_PARAMS})"],
    ),
    "top-k plus bottom-k above the parameter count": (
        ["{mlp}", "--top-k", "2000", "--bottom-k", "411"],
        [f"exceeds the number of parameters ({MLP_PARAMS})"],
    ),
    "samples 0": (["{mlp}", "--samples", "0"], ["--samples must be at least 1, got 0"]),
    "samples negative": (["{mlp}", "--samples", "-5"], ["--samples must be at least 1, got -5"]),
    "unknown device": (["{mlp}", "--device", "tpu"], ["unknown device 'tpu'"]),
    "unsupported device type": (["{mlp}", "--device", "meta"], ["'meta' is not supported"]),
    "dtype float16": (["{mlp}", "--dtype", "float16"], ["unknown dtype 'float16'", "float32 or float64"]),
    "tol 0": (["{mlp}", "--tol", "0"], ["--tol must lie in (0, 1)"]),
    "tol 1": (["{mlp}", "--tol", "1"], ["--tol must lie in (0, 1)"]),
    "unknown loss": (["{mlp}", "--loss", "hinge"], ["unknown loss 'hinge'", "cross_entropy"]),
    "unknown hvp method": (
        ["{mlp}", "--hvp", "finite-differences"],
        ["--hvp method 'finite-differences' is unknown; choose auto, jvp, double-backward or finite-difference"],
    ),
    "unknown split": (["{mlp}", "--split", "validation"], ["unknown split 'validation'"]),
    "model-arg without =": (["{mlp}", "--model-arg", "widths"], ["--model-arg expects KEY=VALUE", "'widths'"]),
    "model-arg unknown keyword": (["{mlp}", "--model-arg", "depth=3"], ["building model 'mlp'", "depth"]),
    "unknown activation": (["{mlp}", "--model-arg", "activation=swish"], ["unknown activation 'swish'", "tanh"]),
    "data-arg limit not a number": (["{mlp}", "--data-arg", "limit=many"], ["limit", "positive integer", "'many'"]),
    "data-arg limit negative": (["{mlp}", "--data-arg", "limit=-5"], ["limit", "positive integer", "-5"]),
    "data-arg unknown keyword": (["{mlp}", "--data-arg", "colour=red"], ["dataset 'digits'", "colour"]),
    "model does not accept the data": (["{mlp}", "--data", "spirals"], ["does not accept inputs of shape (2,)"]),
    "batch-size 0": (["{mlp}", "--batch-size", "0"], ["--batch-size must be at least 1"]),
    "max-iter below k": (["{mlp}", "--top-k", "5", "--max-iter", "3"], ["--max-iter 3"]),
    "nothing to compute": (["{mlp}", "--top-k", "0"], ["nothing to compute"]),
    "trace-hvps too few": (["{mlp}", "--trace", "--trace-hvps", "3"], ["--trace-hvps must be at least 6"]),
    "density sigma negative": (["{mlp}", "--density", "--density-sigma", "-1"], ["--density-sigma must be positive"]),
    "non-integer option": (["{mlp}", "--top-k", "many"], ["--top-k", "landscape spectrum --help"]),
    "unknown option": (["{mlp}", "--frobnicate"], ["No such option", "--frobnicate"]),
    "missing checkpoint argument": ([], ["Missing argument", "landscape spectrum --help"]),
    "--out is a FIFO": (["{mlp}", "--out", "{bad}/fifo.h5", "--overwrite"], ["fifo.h5", "not a regular file"]),
    "--out below a file": (["{mlp}", "--out", "{bad}/plainfile/res.h5"], ["plainfile is not a directory"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, cli, bad, mlp_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, fragments = CASES[case]
    args = [a.format(bad=bad, mlp=mlp_ckpt) for a in args]
    before = listing(bad)
    result = cli("spectrum", *FAST, *args)
    assert_user_error(result, *fragments)
    assert listing(tmp_path) == set(), "a failed run left files in the working directory"
    assert listing(bad) == before, "a failed run left files beside its inputs"


def test_too_few_outputs_for_the_labels(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = torch.nn.Linear(64, 3)
    torch.save(model.state_dict(), tmp_path / "three.pt")
    (tmp_path / "m.py").write_text("import torch\n\ndef linear(k):\n    return torch.nn.Linear(64, k)\n")
    before = listing(tmp_path)
    args = ["three.pt", "--model", "m.py:linear", "--model-arg", "k=3", "--data", "digits", "--loss", "cross_entropy"]
    result = cli("spectrum", *args, *FAST)
    assert_user_error(result, "3 outputs", "labels up to 9")
    assert listing(tmp_path) == before


def test_unsafe_pickle_runs_no_code(cli, bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("spectrum", bad / "malicious.pt", *FAST)
    line = assert_user_error(result, "arbitrary code")
    assert "posix.mkdir" in line or "os.mkdir" in line or "nt.mkdir" in line
    assert not (bad / "code_ran").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_requested_without_cuda(cli, mlp_ckpt, tmp_path, monkeypatch, device):
    monkeypatch.chdir(tmp_path)
    result = cli("spectrum", mlp_ckpt, "--device", device, *FAST)
    assert_user_error(result, f"device '{device}'", "CUDA is not available", "--device cpu")
    assert listing(tmp_path) == set()


# -- results already on disk ------------------------------------------------------------------


def test_existing_output_is_refused_and_kept(cli, local_mlp, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlp_digits.spectrum.h5").write_bytes(b"precious results")
    result = cli("spectrum", local_mlp, *FAST)
    assert_user_error(result, "mlp_digits.spectrum.h5 exists", "--overwrite")
    assert (tmp_path / "mlp_digits.spectrum.h5").read_bytes() == b"precious results"
    assert listing(tmp_path) == {"mlp_digits.pt", "mlp_digits.spectrum.h5"}


def test_existing_figure_alone_is_refused(cli, mlp_ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "res.png").write_bytes(b"an old figure")
    result = cli("spectrum", mlp_ckpt, "--out", "res.h5", *FAST)
    assert_user_error(result, "res.png exists")
    assert listing(tmp_path) == {"res.png"}
    assert (tmp_path / "res.png").read_bytes() == b"an old figure"
    # Without a figure to write, the old one is no obstacle and stays as it is.
    assert cli("spectrum", mlp_ckpt, "--out", "res.h5", "--no-plot", *FAST).code == 0
    assert listing(tmp_path) == {"res.png", "res.h5"}
    assert (tmp_path / "res.png").read_bytes() == b"an old figure"


def test_overwrite_replaces_existing_output(cli, local_mlp, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlp_digits.spectrum.h5").write_bytes(b"old")
    (tmp_path / "mlp_digits.spectrum.png").write_bytes(b"old")
    result = cli("spectrum", local_mlp, "--overwrite", *FAST)
    assert result.code == 0, result.err
    with h5py.File(tmp_path / "mlp_digits.spectrum.h5", "r") as f:
        assert f.attrs["kind"] == "spectrum"
        assert f["top/eigenvalues"].shape == (2,)
    assert (tmp_path / "mlp_digits.spectrum.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert listing(tmp_path) == {"mlp_digits.pt", "mlp_digits.spectrum.h5", "mlp_digits.spectrum.png"}


def test_failed_run_with_overwrite_keeps_existing_output(cli, bad, tmp_path, local_mlp, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlp_digits.spectrum.h5").write_bytes(b"precious results")
    result = cli("spectrum", local_mlp, "--data", bad / "nan_x.npz", "--overwrite", *FAST)
    assert_user_error(result, "not finite")
    assert (tmp_path / "mlp_digits.spectrum.h5").read_bytes() == b"precious results"
    assert listing(tmp_path) == {"mlp_digits.pt", "mlp_digits.spectrum.h5"}


def test_failure_while_writing_leaves_old_files_and_no_temp_files(cli, local_mlp, tmp_path, monkeypatch):
    """The figure fails after the HDF5 file is written: neither output appears, the old ones stay."""
    import landscape_cli.plotting as plotting

    def broken_plot(h5_path, out, *args, **kwargs):
        Path(out).write_bytes(b"half a figure")
        raise RuntimeError("disk full")

    monkeypatch.setattr(plotting, "draw_spectrum", broken_plot)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlp_digits.spectrum.h5").write_bytes(b"old results")
    (tmp_path / "mlp_digits.spectrum.png").write_bytes(b"old figure")
    result = cli("spectrum", local_mlp, "--overwrite", *FAST)
    assert result.code == 3  # not the user's fault: an internal error, still one line
    assert result.error_lines == [
        "error: internal error: RuntimeError: disk full (run again with --debug for the traceback, and please "
        "report it)"
    ]
    assert "Traceback" not in result.err
    assert listing(tmp_path) == {"mlp_digits.pt", "mlp_digits.spectrum.h5", "mlp_digits.spectrum.png"}
    assert (tmp_path / "mlp_digits.spectrum.h5").read_bytes() == b"old results"
    assert (tmp_path / "mlp_digits.spectrum.png").read_bytes() == b"old figure"


def test_debug_environment_variable_shows_the_traceback(mlp_ckpt, tmp_path, monkeypatch):
    import landscape_cli.api as api
    from landscape_cli.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(api, "problem_from_checkpoint", broken)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LANDSCAPE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="a bug"):
        main(["spectrum", str(mlp_ckpt), *FAST])
    assert listing(tmp_path) == set()


# -- a real process ---------------------------------------------------------------------------


def _subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LANDSCAPE_DEBUG"}
    return subprocess.run(
        [sys.executable, "-m", "landscape_cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_subprocess_bad_checkpoint_exit_2_without_traceback(bad, tmp_path):
    proc = _subprocess(["spectrum", bad / "truncated.pt", *FAST], tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "truncated or corrupt" in errors[0]
    assert proc.stdout == ""
    assert listing(tmp_path) == set()


def test_subprocess_unsafe_pickle_exit_2_without_traceback(bad, tmp_path):
    proc = _subprocess(["spectrum", bad / "malicious.pt", *FAST], tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "arbitrary code" in errors[0]
    assert not (bad / "code_ran").exists()
    assert listing(tmp_path) == set()
