"""`landscape check`: gates pass and fail at the right values, exit codes, JUnit XML, config files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from .conftest import SAMPLE_DIR, assert_user_error

CKPT = SAMPLE_DIR / "mlp_digits.pt"
FAST = ["--samples", "200", "--device", "cpu", "--quiet"]
OPTION = {
    "max_top_eig": "--max-top-eig",
    "min_bottom_eig": "--min-bottom-eig",
    "max_trace": "--max-trace",
    "max_eos_ratio": "--max-eos-ratio",
    "max_surface_rise": "--max-surface-rise",
}


def run(cli, *args):
    result = cli("check", CKPT, *FAST, *args, "--json")
    assert result.code in (0, 1), result.err
    return result.code, json.loads(result.out)


@pytest.fixture(scope="module")
def measured(cli) -> dict[str, float]:
    """Every gate once with generous limits: the measured values."""
    args = ["--max-top-eig", "1e9", "--min-bottom-eig", "-1e9", "--max-trace", "1e9", "--max-eos-ratio", "1e9"]
    code, out = run(cli, *args, "--max-surface-rise", "1e9")
    assert code == 0 and out["passed"]
    return {g["name"]: g["value"] for g in out["gates"]}


@pytest.mark.parametrize("gate", list(OPTION))
def test_each_gate_passes_just_inside_and_fails_just_outside(cli, measured, gate: str) -> None:
    value = measured[gate]
    inside, outside = (value + 1e-6 * abs(value), value - 1e-6 * abs(value))
    if gate.startswith("min"):
        inside, outside = outside, inside
    code, out = run(cli, OPTION[gate], repr(inside))
    assert code == 0 and out["gates"][0]["passed"] and out["gates"][0]["value"] == value  # deterministic
    code, out = run(cli, OPTION[gate], repr(outside))
    assert code == 1 and not out["passed"] and not out["gates"][0]["passed"]
    assert out["gates"][0]["limit"] == pytest.approx(outside)


def test_values_and_their_uncertainties(measured) -> None:
    from landscape_cli import SpectrumOptions, compute_spectrum, load_checkpoint, problem_from_checkpoint

    problem = problem_from_checkpoint(load_checkpoint(CKPT), device="cpu", samples=200)
    top = compute_spectrum(problem, SpectrumOptions(top_k=1, tol=1e-8)).lanczos.top.values[0]
    assert measured["max_top_eig"] == pytest.approx(top, rel=1e-4)  # within the gate's Lanczos tolerance
    assert measured["min_bottom_eig"] < 0  # this checkpoint has negative curvature
    assert measured["max_eos_ratio"] == pytest.approx(measured["max_top_eig"] / 38.0, rel=1e-9)  # sgd momentum 0.9
    assert 0 < measured["max_surface_rise"] < 1


def test_junit_has_one_case_per_gate_and_a_failure_for_each_failed_gate(cli, tmp_path, measured) -> None:
    junit = tmp_path / "gates.xml"
    args = ["--max-top-eig", "1e-3", "--max-trace", "1e9", "--min-bottom-eig", "-1e9", "--junit", junit]
    code, _ = run(cli, *args)
    assert code == 1
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["max_top_eig", "min_bottom_eig", "max_trace"]
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["max_top_eig"] and suite.get("failures") == "1" and suite.get("tests") == "3"
    assert f"{measured['max_top_eig']:.6g}" in cases[0].find("failure").get("message")


def test_config_file_precedence(cli, tmp_path, monkeypatch, measured) -> None:
    top = measured["max_top_eig"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text(f"[tool.landscape.check]\nmax-top-eig = {top * 2}\nsamples = 200\n")
    code, out = run(cli)
    assert code == 0 and out["config"].endswith("pyproject.toml") and out["gates"][0]["limit"] == top * 2
    code, out = run(cli, "--max-top-eig", repr(top / 2))  # the command line wins
    assert code == 1 and out["gates"][0]["limit"] == top / 2
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "landscape.toml").write_text(f"[check]\nmax-top-eig = {top / 3}\n")  # the nearer file wins
    monkeypatch.chdir(sub)
    code, out = run(cli)
    assert code == 1 and out["config"].endswith("landscape.toml") and out["gates"][0]["limit"] == top / 3


def test_bad_input(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert_user_error(cli("check", CKPT, *FAST), "no gate given")
    (tmp_path / "landscape.toml").write_text("[check]\nmax-top-egg = 1\n")
    assert_user_error(cli("check", CKPT, *FAST), "unknown key", "max_top_egg")
    (tmp_path / "landscape.toml").write_text("[check\n")
    assert_user_error(cli("check", CKPT, *FAST), "not valid TOML")
    (tmp_path / "landscape.toml").unlink()
    assert_user_error(cli("check", tmp_path / "missing.pt", "--max-top-eig", "1", *FAST), "not found")
    assert_user_error(cli("check", CKPT, "--max-surface-rise", "1", "--radius", "0", *FAST), "--radius")
    assert_user_error(cli("check", CKPT, "--config", tmp_path / "nope.toml", "--max-trace", "1", *FAST), "nope.toml")
