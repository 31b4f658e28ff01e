"""Loss surfaces: grid points per second of `landscape surface` against a Li-style loop and loss-landscapes.

For each sample checkpoint (MLP 64-32-10, the small CNN, the BatchNorm ResNet) and for 21x21 and
51x51 grids over [-1, 1]^2, side by side in one process, on the full digits data (all 1,797
samples, `split="all"`), eval mode, float32, the same torch thread count for everyone:

* ours: `compute_surface` with `SurfaceOptions(dims=2, x="-1:1:N", y="-1:1:N")`, points per pass
  "auto" (what `landscape surface --2d` runs), and forced to one point per pass (the loop) and to a
  batched block (vmap, the block auto would use). Points per second from the sweep
  (`stats.seconds`) and from the whole call (directions, HDF5 header and final file, centre point).
* Li-style: the loop of Li et al.'s loss-landscape code, written here from its description: for
  each point build the perturbed state_dict w + x d1 + y d2 (our directions, read by parameter name
  from our output file), `load_state_dict`, then a full pass over a DataLoader of batches of 128
  under no_grad, summing `criterion(out, y).item() * batch` and the correct predictions. Its losses
  are checked against ours at every grid point (1e-5 relative).
* loss-landscapes (PyPI): `loss_landscapes.random_plane(model, Loss(CrossEntropyLoss(), x, y),
  distance=1, steps=N, normalization="filter", deepcopy_model=True)`, all data in one batch; its
  own random directions (only timed).
* the floor: one no-grad forward of the model over the 1,797 samples in one batch (median of many).

Usage (from the repository root, in a venv with the bench extra: pip install -e '.[bench]' torch==2.13.0):

    python bench/surface_bench.py            # about 20 minutes on 2 idle CPU cores
    python bench/surface_bench.py --quick    # smoke run: 21x21 only, one repeat, ~2 minutes
    python bench/surface_bench.py --tables-from bench/results/surface_bench.json

Like bench/spectrum_bench.py the script re-executes itself with glibc's malloc tunables and
OPENBLAS_NUM_THREADS=1 set, for every contestant alike. Results: bench/results/surface_bench.json
(raw seconds) and bench/results/surface_bench.md (the tables that docs/benchmarks.md shows).
"""

from __future__ import annotations

import argparse
import os

from _harness import ENV, git_state, json_default, log, machine, reexec_with_env, versions

if __name__ == "__main__":
    reexec_with_env()

# ruff: noqa: E402 - the imports follow the re-exec on purpose
import copy
import datetime
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape_cli
from landscape_cli import instantiate, load_checkpoint, problem_from_checkpoint
from landscape_cli.problem import per_sample_loss_sum

try:  # the fused loss-and-accuracy sums of newer versions
    from landscape_cli.problem import loss_and_correct_sums
except ImportError:  # pragma: no cover - older checkouts
    loss_and_correct_sums = None
from landscape_cli.surface import SurfaceOptions, compute_surface
from landscape_cli.surface.directions import random_directions
from landscape_cli.surface.evaluate import PointEvaluator, points_per_pass_limit

try:  # points per evaluate_loop call in the sweep, in newer versions
    from landscape_cli.surface.sweep import LOOP_BLOCK
except ImportError:  # pragma: no cover - older checkouts: one point per call
    LOOP_BLOCK = 1

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SAMPLES = ROOT / "sample_checkpoints"
CASES = {
    "mlp": ("mlp_digits.pt", "MLP 64-32-10"),
    "cnn": ("cnn_digits.pt", "CNN 8-16"),
    "resnet": ("resnet_digits.pt", "ResNet w8, BatchNorm"),
}
CONTESTANTS = ("ours auto", "ours loop", "ours batched", "li-style", "loss-landscapes")
LI_BATCH = 128
SANITY_RTOL = 1e-5
TARGET_LI = 2.0  # ours at least 2x the Li-style loop
TARGET_FLOOR = 1.15  # ours per point within 1.15x of one forward pass


# -- the Li-style loop ------------------------------------------------------------------------------
class LiStyle:
    """One grid point at a time: perturbed state_dict, load_state_dict, a DataLoader pass under no_grad."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, d1: dict, d2: dict) -> None:
        self.model = model
        self.base = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.d1, self.d2 = d1, d2
        self.loader = DataLoader(TensorDataset(x, y), batch_size=LI_BATCH, shuffle=False)
        self.criterion = nn.CrossEntropyLoss()

    def set_point(self, a: float, b: float) -> None:
        state = {k: v.clone() for k, v in self.base.items()}
        for name in self.d1:
            state[name] = self.base[name] + a * self.d1[name] + b * self.d2[name]
        self.model.load_state_dict(state)

    def evaluate(self) -> tuple[float, float]:
        self.model.eval()
        total_loss, correct, total = 0.0, 0, 0
        with torch.no_grad():
            for inputs, targets in self.loader:
                batch = inputs.size(0)
                total += batch
                outputs = self.model(inputs)
                total_loss += self.criterion(outputs, targets).item() * batch
                _, predicted = torch.max(outputs, 1)
                correct += predicted.eq(targets).sum().item()
        return total_loss / total, 100.0 * correct / total

    def grid(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Li et al.'s layout: row i is ys[i], column j is xs[j]."""
        losses = np.empty((len(ys), len(xs)))
        accs = np.empty((len(ys), len(xs)))
        for i, b in enumerate(ys):
            for j, a in enumerate(xs):
                self.set_point(float(a), float(b))
                losses[i, j], accs[i, j] = self.evaluate()
        return losses, accs


def read_directions(path: Path, names: list[str]) -> tuple[dict, dict]:
    """d1 and d2 from our surface file, by parameter name."""
    with h5py.File(path, "r") as f:
        d1 = {k: torch.from_numpy(np.asarray(f[f"directions/d1/{k}"][()])) for k in names}
        d2 = {k: torch.from_numpy(np.asarray(f[f"directions/d2/{k}"][()])) for k in names}
    return d1, d2


# -- one checkpoint -------------------------------------------------------------------------------
class Case:
    def __init__(self, name: str, tmp: Path) -> None:
        self.name = name
        self.label = CASES[name][1]
        self.path = SAMPLES / CASES[name][0]
        self.tmp = tmp
        self.ckpt = load_checkpoint(self.path)
        assert self.ckpt.loss == "cross_entropy", self.ckpt.loss
        self.problem = problem_from_checkpoint(self.ckpt, split="all", device="cpu", dtype="float32")
        p = self.problem
        assert p.n_samples == 1797 and len(p.chunks) == 1 and not p.train_mode and p.dtype == torch.float32
        self.model = copy.deepcopy(p.model).eval()
        self.names = list(p.layout.names)
        self.n_params = p.n_params
        # The block auto would use for a batched pass (its memory limit), so that "ours batched"
        # times the alternative auto weighs.
        directions = random_directions(p, 2, 0, "filter", "biasbn")
        self.evaluator = PointEvaluator(p, directions)
        self.block = points_per_pass_limit([self.evaluator])
        self.counter = 0

    # -- contestants --
    def ours(self, n: int, points_per_pass: int | str) -> dict[str, Any]:
        self.counter += 1
        out = self.tmp / f"{self.name}_{n}_{points_per_pass}_{self.counter}.h5"
        options = SurfaceOptions(dims=2, x=f"-1:1:{n}", y=f"-1:1:{n}", points_per_pass=points_per_pass)
        start = time.perf_counter()
        result = compute_surface(self.ckpt, {"all": self.problem}, options, out, overwrite=True)
        total = time.perf_counter() - start
        s = result.stats
        assert s.computed == n * n, (s.computed, n)
        return {
            "seconds": s.seconds,
            "total_seconds": total,
            "points": s.computed,
            "points_per_pass": s.points_per_pass,
            "method": s.method,
            "calibration_seconds_per_point": dict(s.calibration),
            "fallback_reason": s.fallback_reason,
            "loss": result.arrays["all_loss"],
            "acc": result.arrays["all_acc"],
            "path": out,
        }

    def li_style(self, n: int, directions_file: Path) -> dict[str, Any]:
        d1, d2 = read_directions(directions_file, self.names)
        model = instantiate(self.ckpt, device="cpu", dtype=torch.float32)
        li = LiStyle(model, self.problem.x, self.problem.y, d1, d2)
        coords = np.linspace(-1.0, 1.0, n)
        start = time.perf_counter()
        losses, accs = li.grid(coords, coords)
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "points": n * n, "loss": losses, "acc": accs}

    def loss_landscapes(self, n: int) -> dict[str, Any]:
        import loss_landscapes
        import loss_landscapes.metrics

        model = copy.deepcopy(self.model).eval()
        metric = loss_landscapes.metrics.Loss(nn.CrossEntropyLoss(), self.problem.x, self.problem.y)
        torch.manual_seed(0)  # it draws its directions from the global generator
        start = time.perf_counter()
        values = loss_landscapes.random_plane(
            model, metric, distance=1, steps=n, normalization="filter", deepcopy_model=True
        )
        seconds = time.perf_counter() - start
        values = np.asarray(values, dtype=np.float64)
        assert values.shape == (n, n), values.shape
        return {"seconds": seconds, "points": n * n, "nonfinite": int((~np.isfinite(values)).sum())}

    def run(self, contestant: str, n: int, directions_file: Path | None) -> dict[str, Any]:
        if contestant == "ours auto":
            return self.ours(n, "auto")
        if contestant == "ours loop":
            return self.ours(n, 1)
        if contestant == "ours batched":
            return self.ours(n, self.block)
        if contestant == "li-style":
            assert directions_file is not None
            return self.li_style(n, directions_file)
        return self.loss_landscapes(n)

    # -- small timings --
    def floor(self, repeats: int) -> list[float]:
        """One no-grad forward of the whole data in one batch, `repeats` times."""
        x = self.problem.x
        with torch.no_grad():
            return _times(lambda: self.model(x), repeats)

    def breakdown(self, repeats: int) -> dict[str, float]:
        """Medians of the steps between the floor and our per-point cost (calls interleaved)."""
        p = self.problem
        x, y = p.x, p.y
        model = self.model
        ev = self.evaluator
        rng = np.random.default_rng(1)
        loop_points = rng.uniform(-1, 1, (LOOP_BLOCK, 2))  # the block the sweep hands evaluate_loop
        block = rng.uniform(-1, 1, (self.block, 2))
        coeffs = torch.as_tensor(loop_points[:1], dtype=p.dtype)

        def forward_loss_acc() -> None:
            out = model(x)
            if loss_and_correct_sums is not None:  # the fused sums our evaluation uses
                loss, correct = loss_and_correct_sums(out, y, "cross_entropy")
                float(loss), int(correct)
            else:
                float(per_sample_loss_sum(out, y, "cross_entropy"))
                int((out.argmax(dim=-1) == y).sum())

        steps: dict[str, Callable[[], Any]] = {
            "floor: model(x)": lambda: model(x),
            "model(x) + loss and correct sums": forward_loss_acc,
            "theta = w + c D, one point (no forward)": lambda: ev.thetas(coeffs),
            f"evaluate_loop, {LOOP_BLOCK} points, per point": lambda: ev.evaluate_loop(loop_points),
        }
        scale = {k: (LOOP_BLOCK if k.startswith("evaluate_loop") else 1) for k in steps}
        with torch.no_grad():
            for _ in range(2):  # warm-up
                for fn in steps.values():
                    fn()
            rounds: dict[str, list[float]] = {k: [] for k in steps}
            for _ in range(max(5, repeats // LOOP_BLOCK)):
                for k, fn in steps.items():
                    calls = 1 if scale[k] > 1 else LOOP_BLOCK  # about the same time per step
                    rounds[k].extend(t / scale[k] for t in _times(fn, calls))
            out = {k: statistics.median(v) for k, v in rounds.items()}
            ev.evaluate_batched(block)
            seconds = _times(lambda: ev.evaluate_batched(block), max(3, repeats // 10))
            out["evaluate_batched, per point"] = statistics.median(seconds) / self.block
        self.first_layer_cached = getattr(ev, "first_layer", None) is not None
        return out


def _times(fn: Callable[[], Any], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _cpu_snapshot() -> tuple[float, float, float]:
    """(CPU seconds every process on the machine has used, this process's own, wall clock)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    busy = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    return busy, time.process_time(), time.perf_counter()


def _interference(start: tuple[float, float, float]) -> tuple[float, float]:
    """CPU seconds other processes used since `start`, and the wall seconds."""
    end = _cpu_snapshot()
    return max(0.0, (end[0] - start[0]) - (end[1] - start[1])), end[2] - start[2]


def _disturbed(other: float, wall: float) -> bool:
    """Other processes took more than a trace of the CPU (2 threads here share 2 cores with them)."""
    return other > 0.05 * wall + 0.05


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    """A run as stored in the JSON (no arrays, no paths)."""
    return {k: v for k, v in run.items() if k not in ("loss", "acc", "path")}


def sanity(ours: dict[str, Any], li: dict[str, Any], n: int) -> dict[str, Any]:
    """Li-style losses against ours at a few named points and over the whole grid."""
    a, b = ours["loss"], li["loss"]
    rel = np.abs(a - b) / np.maximum(np.abs(a), 1e-30)
    c = n // 2
    points = {"centre": (c, c), "corner (-1,-1)": (0, 0), "corner (1,1)": (n - 1, n - 1), "edge (1,0)": (c, n - 1)}
    rng = np.random.default_rng(0)
    for _ in range(2):
        i, j = (int(v) for v in rng.integers(0, n, 2))
        points[f"row {i}, col {j}"] = (i, j)
    at = {
        name: {"ours": float(a[i, j]), "li_style": float(b[i, j]), "rel_diff": float(rel[i, j])}
        for name, (i, j) in points.items()
    }
    worst = max(v["rel_diff"] for v in at.values())
    return {
        "points": at,
        "max_rel_diff_at_points": worst,
        "max_rel_diff_all_points": float(rel.max()),
        "accuracy_points_differing": int((ours["acc"] != li["acc"]).sum()),
        "pass": bool(worst <= SANITY_RTOL),
    }


def bench_case(case: Case, grids: list[int], args: argparse.Namespace) -> dict[str, Any]:
    log(f"{case.name}: {case.n_params} parameters, batched block {case.block}; warming up")
    # Warm-up of every contestant on a small grid (first calls, allocator, vmap).
    warm = case.ours(5, 1)
    case.ours(5, case.block)
    case.ours(13, "auto")
    case.li_style(3, warm["path"])
    case.loss_landscapes(3)
    case.floor(5)
    result: dict[str, Any] = {"name": case.name, "label": case.label, "params": case.n_params, "block": case.block}
    floors = case.floor(args.floor_repeats)
    for attempt in range(args.retries + 1):
        snapshot = _cpu_snapshot()
        result["breakdown_seconds"] = case.breakdown(args.floor_repeats)
        other, wall = _interference(snapshot)
        if not _disturbed(other, wall) or attempt == args.retries:
            break
        log(f"  breakdown: other processes used {other:.2f} CPU s in {wall:.1f} s; again in {args.pause_s:.0f} s")
        time.sleep(args.pause_s)
    result["breakdown_disturbed"] = _disturbed(other, wall)
    result["first_layer_cached"] = case.first_layer_cached
    result["loop_block"] = LOOP_BLOCK
    result["grids"] = {}
    for n in grids:
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in CONTESTANTS}
        started = time.perf_counter()
        check = None
        repeats = args.repeats if n <= 21 else args.repeats_large
        for r in range(repeats):
            order = list(CONTESTANTS[r % len(CONTESTANTS) :] + CONTESTANTS[: r % len(CONTESTANTS)])
            # The Li-style loop reads its directions from our file: after some ours run in the round.
            if order.index("li-style") < order.index("ours auto"):
                order.remove("li-style")
                order.insert(order.index("ours auto") + 1, "li-style")
            directions_file = None
            # Each run is divided by the floor measured in a burst just before and just after it: this
            # machine's speed drifts by 10-40% within seconds, even idle, and the floor must drift with
            # the run. A run during which other processes used the CPU (measured from /proc/stat) is
            # done again after a pause, up to --retries times.
            for contestant in order:
                for attempt in range(args.retries + 1):
                    snapshot = _cpu_snapshot()
                    before = case.floor(args.floor_between)
                    run = case.run(contestant, n, directions_file)
                    after = case.floor(args.floor_between)
                    other, wall = _interference(snapshot)
                    run["other_cpu_seconds"], run["attempts"] = other, attempt + 1
                    if not _disturbed(other, wall) or attempt == args.retries:
                        break
                    log(
                        f"  {case.name} {n}x{n} {contestant}: other processes used {other:.2f} CPU s "
                        f"in {wall:.1f} s; again in {args.pause_s:.0f} s"
                    )
                    time.sleep(args.pause_s)
                run["disturbed"] = _disturbed(other, wall)
                floors += before + after
                run["floor_adjacent_seconds"] = statistics.median(before + after)
                run["per_point_over_floor"] = run["seconds"] / run["points"] / run["floor_adjacent_seconds"]
                if "total_seconds" in run:
                    run["total_per_point_over_floor"] = (
                        run["total_seconds"] / run["points"] / run["floor_adjacent_seconds"]
                    )
                if contestant == "ours auto":
                    directions_file = run["path"]
                    ours_run = run
                runs[contestant].append(run)
                extra = f", {run['method']} ({run['points_per_pass']}/pass)" if "method" in run else ""
                log(
                    f"  {case.name} {n}x{n} {contestant}: {run['points'] / run['seconds']:.1f} points/s{extra}, "
                    f"{run['per_point_over_floor']:.2f}x the floor ({run['floor_adjacent_seconds'] * 1e3:.3f} ms)"
                    + (" DISTURBED" if run["disturbed"] else "")
                )
            if check is None:
                check = sanity(ours_run, runs["li-style"][-1], n)
                log(
                    f"  sanity: Li-style vs ours max rel. loss difference {check['max_rel_diff_at_points']:.1e} "
                    f"at {len(check['points'])} points, {check['max_rel_diff_all_points']:.1e} over all "
                    f"{n * n} ({'pass' if check['pass'] else 'FAIL'})"
                )
            for run in runs["ours auto"] + runs["ours loop"] + runs["ours batched"]:
                run.get("path", Path("/nonexistent")).unlink(missing_ok=True)
            if time.perf_counter() - started > args.budget_s and r + 1 < repeats:
                log(f"  {case.name} {n}x{n}: {r + 1} round(s) used the {args.budget_s:.0f} s budget; stopping")
                break
        result["grids"][str(n)] = {
            "runs": {k: [_strip(v) for v in vs] for k, vs in runs.items()},
            "best_seconds": {k: min(v["seconds"] for v in vs) for k, vs in runs.items()},
            "best_total_seconds": {
                k: min(v["total_seconds"] for v in vs) for k, vs in runs.items() if "total_seconds" in vs[0]
            },
            "points": n * n,
            "rounds": len(runs["ours auto"]),
            "auto_methods": [v["method"] for v in runs["ours auto"]],
            "auto_points_per_pass": [v["points_per_pass"] for v in runs["ours auto"]],
            "calibration_seconds_per_point": [v["calibration_seconds_per_point"] for v in runs["ours auto"]],
            "sanity": check,
            "per_point_over_floor": {
                k: statistics.median(v["per_point_over_floor"] for v in vs) for k, vs in runs.items()
            },
            "total_per_point_over_floor": statistics.median(v["total_per_point_over_floor"] for v in runs["ours auto"]),
        }
    result["floor_seconds"] = floors
    result["floor_median_seconds"] = statistics.median(floors)
    return result


# -- tables ---------------------------------------------------------------------------------------
def ratios(case: dict[str, Any], n: str) -> dict[str, Any]:
    g = case["grids"][n]
    best, points = g["best_seconds"], g["points"]
    ours = best["ours auto"]
    methods = sorted(set(g["auto_methods"]))
    return {
        "pts_per_s": points / ours,
        "pts_per_s_total": points / g["best_total_seconds"]["ours auto"],
        "method": "/".join(methods),
        "points_per_pass": sorted(set(g["auto_points_per_pass"])),
        "vs_li": best["li-style"] / ours,
        "vs_li_total": best["li-style"] / g["best_total_seconds"]["ours auto"],
        "vs_ll": best["loss-landscapes"] / ours,
        "vs_ll_total": best["loss-landscapes"] / g["best_total_seconds"]["ours auto"],
        "per_point_floor": g["per_point_over_floor"]["ours auto"],
        "per_point_floor_total": g["total_per_point_over_floor"],
        "loop_floor": g["per_point_over_floor"]["ours loop"],
        "batched_floor": g["per_point_over_floor"]["ours batched"],
        "li_floor": g["per_point_over_floor"]["li-style"],
        "ll_floor": g["per_point_over_floor"]["loss-landscapes"],
    }


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    grids = sorted({n for case in results["cases"] for n in case["grids"]}, key=int)
    for n in grids:
        add(f"#### {n}x{n} grid ({int(n) ** 2} points)")
        add("")
        add(
            "| model | params | ours pts/s (with setup) | method chosen | ours/Li-style (with setup) "
            "| ours/loss-landscapes (with setup) | ours per point / floor (with setup) | loop-forced/floor "
            "| batched-forced/floor | Li-style/floor | loss-landscapes/floor |"
        )
        add("|---|---|---|---|---|---|---|---|---|---|---|")
        for case in results["cases"]:
            if n not in case["grids"]:
                continue
            r = ratios(case, n)
            method = f"{r['method']} ({', '.join(str(v) for v in r['points_per_pass'])}/pass)"
            add(
                f"| {case['name']} | {case['params']:,} | {r['pts_per_s']:.0f} ({r['pts_per_s_total']:.0f}) "
                f"| {method} | {r['vs_li']:.2f}x ({r['vs_li_total']:.2f}x) "
                f"| {r['vs_ll']:.2f}x ({r['vs_ll_total']:.2f}x) "
                f"| {r['per_point_floor']:.2f} ({r['per_point_floor_total']:.2f}) | {r['loop_floor']:.2f} "
                f"| {r['batched_floor']:.2f} ({case['block']}/pass) | {r['li_floor']:.2f} | {r['ll_floor']:.2f} |"
            )
        add("")
    add(
        "Points per second and the ratios between contestants: best round of each (in brackets: ours' whole "
        "`compute_surface` call, directions and file writing included). Ratios to the floor (one forward pass "
        "of all 1,797 samples): each run against the floor measured just before and after it, median over "
        "rounds; lower is better."
    )
    add("")
    all_runs = [v for c in results["cases"] for g in c["grids"].values() for vs in g["runs"].values() for v in vs]
    retried = sum(v.get("attempts", 1) - 1 for v in all_runs)
    disturbed = sum(bool(v.get("disturbed")) for v in all_runs)
    add(
        f"{len(all_runs)} timed runs; {retried} repeated because other processes used the CPU during them; "
        f"{disturbed} still disturbed after {results['settings'].get('retries', 0)} retries."
    )
    add("")
    add("#### Auto's calibration (ms per point on the sweep's first points) and the floor")
    add("")
    add(
        "| model | floor: one forward, ms | grid | calibration loop | calibration batched | chose "
        "| sweep loop-forced | sweep batched-forced |"
    )
    add("|---|---|---|---|---|---|---|---|")
    for case in results["cases"]:
        floor_ms = case["floor_median_seconds"] * 1e3
        for n, g in case["grids"].items():
            cal = g["calibration_seconds_per_point"][0]
            best = g["best_seconds"]
            add(
                f"| {case['name']} | {floor_ms:.2f} | {n}x{n} | {cal.get('loop', float('nan')) * 1e3:.2f} "
                f"| {cal.get('batched', float('nan')) * 1e3:.2f} | {', '.join(g['auto_methods'])} "
                f"| {best['ours loop'] / g['points'] * 1e3:.2f} | {best['ours batched'] / g['points'] * 1e3:.2f} |"
            )
    add("")
    add("#### Where a loop point's time goes (ms, medians of interleaved calls)")
    add("")
    keys = list(results["cases"][0]["breakdown_seconds"])
    add("| step | " + " | ".join(c["name"] for c in results["cases"]) + " |")
    add("|---|" + "---|" * len(results["cases"]))
    for k in keys:
        cells = [
            f"{c['breakdown_seconds'][k] * 1e3:.3f}" if k in c["breakdown_seconds"] else "" for c in results["cases"]
        ]
        label = (
            k
            if k != "evaluate_batched, per point"
            else "evaluate_batched, per point (block of " + ", ".join(str(c["block"]) for c in results["cases"]) + ")"
        )
        add(f"| {label} | " + " | ".join(cells) + " |")
    for n in sorted({n for c in results["cases"] for n in c["grids"]}, key=int):
        cells = []
        for c in results["cases"]:
            g = c["grids"].get(n)
            cells.append(f"{g['best_seconds']['ours loop'] / g['points'] * 1e3:.3f}" if g else "")
        add(f"| whole sweep, loop-forced, {n}x{n}, per point (best round) | " + " | ".join(cells) + " |")
    cached = " | ".join("yes" if c.get("first_layer_cached") else "no" for c in results["cases"])
    add(f"| loop: first layer's outputs cached | {cached} |")
    add("")
    add("#### Sanity check: Li-style losses against ours")
    add("")
    add("| model | grid | max rel. diff at 6 points | max rel. diff, all points | accuracy cells differing | <= 1e-5 |")
    add("|---|---|---|---|---|---|")
    for case in results["cases"]:
        for n, g in case["grids"].items():
            s = g["sanity"]
            add(
                f"| {case['name']} | {n}x{n} | {s['max_rel_diff_at_points']:.1e} | {s['max_rel_diff_all_points']:.1e} "
                f"| {s['accuracy_points_differing']} | {'yes' if s['pass'] else 'NO'} |"
            )
    add("")
    add("#### Targets")
    add("")
    add(targets_markdown(results))
    return "\n".join(lines) + "\n"


def targets(results: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for case in results["cases"]:
        for n in case["grids"]:
            r = ratios(case, n)
            rows.append(
                {"model": case["name"], "grid": int(n), "vs_li": r["vs_li"], "per_point_floor": r["per_point_floor"]}
            )
    return {
        "li_2x": all(r["vs_li"] >= TARGET_LI for r in rows),
        "never_slower_than_li": all(r["vs_li"] >= 1.0 for r in rows),
        "floor_1_15": all(r["per_point_floor"] <= TARGET_FLOOR for r in rows),
        "rows": rows,
    }


def targets_markdown(results: dict[str, Any]) -> str:
    t = results["targets"]
    rows = t["rows"]

    def cells(key: str, fmt: str) -> str:
        return ", ".join(f"{r['model']} {r['grid']}: {format(r[key], fmt)}" for r in rows)

    def verdict(ok: bool, misses: list[str]) -> str:
        return "**met**" if ok else "**missed** (" + ", ".join(misses) + ")"

    miss_li = [f"{r['model']} {r['grid']}x{r['grid']}" for r in rows if r["vs_li"] < TARGET_LI]
    miss_slow = [f"{r['model']} {r['grid']}x{r['grid']}" for r in rows if r["vs_li"] < 1.0]
    miss_floor = [f"{r['model']} {r['grid']}x{r['grid']}" for r in rows if r["per_point_floor"] > TARGET_FLOOR]
    return "\n".join(
        [
            "| target | measured | verdict |",
            "|---|---|---|",
            f"| at least {TARGET_LI:g}x the Li-style loop | {cells('vs_li', '.2f')} | {verdict(t['li_2x'], miss_li)} |",
            f"| never slower than the Li-style loop | (same) | {verdict(t['never_slower_than_li'], miss_slow)} |",
            f"| per point within {TARGET_FLOOR}x of one forward pass | {cells('per_point_floor', '.2f')} "
            f"| {verdict(t['floor_1_15'], miss_floor)} |",
        ]
    )


# -- main -------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 21x21 only, one round, fewer repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for every contestant (default 2)")
    parser.add_argument("--only", nargs="*", default=None, help="checkpoints to run (mlp, cnn, resnet)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds on 21x21, best kept (default 3, quick 1)")
    parser.add_argument("--repeats-large", type=int, default=2, help="rounds on 51x51 (default 2)")
    parser.add_argument("--budget-s", type=float, default=None, help="no new round after this many s per grid")
    parser.add_argument("--retries", type=int, default=4, help="repeat a run disturbed by other processes")
    parser.add_argument("--pause-s", type=float, default=20.0, help="wait before repeating a disturbed run")
    parser.add_argument("--out", type=Path, default=RESULTS / "surface_bench.json")
    parser.add_argument("--tables-from", type=Path, default=None, help="only rebuild the tables from a results JSON")
    args = parser.parse_args()
    if args.tables_from is not None:
        tables = markdown(json.loads(args.tables_from.read_text()))
        args.tables_from.with_suffix(".md").write_text(tables)
        print(tables)
        return
    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    grids = [21] if args.quick else [21, 51]
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.budget_s = args.budget_s or (30.0 if args.quick else 600.0)
    args.floor_repeats = 10 if args.quick else 60
    args.floor_between = 10 if args.quick else 20
    names = args.only or list(CASES)
    load_before = os.getloadavg()
    started = time.perf_counter()
    log(f"torch {torch.__version__}, {threads} threads, load average {load_before[0]:.2f}")
    results: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(threads, load_before),
        "versions": versions(
            {
                "torch": torch.__version__,
                "numpy": np.__version__,
                "landscape_cli": landscape_cli.__version__,
                "h5py": h5py.__version__,
            },
            ("loss-landscapes",),
        ),
        "git": git_state(),
        "env": ENV,
        "settings": {
            "grids": grids,
            "range": "[-1, 1] on both axes",
            "data": "digits, split all (1797 samples), one batch for ours, the floor and loss-landscapes",
            "li_batch_size": LI_BATCH,
            "repeats": args.repeats,
            "repeats_large": args.repeats_large,
            "retries": args.retries,
            "disturbed": "other processes used more than 5% of the run's wall time + 0.05 s of CPU (/proc/stat)",
            "budget_s": args.budget_s,
            "floor_repeats": args.floor_repeats,
            "quick": args.quick,
            "best_of": "minimum over rounds (contestants interleaved, order rotated each round)",
        },
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="surface_bench_") as tmp:
        for name in names:
            case = Case(name, Path(tmp))
            results["cases"].append(bench_case(case, grids, args))
            del case
    results["targets"] = targets(results)
    results["machine"]["load_average_after"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=json_default))
    tables = markdown(results)
    args.out.with_suffix(".md").write_text(tables)
    print()
    print(tables)
    log(
        f"done in {results['seconds']:.0f} s (load average {load_before[0]:.2f} before, "
        f"{results['machine']['load_average_after'][0]:.2f} after); wrote {args.out} and {args.out.with_suffix('.md')}"
    )


if __name__ == "__main__":
    main()
