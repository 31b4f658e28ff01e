"""A seeded fuzz harness for the command line: corrupted checkpoints and HDF5 files, hostile metadata and
specs, and bad options for every command, each run in-process in a scratch directory.

Every case must end with exit 0 or 2 (never 1, the failed-gate code, nor 3, an internal error), print
no traceback and at most one error line, run no code named in a file (marker files), send no terminal
control characters from a file to the terminal, and, when it fails, leave no file behind and change
none that was there.

    python -m tests.fuzz --cases 5000 --seed 1      # thousands of files on request; the suite runs 200
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import json
import os
import random
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

SAMPLES = Path(__file__).resolve().parents[1] / "sample_checkpoints"  # only copied from
MARKER = "CODE_RAN"
#: Options that keep every command to a fraction of a second when its input happens to be fine.
QUICK = {
    "spectrum": ["--samples", "60", "--max-iter", "12", "--top-k", "1", "--hvp", "double-backward", "--no-plot", "-q"],
    "surface": ["--samples", "60", "--x", "-1:1:3", "--points-per-pass", "1", "-q"],
    "eos": ["--samples", "60", "--max-iter", "12", "-q"],
    "check": ["--samples", "60", "--max-top-eig", "1e6", "-q"],
    "compare": ["--samples", "60", "--what", "top", "-q"],
}


@dataclass
class Outcome:
    """What one case did, and every rule it broke."""

    name: str
    argv: list[str]
    code: int
    err: str
    violations: list[str] = field(default_factory=list)


@dataclass
class Case:
    name: str
    argv: list[str]
    allowed: tuple[int, ...] = (2,)
    inputs: list[Path] = field(default_factory=list)  # files made for this case, removed after it


class Assets:
    """Valid inputs to corrupt, made once: checkpoints, results files of every kind, a run directory, and a
    module that leaves a marker file when imported or called."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.marker = root / MARKER
        for name in ("mlp_digits.pt", "mlp_digits_sam.pt", "cnn_digits.pt"):
            shutil.copy(SAMPLES / name, root / name)
        self.ckpt = root / "mlp_digits.pt"
        self.other = root / "mlp_digits_sam.pt"
        self.evil = root / "evil.py"
        self.evil.write_text(
            "from pathlib import Path\n"
            f"Path({str(self.marker)!r}).write_text('imported')\n"
            "def build(**kwargs):\n"
            f"    Path({str(self.marker)!r}).write_text('called')\n"
            "def data(**kwargs):\n"
            f"    Path({str(self.marker)!r}).write_text('called')\n"
        )
        self.results: dict[str, Path] = {}

    def make_results(self, run: Callable[[list[str]], tuple[int, str, str]]) -> None:
        """Results files of every kind, written by the commands themselves."""
        out = self.root
        steps = [
            ("spectrum", ["spectrum", self.ckpt, *QUICK["spectrum"], "--out", out / "s.spectrum.h5"]),
            ("surface1d", ["surface", self.ckpt, *QUICK["surface"], "--out", out / "s.surface1d.h5"]),
            (
                "surface2d",
                [
                    "surface",
                    self.ckpt,
                    "--2d",
                    "--samples",
                    "60",
                    "--x",
                    "-1:1:3",
                    "--y",
                    "-1:1:3",
                    "-q",
                    "--out",
                    out / "s.surface2d.h5",
                ],
            ),  # fmt: skip
            ("eos", ["eos", self.ckpt, *QUICK["eos"], "--out", out / "s.eos.h5"]),
            (
                "run",
                [
                    "train",
                    "--out",
                    out / "run",
                    "--steps",
                    "3",
                    "--data-arg",
                    "limit=80",
                    "--save-every",
                    "1",
                    "--track-sharpness-every",
                    "1",
                    "--track-samples",
                    "40",
                    "-q",
                ],
            ),  # fmt: skip
        ]
        for kind, argv in steps:
            code, _, err = run([str(a) for a in argv])
            if code != 0:
                raise RuntimeError(f"could not make the {kind} asset: {err}")
        self.results = {
            "spectrum": out / "s.spectrum.h5",
            "surface1d": out / "s.surface1d.h5",
            "surface2d": out / "s.surface2d.h5",
            "eos": out / "s.eos.h5",
            "train": out / "run" / "train.h5",
        }
        self.run_dir = out / "run"


# -- mutations ------------------------------------------------------------------------------------------


def mutate_bytes(blob: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random damage: a bit flip, a truncation, an overwritten, zeroed or duplicated range."""
    kind = rng.choice(["flip", "flip", "flip", "truncate", "scribble", "zero", "duplicate"])
    data = bytearray(blob)
    at = rng.randrange(len(data))
    if kind == "flip":
        data[at] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        data = data[:at]
    elif kind == "scribble":
        n = rng.randint(1, 64)
        data[at : at + n] = bytes(rng.randrange(256) for _ in range(min(n, len(data) - at)))
    elif kind == "zero":
        n = rng.randint(1, 256)
        data[at : at + n] = bytes(min(n, len(data) - at))
    else:
        n = rng.randint(1, 128)
        data[at:at] = data[at : at + n]
    return bytes(data), f"{kind}@{at}"


ESCAPES = ["\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "[link=file:///etc/shadow]click[/link]", "[bold red]x[/]", "\x9b31m"]


def hostile_metadata(assets: Assets, rng: random.Random) -> tuple[dict, str]:
    """A native checkpoint's dict with one hostile field; the weights stay those of the sample MLP."""
    raw = torch.load(assets.ckpt, weights_only=True)
    marker = str(assets.marker)
    shared: list = [0]
    for _ in range(26):  # 2^26 references to one list when expanded; a few hundred bytes on disk
        shared = [shared, shared]
    choices: dict[str, Callable[[], None]] = {
        "entrypoint file": lambda: raw.update(model={"entrypoint": f"{assets.evil}:build", "kwargs": {}}),
        "entrypoint relative": lambda: raw.update(model={"entrypoint": "evil.py:build", "kwargs": {}}),
        "entrypoint os.system": lambda: raw.update(
            model={"entrypoint": "os:system", "kwargs": {"command": f"touch {marker}"}}
        ),
        "data entrypoint": lambda: raw.update(data={"entrypoint": f"{assets.evil}:data", "split": "train"}),
        "model spec list": lambda: raw.update(model=["mlp"]),
        "model spec int name": lambda: raw.update(model={"name": 3}),
        "model kwargs list": lambda: raw.update(model={"name": "mlp", "kwargs": [1, 2]}),
        "model bomb": lambda: raw.update(model={"name": "mlp", "kwargs": {"widths": [64, 40000, 40000, 10]}}),
        "model unknown kwarg": lambda: raw.update(model={"name": "mlp", "kwargs": {"depth": 3}}),
        "data bomb": lambda: raw.update(data={"name": "gaussian-mixture", "kwargs": {"n": 400_000_000}}),
        "data float n": lambda: raw.update(data={"name": "gaussian-mixture", "kwargs": {"n": 4e8}}),
        "data negative n": lambda: raw.update(data={"name": "spirals", "kwargs": {"n": -5}}),
        "data fifo path": lambda: raw.update(data={"path": "/dev/zero.npz", "split": "train"}),
        "data spec str": lambda: raw.update(data="digits"),
        "unknown dataset": lambda: raw.update(data={"name": "imagenet"}),
        "metrics bomb": lambda: raw.update(metrics={"loss": shared}),
        "metrics string": lambda: raw.update(metrics={"loss": "low"}),
        "step string": lambda: raw.update(step="ten"),
        "seed huge": lambda: raw.update(seed=1 << 70),
        "loss unknown": lambda: raw.update(loss="hinge"),
        "loss int": lambda: raw.update(loss=7),
        "optimizer list": lambda: raw.update(optimizer=[1]),
        "optimizer lr string": lambda: raw.update(optimizer={"name": "sgd", "hparams": {"lr": "fast"}}),
        "optimizer name unknown": lambda: raw.update(optimizer={"name": "lion", "hparams": {"lr": 0.1}}),
        "escape in created": lambda: raw.update(created=rng.choice(ESCAPES)),
        "escape in model name": lambda: raw.update(model={"name": rng.choice(ESCAPES)}),
        "escape in tool version": lambda: raw.update(tool_version=rng.choice(ESCAPES)),
        "format from the future": lambda: raw.update(format_version=99),
        "format version string": lambda: raw.update(format_version="1"),
        "state_dict empty": lambda: raw.update(state_dict={}),
        "state_dict nan": lambda: raw["state_dict"]["layers.0.weight"].fill_(float("nan")),
        "state_dict wrong shape": lambda: raw["state_dict"].update({"layers.0.weight": torch.zeros(3, 3)}),
        "state_dict int weights": lambda: raw["state_dict"].update(
            {"layers.0.weight": torch.zeros(32, 64, dtype=torch.int64)}
        ),
        "deep nesting": lambda: raw.update(train_state=_deep(200)),
    }
    name = rng.choice(sorted(choices))
    choices[name]()
    return raw, name


def _deep(depth: int) -> dict:
    node: dict = {}
    for _ in range(depth):
        node = {"x": node}
    return node


def hostile_hdf5(source: Path, target: Path, rng: random.Random, assets: Assets) -> str:
    """A structural change to a results file: a dataset removed, retyped or reshaped, an attribute made
    odd, a link to another file, a virtual dataset."""
    shutil.copy(source, target)
    with h5py.File(target, "a") as f:
        names: list[str] = []
        f.visit(names.append)
        datasets = [n for n in names if isinstance(f[n], h5py.Dataset)]
        kind = rng.choice(["delete", "string", "reshape", "attr", "attr", "external", "virtual", "nan", "escape"])
        if kind in ("delete", "string", "reshape", "nan") and not datasets:
            kind = "attr"
        if kind == "delete":
            del f[rng.choice(datasets)]
        elif kind == "string":
            name = rng.choice(datasets)
            del f[name]
            f[name] = np.array(["text"] * 3, dtype=h5py.string_dtype())
        elif kind == "reshape":
            name = rng.choice(datasets)
            del f[name]
            f[name] = np.zeros((rng.randint(0, 4), 2))
        elif kind == "nan":
            name = rng.choice(datasets)
            data = f[name][()]
            if isinstance(data, np.ndarray) and data.dtype.kind == "f" and data.size:
                data = data.copy()
                data.flat[rng.randrange(data.size)] = rng.choice([np.nan, np.inf, -np.inf])
                f[name][...] = data
        elif kind == "attr":
            keys = list(f.attrs) or ["kind"]
            key = rng.choice(keys + ["kind", "config", "summary"])
            f.attrs[key] = rng.choice(
                [np.array([1, 2, 3]), "{not json", "", 42, np.float64("nan"), "surface", "spectrum", "train-log",
                 json.dumps({"lr": "x"}), rng.choice(ESCAPES)]
            )  # fmt: skip
        elif kind == "external":
            f["linked"] = h5py.ExternalLink(str(assets.results["spectrum"]), "/")
            if datasets:
                name = rng.choice(datasets)
                del f[name]
                f[name] = h5py.ExternalLink(str(assets.results["surface2d"]), "/train_loss")
        elif kind == "virtual":
            other = assets.results["surface2d"]
            with h5py.File(other, "r") as g:
                shape = g["train_loss"].shape
            layout = h5py.VirtualLayout(shape=shape, dtype="f8")
            layout[...] = h5py.VirtualSource(str(other), "train_loss", shape=shape)
            name = rng.choice(datasets) if datasets else "train_loss"
            if name in f:
                del f[name]
            f.create_virtual_dataset(name, layout)
        else:
            f.attrs["command"] = rng.choice(ESCAPES)
            f.attrs["checkpoint"] = rng.choice(ESCAPES)
    return kind


# -- bad options ----------------------------------------------------------------------------------------

NUMBERS_BAD_POSITIVE = ["0", "-1", "nan", "inf", "-inf", "abc", ""]
NUMBERS_BAD_COUNT = ["0", "-3", "1.5", "abc", "", "99999999999999999999999"]
SEEDS_BAD = ["-1", str(1 << 64), "1e3", "x", str(1 << 40)]

#: command -> option -> values that must all be refused (exit 2) with the command's quick options.
BAD_OPTIONS: dict[str, dict[str, list[str]]] = {
    "spectrum": {
        "--top-k": ["-1", "abc", "100000"],
        "--bottom-k": ["-2", "x"],
        "--tol": ["0", "1", "-1", "nan", "inf", "2"],
        "--max-iter": ["0", "-5", "10000000000"],
        "--trace-hvps": ["3", "-1", "100000000000"],
        "--density-runs": ["0", "-1"],
        "--density-steps": ["1", "0"],
        "--density-sigma": ["0", "-1", "nan", "inf"],
        "--samples": ["0", "-1", "abc"],
        "--batch-size": ["0", "-4", "x"],
        "--seed": SEEDS_BAD,
        "--device": ["gpu", "cuda:99", "tpu", ""],
        "--dtype": ["float16", "int8", ""],
        "--hvp": ["fd", ""],
        "--loss": ["hinge", ""],
        "--split": ["validation", ""],
        "--model": ["nonexistent_model", "nope.py:f", "os:", ":f", "os.path:nothing_here"],
        "--model-arg": ["widths", "1x=2", "widths=[64,40000,40000,10]", "activation=foo"],
        "--data": ["imagenet", "missing.npz", "missing.py:f", ""],
        "--data-arg": ["n", "limit=0", "limit=-1", "limit=abc"],
        "--out": ["/proc/nope/x.h5", "{nodir}/x.h5"],
        "--max-memory": ["0", "-1", "abc", "1Q", "1K"],
    },
    "surface": {
        "--x": ["-1:1:1", "1:-1:5", "-1:one:5", "-1:1", "-inf:1:5", "-1e308:1e308:3", "-1:1:100000000000", "0:0:3"],
        "--y": ["-1:1:5"],
        "--dirs": [
            "hessian",
            "random:3",
            "interp",
            "interp:{missing}",
            "file:{missing}",
            "pca:{missing}",
            "interp:{ckpt},{ckpt},{ckpt}",
            "eigen:{ckpt}",
            "file:{ckpt}",
        ],  # fmt: skip
        "--norm": ["l2", ""],
        "--ignore": ["everything"],
        "--radius": ["0", "-1", "nan", "inf"],
        "--points-per-pass": ["0", "-1", "x", "1.5"],
        "--samples": ["0", "-5"],
        "--seed": SEEDS_BAD,
        "--split": ["train,train", "validation", ",", ""],
        "--out": ["/proc/nope/x.h5", "{nodir}/x.h5"],
        "--max-memory": ["0", "1K"],
    },
    "eos": {
        "--lr": ["0", "-1", "nan", "inf"],
        "--rho": ["0", "-1", "nan"],
        "--momentum": ["1", "-0.5", "nan", "2"],
        "--beta1": ["1", "-1", "nan"],
        "--micro-batches": ["0", "-1"],
        "--opt": ["adagrad", "eigensam", "asam", ""],
        "--base": ["rmsprop", ""],
        "--band": ["0", "-1", "nan", "inf"],
        "--fail-above": ["0", "-1", "nan"],
        "--after": ["-1", "x"],
        "--tol": ["-1", "0", "nan", "2"],
        "--max-iter": ["0", "-1"],
        "--out": ["/proc/nope/x.h5", "{nodir}/x.h5"],
        "--seed": SEEDS_BAD,
    },
    "check": {
        "--max-top-eig": ["nan", "inf", "abc"],
        "--min-bottom-eig": ["nan", "-inf"],
        "--max-trace": ["inf"],
        "--max-eos-ratio": ["nan"],
        "--max-surface-rise": ["nan", "x"],
        "--radius": ["0", "-1", "nan", "inf"],
        "--tol": ["0", "1", "nan"],
        "--config": ["{missing}", "{ckpt}", "{dir}"],
        "--junit": ["{ckpt}", "{dir}", "", "/proc/nope/x.xml"],
        "--samples": ["0"],
        "--seed": SEEDS_BAD,
        "--lr": ["0", "nan", "-1"],
    },
    "compare": {
        "--what": ["everything", "", "top,top2"],
        "--max-increase": ["x", "-5%", "nan", "inf", "%"],
        "--radius": ["0", "nan", "-1", "inf"],
        "--tol": ["0", "nan"],
        "--junit": ["{ckpt}", "{dir}", ""],
        "--seed": SEEDS_BAD,
    },
    "plot": {
        "--levels": ["1", "0", "1000000", "x"],
        "--vmin": ["nan", "inf", "x"],
        "--vmax": ["nan", "-inf"],
        "--dpi": ["0", "-1", "100000"],
        "--kind": ["pie", ""],
        "--format": ["bmp", "", "jpg"],
        "--surface": ["nope_loss", ""],
        "--out": ["/proc/nope/x.png", "{nodir}/x.png"],
    },
    "train": {
        "--lr": ["0", "-1", "nan", "inf"],
        "--momentum": ["1", "-1", "nan"],
        "--weight-decay": ["-1", "nan", "inf"],
        "--rho": ["0", "nan", "inf"],
        "--opt": ["lion", ""],
        "--base": ["rmsprop"],
        "--batch-size": ["0", "-1", "half", ""],
        "--epochs": ["0", "-1"],
        "--steps": ["0", "-1"],
        "--save-every": ["0", "-1"],
        "--save-every-epochs": ["0", "-1"],
        "--log-every": ["0"],
        "--eval-every": ["0", "-2"],
        "--track-sharpness-every": ["0"],
        "--track-samples": ["0"],
        "--micro-batches": ["0", "7"],
        "--lr-schedule": ["linear"],
        "--lr-gamma": ["0", "2", "nan"],
        "--lr-step-size": ["0"],
        "--clip-grad-norm": ["0", "-1", "nan"],
        "--seed": SEEDS_BAD,
        "--model": ["transformer", "nope.py:f"],
        "--data": ["imagenet", "missing.npz"],
        "--data-arg": ["limit=0", "n=-5"],
        "--model-arg": ["widths=[64,40000,40000,40000,10]"],
        "--loss": ["hinge"],
        "--out": ["{ckpt}", "", "/proc/nope/run", "{nodir}/run"],
        "--ascent": ["sideways"],
        "--alpha": ["nan"],
    },
}


def base_argv(command: str, assets: Assets) -> list[str]:
    """A valid invocation of `command` that the bad option is added to."""
    ckpt = str(assets.ckpt)
    return {
        "spectrum": ["spectrum", ckpt, *QUICK["spectrum"]],
        "surface": ["surface", ckpt, *QUICK["surface"]],
        "eos": ["eos", ckpt, *QUICK["eos"]],
        "check": ["check", ckpt, *QUICK["check"]],
        "compare": ["compare", ckpt, str(assets.other), *QUICK["compare"]],
        "plot": ["plot", str(assets.results["surface2d"])],
        "train": ["train", "--out", "newrun", "--steps", "2", "--data-arg", "limit=64", "-q"],
        "info": ["info", ckpt],
    }[command]


def _fill(value: str, assets: Assets, work: Path) -> str:
    return value.format(
        ckpt=assets.ckpt,
        dir=work,
        missing=work / "missing.pt",
        surface2d=assets.results["surface2d"],
        nodir=assets.ckpt,  # a file where a directory should be
    )


# -- case generation ------------------------------------------------------------------------------------


def option_cases(assets: Assets, work: Path) -> list[Case]:
    """Every bad option value of every command, once."""
    cases = []
    for command, options in BAD_OPTIONS.items():
        for option, values in options.items():
            for value in values:
                argv = base_argv(command, assets)
                if command == "surface" and option == "--y":
                    argv = [*argv, "--1d"]
                cases.append(Case(f"{command} {option} {value!r}", [*argv, option, _fill(value, assets, work)]))
    return cases


def file_case(assets: Assets, work: Path, rng: random.Random, index: int) -> Case:
    """A damaged or hostile input given to a command that reads it."""
    family = rng.choice(["checkpoint bytes", "checkpoint metadata", "hdf5 bytes", "hdf5 structure"])
    if family == "checkpoint bytes":
        blob, how = mutate_bytes(assets.ckpt.read_bytes(), rng)
        path = work / f"bad{index}.pt"
        path.write_bytes(blob)
        command = rng.choice(["info", "spectrum", "surface", "eos", "check", "compare"])
        return Case(f"{command} <checkpoint {how}>", _with_input(command, path, assets), (0, 2), [path])
    if family == "checkpoint metadata":
        raw, how = hostile_metadata(assets, rng)
        path = work / f"bad{index}.pt"
        torch.save(raw, path)
        command = rng.choice(["info", "spectrum", "surface", "eos", "check", "compare"])
        # info shows what it reads; an odd optimizer record matters only to the eos measurement
        harmless = command == "info" or how.startswith("escape") or (how.startswith("optimizer") and command != "eos")
        allowed = (0, 2) if harmless else (2,)
        return Case(f"{command} <metadata: {how}>", _with_input(command, path, assets), allowed, [path])
    kind = rng.choice(sorted(assets.results))
    source = assets.results[kind]
    path = work / (f"bad{index}.h5" if kind != "train" else f"badrun{index}/train.h5")
    path.parent.mkdir(exist_ok=True)
    if family == "hdf5 bytes":
        blob, how = mutate_bytes(source.read_bytes(), rng)
        path.write_bytes(blob)
    else:
        how = hostile_hdf5(source, path, rng, assets)
    command = rng.choice(_readers(kind))
    target = path.parent if kind == "train" and command in ("plot", "eos") else path
    made = [path.parent] if kind == "train" else [path]
    return Case(f"{command} <{kind} {how}>", _with_input(command, target, assets, kind), (0, 2), made)


def _readers(kind: str) -> list[str]:
    return {
        "spectrum": ["info", "plot", "compare", "surface-eigen"],
        "surface1d": ["info", "plot", "compare", "surface-file"],
        "surface2d": ["info", "plot", "compare", "surface-file"],
        "eos": ["info", "compare"],
        "train": ["info", "plot", "eos"],
    }[kind]


def _with_input(command: str, path: Path, assets: Assets, kind: str = "") -> list[str]:
    p = str(path)
    if command == "compare":
        other = str(assets.other) if p.endswith(".pt") else str(assets.results.get(kind, assets.other))
        return ["compare", other, p, *(QUICK["compare"] if p.endswith(".pt") else ["-q"])]
    if command == "surface-file":
        return ["surface", str(assets.ckpt), *QUICK["surface"], "--dirs", f"file:{p}"] + (
            ["--2d", "--y", "-1:1:3"] if "surface2d" in kind else []
        )
    if command == "surface-eigen":
        return ["surface", str(assets.ckpt), *QUICK["surface"], "--dirs", f"eigen:{p}"]
    if command in ("info", "plot"):
        return [command, p]
    return [command, p, *QUICK[command]]


def generate(assets: Assets, work: Path, seed: int, count: int) -> Iterator[Case]:
    """Every bad option of every command once, then `count` damaged or hostile files (seeded), each file made
    only when its case is about to run (the scratch directory stays small)."""
    rng = random.Random(seed)
    cases = option_cases(assets, work)
    rng.shuffle(cases)
    yield from cases
    for index in range(count):
        yield file_case(assets, work, rng, index)


# -- running --------------------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    from landscape_cli.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # nothing should raise it; count it as what it says
            code = int(exc.code or 0)
        except BaseException as exc:  # noqa: BLE001 - the harness must survive anything
            err.write(f"Traceback (most recent call last):\n  uncaught {type(exc).__name__}: {exc}\n")
            code = -1
    return code, out.getvalue(), err.getvalue()


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            state[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
    return state


#: Seconds a case may take: a hang (say, in a C library on a damaged file) ends the harness loudly, with the
#: stack of the hung case on stderr, instead of stalling CI.
CASE_TIMEOUT = 120


def run_case(case: Case, assets: Assets, work: Path) -> Outcome:
    before = _snapshot(work)
    assets_before = _snapshot(assets.root)
    cwd = os.getcwd()
    os.chdir(work)
    faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True, file=sys.__stderr__)
    try:
        code, out, err = run_cli(case.argv)
    finally:
        faulthandler.cancel_dump_traceback_later()
        os.chdir(cwd)
    outcome = Outcome(case.name, case.argv, code, err)
    broken = outcome.violations
    if code not in case.allowed:
        broken.append(f"exit {code} (allowed {case.allowed})")
    if "Traceback" in out + err:
        broken.append("traceback")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if code == 2 and len(errors) != 1:
        broken.append(f"{len(errors)} error lines")
    if any(c in out + err for c in ("\x1b", "\x9b", "\x07")):
        broken.append("terminal control characters printed")
    if assets.marker.exists():
        broken.append("code named in a file ran")
        assets.marker.unlink()
    after = _snapshot(work)
    if code != 0:
        created = sorted(set(after) - set(before))
        changed = sorted(k for k in before if k in after and after[k] != before[k] and not os.path.isdir(work / k))
        removed = sorted(set(before) - set(after))
        if created:
            broken.append(f"left behind: {', '.join(created[:3])}")
        if changed or removed:
            broken.append(f"changed or removed: {', '.join((changed + removed)[:3])}")
    assets_after = _snapshot(assets.root)
    if any(assets_after.get(k) != v for k, v in assets_before.items() if not os.path.isdir(assets.root / k)):
        broken.append("an input was changed")
    for name in set(assets_after) - set(assets_before):  # outputs a case put beside an input
        path = assets.root / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    # a successful case's outputs go, so that the next case starts from the same directory
    for name in sorted(set(after) - set(before), key=len, reverse=True):
        path = work / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return outcome


def fuzz(count: int, seed: int, root: Path) -> tuple[list[Outcome], Counter]:
    assets = Assets(root / "assets")
    assets.make_results(run_cli)
    work = root / "work"
    work.mkdir()
    cases = generate(assets, work, seed, count)
    verbose = bool(os.environ.get("FUZZ_VERBOSE"))
    outcomes = []
    for case in cases:
        if verbose:
            print(f"... {case.name}", flush=True)
        outcomes.append(run_case(case, assets, work))
        for path in case.inputs:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    codes = Counter(o.code for o in outcomes)
    return outcomes, codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=400, help="damaged or hostile files (every bad option runs too)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=30, help="violations to print")
    args = parser.parse_args(argv)
    import tempfile

    torch.set_num_threads(1)
    os.environ.setdefault("LANDSCAPE_MAX_MEMORY", "2G")  # the commands' estimates refuse past this
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource  # and a hard cap, so that a missed estimate fails here instead of swapping the machine

        resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        outcomes, codes = fuzz(args.cases, args.seed, Path(tmp))
    bad = [o for o in outcomes if o.violations]
    print(f"{len(outcomes)} cases in {time.perf_counter() - started:.0f} s; exit codes {dict(sorted(codes.items()))}")
    print(f"{len(bad)} with violations")
    for o in bad[: args.show]:
        print(f"- {o.name}: {'; '.join(o.violations)}\n    {' '.join(o.argv)}\n    {o.err.strip()[:300]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
