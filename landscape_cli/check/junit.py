"""JUnit XML, which CI systems display: one test case per gate (check) or per measurement (compare),
a failure element for each that failed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_path
from .compare import Delta
from .gates import GateResult


@dataclass
class Case:
    name: str
    passed: bool
    message: str


def gate_cases(results: list[GateResult]) -> list[Case]:
    cases = []
    for r in results:
        sign = "<=" if r.bound == "max" else ">="
        message = f"{r.quantity} = {r.value:.6g} (limit {sign} {r.limit:g})"
        if r.uncertainty is not None:
            message += f", {r.uncertainty_kind} {r.uncertainty:.2g}"
        cases.append(Case(r.name, r.passed, message))
    return cases


def delta_cases(deltas: list[Delta]) -> list[Case]:
    cases = []
    for d in deltas:
        message = f"{d.quantity}: {d.base:.6g} -> {d.new:.6g}, {100 * d.sharper_by:+.2f}% sharper"
        if d.limit is not None:
            message += f" (limit {100 * d.limit:.3g}%)"
        cases.append(Case(d.measure, d.passed, message))
    return cases


def junit_xml(cases: list[Case], suite: str, seconds: float, classname: str = "landscape.check") -> str:
    failures = sum(not c.passed for c in cases)
    root = ET.Element("testsuites", tests=str(len(cases)), failures=str(failures), time=f"{seconds:.3f}")
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures),
                         errors="0", time=f"{seconds:.3f}")  # fmt: skip
    for c in cases:
        case = ET.SubElement(node, "testcase", classname=classname, name=c.name, time="0")
        if not c.passed:
            ET.SubElement(case, "failure", message=c.message, type="SharpnessGate").text = c.message
        ET.SubElement(case, "system-out").text = c.message
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def write_junit(path: Path, cases: list[Case], suite: str, seconds: float, classname: str = "landscape.check") -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(junit_xml(cases, suite, seconds, classname))
