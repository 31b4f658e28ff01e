"""The README's tour runs as written: every shell line, in order, in a fresh directory holding the shipped
samples, each exiting as the README says (0, or the code an `echo $?` after it shows)."""

from __future__ import annotations

import pytest

from .readme_tour import prepare, run, tour_steps


def test_the_tour_is_parsed_in_full():
    steps = tour_steps()
    commands = [s.command for s in steps]
    assert commands[0] == "landscape spectrum sample_checkpoints/mlp_digits.pt --trace --density --bottom-k 2"
    assert any(c.startswith("landscape train ") and c.endswith("--out runs/ssam") for c in commands)  # joined lines
    assert {s.expected for s in steps} == {0, 1, 2}
    assert len(steps) >= 15


@pytest.mark.slow
def test_every_tour_line_runs_as_written(tmp_path):
    env = prepare(tmp_path)
    failures = []
    for step in tour_steps():
        done = run(step, tmp_path, env)
        if done.returncode != step.expected:
            failures.append(f"README line {step.line}: {step.command!r} exited {done.returncode}, README says "
                            f"{step.expected}\n{done.stderr[-600:]}")  # fmt: skip
        assert "Traceback" not in done.stderr, step.command
    assert not failures, "\n".join(failures)
    # and the files the tour says it makes are where it says
    for made in ("sample_checkpoints/mlp_digits.spectrum.png", "runs/ssam/train.png",
                 "sample_checkpoints/mlp_digits.surface2d.contour.png", "sgd.compare.png",
                 "runs/ssam/final.surface2d.filled.png", "sharpness-junit.xml"):  # fmt: skip
        assert (tmp_path / made).is_file(), made
