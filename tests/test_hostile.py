"""Hostile files and concurrent runs: no code from a file runs, nothing the user has is lost or replaced,
and exit codes a CI can trust (2 for bad input, 1 only for a failed gate, 3 for an internal error)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import landscape_cli as ls
from landscape_cli.checkpoint import load_checkpoint
from landscape_cli.errors import LandscapeError
from landscape_cli.hdf5 import describe_results
from landscape_cli.locks import exclusive

from .conftest import SAMPLE_DIR, assert_user_error, listing

MLP = SAMPLE_DIR / "mlp_digits.pt"
SAM = SAMPLE_DIR / "mlp_digits_sam.pt"
QUICK = ["--samples", "60", "--max-iter", "12", "--top-k", "1", "--hvp", "double-backward", "--no-plot", "-q"]
TRAIN = ["--steps", "3", "--data-arg", "limit=80", "--batch-size", "40", "--device", "cpu", "-q"]
ENV = {**{k: v for k, v in os.environ.items() if k != "LANDSCAPE_DEBUG"}, "OMP_NUM_THREADS": "1"}


def raw_checkpoint(**changes) -> dict:
    raw = torch.load(MLP, weights_only=True)
    raw.update(changes)
    return raw


def landscape(args: list, cwd: Path, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "landscape_cli", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout, **kw)  # fmt: skip


def start(args: list, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "landscape_cli", *map(str, args)], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(condition, proc: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the process ended first: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("timed out waiting")
        time.sleep(0.01)


# -- 1. code named in a file ----------------------------------------------------------------------------

GOOD_PY = """from pathlib import Path
from landscape_cli.zoo.models import MLP
Path(__file__).with_name("imported").write_text("yes")
def build(**kwargs):
    Path(__file__).with_name("called").write_text("yes")
    return MLP(**kwargs)
"""


@pytest.fixture
def hostile(tmp_path):
    """Checkpoints whose model spec names code: a shell command, and a file that leaves markers."""
    (tmp_path / "good.py").write_text(GOOD_PY)
    marker = tmp_path / "pwned"
    spec = {"entrypoint": "os:system", "kwargs": {"command": f"touch {marker}"}}
    torch.save(raw_checkpoint(model=spec), tmp_path / "system.pt")
    kwargs = {"widths": [64, 32, 10], "activation": "tanh"}
    torch.save(raw_checkpoint(model={"entrypoint": "good.py:build", "kwargs": kwargs}), tmp_path / "relative.pt")
    torch.save(raw_checkpoint(data={"entrypoint": "good.py:build", "split": "train"}), tmp_path / "data.pt")
    return tmp_path


def ran(directory: Path) -> set[str]:
    return {name for name in ("pwned", "imported", "called") if (directory / name).exists()}


def test_info_shows_entry_points_and_builds_nothing(cli, hostile, monkeypatch):
    monkeypatch.chdir(hostile)
    for name in ("system.pt", "relative.pt", "data.pt"):
        result = cli("info", hostile / name)
        assert result.code == 0, result.err
        assert "not run" in result.out
    assert ran(hostile) == set()


@pytest.mark.parametrize("command", ["spectrum", "surface", "eos", "check", "compare"])
@pytest.mark.parametrize("name", ["system.pt", "relative.pt", "data.pt"])
def test_commands_refuse_code_named_in_a_file(cli, hostile, monkeypatch, command, name):
    monkeypatch.chdir(hostile)
    target = hostile / name
    args = {
        "spectrum": [target, *QUICK],
        "surface": [target, "--samples", "60", "--x", "-1:1:3"],
        "eos": [target, "--samples", "60"],
        "check": [target, "--max-top-eig", "1e-6", "--junit", "report.xml"],
        "compare": [MLP, target, "--max-increase", "0%", "--junit", "report.xml"],
    }[command]
    before = listing(hostile)
    result = cli(command, *args)
    what = "data" if name == "data.pt" else "model"
    assert_user_error(result, f"names the {what} entry point", "--trust-remote-code", f"--{what}")
    assert ran(hostile) == set()
    assert listing(hostile) == before  # no report: a refused gate is not a passed one


def test_naming_the_entry_point_or_trusting_the_file_runs_it(cli, hostile, monkeypatch):
    monkeypatch.chdir(hostile)
    relative = hostile / "relative.pt"
    result = cli("spectrum", relative, *QUICK, "--model", "good.py:build", "--model-arg", "widths=[64,32,10]",
                 "--model-arg", "activation=tanh", "--out", "named.h5")  # fmt: skip
    assert result.code == 0, result.err
    assert ran(hostile) == {"imported", "called"}
    for marker in ("imported", "called"):
        (hostile / marker).unlink()
    result = cli("spectrum", relative, *QUICK, "--trust-remote-code", "--out", "trusted.h5")
    assert result.code == 0, result.err
    assert ran(hostile) == {"called"}  # the module was imported already in this process
    named = h5py.File(hostile / "named.h5", "r").attrs["model_spec"]
    assert "good.py:build" in named


def test_python_api_needs_a_name_or_trust(hostile, monkeypatch):
    monkeypatch.chdir(hostile)
    with pytest.raises(LandscapeError, match="trust-remote-code"):
        ls.load(hostile / "system.pt", device="cpu")
    assert ran(hostile) == set()
    scape = ls.load(hostile / "relative.pt", device="cpu", samples=50, trust_remote_code=True)
    assert scape.n_params == 2410 and ran(hostile) == {"imported", "called"}
    scape = ls.load(hostile / "system.pt", device="cpu", samples=50, model="mlp",
                    model_kwargs={"widths": [64, 32, 10], "activation": "tanh"})  # fmt: skip
    assert scape.n_params == 2410 and not (hostile / "pwned").exists()


def test_subprocess_gate_cannot_be_passed_by_a_file(hostile):
    """os:_exit(0) named by a file made `check` exit 0 with no output: now it is never called."""
    torch.save(raw_checkpoint(model={"entrypoint": "os:_exit", "kwargs": {"status": 0}}), hostile / "exit.pt")
    proc = landscape(["check", hostile / "exit.pt", "--max-top-eig", "1e-6", "--junit", "r.xml"], hostile)
    assert proc.returncode == 2 and "os:_exit" in proc.stderr
    assert not (hostile / "r.xml").exists()


# -- 2. outputs are never inputs; reports follow the overwrite rule ---------------------------------------


def test_junit_never_replaces_the_checkpoint(cli, tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(MLP.read_bytes())
    for extra in ([], ["--overwrite"]):
        result = cli("check", ckpt, "--max-top-eig", "1", "--samples", "60", "--junit", ckpt, *extra)
        assert_user_error(result, "is one of the inputs")
    assert ckpt.read_bytes() == MLP.read_bytes()


def test_junit_follows_the_overwrite_rule(cli, tmp_path):
    report = tmp_path / "report.xml"
    report.write_text("yesterday")
    args = ["check", MLP, "--max-top-eig", "1e6", "--samples", "60", "-q", "--junit", report]
    assert_user_error(cli(*args), "report.xml exists", "--overwrite")
    assert report.read_text() == "yesterday"
    assert cli(*args, "--overwrite").code == 0
    assert "<testsuites" in report.read_text()


def test_compare_junit_is_not_an_input(cli, tmp_path):
    base = tmp_path / "base.h5"
    assert cli("spectrum", MLP, *QUICK, "--out", base).code == 0
    saved = base.read_bytes()
    assert_user_error(cli("compare", base, base, "--junit", base, "--overwrite"), "is one of the inputs")
    assert base.read_bytes() == saved


def test_plot_never_replaces_its_input(cli, tmp_path):
    surf = tmp_path / "s.h5"
    assert cli("surface", MLP, "--samples", "60", "--x", "-1:1:3", "-q", "--out", surf).code == 0
    saved = surf.read_bytes()
    assert_user_error(cli("plot", surf, "--out", surf, "--overwrite", "--format", "png"), "is one of the inputs")
    assert surf.read_bytes() == saved


# -- 3. train --overwrite replaces only a run directory of ours -------------------------------------------


@pytest.mark.parametrize("plant", ["file", "folder", "link"])
def test_train_overwrite_refuses_a_directory_that_is_not_a_run(cli, tmp_path, plant):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.h5").write_bytes(b"looks like a run")
    if plant == "file":
        (project / "model.py").write_text("import torch\n")
    elif plant == "folder":
        (project / "src").mkdir()
    else:
        (project / "data").symlink_to(tmp_path)
    before = listing(project)
    result = cli("train", "--out", project, *TRAIN, "--overwrite")
    assert_user_error(result, "landscape train", "choose another --out")
    assert listing(project) == before
    assert listing(tmp_path) == {"project", *(f"project/{p}" for p in before)}


# -- 4. one writer at a time ----------------------------------------------------------------------------

GATED_PY = """import pathlib, time
from landscape_cli.zoo.models import MLP
GATE = pathlib.Path(__file__).with_name("gate")
class Gated(MLP):
    calls = 0
    def forward(self, x):
        Gated.calls += 1
        while Gated.calls > 1 and GATE.exists():  # the first pass (the fit check) goes through
            time.sleep(0.01)
        return super().forward(x)
def build(**kwargs):
    return Gated(**kwargs)
"""
GATED = ["--model", "gated.py:build", "--model-arg", "widths=[64,32,10]", "--model-arg", "activation=tanh"]


@pytest.fixture
def gate(tmp_path):
    """A model that waits while tmp_path/gate exists: a run held open for as long as a test needs."""
    (tmp_path / "gated.py").write_text(GATED_PY)
    (tmp_path / "gate").write_text("closed")
    return tmp_path / "gate"


def held(path: Path) -> bool:
    try:
        with exclusive([path]):
            return False
    except LandscapeError:
        return True


def test_a_second_surface_writer_is_refused_at_once(tmp_path):
    out = tmp_path / "same.h5"
    with exclusive([out]):  # as another run would hold it
        began = time.monotonic()
        proc = landscape(["surface", MLP, "--samples", "60", "--x", "-1:1:3", "--out", out, "--overwrite"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "another landscape run is writing" in proc.stderr and str(os.getpid()) in proc.stderr
    assert time.monotonic() - began < 60 and listing(tmp_path) == set()


def test_two_concurrent_trainings_into_one_directory(tmp_path, gate):
    first = start(["train", "--out", "run", *TRAIN, *GATED], tmp_path)
    wait_for(lambda: held(tmp_path / "run"), first)
    second = landscape(["train", "--out", "run", *TRAIN, "--overwrite"], tmp_path)
    assert second.returncode == 2 and "another landscape run is writing" in second.stderr
    gate.unlink()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    log = describe_results(tmp_path / "run" / "train.h5")
    assert any(d["name"] == "train/loss" and d["shape"] == [3] for d in log["datasets"])


def test_two_concurrent_surfaces_leave_one_consistent_file(tmp_path, gate):
    """The race of the report (seed 1's directions with seed 0's losses): now one run wins, whole."""
    args = ["surface", MLP, "--2d", "--samples", "200", "--x", "-1:1:5", "--y", "-1:1:5", "--points-per-pass", "1",
            "--out", "same.h5", "--overwrite", "-q"]  # fmt: skip
    first = start([*args, *GATED, "--seed", "0"], tmp_path)
    wait_for(lambda: held(tmp_path / "same.h5"), first)
    second = landscape([*args, "--seed", "1"], tmp_path)
    assert second.returncode == 2 and "another landscape run is writing" in second.stderr
    gate.unlink()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    with h5py.File(tmp_path / "same.h5", "r") as f:
        assert f.attrs["seed"] == 0
        loss = f["train_loss"][()]
    reference = tmp_path / "ref.h5"
    assert landscape([*args[:-4], "--out", reference, "--seed", "0", "-q"], tmp_path).returncode == 0
    with h5py.File(reference, "r") as f:
        np.testing.assert_array_equal(loss, f["train_loss"][()])


# -- 5. an interrupted train --overwrite gives the old run back -------------------------------------------


@pytest.fixture
def old_run(cli, tmp_path, gate):
    assert cli("train", "--out", tmp_path / "run", *TRAIN).code == 0
    return tmp_path / "run", (tmp_path / "run" / "final.pt").read_bytes()


def _replace_and_signal(tmp_path: Path, sig: int) -> subprocess.Popen:
    """Start a `train --overwrite` that holds in its first evaluation, after the old run was moved aside."""
    proc = start(["train", "--out", "run", *TRAIN, *GATED, "--overwrite"], tmp_path)
    wait_for(lambda: any(p.name.endswith(".old") for p in tmp_path.iterdir()), proc)
    time.sleep(0.3)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    (tmp_path / "gate").unlink(missing_ok=True)
    return proc


def test_sigterm_during_train_overwrite_restores_the_old_run(tmp_path, old_run):
    run, final = old_run
    proc = _replace_and_signal(tmp_path, signal.SIGTERM)
    assert proc.returncode == 143
    assert (run / "final.pt").read_bytes() == final
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run.")]  # no backup beside it


def test_sigkill_during_train_overwrite_names_the_backup(cli, tmp_path, old_run):
    run, final = old_run
    proc = _replace_and_signal(tmp_path, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    backups = [p for p in tmp_path.iterdir() if p.name.startswith(".run.") and p.name.endswith(".old")]
    assert len(backups) == 1 and (backups[0] / "final.pt").read_bytes() == final
    line = assert_user_error(cli("train", "--out", run, *TRAIN, "--resume"), "was killed", backups[0].name, "mv")
    restore = line.split("restore it with: ")[1].split("; or keep")[0]
    subprocess.run(restore, shell=True, check=True, cwd=tmp_path)
    assert (run / "final.pt").read_bytes() == final and not backups[0].exists()


# -- 6. links where files of ours go --------------------------------------------------------------------


def test_a_planted_journal_link_is_refused(cli, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "s.h5.partial.points").symlink_to(victim)
    result = cli("surface", MLP, "--samples", "60", "--x", "-1:1:3", "--out", tmp_path / "s.h5", "--overwrite")
    assert_user_error(result, "symbolic link")
    assert victim.read_text() == "precious"


def test_a_planted_training_log_link_is_refused(cli, tmp_path):
    assert cli("train", "--out", tmp_path / "run", *TRAIN, "--save-every", "1").code == 0
    (tmp_path / "run" / "final.pt").unlink()
    victim = tmp_path / "victim.h5"
    victim.write_bytes((tmp_path / "run" / "train.h5").read_bytes())
    (tmp_path / "run" / "train.h5").unlink()
    (tmp_path / "run" / "train.h5").symlink_to(victim)
    saved = victim.read_bytes()
    result = cli("train", "--out", tmp_path / "run", *TRAIN, "--save-every", "1", "--resume")
    assert_user_error(result, "train.h5", "not a regular file")
    assert victim.read_bytes() == saved


# -- 7. resumption is exact -----------------------------------------------------------------------------


def test_resume_from_the_step_0_checkpoint_logs_each_row_once(cli, tmp_path, monkeypatch):
    from landscape_cli.train import loop

    args = ["--data-arg", "limit=80", "--batch-size", "40", "--steps", "4", "--save-every", "2", "--device", "cpu",
            "-q", "--track-sharpness-every", "2", "--track-samples", "40"]  # fmt: skip
    assert cli("train", "--out", tmp_path / "whole", *args).code == 0
    real = loop.Run.checkpoint

    def killed_after_step_0(self, path):
        written = real(self, path)
        if path.name == "step_0000000.pt":
            raise KeyboardInterrupt  # as a kill right after the first checkpoint
        return written

    monkeypatch.setattr(loop.Run, "checkpoint", killed_after_step_0)
    assert cli("train", "--out", tmp_path / "cut", *args).code == 130
    monkeypatch.setattr(loop.Run, "checkpoint", real)
    assert cli("train", "--out", tmp_path / "cut", *args, "--resume").code == 0
    with h5py.File(tmp_path / "whole" / "train.h5") as a, h5py.File(tmp_path / "cut" / "train.h5") as b:
        for table in ("train", "eval", "sharpness"):
            np.testing.assert_array_equal(a[table]["step"][()], b[table]["step"][()])
            np.testing.assert_array_equal(a[table]["loss" if table == "train" else "step"][()],
                                          b[table]["loss" if table == "train" else "step"][()])  # fmt: skip
        assert list(b["eval"]["step"][()]).count(0) == 1


def test_a_sweep_stopped_during_calibration_resumes_as_an_unbroken_one(cli, tmp_path, monkeypatch):
    """The method choice is timed; with the timing fixed, a run stopped before it journaled its choice
    equals an unbroken run point for point, bitwise."""
    from landscape_cli.surface import store, sweep

    def fixed_timing(fn, device):
        return fn(), 1.0

    monkeypatch.setattr(sweep, "timed", fixed_timing)  # a tie: the loop wins, deterministically
    args = [MLP, "--2d", "--x", "-1:1:9", "--y", "-1:1:9", "--samples", "120", "--device", "cpu", "-q"]
    assert cli("surface", *args, "--out", tmp_path / "whole.h5").code == 0
    real, calls = store.Journal.append, []

    def interrupted(this, indices, values):
        real(this, indices, values)
        calls.append(len(indices))
        if len(calls) == 2:  # the first point and the timed loop points, before the batched trial
            raise KeyboardInterrupt

    monkeypatch.setattr(store.Journal, "append", interrupted)
    assert cli("surface", *args, "--out", tmp_path / "cut.h5").code == 130
    monkeypatch.setattr(store.Journal, "append", real)
    assert cli("surface", *args, "--out", tmp_path / "cut.h5", "--resume").code == 0
    with h5py.File(tmp_path / "whole.h5") as a, h5py.File(tmp_path / "cut.h5") as b:
        np.testing.assert_array_equal(a["train_loss"][()], b["train_loss"][()])
        np.testing.assert_array_equal(a["train_acc"][()], b["train_acc"][()])


# -- 8. exit codes: bad input is 2 and is found before any work ------------------------------------------


def _bad_hdf5(tmp_path: Path) -> Path:
    path = tmp_path / "broken.h5"
    with h5py.File(path, "w") as f:
        f.attrs["kind"] = "surface"
        f["xcoordinates"] = np.array(["a", "b"], dtype=h5py.string_dtype())
        f["train_loss"] = np.zeros(3)
    return path


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["plot", "{broken}"], ["broken.h5"]),
        (["spectrum", "{spec}", *QUICK], ["malformed metadata", "model spec"]),
        (["spectrum", MLP, *QUICK, "--out", "{ckpt_dir}/x.h5"], ["cannot write", "not a directory"]),
        (["spectrum", MLP, *QUICK, "--seed", str(1 << 64)], ["--seed"]),
        (["eos", MLP, "--max-iter", "0"], ["--max-iter must be at least 1"]),
        (["eos", MLP, "--tol", "-1"], ["--tol must lie in (0, 1)"]),
        (["plot", "{surf}", "--vmin", "nan"], ["--vmin must be a finite number"]),
        (["plot", "{surf}", "--levels", "1000000"], ["--levels must be between 2 and 200"]),
        (["surface", MLP, "--2d", "--x", "-1:1:100000", "--y", "-1:1:100000"], ["grid of 10,000,000,000 points"]),
        (["surface", MLP, "--x=-1e308:1e308:3"], ["--x", "overflows"]),
        (["surface", MLP, "--radius", "inf"], ["--radius must be positive and finite"]),
        (["spectrum", MLP, *QUICK, "--density", "--density-sigma", "nan"], ["--density-sigma"]),
        (["train", "--out", "r", "--save-every-epochs", "-1"], ["--save-every-epochs must be at least 1"]),
        (["check", MLP, "--max-top-eig", "1", "--config", "{broken_toml}"], ["radius must be a number"]),
    ],
)
def test_bad_input_exits_2_before_any_work(cli, tmp_path, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)
    surf = tmp_path / "s.h5"
    made = cli("surface", MLP, "--samples", "60", "--x", "-1:1:3", "--2d", "--y", "-1:1:3", "-q", "--out", surf)
    assert made.code == 0
    spec = tmp_path / "spec.pt"
    torch.save(raw_checkpoint(model=["mlp", 64]), spec)
    (tmp_path / "a_file").write_text("x")
    toml = tmp_path / "landscape.toml"
    toml.write_text('[check]\nradius = "wide"\n')
    names = {"broken": _bad_hdf5(tmp_path), "spec": spec, "surf": surf, "ckpt_dir": tmp_path / "a_file",
             "broken_toml": toml}  # fmt: skip
    before = listing(tmp_path)
    started = time.monotonic()
    result = cli(*[a.format(**names) if isinstance(a, str) else a for a in args])
    assert_user_error(result, *fragments)
    assert listing(tmp_path) == before
    assert time.monotonic() - started < 20  # refused up front, not after a computation


def test_an_internal_error_is_exit_3_with_the_traceback_behind_debug(cli, tmp_path, monkeypatch):
    import landscape_cli.api as api

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(api, "compute_spectrum", broken)
    monkeypatch.chdir(tmp_path)
    result = cli("spectrum", MLP, *QUICK)
    assert result.code == 3 and "internal error" in result.err and "--debug" in result.err
    assert listing(tmp_path) == set()
    with pytest.raises(ZeroDivisionError):
        from landscape_cli.cli import main

        main(["spectrum", str(MLP), *QUICK, "--debug"])


# -- 9. resource bombs in small files -------------------------------------------------------------------


def test_a_huge_model_spec_costs_nothing(cli, tmp_path):
    bomb = tmp_path / "bomb.pt"
    torch.save(raw_checkpoint(model={"name": "mlp", "kwargs": {"widths": [64, 40000, 40000, 10]}}), bomb)
    assert bomb.stat().st_size < 40_000
    started = time.monotonic()
    assert cli("info", bomb).code == 0
    assert_user_error(cli("spectrum", bomb, *QUICK), "does not fit the model", "(40000, 64)")
    assert time.monotonic() - started < 5


def test_shared_references_are_refused_before_they_expand(cli, tmp_path):
    shared: list = [0]
    for _ in range(26):
        shared = [shared, shared]
    bomb = tmp_path / "bomb.pt"
    torch.save(raw_checkpoint(metrics={"loss": 0.1}, train_state={"log": shared}), bomb)
    assert bomb.stat().st_size < 40_000
    started = time.monotonic()
    assert_user_error(cli("info", bomb), "metadata too large")
    assert time.monotonic() - started < 5


def test_data_past_the_memory_limit_is_refused_and_the_limit_can_be_raised(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bomb = ["spectrum", MLP, *QUICK, "--data", "gaussian-mixture", "--data-arg", "n=400000000", "--data-arg", "dim=64",
            "--data-arg", "classes=10"]  # fmt: skip
    assert_user_error(cli(*bomb), "gaussian-mixture", "more than the memory limit", "--max-memory")
    small = ["spectrum", MLP, *QUICK, "--data", "gaussian-mixture", "--data-arg", "n=500", "--data-arg", "dim=64",
             "--data-arg", "classes=10", "--out", "g.h5"]  # fmt: skip
    assert_user_error(cli(*small, "--max-memory", "64K"), "more than the memory limit of 64 KiB")
    assert cli(*small, "--max-memory", "1G").code == 0


# -- 10. corruption is found, not computed with ----------------------------------------------------------


def test_every_flipped_byte_is_refused_or_changes_nothing():
    """zip CRCs: a flipped bit in the weights was accepted before (107 of 173 files had changed weights)."""
    blob = MLP.read_bytes()
    original = load_checkpoint(MLP)
    rng = np.random.default_rng(0)
    refused = same = 0
    for at in rng.choice(len(blob), size=400, replace=False):
        damaged = bytearray(blob)
        damaged[at] ^= 1 << int(rng.integers(8))
        path = Path(f"/tmp/landscape-flip-{os.getpid()}.pt")
        path.write_bytes(bytes(damaged))
        try:
            ckpt = load_checkpoint(path)
        except LandscapeError:
            refused += 1
            continue
        finally:
            path.unlink()
        assert ckpt.state_dict.keys() == original.state_dict.keys()
        for key, tensor in original.state_dict.items():
            assert torch.equal(ckpt.state_dict[key], tensor), (at, key)
        assert (ckpt.model, ckpt.data, ckpt.optimizer["hparams"]) == (
            original.model,
            original.data,
            original.optimizer["hparams"],
        )
        same += 1
    assert refused > 350 and refused + same == 400  # the rest fell in zip fields nothing reads


def test_nonfinite_stored_directions_are_refused(cli, tmp_path):
    first = tmp_path / "a.h5"
    assert cli("surface", MLP, "--samples", "60", "--x", "-1:1:3", "-q", "--out", first).code == 0
    with h5py.File(first, "a") as f:
        f["directions/d1/layers.0.weight"][0, 0] = np.nan
    result = cli("surface", MLP, "--samples", "60", "--dirs", f"file:{first}", "-q", "--out", tmp_path / "b.h5")
    assert_user_error(result, "direction 1", "NaN or infinite")
    assert not (tmp_path / "b.h5").exists()


@pytest.mark.parametrize("how", ["external link", "virtual dataset"])
def test_results_reaching_into_other_files_are_refused(cli, tmp_path, how):
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:
        f["train_loss"] = np.arange(9.0).reshape(3, 3)
    trap = tmp_path / "trap.h5"
    with h5py.File(trap, "w") as f:
        f["xcoordinates"] = f["ycoordinates"] = np.linspace(-1, 1, 3)
        if how == "external link":
            f["train_loss"] = h5py.ExternalLink(str(secret), "/train_loss")
        else:
            layout = h5py.VirtualLayout(shape=(3, 3), dtype="f8")
            layout[...] = h5py.VirtualSource(str(secret), "train_loss", shape=(3, 3))
            f.create_virtual_dataset("train_loss", layout)
    for command in (["plot", trap, "--out", tmp_path / "x.png"], ["info", trap]):
        assert_user_error(cli(*command), "landscape reads no file you did not name")
    assert not (tmp_path / "x.png").exists()


def test_a_damaged_global_heap_is_refused_instead_of_hanging(cli, tmp_path):
    """Zeroed bytes in an attribute heap sent libhdf5 into an endless loop (found by the fuzz harness)."""
    good = tmp_path / "s.h5"
    assert cli("spectrum", MLP, *QUICK, "--out", good).code == 0
    blob = bytearray(good.read_bytes())
    at = blob.find(b"GCOL")
    assert at > 0
    end = at + 16
    while blob[end : end + 2] != b"\x00\x00":  # to the free-space entry after the last object
        end += 16 + ((int.from_bytes(blob[end + 8 : end + 16], "little") + 7) & ~7)
    blob[end + 8 : end + 16] = bytes(8)  # a free-space entry of size 0
    bad = tmp_path / "bad.h5"
    bad.write_bytes(bytes(blob))
    proc = landscape(["info", bad], tmp_path, timeout=60)
    assert proc.returncode == 2 and "damaged" in proc.stderr


# -- 11. hangs, leftovers, escapes -----------------------------------------------------------------------


def test_info_on_a_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.pt")
    proc = landscape(["info", tmp_path / "pipe.pt"], tmp_path, timeout=60)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr


def test_temporary_files_of_a_killed_run_are_removed_by_the_next(tmp_path):
    from landscape_cli.atomic import atomic_path

    dead = subprocess.run(["true"]).args and subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".out.h5.{dead.pid}.abc123.tmp"
    stale.write_bytes(b"half a file")
    mine = tmp_path / f".out.h5.{os.getpid()}.xyz.tmp"  # a live process's: left alone
    mine.write_bytes(b"in progress")
    with atomic_path(tmp_path / "out.h5") as tmp:
        tmp.write_bytes(b"done")
    assert listing(tmp_path) == {"out.h5", mine.name}


def test_a_failed_fresh_sweep_leaves_no_partial(cli, tmp_path, monkeypatch):
    from landscape_cli.surface import sweep

    def fails(self, *args, **kwargs):
        raise LandscapeError("the data ran out")

    monkeypatch.setattr(sweep.Sweep, "run", fails)
    out = tmp_path / "s.h5"
    assert_user_error(cli("surface", MLP, "--samples", "60", "--x", "-1:1:3", "--out", out), "ran out")
    assert listing(tmp_path) == set()


def test_escapes_and_markup_from_a_file_are_shown_not_sent(cli, tmp_path):
    path = tmp_path / "odd.pt"
    torch.save(raw_checkpoint(created="\x1b]0;pwned\x07", tool_version="[link=file:///etc/shadow]x[/link]"), path)
    result = cli("info", path)
    assert result.code == 0
    assert "\x1b" not in result.out and "\x07" not in result.out
    assert "\\x1b]0;pwned\\x07" in result.out
    assert "[link=file:///etc/shadow]x[/link]" in result.out


# -- the fuzz harness -----------------------------------------------------------------------------------


def test_fuzz_harness(tmp_path, capsys):
    """Every bad option of every command and 200 seeded damaged or hostile files in CI (`python -m
    tests.fuzz --cases 5000` runs thousands)."""
    from . import fuzz

    os.environ.setdefault("LANDSCAPE_MAX_MEMORY", "2G")
    outcomes, codes = fuzz.fuzz(int(os.environ.get("FUZZ_CASES", "200")), 0, tmp_path)
    bad = [f"{o.name}: {'; '.join(o.violations)} ({o.err.strip()[:200]})" for o in outcomes if o.violations]
    assert not bad, "\n".join(bad[:20])
    assert set(codes) <= {0, 2} and codes[2] > len(outcomes) // 2
