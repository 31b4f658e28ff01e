"""Tan et al. (2024), SSAM: renormalizing SAM's descent gradient to the norm of the gradient at w makes training
stable at learning rates where SAM is not.

    python bench/reproductions/ssam_lr.py [--quick]

Every run: the MLP of _common.MODELS on the digits training split (1,438), plain SGD base (momentum 0, so the
edges are the simple ones: 2/lr for SSAM, SAM's moving with the gradient norm), batch 64, rho 0.05, 15 epochs,
seeds 0-2, a sweep of learning rates from 0.05 to 4 (denser where SAM starts to fail, found by trying; --quick:
seed 0 and five of them). A run "trains" when its final train loss (the whole training split) is finite and
below half the initial loss; a run whose loss becomes inf stops there (the trainer refuses to go on) and does
not train. Per run: the final train loss and test accuracy, and at the final checkpoint the sharpness against
the optimizer's edge (`Landscape.eos`, 1,000 samples). Verdict: per seed, the largest learning rate at which the
run trains, SSAM's against SAM's; reproduced if SSAM's is larger in every seed, contradicted if smaller in every
seed, else not at this scale. The CNN is left out: at momentum 0 it needs ~40 epochs, ~12 s a run, and the sweep
would take ~15 minutes on 2 cores.
Writes bench/results/reproductions/ssam_lr.json and docs/img/repro_ssam_lr.png.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import IMAGES, RESULTS, ROOT, save, summary, threads, train  # noqa: E402

import landscape_cli as ls  # noqa: E402
from landscape_cli.checkpoint import load_checkpoint  # noqa: E402
from landscape_cli.errors import LandscapeError  # noqa: E402
from landscape_cli.hdf5 import open_results  # noqa: E402

NAME = "ssam_lr"
MODEL = "mlp"
OPTIMIZERS = {"sam": "SAM", "ssam": "SSAM"}
SHARED: dict[str, Any] = {"rho": 0.05, "momentum": 0.0, "batch_size": 64, "epochs": 15}
#: Both train up to lr 1.5 and both diverge from 2.5; the failures begin between 2 and 2.5.
LRS = (0.05, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 3.0, 4.0)
QUICK_LRS = (0.5, 2.0, 2.2, 2.4, 3.0)
#: What "trains" means: the final train loss finite and below this fraction of the initial loss.
TRAINS_BELOW = 0.5
#: bench/eos_reproduction.py's runs (README, edge of stability): the first tracked step at which the sharpness
#: reached 90% of 2/lr; read from its results file when there, else these.
EOS_RESULTS = ROOT / "bench" / "results" / "eos_reproduction.json"
EOS_README = {"gd": 275, "ssam": 675}


@functools.cache
def initial_loss(seed: int) -> float:
    """The loss at the seed's initial weights on the whole training split: the trainer's step-0 evaluation, from a
    one-step run (a run whose loss becomes inf leaves no log; the start is the same for every lr and optimizer)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        train(MODEL, "sgd", seed, run, **{**SHARED, "epochs": None, "steps": 1, "lr": 1e-6})
        with open_results(run / "train.h5") as f:
            table = f["eval"]
            steps = np.asarray(table["step"][()]).reshape(-1)
            losses = np.asarray(table["train_loss"][()], dtype=np.float64).reshape(-1)
    return float(losses[np.flatnonzero(steps == 0)[0]])


def one_run(opt: str, lr: float, seed: int, **options: Any) -> dict[str, Any]:
    started = time.perf_counter()
    settings = {**SHARED, **options, "lr": lr}
    row: dict[str, Any] = {"model": MODEL, "opt": opt, "lr": lr, "seed": seed, **settings, "diverged_at": None}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        try:
            final = train(MODEL, opt, seed, run, **settings)
        except LandscapeError as error:  # "the training loss became inf at step N; lower lr"
            final = None
            row["diverged_at"] = str(error)
        if final is None:
            row.update(train_loss=math.inf, test_accuracy=math.nan, sharpness=math.nan, edge=math.nan,
                       ratio=math.nan)  # fmt: skip
        else:
            metrics = load_checkpoint(final).metrics
            row["train_loss"] = float(metrics["train_loss"])
            row["test_accuracy"] = float(metrics["test_accuracy"])
            try:
                eos = ls.load(final, samples=1000, device="cpu", seed=0).eos()
                row.update(sharpness=eos.sharpness, edge=eos.edge, ratio=eos.ratio)
            except (LandscapeError, ValueError, RuntimeError) as error:  # weights too far gone to measure
                row.update(sharpness=math.nan, edge=math.nan, ratio=math.nan, eos_error=str(error))
    row["initial_loss"] = initial_loss(seed)
    loss = row["train_loss"]
    row["trains"] = bool(math.isfinite(loss) and loss < TRAINS_BELOW * row["initial_loss"])
    row["seconds"] = time.perf_counter() - started
    return row


def sweep(lrs: tuple[float, ...], seeds: int) -> list[dict[str, Any]]:
    rows = []
    for lr in lrs:
        for opt in OPTIMIZERS:
            for seed in range(seeds):
                row = one_run(opt, lr, seed)
                rows.append(row)
                print(f"lr {lr:g} {opt} seed {seed}: {'trains' if row['trains'] else 'fails '} train loss "
                      f"{row['train_loss']:.3g} (initial {row['initial_loss']:.3g}), test acc "
                      f"{row['test_accuracy']:.1f}, sharpness/edge {row['ratio']:.3g} ({row['seconds']:.1f} s)",
                      flush=True)  # fmt: skip
    return rows


def largest_training_lr(rows: list[dict[str, Any]], opt: str, seed: int) -> dict[str, float | None]:
    """The largest lr at which the seed's run trains; and the stable range's end: the largest lr below which
    (it included) every run of the seed trains."""
    mine = sorted((r for r in rows if r["opt"] == opt and r["seed"] == seed), key=lambda r: r["lr"])
    trained = [r["lr"] for r in mine if r["trains"]]
    stable = None
    for r in mine:
        if not r["trains"]:
            break
        stable = r["lr"]
    return {"largest": max(trained) if trained else None, "stable_up_to": stable}


def per_lr(rows: list[dict[str, Any]], lrs: tuple[float, ...]) -> list[dict[str, Any]]:
    out = []
    for lr in lrs:
        for opt in OPTIMIZERS:
            mine = [r for r in rows if r["opt"] == opt and r["lr"] == lr]
            finite = [r for r in mine if math.isfinite(r["train_loss"])]
            measured = [r for r in mine if math.isfinite(r["ratio"])]
            out.append({
                "lr": lr, "opt": opt, "seeds": len(mine),
                "trains": sum(r["trains"] for r in mine) / len(mine),
                "train_loss": [r["train_loss"] for r in mine],
                "train_loss_finite": summary([r["train_loss"] for r in finite]) if finite else None,
                "test_accuracy": summary([r["test_accuracy"] for r in finite]) if finite else None,
                "ratio": summary([r["ratio"] for r in measured]) if measured else None,
                "edge": summary([r["edge"] for r in measured]) if measured else None,
                "sharpness": summary([r["sharpness"] for r in measured]) if measured else None,
            })  # fmt: skip
    return out


def judge(rows: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    per_seed = [{"seed": s, **{opt: largest_training_lr(rows, opt, s) for opt in OPTIMIZERS}} for s in range(seeds)]
    pairs = [(p["ssam"]["largest"] or 0.0, p["sam"]["largest"] or 0.0) for p in per_seed]
    if all(a > b for a, b in pairs):
        outcome = "reproduced"
    elif all(a < b for a, b in pairs):
        outcome = "contradicted"
    else:
        outcome = "not at this scale"
    return {"per_seed": per_seed, "verdict": outcome,
            "rule": "reproduced if SSAM's largest training lr exceeds SAM's in every seed, contradicted if it is "
                    "smaller in every seed, else not at this scale"}  # fmt: skip


def fmt(s: dict[str, float] | None, digits: str = ".3g") -> str:
    if s is None:
        return "-"
    return f"{s['mean']:{digits}} ± {s['std']:.2g}" + (f" (n={s['n']})" if s["n"] < 2 else "")


def loss_cell(line: dict[str, Any]) -> str:
    diverged = sum(not math.isfinite(v) for v in line["train_loss"])
    out = fmt(line["train_loss_finite"])
    return out + (f", {diverged} inf" if diverged else "")


def table(lines: list[dict[str, Any]]) -> str:
    out = [
        "| lr | optimizer | trains | final train loss | test acc (%) | sharpness / edge | edge |",
        "|---|---|---|---|---|---|---|",
    ]
    for line in lines:
        out.append(f"| {line['lr']:g} | {OPTIMIZERS[line['opt']]} | {line['trains']:.0%} | {loss_cell(line)} | "
                   f"{fmt(line['test_accuracy'], '.1f')} | {fmt(line['ratio'])} | {fmt(line['edge'])} |")  # fmt: skip
    return "\n".join(out)


def verdict_table(judged: dict[str, Any]) -> str:
    out = [
        "| claim | setting | seed | largest lr that trains: SAM | SSAM | stable up to: SAM | SSAM |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in judged["per_seed"]:
        out.append(f"| SSAM trains at larger lr than SAM | MLP, digits, rho 0.05, momentum 0, batch 64 | "
                   f"{p['seed']} | {p['sam']['largest']} | {p['ssam']['largest']} | {p['sam']['stable_up_to']} | "
                   f"{p['ssam']['stable_up_to']} |")  # fmt: skip
    return "\n".join(out) + f"\n\nVerdict: **{judged['verdict']}** ({judged['rule']})."


def eos_timing() -> dict[str, Any]:
    steps = dict(EOS_README)
    source = "README (bench/eos_reproduction.py)"
    if EOS_RESULTS.exists():
        runs = {r["name"]: r["summary"]["first_step_at_edge"] for r in json.loads(EOS_RESULTS.read_text())["runs"]}
        if runs.get("gd") is not None and runs.get("ssam") is not None:
            steps, source = {"gd": runs["gd"], "ssam": runs["ssam"]}, str(EOS_RESULTS.relative_to(ROOT))
    return {**steps, "source": source}


def figure(rows: list[dict[str, Any]], lrs: tuple[float, ...], path: Path) -> None:
    """Top: the whole sweep (log lr). Bottom: where the runs start to fail (linear lr, from 1.5)."""
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    finite_losses = [r["train_loss"] for r in rows if math.isfinite(r["train_loss"])]
    top = max(finite_losses + [10.0]) * 10  # where a run whose loss became inf is drawn
    zoom = tuple(lr for lr in lrs if lr >= 1.5)
    for k, (opt, title) in enumerate(OPTIMIZERS.items()):
        mine = [r for r in rows if r["opt"] == opt]
        color, shift = f"C{k}", 0.012 * (2 * k - 1)
        finite = [r for r in mine if math.isfinite(r["train_loss"])]
        inf = [r for r in mine if not math.isfinite(r["train_loss"])]
        for ax, log in ((axes[0][0], True), (axes[1][0], False)):
            x = (lambda lr: lr * (1 + shift)) if log else (lambda lr: lr + 2 * shift)  # noqa: B023
            shown = [r for r in finite if log or r["lr"] >= 1.5]
            ax.scatter([x(r["lr"]) for r in shown], [r["train_loss"] for r in shown], s=16, color=color,
                       label=f"{title} (each seed)")  # fmt: skip
            gone = [r for r in inf if log or r["lr"] >= 1.5]
            ax.scatter([x(r["lr"]) for r in gone], [top] * len(gone), s=30, marker="x", color=color,
                       label=f"{title}: loss became inf")  # fmt: skip
            grid = lrs if log else zoom
            medians = [np.median([min(r["train_loss"], top) for r in mine if r["lr"] == lr]) for lr in grid]
            ax.plot(grid, medians, "-", color=color, lw=1, alpha=0.7)
        measured = [r for r in mine if math.isfinite(r["ratio"])]
        axes[0][1].scatter([r["lr"] * (1 + shift) for r in measured], [r["ratio"] for r in measured], s=16,
                           color=color, label=title)  # fmt: skip
        fraction = [np.mean([r["trains"] for r in mine if r["lr"] == lr]) for lr in zoom]
        axes[1][1].plot([lr + shift for lr in zoom], fraction, "o-", ms=4, color=color, label=title)
    initial = float(np.mean([r["initial_loss"] for r in rows]))
    for ax in (axes[0][0], axes[1][0]):
        ax.axhline(TRAINS_BELOW * initial, color="black", ls="--", lw=0.9, label="half the initial loss")
        ax.set_yscale("log")
        ax.set_ylabel("final train loss (x: became inf)")
    axes[0][1].axhline(1.0, color="black", ls="--", lw=0.9, label="at the edge")
    axes[0][1].set_yscale("log")
    axes[0][1].set_ylabel("final sharpness / edge")
    axes[0][1].set_title("edge: SSAM 2/lr; SAM its own (lower, moves with |g|)", fontsize=9)
    axes[1][1].set_ylabel("fraction of seeds that train")
    axes[1][1].set_ylim(-0.05, 1.05)
    for i, row in enumerate(axes):
        for ax in row:
            if i == 0:
                ax.set_xscale("log")
            ax.set_xlabel("learning rate")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
    fig.suptitle(f"SSAM vs SAM on digits: MLP 64-128-10, rho 0.05, momentum 0, batch 64, {SHARED['epochs']} epochs; "
                 "bottom: lr from 1.5", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--replot", action="store_true", help="redraw the figure from the saved results")
    args = parser.parse_args()
    if args.replot:
        saved = json.loads((RESULTS / f"{NAME}.json").read_text())
        figure(saved["rows"], tuple(saved["settings"]["lrs"]), IMAGES / f"repro_{NAME}.png")
        return
    threads()
    started = time.perf_counter()
    lrs, seeds = (QUICK_LRS, 1) if args.quick else (LRS, 3)
    rows = sweep(lrs, seeds)
    lines = per_lr(rows, lrs)
    judged = judge(rows, seeds)
    timing = eos_timing()
    initial = summary([r["initial_loss"] for r in rows])
    print(f"\nClaim (Tan et al. 2024): SSAM trains stably at larger learning rates than SAM.\nSetting: MLP 64-128-10 "
          f"on digits (1,438 train), rho 0.05, momentum 0, batch 64, {SHARED['epochs']} epochs, {seeds} seed(s). "
          f"\"Trains\": the final train loss is finite and below {TRAINS_BELOW:g} x the initial loss "
          f"({initial['mean']:.3g}). Mean ± std over the seeds whose loss stayed finite; sharpness / edge at the "
          f"final checkpoint (1,000 samples; SSAM's edge 2/lr, SAM's its own, moving with the gradient "
          f"norm).\n")  # fmt: skip
    print(table(lines))
    print()
    print(verdict_table(judged))
    print(f"\nEdge of stability, a related observation (not recomputed here; {timing['source']}: tanh MLP "
          f"64-200-200-10, first 1,000 digits, MSE, full batch, lr 0.2, rho 0.02, first step with sharpness at 90% "
          f"of 2/lr): GD reaches 2/lr at step {timing['gd']}, SSAM at step {timing['ssam']}: SSAM sharpens more "
          f"slowly and reaches 2/lr later than GD, but it does reach it and then stays there, as GD does.")  # fmt: skip
    name = NAME + ("_quick" if args.quick else "")
    if not args.quick:
        IMAGES.mkdir(parents=True, exist_ok=True)
        figure(rows, lrs, IMAGES / f"repro_{NAME}.png")
    path = save(name, {"claim": "SSAM trains stably at larger learning rates than SAM",
                       "settings": {**SHARED, "model": MODEL, "lrs": list(lrs), "seeds": seeds,
                                    "trains": f"final train loss finite and < {TRAINS_BELOW} x initial"},
                       "rows": rows, "per_lr": lines, "verdict": judged, "eos_timing": timing,
                       "seconds": time.perf_counter() - started})  # fmt: skip
    print(f"\nwrote {path}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
