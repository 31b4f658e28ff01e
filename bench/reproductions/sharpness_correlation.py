"""Andriushchenko, Croce, Müller, Hein, Flammarion (ICML 2023), "A modern look at the relationship between
sharpness and generalization": over a sweep of trained models, the rank correlation between a sharpness measure
and the generalization gap is weak or unstable, and which measure you pick changes the conclusion.

    python bench/reproductions/sharpness_correlation.py [--quick]

The sweep: 20 runs of the MLP of _common.MODELS on the digits training split (1,438 samples; 359 test digits
held out), momentum 0.9, 20 epochs, each configuration drawn with a fixed seed from a grid: optimizer (sgd,
sam, asam, ssam, msam with 4 micro-batches; each optimizer 4 times), rho (0.02, 0.05, 0.1; not for sgd), lr
(0.05, 0.1, 0.2), batch size (32, 64, 128) and the training seed. At the end, the measures of _common.measure
on 1,000 training samples (top Hessian eigenvalue, trace, worst- and average-case sharpness at rho 0.05, their
adaptive forms at rho 0.5, Keskar's at 1e-3) and the gap: test minus train loss (primary) and train minus test
accuracy in % (secondary). A gap only means something near interpolation, so runs under 99% train accuracy
(or diverged, or with a non-finite measure) are left out of the correlations, and counted.

For each measure: Kendall's tau (scipy.stats.kendalltau, tau-b) with each gap and its p-value, and a 90%
bootstrap interval of the tau with gap_loss (runs resampled 2,000 times) to show how stable it is. A
correlation is "strong" at |tau| >= 0.6 with p < 0.01. Verdict: "reproduced" if no measure correlates strongly
with the same sign under both gap definitions and the measures disagree (both signs, tau >= 0.1 and <= -0.1, or
|tau| spread over >= 0.3) under at least one; "contradicted" if every measure does correlate strongly and
positively under both; "not at this scale" if too few runs are left for even a perfect rank correlation to
reach p < 0.01; otherwise "mixed", with what was found.
--quick: the first 6 of the 20 configurations, 10 epochs (a smoke run; its correlations mean little).
Writes bench/results/reproductions/sharpness_correlation[_quick].json and (full run only)
docs/img/repro_sharpness_correlation.png.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import IMAGES, save, threads, train_and_measure  # noqa: E402

NAME = "sharpness_correlation"
MODEL = "mlp"
MEASURES = ("top_eigenvalue", "trace", "worst", "average", "worst_adaptive", "average_adaptive", "keskar")
LABELS = {
    "top_eigenvalue": "top eigenvalue",
    "trace": "trace",
    "worst": "worst (rho 0.05)",
    "average": "average (rho 0.05)",
    "worst_adaptive": "adaptive worst (rho 0.5)",
    "average_adaptive": "adaptive average (rho 0.5)",
    "keskar": "Keskar (1e-3, %)",
}
#: The primary gap first.
GAPS = ("gap_loss", "gap_accuracy")
#: Correlated too, as context (not in the verdict): with cross-entropy the curvature shrinks as the training loss
#: does, so a measure may rank the models by how far their training loss went down.
CONTEXT = ("train_loss",)
#: The grid the configurations are drawn from.
OPTIMIZERS = ("sgd", "sam", "asam", "ssam", "msam")
RHOS = (0.02, 0.05, 0.1)
LRS = (0.05, 0.1, 0.2)
BATCH_SIZES = (32, 64, 128)
MICRO_BATCHES = 4
DRAW_SEED = 2023
RUNS, QUICK_RUNS = 20, 6
EPOCHS, QUICK_EPOCHS = 20, 10
#: A gap is only meaningful near interpolation.
MIN_TRAIN_ACCURACY = 99.0
#: What counts as a strong correlation, and what as measures disagreeing.
STRONG_TAU, STRONG_P = 0.6, 0.01
SIGN_TAU, SPREAD_TAU = 0.1, 0.3
BOOTSTRAP, BOOTSTRAP_SEED = 2000, 0


def configurations(n: int = RUNS, seed: int = DRAW_SEED) -> list[dict[str, Any]]:
    """`n` configurations drawn from the grid, each optimizer equally often (up to one), in a seeded order; the
    first k of a draw of n are the same whatever n is, so --quick runs the first configurations of the full
    sweep."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % len(OPTIMIZERS) == 0:
            order = list(OPTIMIZERS)
            rng.shuffle(order)
        opt = order[i % len(OPTIMIZERS)]
        config: dict[str, Any] = {"opt": opt, "seed": rng.randrange(1000), "lr": rng.choice(LRS),
                                  "batch_size": rng.choice(BATCH_SIZES)}  # fmt: skip
        rho = rng.choice(RHOS)  # drawn for every run, so a draw does not depend on which optimizers came before
        if opt != "sgd":
            config["rho"] = rho
        if opt == "msam":
            config["micro_batches"] = MICRO_BATCHES
        out.append(config)
    return out


def run(config: dict[str, Any], epochs: int, measures: Sequence[str] = MEASURES) -> dict[str, Any]:
    options = {k: v for k, v in config.items() if k not in ("opt", "seed")}
    row = train_and_measure(MODEL, config["opt"], config["seed"], epochs=epochs, **options)
    row.setdefault("rho", None)
    # the training loss above chance level (log 10): the run blew up, even where it stayed finite
    row["blew_up"] = bool(row["diverged"] or not row["train_loss"] <= math.log(10))
    row["included"] = included(row, measures)
    return row


def included(row: dict[str, Any], measures: Sequence[str] = MEASURES,
             min_train_accuracy: float = MIN_TRAIN_ACCURACY) -> bool:  # fmt: skip
    """Whether a run counts in the correlations: near interpolation, not diverged, every number finite."""
    values = [row[k] for k in (*measures, *GAPS, *CONTEXT)]
    return (not row["diverged"] and row["train_accuracy"] >= min_train_accuracy
            and all(math.isfinite(v) for v in values))  # fmt: skip


def tau(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b and its two-sided p-value; nan when either side is constant or fewer than 3 runs."""
    if len(x) < 3:
        return math.nan, math.nan
    result = kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)


def bootstrap(x: Sequence[float], y: Sequence[float], draws: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
              level: float = 0.9) -> tuple[float, float]:  # fmt: skip
    """The central `level` interval of tau over runs resampled with replacement (draws with a constant side
    skipped)."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    values = []
    for _ in range(draws):
        pick = rng.integers(0, len(x), len(x))
        t = kendalltau(x[pick], y[pick]).statistic
        if math.isfinite(t):
            values.append(t)
    if not values:
        return math.nan, math.nan
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def correlations(rows: Sequence[dict[str, Any]], measures: Sequence[str] = MEASURES,
                 draws: int = BOOTSTRAP) -> dict[str, dict[str, dict[str, Any]]]:  # fmt: skip
    """measure -> gap -> {tau, p, n, runs, strong} over the included rows (the same runs for every measure and
    gap), with a bootstrap interval for the primary gap."""
    kept = [r for r in rows if r["included"]]
    runs = [rows.index(r) for r in kept]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m in measures:
        out[m] = {}
        for gap in (*GAPS, *CONTEXT):
            x, y = [r[m] for r in kept], [r[gap] for r in kept]
            t, p = tau(x, y)
            entry = {"tau": t, "p": p, "n": len(kept), "runs": runs,
                     "strong": bool(abs(t) >= STRONG_TAU and p < STRONG_P)}  # fmt: skip
            if gap == GAPS[0] and draws and len(kept) >= 3:
                entry["bootstrap_90"] = bootstrap(x, y, draws)
            out[m][gap] = entry
    return out


def agreement(rows: Sequence[dict[str, Any]], measures: Sequence[str] = MEASURES) -> dict[str, dict[str, float]]:
    """Kendall's tau between every two measures over the included runs: how alike they rank the models."""
    kept = [r for r in rows if r["included"]]
    return {a: {b: tau([r[a] for r in kept], [r[b] for r in kept])[0] for b in measures} for a in measures}


def judge(corr: dict[str, dict[str, dict[str, Any]]]) -> tuple[str, str]:
    """The verdict and the sentence that justifies it, from the correlations alone."""
    measures = list(corr)
    consistent = [m for m in measures if all(corr[m][g]["strong"] for g in GAPS)
                  and len({math.copysign(1, corr[m][g]["tau"]) for g in GAPS}) == 1]  # fmt: skip
    positive = [m for m in consistent if corr[m][GAPS[0]]["tau"] > 0]
    disagreements = []
    for g in GAPS:
        taus = [corr[m][g]["tau"] for m in measures if math.isfinite(corr[m][g]["tau"])]
        if not taus:
            continue
        lo, hi = min(taus), max(taus)
        spread = max(abs(t) for t in taus) - min(abs(t) for t in taus)
        if lo <= -SIGN_TAU and hi >= SIGN_TAU:
            disagreements.append(f"{g}: both signs (tau from {lo:+.2f} to {hi:+.2f})")
        elif spread >= SPREAD_TAU:
            disagreements.append(f"{g}: |tau| from {min(abs(t) for t in taus):.2f} to {max(abs(t) for t in taus):.2f}")
    n = corr[measures[0]][GAPS[0]]["n"]
    strength = f"|tau| >= {STRONG_TAU} with p < {STRONG_P}"
    if n < 3 or not tau(range(n), range(n))[1] < STRONG_P:
        return "not at this scale", (f"only {n} runs reached the train-accuracy bar: even a perfect rank correlation "
                                     f"would not reach p < {STRONG_P}")  # fmt: skip
    if len(positive) == len(measures):
        verdict = "contradicted"
        reason = f"every measure correlates strongly ({strength}) and positively with both gaps over {n} runs"
    elif not consistent and disagreements:
        verdict = "reproduced"
        reason = (f"no measure correlates strongly ({strength}) with the same sign under both gap definitions over "
                  f"{n} runs, and the measures disagree ({'; '.join(disagreements)})")  # fmt: skip
    else:
        verdict = "mixed"
        found = [f"{', '.join(consistent)} correlate strongly ({strength}) with the same sign under both gaps"
                 if consistent else f"no measure correlates strongly ({strength}) under both gaps"]  # fmt: skip
        found.append(f"the measures disagree ({'; '.join(disagreements)})" if disagreements
                     else "the measures agree in sign and strength")  # fmt: skip
        reason = f"over {n} runs, " + ", and ".join(found)
    return verdict, f"{reason}. {direction(corr)}"


def direction(corr: dict[str, dict[str, dict[str, Any]]], p: float = 0.05, tracks: float = 0.8) -> str:
    """Which way the measures point with the primary gap (at p < `p`), and which of them rank the runs almost
    as their training loss does (|tau| >= `tracks`)."""
    g = GAPS[0]
    groups = {
        "positively": [m for m in corr if corr[m][g]["p"] < p and corr[m][g]["tau"] > 0],
        "negatively (the flatter model has the larger gap)": [
            m for m in corr if corr[m][g]["p"] < p and corr[m][g]["tau"] < 0
        ],
        "not significantly": [m for m in corr if not corr[m][g]["p"] < p],
    }
    parts = [f"{len(ms)} {how} ({', '.join(ms)})" for how, ms in groups.items() if ms]
    out = f"With {g} at p < {p}, of {len(corr)} measures: " + "; ".join(parts) + "."
    if CONTEXT and all(CONTEXT[0] in corr[m] for m in corr):
        close = [m for m in corr if abs(corr[m][CONTEXT[0]]["tau"]) >= tracks]
        out += (f" {len(close)} of them rank the runs almost as their {CONTEXT[0]} does (|tau| >= {tracks}"
                f"{': ' + ', '.join(close) if close else ''}).")  # fmt: skip
    return out


def table(corr: dict[str, dict[str, dict[str, Any]]]) -> str:
    out = ["| measure | tau (gap_loss) | p | 90% bootstrap | tau (gap_accuracy) | p | strong under both | "
           "tau (train_loss) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for m, by_gap in corr.items():
        a, b = by_gap["gap_loss"], by_gap["gap_accuracy"]
        low, high = a.get("bootstrap_90", (math.nan, math.nan))
        both = "yes" if a["strong"] and b["strong"] and a["tau"] * b["tau"] > 0 else "no"
        context = by_gap.get("train_loss", {}).get("tau", math.nan)
        out.append(f"| {m} | {a['tau']:+.2f} | {a['p']:.2g} | [{low:+.2f}, {high:+.2f}] | {b['tau']:+.2f} | "
                   f"{b['p']:.2g} | {both} | {context:+.2f} |")  # fmt: skip
    return "\n".join(out)


def runs_table(rows: Sequence[dict[str, Any]]) -> str:
    out = ["| # | opt | rho | lr | batch | seed | train acc | test acc | train loss | gap_loss | gap_acc | in |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for i, r in enumerate(rows):
        rho = "-" if r["rho"] is None else f"{r['rho']:g}"
        kept = "yes" if r["included"] else "no (blew up)" if r.get("blew_up") else "no"
        out.append(f"| {i} | {r['opt']} | {rho} | {r['lr']:g} | {r['batch_size']} | {r['seed']} | "
                   f"{r['train_accuracy']:.2f} | {r['test_accuracy']:.2f} | {r['train_loss']:.3g} | "
                   f"{r['gap_loss']:.4g} | {r['gap_accuracy']:.2f} | {kept} |")  # fmt: skip
    return "\n".join(out)


def axis_scale(ax: Any, values: Sequence[float]) -> None:
    """Log (symlog when some values are 0) where the positive values span more than a decade and a half."""
    positive = [v for v in values if v > 0]
    if len(positive) < 2 or max(positive) / min(positive) < 30 or min(values) < 0:
        return
    if min(values) > 0:
        ax.set_xscale("log")
    else:
        ax.set_xscale("symlog", linthresh=min(positive))


def figure(rows: Sequence[dict[str, Any]], corr: dict[str, dict[str, dict[str, Any]]], verdict: str,
           path: Path) -> None:  # fmt: skip
    kept = [r for r in rows if r["included"]]
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.2))
    colors = {opt: f"C{i}" for i, opt in enumerate(OPTIMIZERS)}
    for ax, m in zip(axes.flat, MEASURES, strict=False):
        for opt in OPTIMIZERS:
            sel = [r for r in kept if r["opt"] == opt]
            ax.scatter([r[m] for r in sel], [r["gap_loss"] for r in sel], s=22, color=colors[opt], label=opt)
        axis_scale(ax, [r[m] for r in kept])
        c = corr[m]["gap_loss"]
        ax.set_title(f"{LABELS[m]}\ntau {c['tau']:+.2f} (p {c['p']:.2g})", fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("gap: test - train loss", fontsize=8)
    last = axes.flat[-1]
    last.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    last.legend(handles, labels, loc="upper center", title="optimizer", fontsize=8)
    excluded = len(rows) - len(kept)
    last.text(0.5, 0.25, f"{len(kept)} runs shown and correlated\n{excluded} excluded (train acc < "
              f"{MIN_TRAIN_ACCURACY:g}%)\nverdict: {verdict}", ha="center", va="center", fontsize=9,
              transform=last.transAxes)  # fmt: skip
    fig.suptitle("Sharpness vs generalization gap: MLP on digits, 20 runs over optimizer, rho, lr, batch, seed "
                 "(Kendall tau with the loss gap)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--draw-seed", type=int, default=DRAW_SEED,
                        help="another draw of the configurations, to check the result's stability "
                             "(results then saved with a _draw<seed> suffix, no figure)")  # fmt: skip
    args = parser.parse_args()
    other_draw = args.draw_seed != DRAW_SEED
    threads()
    started = time.perf_counter()
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    rows = []
    for i, config in enumerate(configurations(RUNS, args.draw_seed)[: QUICK_RUNS if args.quick else RUNS]):
        row = run(config, epochs)
        rows.append(row)
        print(f"{i:2d} {config}: train acc {row['train_accuracy']:.2f}, gap_loss {row['gap_loss']:.4g}, top "
              f"{row['top_eigenvalue']:.4g} ({row['seconds']:.1f} s)", flush=True)  # fmt: skip
    corr = correlations(rows)
    pairwise = agreement(rows)
    verdict, reason = judge(corr)
    excluded = [i for i, r in enumerate(rows) if not r["included"]]
    markdown = table(corr)
    print("\n" + runs_table(rows))
    print(f"\n{len(excluded)} of {len(rows)} runs excluded (train accuracy < {MIN_TRAIN_ACCURACY:g}%, diverged or "
          f"non-finite): {excluded}\n")  # fmt: skip
    print(markdown)
    print(f"\nverdict: {verdict}: {reason}")
    if not args.quick and not other_draw:
        IMAGES.mkdir(parents=True, exist_ok=True)
        figure(rows, corr, verdict, IMAGES / f"repro_{NAME}.png")
    seconds = time.perf_counter() - started
    suffix = ("_quick" if args.quick else "") + (f"_draw{args.draw_seed}" if other_draw else "")
    path = save(NAME + suffix, {
        "claim": "Andriushchenko et al. 2023: sharpness measures correlate weakly/unstably with the generalization "
                 "gap, and the measure chosen changes the conclusion",
        "model": MODEL, "epochs": epochs, "momentum": 0.9, "draw_seed": args.draw_seed,
        "min_train_accuracy": MIN_TRAIN_ACCURACY, "strong": {"tau": STRONG_TAU, "p": STRONG_P},
        "excluded": excluded, "correlations": corr, "measure_agreement": pairwise, "table": markdown,
        "runs_table": runs_table(rows), "verdict": verdict, "reason": reason, "rows": rows, "seconds": seconds,
    })  # fmt: skip
    print(f"\nwrote {path} ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
