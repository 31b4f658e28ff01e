"""JUnit XML, which CI systems display: one test case per gate, a failure element when it failed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..atomic import atomic_path
from .gates import GateResult


def junit_xml(results: list[GateResult], suite: str, seconds: float) -> str:
    failures = sum(not r.passed for r in results)
    root = ET.Element("testsuites", tests=str(len(results)), failures=str(failures), time=f"{seconds:.3f}")
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(results)), failures=str(failures),
                         errors="0", time=f"{seconds:.3f}")  # fmt: skip
    for r in results:
        case = ET.SubElement(node, "testcase", classname="landscape.check", name=r.name, time="0")
        sign = "<=" if r.bound == "max" else ">="
        message = f"{r.quantity} = {r.value:.6g} (limit {sign} {r.limit:g})"
        if r.uncertainty is not None:
            message += f", {r.uncertainty_kind} {r.uncertainty:.2g}"
        if not r.passed:
            ET.SubElement(case, "failure", message=message, type="SharpnessGate").text = message
        ET.SubElement(case, "system-out").text = message
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def write_junit(path: Path, results: list[GateResult], suite: str, seconds: float, overwrite: bool = True) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(junit_xml(results, suite, seconds))
