"""Edge of stability, reproduced with our trainer on real data (Cohen et al. 2021, Figure 1; Long &
Bartlett 2024 for SAM; Tan et al. 2024 for SSAM).

tanh MLP 64-200-200-10 on the first 1000 digits (standardized), MSE loss, full batch, lr 0.2, 2000
steps, sharpness tracked every 25 steps. Claim checked: after step 500 the sharpness stays within 10%
of the edge of each optimizer: 2/lr for GD, the SAM edge (moving with the gradient norm) for SAM with
rho 0.02, 2/lr for SSAM with rho 0.02. Writes bench/results/eos_reproduction.json and
docs/img/eos_reproduction.png. A few minutes on 2 CPU cores.

    python bench/eos_reproduction.py [--steps 2000] [--every 25] [--after 500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from landscape_cli import TrainConfig, train_model  # noqa: E402
from landscape_cli.eos.run import run_edges, summarize_run  # noqa: E402
from landscape_cli.zoo import data_spec, model_spec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"gd": ("sgd", None), "sam": ("sam", 0.02), "ssam": ("ssam", 0.02)}


def config(opt: str, rho: float | None, out: Path, steps: int, every: int) -> TrainConfig:
    return TrainConfig(
        model=model_spec("mlp", {"widths": [64, 200, 200, 10], "activation": "tanh"}),
        data=data_spec("digits", "all", 0, {"limit": 1000}),
        out_dir=out,
        loss="mse",
        opt=opt,
        rho=rho if rho is not None else 0.05,
        lr=0.2,
        batch_size=None,
        epochs=None,
        steps=steps,
        eval_every=steps,
        track_sharpness_every=every,
        track_samples=1000,
        seed=0,
    )


def run(name: str, steps: int, every: int, after: int, work: Path) -> dict:
    opt, rho = RUNS[name]
    started = time.perf_counter()
    train_model(config(opt, rho, work / name, steps, every), quiet=True)
    edges = run_edges(work / name, {})
    summary = summarize_run(edges, band=0.1, after=after)
    keep = edges.step >= after
    deviation = np.abs(edges.ratio[keep] - 1)
    return {
        "name": name,
        "seconds": time.perf_counter() - started,
        "summary": summary,
        "max_deviation_after": float(deviation.max()),
        "median_deviation_after": float(np.median(deviation)),
        "within_10pct_after": bool(deviation.max() <= 0.1),
        "step": edges.step.tolist(),
        "sharpness": edges.sharpness.tolist(),
        "edge": edges.edge.tolist(),
    }


def figure(results: list[dict], after: int, path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(4.4 * len(results), 3.6), sharey=True, squeeze=False)
    axes = axes[0]
    titles = {"gd": "GD", "sam": "SAM, rho 0.02", "ssam": "SSAM, rho 0.02"}
    for ax, r in zip(axes, results, strict=True):
        ax.plot(r["step"], r["sharpness"], "o-", ms=2.5, lw=1.2, color="C3", label="sharpness")
        label = "SAM edge (moves with |g|)" if r["name"] == "sam" else "2 / lr"
        ax.plot(r["step"], r["edge"], "--", color="black", lw=1.2, label=label)
        ax.axvspan(after, r["step"][-1], color="grey", alpha=0.08, lw=0)
        ax.set_title(f"{titles[r['name']]}: max |ratio - 1| after {after} = {r['max_deviation_after']:.1%}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("top Hessian eigenvalue")
    fig.suptitle("Edge of stability: tanh MLP 64-200-200-10, 1000 digits, MSE, full batch, lr 0.2", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--after", type=int, default=500)
    parser.add_argument("--only", nargs="*", default=list(RUNS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eos_reproduction.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "img" / "eos_reproduction.png")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run(name, args.steps, args.every, args.after, Path(tmp)) for name in args.only]
    for r in results:
        s = r["summary"]
        print(
            f"{r['name']:5s} {r['seconds']:6.1f} s  final sharpness {s['final']['sharpness']:.4g} edge "
            f"{s['final']['edge']:.4g}  after step {args.after}: max |ratio-1| {r['max_deviation_after']:.3f} "
            f"median {r['median_deviation_after']:.3f}  within 10%: {r['within_10pct_after']}  "
            f"first at edge: step {s['first_step_at_edge']}"
        )
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": results}, indent=1))
    figure(results, args.after, args.figure)
    print(f"wrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
