"""A new user's first hour: set-up, predictable files, honest compare, fast start, help text, the training
display, and the small things (issue "The first hour of a new user")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch

from landscape_cli.checkpoint import load_checkpoint

from .conftest import SAMPLE_DIR, assert_user_error, listing

ROOT = Path(__file__).resolve().parents[1]
MLP, SSAM = SAMPLE_DIR / "mlp_digits.pt", SAMPLE_DIR / "mlp_digits_ssam.pt"
QUICK = ["--samples", "100", "--max-iter", "20", "--top-k", "1", "--hvp", "double-backward", "-q"]
ENV = {k: v for k, v in os.environ.items() if k != "LANDSCAPE_DEBUG"}


def python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


# -- 1. two commands; CI runs the second ------------------------------------------------------------------


def test_readme_starts_with_the_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text().splitlines()
    block = readme[readme.index("```bash") + 1 : readme.index("```bash") + 3]
    assert [line.split("#")[0].strip() for line in block] == ["make demo", "make test"]
    extract = subprocess.run(
        ["bash", "-c", "awk '/^```bash/{block++; next} /^```/{if (block == 1) exit} block == 1 && NF "
         "{n++; if (n == 2) print}' README.md | sed 's/[[:space:]]*#.*$//'"],  # the line .ci/run takes
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert extract.stdout.strip() == "make test"
    assert "awk '/^```bash/" in (ROOT / ".ci" / "run").read_text()


def test_make_installs_pinned_torch_first_then_runs(tmp_path):
    env = {k: v for k, v in ENV.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # also under `make test`
    dry = subprocess.run(["make", "-n", "-B", "demo", "test"], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=env)  # fmt: skip
    lines = [line for line in dry.stdout.splitlines() if line.strip() and not line.startswith("make")]
    torch_line = next(i for i, line in enumerate(lines) if "pip install" in line and "torch==2.13.0" in line)
    project_line = next(i for i, line in enumerate(lines) if "-e '.[test]'" in line)
    assert lines[0].startswith("python3 -m venv .venv") and torch_line < project_line
    assert "torch==2.13.0" in lines[project_line]  # named again, so nothing pulls another torch
    assert any("landscape spectrum sample_checkpoints/mlp_digits.pt" in line for line in lines)
    assert lines[-1].endswith("python -m pytest")
    cuda = subprocess.run(["make", "-n", "-B", "install", "TORCH_INDEX=https://download.pytorch.org/whl/cu126"],
                          cwd=ROOT, capture_output=True, text=True, check=True, env=env)  # fmt: skip
    assert "--index-url https://download.pytorch.org/whl/cu126 torch==2.13.0" in cuda.stdout


# -- 2 and 8. files go beside their input -----------------------------------------------------------------


def test_eos_results_go_beside_the_checkpoint_or_into_the_run(cli, tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "m" / "sam.pt").write_bytes((SAMPLE_DIR / "mlp_digits_sam.pt").read_bytes())
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert cli("eos", tmp_path / "m" / "sam.pt", "--samples", "100", "-q").code == 0
    run = tmp_path / "run"
    assert cli("train", "--out", run, "--steps", "4", "--data-arg", "limit=80", "--track-sharpness-every", "2",
               "--track-samples", "40", "-q").code == 0  # fmt: skip
    assert cli("eos", run, "-q").code == 0
    assert listing(tmp_path / "m") == {"sam.pt", "sam.eos.h5"}
    assert "eos.h5" in listing(run) and listing(tmp_path / "elsewhere") == set()


# -- 3 and 4. compare ----------------------------------------------------------------------------------------


def test_compare_takes_model_and_data_options_for_plain_state_dicts(cli, tmp_path):
    for source, name in ((MLP, "a.pt"), (SSAM, "b.pt")):
        torch.save(load_checkpoint(source).state_dict, tmp_path / name)
    args = ["compare", tmp_path / "a.pt", tmp_path / "b.pt", "--samples", "200", "--what", "top", "--json", "-q"]
    assert_user_error(cli(*args), "a.pt does not record its model", "--model")
    model = ["--model", "mlp", "--model-arg", "widths=[64,32,10]", "--model-arg", "activation=tanh", "--data", "digits"]
    plain = cli(*args, *model)
    assert plain.code == 0, plain.err
    native = cli("compare", MLP, SSAM, "--samples", "200", "--what", "top", "--json", "-q")
    # integer labels mean cross-entropy, so no --loss is needed, and the numbers are the native checkpoints'
    assert json.loads(plain.out)["deltas"][0]["base"] == pytest.approx(json.loads(native.out)["deltas"][0]["base"])


@pytest.fixture(scope="module")
def surfaces(tmp_path_factory, cli):
    d = tmp_path_factory.mktemp("compare_files")
    grid = ["--samples", "100", "--x", "-1:1:5", "-q"]
    assert cli("surface", MLP, *grid, "--out", d / "a1.h5").code == 0
    assert cli("surface", SSAM, *grid, "--dirs", f"file:{d / 'a1.h5'}", "--out", d / "b1.h5").code == 0
    assert cli("surface", MLP, *grid, "--2d", "--y", "-1:1:5", "--out", d / "a2.h5").code == 0
    assert cli("surface", SSAM, *grid, "--seed", "1", "--out", d / "c1.h5").code == 0
    assert cli("surface", SSAM, "--samples", "50", "--x", "-1:1:5", "-q", "--out", d / "d1.h5").code == 0
    return d


@pytest.mark.parametrize(
    ("new", "differs"),
    [
        ("a2.h5", ["dims 1 vs 2", "directions random (seed 0, filter, biasbn) vs random (seed 0, filter, biasbn) x 2"]),
        ("c1.h5", ["directions random (seed 0, filter, biasbn) vs random (seed 1, filter, biasbn)"]),
        ("d1.h5", ["samples 100 vs 50"]),
    ],
)
def test_compare_of_files_measured_otherwise_is_refused_unless_forced(cli, surfaces, new, differs):
    result = cli("compare", surfaces / "a1.h5", surfaces / new)
    assert_user_error(result, "not measured alike", "--force", *differs)
    forced = cli("compare", surfaces / "a1.h5", surfaces / new, "--force", "--json")
    assert forced.code == 0
    assert forced.err.startswith("warning: a1.h5 and") and "not measured alike" in forced.err
    assert json.loads(forced.out)["warnings"]


def test_compare_of_files_on_the_same_directions_needs_no_force(cli, surfaces):
    """ssam's line on sgd's directions (--dirs file:) is measured alike: same recipe, data and radius."""
    result = cli("compare", surfaces / "a1.h5", surfaces / "b1.h5", "--json")
    assert result.code == 0 and result.err == ""


# -- 5. a user model whose output does not fit ----------------------------------------------------------------

SHAPES_PY = """import torch
class Wrong(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.lin = torch.nn.Linear(64, 10)
    def forward(self, x):
        out = self.lin(x.flatten(1))
        if self.kind == "extra":
            return out[:, None, :]
        if self.kind == "scalar":
            return out.sum()
        return out.mean(1)
def build(kind):
    return Wrong(kind)
"""


@pytest.mark.parametrize(
    ("kind", "fragments"),
    [
        ("extra", ["shape (2, 1, 10)", "(batch, classes)"]),
        ("scalar", ["shape ()", "(batch, classes)"]),
        ("flat", ["shape (2,)", "(batch, classes)"]),
    ],
)
def test_a_model_whose_output_does_not_fit_the_loss_is_bad_input(cli, tmp_path, monkeypatch, kind, fragments):
    (tmp_path / "shapes.py").write_text(SHAPES_PY)
    torch.save(torch.nn.Linear(64, 10).state_dict(), tmp_path / "w.pt")
    state = {f"lin.{k}": v for k, v in torch.load(tmp_path / "w.pt", weights_only=True).items()}
    torch.save(state, tmp_path / "w.pt")
    monkeypatch.chdir(tmp_path)
    result = cli("spectrum", "w.pt", "--model", "shapes.py:build", "--model-arg", f"kind={kind}", "--data", "digits",
                 *QUICK)  # fmt: skip
    assert_user_error(result, *fragments)
    assert result.code == 2


# -- 6. pipes and CI logs ---------------------------------------------------------------------------------------


def test_values_are_never_cut_or_wrapped_in_a_pipe(cli):
    result = cli("info", SSAM)
    sha = load_checkpoint(SSAM).sha256
    assert sha in result.out  # whole, on one line
    line = next(line for line in result.out.splitlines() if "optimizer" in line)
    assert '"has_state": true}' in line  # the whole JSON value on its row


# -- 7. start-up --------------------------------------------------------------------------------------------------


def test_help_version_and_info_of_a_results_file_load_no_torch(cli, tmp_path):
    h5 = tmp_path / "s.h5"
    assert cli("spectrum", MLP, *QUICK, "--no-plot", "--out", h5).code == 0
    code = (
        "import sys, io, contextlib\n"
        "from landscape_cli.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [main(['--version']), main(['--help']), main(['spectrum', '--help']),\n"
        f"             main(['info', {str(h5)!r}])]\n"
        "print(codes, 'torch' in sys.modules, 'matplotlib' in sys.modules)\n"
    )  # fmt: skip
    done = python(code)
    assert done.stdout.strip() == "[0, 0, 0, 0] False False", done.stderr


def test_importing_the_package_loads_nothing_heavy_and_changes_no_global_state():
    done = python(  # the libraries first (scipy adds warning filters of its own), then ours: nothing may change
        "import sys, warnings, matplotlib, scipy.interpolate, h5py\n"
        "backend = matplotlib.get_backend(); filters = list(warnings.filters)\n"
        "import landscape_cli, landscape_cli.plotting\n"
        "print('torch' in sys.modules, matplotlib.get_backend() == backend, warnings.filters == filters)"
    )
    assert done.stdout.strip() == "False True True", done.stderr
    done = python("import sys, landscape_cli; print('torch' in sys.modules, landscape_cli.__version__)")
    assert done.stdout.split()[0] == "False"


# -- 9. help text -------------------------------------------------------------------------------------------------


def test_help_text(cli):
    root = cli("-h")
    assert root.code == 0 and "edge of stability" in root.out and "--install-completion" in root.out
    assert "3 internal error" in root.out
    check = cli("check", "--help").out
    assert "[tool.landscape.check]" in check  # brackets shown, not swallowed as markup
    assert "<bool>" not in check and "CHECKPOINT" in check and "{checkpoint}" not in check.lower()
    assert "KEY=VALUE" in check and "<list[str]>" not in check
    surface = cli("surface", "-h").out
    assert "Hessian" not in surface.split("--batch-size")[1].split("--")[0]


# -- 11. the training display ----------------------------------------------------------------------------------


def test_plain_training_lines_name_step_0_and_show_sharpness_only_where_measured(cli, tmp_path):
    result = cli("train", "--out", tmp_path / "run", "--steps", "6", "--data-arg", "limit=80", "--batch-size", "40",
                 "--eval-every", "2", "--track-sharpness-every", "4", "--track-samples", "40")  # fmt: skip
    assert result.code == 0
    lines = [line for line in result.err.splitlines() if re.match(r"step \d+ epoch", line)]
    assert lines[0].startswith("step 0 epoch 0 ") and "sharpness" in lines[0]
    measured = {int(line.split()[1]): "sharpness" in line for line in lines}
    assert measured == {0: True, 2: False, 4: True, 6: False}


# -- 12. smaller things ---------------------------------------------------------------------------------------


def test_info_of_a_run_directory(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--out", run, "--steps", "2", "--data-arg", "limit=80", "--save-every", "1", "-q").code == 0
    summary = json.loads(cli("info", run, "--json").out)
    assert summary["kind"] == "run directory"
    assert summary["checkpoints"] == ["final.pt", "step_0000000.pt", "step_0000001.pt"]
    assert summary["config"]["steps"] == 2 and summary["logged_rows"]["train"] == 2
    assert set(summary["last_evaluation"]) >= {"step", "train_loss", "test_loss"}


def test_info_of_something_else_says_what_it_reads(cli, tmp_path):
    png = tmp_path / "figure.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    line = assert_user_error(cli("info", png), "neither a checkpoint", "HDF5 results file")
    assert "torch.save" in line and "re-save" not in line


def test_plot_of_a_checkpoint_says_it_is_no_results_file(cli):
    line = assert_user_error(cli("plot", MLP), "mlp_digits.pt", "not a readable HDF5 file")
    assert "signature" in line and "Unable to" not in line


def test_more_samples_than_there_are_is_said(cli, tmp_path):
    result = cli("spectrum", MLP, *QUICK[2:], "--samples", "100000", "--no-plot", "--out", tmp_path / "s.h5")
    assert result.code == 0
    assert "warning: --samples 100,000 is more than the 1,438 there are; using all of them" in result.err


def test_missing_model_is_reported_before_an_existing_output(cli, tmp_path):
    torch.save(load_checkpoint(MLP).state_dict, tmp_path / "bare.pt")
    (tmp_path / "bare.spectrum.h5").write_text("an old result")
    assert_user_error(cli("spectrum", tmp_path / "bare.pt", *QUICK), "does not record its model", "--model")


def test_reused_directions_are_named_as_such(cli, surfaces, tmp_path):
    result = cli("surface", SSAM, "--samples", "100", "--dirs", f"file:{surfaces / 'a1.h5'}", "--out",
                 tmp_path / "x.h5")  # fmt: skip
    assert "directions: d1 random from a1.h5" in result.out


def test_forward_mode_hvps_leave_no_deprecation_warnings_in_the_users_suite():
    done = python(
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import landscape_cli as ls\n"
        f"    s = ls.load({str(MLP)!r}, samples=50, device='cpu', hvp='jvp')\n"
        "    s.spectrum(top_k=1, max_iter=5)\n"
        "print(sum(issubclass(w.category, DeprecationWarning) for w in caught))"
    )
    assert done.stdout.strip() == "0", done.stderr


def test_loss_follows_the_targets_when_not_recorded(cli, tmp_path):
    torch.save(load_checkpoint(MLP).state_dict, tmp_path / "bare.pt")
    result = cli("spectrum", tmp_path / "bare.pt", "--model", "mlp", "--model-arg", "widths=[64,32,10]",
                 "--model-arg", "activation=tanh", "--data", "digits", *QUICK, "--no-plot", "--json")  # fmt: skip
    assert result.code == 0 and json.loads(result.out)["problem"]["loss"] == "cross_entropy"
    with h5py.File(tmp_path / "bare.spectrum.h5") as f:
        assert f.attrs["loss_function"] == "cross_entropy"


def test_progress_in_a_log_is_a_plain_line_at_a_modest_rate(monkeypatch, capsys) -> None:
    """Not a terminal: nothing for short work, then one plain line per interval (a cluster job's log)."""
    from landscape_cli import progress

    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    tracker = progress.LogTracker(interval=30.0)
    tracker.start("Lanczos", total=200)
    for step, now in enumerate([101.0, 110.0, 131.0, 140.0, 162.0], start=1):
        clock[0] = now
        tracker.update(step)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["landscape: Lanczos 3/200 (0m31s)", "landscape: Lanczos 5/200 (1m02s)"]
