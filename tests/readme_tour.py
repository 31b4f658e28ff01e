"""The README's tour as a script: every shell line of its code blocks, in order, exactly as written.

Commands are the `$ ` lines of ```console blocks (with their `\\` continuations) and every line of
```bash blocks, between the headings "## A short tour" and "## Reference". A command exits 0 unless
the README shows otherwise: a `$ echo $?` right after it, followed by the code.

    python -m tests.readme_tour --show          # print the commands and the exit codes they must give
    python -m tests.readme_tour --run DIR       # run them in DIR (a copy of sample_checkpoints/ is made)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "## A short tour", "## Reference"


@dataclass
class Step:
    command: str
    expected: int = 0
    line: int = 0


def tour_steps(readme: Path = ROOT / "README.md") -> list[Step]:
    lines = readme.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == START)
    end = next(i for i, line in enumerate(lines) if line.strip() == END)
    steps: list[Step] = []
    fence: str | None = None
    i = start
    while i < end:
        line = lines[i]
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            i += 1
            continue
        if fence == "console" and line.startswith("$ "):
            command, i = _joined(lines, i, line[2:])
            if command == "echo $?":
                steps[-1].expected = int(lines[i].strip())
                i += 1
                continue
            steps.append(Step(command, 0, i))
            continue
        if fence == "bash" and line.strip() and not line.lstrip().startswith("#"):
            command, i = _joined(lines, i, line)
            steps.append(Step(re.sub(r"\s+#.*$", "", command), 0, i))
            continue
        i += 1
    return steps


def _joined(lines: list[str], i: int, first: str) -> tuple[str, int]:
    """A command and its backslash continuations; the index after it."""
    parts = [first]
    while parts[-1].rstrip().endswith("\\"):
        parts[-1] = parts[-1].rstrip()[:-1]
        i += 1
        parts.append(lines[i].strip())
    return " ".join(p.strip() for p in parts), i + 1


def prepare(directory: Path) -> dict[str, str]:
    """A working directory as a fresh clone's: the shipped samples; `landscape` of this interpreter first on
    the PATH."""
    shipped = subprocess.run(["git", "ls-files", "sample_checkpoints", "examples"], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()  # fmt: skip
    if not shipped:  # not a git checkout: what a clone would hold, near enough
        shipped = [str(p.relative_to(ROOT)) for d in ("sample_checkpoints", "examples") for p in (ROOT / d).rglob("*")
                   if p.is_file() and p.suffix in (".pt", ".md", ".sh", ".toml", ".yml", ".py")]  # fmt: skip
    for name in shipped:  # only what a fresh clone holds: not what `make demo` wrote beside the samples
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, directory / name)
    env = {k: v for k, v in os.environ.items() if k != "LANDSCAPE_DEBUG"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "100"
    return env


def run(step: Step, directory: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", step.command], cwd=directory, env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true")
    parser.add_argument("--run", type=Path)
    args = parser.parse_args(argv)
    steps = tour_steps()
    if args.show or args.run is None:
        for step in steps:
            print(f"[{step.expected}] {step.command}")
        return 0
    args.run.mkdir(parents=True, exist_ok=True)
    env = prepare(args.run)
    failed = 0
    for step in steps:
        started = time.perf_counter()
        done = run(step, args.run, env)
        ok = done.returncode == step.expected
        failed += not ok
        print(f"$ {step.command}   # exit {done.returncode}, {time.perf_counter() - started:.1f} s"
              + ("" if ok else f"  <-- README says {step.expected}"))  # fmt: skip
        print(done.stdout + done.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
