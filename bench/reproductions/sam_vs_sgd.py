"""Foret et al. (ICLR 2021): SAM finds flatter minima than SGD and generalizes better. And Behdin et al.
(2023): mSAM (m micro-batches per batch) is flatter still.

    python bench/reproductions/sam_vs_sgd.py [--quick]         # SAM vs SGD on the MLP, CNN and ResNet
    python bench/reproductions/sam_vs_sgd.py --msam [--quick]  # mSAM m = 2, 4, 8 vs SAM vs SGD

Every run: the digits training split (1,438), lr 0.1 (CNN 0.05), momentum 0.9, batch 64, rho 0.05, seeds 0-2; at the
end the top Hessian eigenvalue, the trace, the adaptive worst- and average-case sharpness (and the plain
ones) on 1,000 training samples, and test accuracy on the 359 held-out digits. Verdicts in _common.py.
Writes bench/results/reproductions/{sam_vs_sgd,msam}.json and docs/img/repro_{sam_vs_sgd,msam}.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import IMAGES, save, summary, threads, train_and_measure, verdict  # noqa: E402

#: The quantities compared, and whether the claim is that the first optimizer has the lower value.
CLAIMS = {
    "top_eigenvalue": ("top eigenvalue", True),
    "trace": ("trace", True),
    "worst_adaptive": ("adaptive worst-case (rho 0.5)", True),
    "average_adaptive": ("adaptive average-case (rho 0.5)", True),
    "worst": ("worst-case (rho 0.05)", True),
    "test_accuracy": ("test accuracy (%)", False),
}


def sweep(models: list[str], optimizers: dict[str, dict], seeds: int) -> list[dict]:
    rows = []
    for model in models:
        for name, options in optimizers.items():
            for seed in range(seeds):
                row = train_and_measure(model, options.get("opt", name), seed, **{k: v for k, v in options.items()
                                                                                 if k != "opt"})  # fmt: skip
                row["optimizer"] = name
                rows.append(row)
                print(f"{model} {name} seed {seed}: top {row['top_eigenvalue']:.4g}, test acc "
                      f"{row['test_accuracy']:.2f} ({row['seconds']:.0f} s)", flush=True)  # fmt: skip
    return rows


def compare(rows: list[dict], model: str, flatter: str, other: str) -> list[dict]:
    """One line per quantity: both optimizers' mean and spread, and whether `flatter` wins as claimed."""
    out = []
    for key, (label, lower) in CLAIMS.items():
        a = [r[key] for r in rows if r["model"] == model and r["optimizer"] == flatter]
        b = [r[key] for r in rows if r["model"] == model and r["optimizer"] == other]
        outcome, t = verdict(a, b) if lower else verdict([-v for v in a], [-v for v in b])
        out.append({"model": model, "quantity": label, "key": key, flatter: summary(a), other: summary(b),
                    "t": t, "verdict": outcome})  # fmt: skip
    return out


def figure(rows: list[dict], models: list[str], optimizers: list[str], path: Path) -> None:
    keys = ["top_eigenvalue", "trace", "worst_adaptive", "average_adaptive", "test_accuracy"]
    fig, axes = plt.subplots(len(models), len(keys), figsize=(2.6 * len(keys), 2.3 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        for j, key in enumerate(keys):
            ax = axes[i][j]
            for k, name in enumerate(optimizers):
                values = [r[key] for r in rows if r["model"] == model and r["optimizer"] == name]
                ax.scatter([k] * len(values), values, s=18, color=f"C{k}")
                ax.hlines(sum(values) / len(values), k - 0.3, k + 0.3, color=f"C{k}")
            ax.set_xticks(range(len(optimizers)), optimizers, fontsize=7)
            ax.set_title(f"{model}: {CLAIMS[key][0]}", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def table(lines: list[dict], first: str, second: str) -> str:
    out = [f"| model | quantity | {first} | {second} | t | verdict |", "|---|---|---|---|---|---|"]
    for line in lines:
        a, b = line[first], line[second]
        out.append(f"| {line['model']} | {line['quantity']} | {a['mean']:.4g} ± {a['std']:.2g} | "
                   f"{b['mean']:.4g} ± {b['std']:.2g} | {line['t']:+.1f} | {line['verdict']} |")  # fmt: skip
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--msam", action="store_true", help="mSAM m = 2, 4, 8 against SAM and SGD")
    args = parser.parse_args()
    threads()
    started = time.perf_counter()
    seeds = 2 if args.quick else 3
    if args.msam:
        name = "msam"
        models = ["mlp"] if args.quick else ["mlp", "cnn"]
        optimizers = {"sgd": {}, "sam": {}, **{f"msam{m}": {"opt": "msam", "micro_batches": m} for m in (2, 4, 8)}}
        pairs = [(f"msam{m}", "sam") for m in (2, 4, 8)] + [("sam", "sgd")]
    else:
        name = "sam_vs_sgd"
        models = ["mlp"] if args.quick else ["mlp", "cnn", "resnet"]
        optimizers = {"sgd": {}, "sam": {}}
        pairs = [("sam", "sgd")]
    rows = sweep(models, optimizers, seeds)
    results = {f"{a} vs {b}": [line for model in models for line in compare(rows, model, a, b)] for a, b in pairs}
    for label, lines in results.items():
        a, b = label.split(" vs ")
        print(f"\n{a} (claimed flatter) vs {b}\n" + table(lines, a, b))
    IMAGES.mkdir(parents=True, exist_ok=True)
    if not args.quick:
        figure(rows, models, list(optimizers), IMAGES / f"repro_{name}.png")
    save(name + ("_quick" if args.quick else ""), {"rows": rows, "comparisons": results, "seeds": seeds,
                                                    "seconds": time.perf_counter() - started})  # fmt: skip
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
