"""`landscape compare`: identical inputs give zero deltas, the gate flips at the measured change, NEW's
surface is swept on BASE's directions, results files compare, and bad input exits 2."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

import landscape_cli as ls

from .conftest import SAMPLE_DIR, assert_user_error

BASE = SAMPLE_DIR / "mlp_digits.pt"
NEW = SAMPLE_DIR / "mlp_digits_ssam.pt"
FAST = ["--samples", "200", "--device", "cpu", "--quiet"]


def compare_json(cli, *args) -> tuple[int, dict]:
    result = cli("compare", *args, *FAST, "--json")
    assert result.code in (0, 1), result.err
    return result.code, json.loads(result.out)


@pytest.fixture(scope="module")
def measured(cli) -> dict[str, dict]:
    code, out = compare_json(cli, BASE, NEW, "--what", "top,bottom,trace,eos,surface")
    assert code == 0 and out["passed"]
    return {d["measure"]: d for d in out["deltas"]}


def test_identical_checkpoints_give_zero_deltas_and_exit_0(cli) -> None:
    code, out = compare_json(cli, BASE, BASE, "--what", "top,bottom,trace,eos,surface", "--max-increase", "0%")
    assert code == 0 and out["passed"]
    assert [d["measure"] for d in out["deltas"]] == ["top", "bottom", "trace", "eos", "surface"]
    for d in out["deltas"]:
        assert d["base"] == d["new"] and d["change"] == 0.0 and d["sharper_by"] == 0.0, d


def test_deltas_are_the_differences_of_the_measurements(cli, measured) -> None:
    for measure, d in measured.items():
        assert d["change"] == d["new"] - d["base"]
        sign = -1 if measure == "bottom" else 1  # a more negative bottom eigenvalue is sharper
        assert d["sharper_by"] == pytest.approx(sign * (d["new"] - d["base"]) / abs(d["base"]), rel=1e-12)
    # the SSAM sample is sharper than the SGD one on every measure (a fact of these two checkpoints)
    assert all(d["sharper_by"] > 0 for d in measured.values())


@pytest.mark.parametrize("measure", ["top", "surface"])
def test_max_increase_fails_just_below_the_measured_change_and_passes_just_above(cli, measured, measure) -> None:
    change = measured[measure]["sharper_by"]
    code, out = compare_json(cli, BASE, NEW, "--what", measure, "--max-increase", repr(change * (1 + 1e-6)))
    assert code == 0 and out["deltas"][0]["new"] == measured[measure]["new"]  # deterministic
    code, out = compare_json(cli, BASE, NEW, "--what", measure, "--max-increase", f"{100 * change * (1 - 1e-6)!r}%")
    assert code == 1 and not out["passed"] and out["deltas"][0]["limit"] == pytest.approx(change * (1 - 1e-6))
    text = cli("compare", BASE, NEW, "--what", measure, *FAST, "--max-increase", "0%")
    assert text.code == 1 and "FAIL" in text.out and "1 of 1 sharper than allowed" in text.out


def test_new_is_swept_on_bases_directions(tmp_path) -> None:
    """NEW's surface rise equals a sweep of NEW on the directions BASE's sweep drew (seeded on BASE)."""
    result = ls.compare(BASE, NEW, what="surface", samples=200, device="cpu")
    base = ls.load(BASE, samples=200, device="cpu")
    base_check = base.check(max_surface_rise=1e9, surface_out=tmp_path / "base.h5")
    new = ls.load(NEW, samples=200, device="cpu")
    on_base_dirs = new.check(max_surface_rise=1e9, surface_dirs=f"file:{tmp_path / 'base.h5'}")
    on_own_dirs = new.check(max_surface_rise=1e9)
    delta = result.delta("surface")
    assert delta.base == base_check.value("max_surface_rise")
    assert delta.new == on_base_dirs.value("max_surface_rise")
    assert delta.new != on_own_dirs.value("max_surface_rise")  # filter normalization follows the weights


def test_results_files(cli, tmp_path) -> None:
    for name, ckpt in (("a", BASE), ("b", NEW)):
        args = ("spectrum", ckpt, "--top-k", "1", "--trace", "--samples", "200", "--device", "cpu", "--quiet")
        assert cli(*args, "--no-plot", "--out", tmp_path / f"{name}.h5").code == 0
    code, out = compare_json(cli, tmp_path / "a.h5", tmp_path / "b.h5")
    assert code == 0 and [d["measure"] for d in out["deltas"]] == ["top", "trace"]
    code, same = compare_json(cli, tmp_path / "a.h5", tmp_path / "a.h5", "--max-increase", "0")
    assert code == 0 and all(d["change"] == 0 for d in same["deltas"])
    junit = tmp_path / "compare.xml"
    assert cli("compare", tmp_path / "a.h5", tmp_path / "b.h5", "--max-increase", "5%", "--junit", junit).code == 1
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert list(cases) == ["top", "trace"]  # one per measurement; trace is 6.9% sharper, top 3.3%
    assert cases["top"].find("failure") is None and cases["trace"].find("failure") is not None
    result = ls.compare(tmp_path / "a.h5", tmp_path / "b.h5", what=["top"], max_increase=0.0)
    assert not result.passed and result.delta("top").base == out["deltas"][0]["base"]
    with pytest.raises(AssertionError, match=r"top Hessian eigenvalue .* sharper, more than 0%"):
        result.assert_passed()


def test_bad_input(cli, tmp_path) -> None:
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    assert cli("spectrum", BASE, *FAST, "--top-k", "1", "--no-plot", "--out", tmp_path / "s.h5").code == 0
    cases = [
        ((BASE, tmp_path / "missing.pt"), "not found"),
        ((BASE, tmp_path / "corrupt.pt"), "corrupt.pt"),
        ((BASE, NEW, "--max-increase", "ten"), "--max-increase"),
        ((BASE, NEW, "--max-increase", "-5%"), "non-negative"),
        ((BASE, NEW, "--what", "sharpness"), "--what"),
        ((BASE, NEW, "--radius", "0"), "--radius"),
        ((tmp_path / "s.h5", BASE), "two checkpoints or two results files"),
        ((tmp_path / "s.h5", tmp_path / "s.h5", "--what", "surface"), "holds no surface"),
    ]
    for args, fragment in cases:
        assert_user_error(cli("compare", *args, *FAST), fragment)
