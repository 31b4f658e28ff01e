"""Shared helpers for the CLI tests: run `landscape` in-process and check the user-error contract."""

from __future__ import annotations

import atexit
import contextlib
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# The models here are tiny: one thread is faster than two, and does not stall when another process
# holds the second core (two threads then wait on each other at every operation).
torch.set_num_threads(1)

#: The shipped samples, copied once per test session: default outputs go beside a checkpoint, so tests work
#: on a copy. They never write into sample_checkpoints/, nor trip over what `make demo` left there.
SHIPPED_SAMPLES = Path(__file__).resolve().parents[1] / "sample_checkpoints"
SAMPLE_DIR = Path(tempfile.mkdtemp(prefix="landscape-samples-")) / "sample_checkpoints"
shutil.copytree(SHIPPED_SAMPLES, SAMPLE_DIR, ignore=lambda d, names: [n for n in names if not n.endswith(".pt")])
atexit.register(shutil.rmtree, SAMPLE_DIR.parent, True)
MLP_PARAMS = 2410  # MLP 64-32-10: 64*32 + 32 + 32*10 + 10

#: Options that keep a spectrum run to about a second on two CPU cores.
FAST = ["--samples", "200", "--max-iter", "40", "--top-k", "2", "--hvp", "double-backward", "--quiet"]


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def _run(args: list[str]) -> CliResult:
    from landscape_cli.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def cli():
    """`cli(*args)` runs `landscape args...` in this process and returns exit code, stdout, stderr."""
    return lambda *args: _run(list(args))


@pytest.fixture(autouse=True)
def _no_debug_tracebacks(monkeypatch):
    monkeypatch.delenv("LANDSCAPE_DEBUG", raising=False)


@pytest.fixture(scope="session")
def mlp_ckpt() -> Path:
    return SAMPLE_DIR / "mlp_digits.pt"


@pytest.fixture
def local_mlp(tmp_path, mlp_ckpt) -> Path:
    """A copy of the sample MLP in tmp_path: default outputs go beside a checkpoint, so a test that relies on
    them works on a copy, never writing into sample_checkpoints/."""
    path = tmp_path / mlp_ckpt.name
    path.write_bytes(mlp_ckpt.read_bytes())
    return path


def assert_user_error(result: CliResult, *fragments: str) -> str:
    """Exit 2, exactly one 'error:' line naming every fragment, no traceback, nothing on stdout."""
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err + result.out
    assert len(result.error_lines) == 1, result.err
    line = result.error_lines[0]
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert result.out == ""
    return line


def listing(directory: Path) -> set[str]:
    """Every file and folder below `directory`, hidden ones included, relative to it."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}
