"""The CI recipe in the README runs as written: the shell example passes on the samples and leaves its
JUnit report, and the GitHub Actions workflow calls that same script."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "ci" / "sharpness.sh"


def run_recipe(script: Path, cwd: Path, reports: Path) -> subprocess.CompletedProcess:
    """The script as CI runs it: `landscape` on the PATH (this interpreter's), reports where asked."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "REPORTS": str(reports), "PATH": path}
    return subprocess.run(["bash", str(script)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_shell_recipe_passes_on_the_samples_and_writes_junit(tmp_path) -> None:
    done = run_recipe(SCRIPT, tmp_path, tmp_path / "reports")
    assert done.returncode == 0, done.stderr
    assert "3 of 3 gates passed" in done.stdout and "none sharper than allowed" in done.stdout
    cases = ET.parse(tmp_path / "reports" / "sharpness-junit.xml").getroot().iter("testcase")
    assert len(list(cases)) == 3
    cases = ET.parse(tmp_path / "reports" / "compare-junit.xml").getroot().iter("testcase")
    assert [c.get("name") for c in cases] == ["top", "surface"]


def test_shell_recipe_fails_when_the_candidate_is_too_sharp(tmp_path) -> None:
    """A copy of the script beside a stricter config (the script reads the config beside it)."""
    (tmp_path / "landscape.toml").write_text("[check]\nmax-top-eig = 0.1\n")
    samples = f'samples="{ROOT / "sample_checkpoints"}"'
    script = tmp_path / "sharpness.sh"
    script.write_text(SCRIPT.read_text().replace('samples="$here/../../sample_checkpoints"', samples))
    done = run_recipe(script, tmp_path, tmp_path)
    assert done.returncode == 1 and "FAIL" in done.stdout and "0 of 1 gates passed" in done.stdout


def test_workflow_runs_the_shell_recipe() -> None:
    workflow = (ROOT / "examples" / "ci" / "github-actions-sharpness.yml").read_text()
    assert "bash examples/ci/sharpness.sh" in workflow and "pip install torch==2.13.0" in workflow
