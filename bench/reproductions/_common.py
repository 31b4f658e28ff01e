"""What every reproduction shares: training a digits model with `landscape train`'s loop, measuring it with
`landscape`'s own tools (spectrum, the sharpness measures), a verdict from several seeds, and the results file.

Verdicts compare two groups of seeds by the difference of their means against its standard error
(Welch): |t| >= 2 in the claimed direction is "reproduced", in the other direction "contradicted", and
anything in between "not at this scale" (the effect, if any, is within the seeds' spread here).
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import landscape_cli as ls
from landscape_cli import TrainConfig, train_model
from landscape_cli.checkpoint import load_checkpoint
from landscape_cli.zoo import data_spec, model_spec

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "reproductions"
IMAGES = ROOT / "docs" / "img"

#: The digits-scale models the CPU trains in seconds: an MLP, the CNN and the BatchNorm ResNet of the zoo.
MODELS = {
    "mlp": model_spec("mlp", {"widths": [64, 128, 10]}),
    "cnn": model_spec("cnn", {"channels": [8, 16]}),
    "resnet": model_spec("resnet", {"width": 8}),
}
#: Epochs to near-interpolation with momentum 0.9, batch 64, and the learning rate each trains stably with (the
#: narrow CNN diverged in 2 of 3 seeds at lr 0.1 over 40 epochs; at 0.05 all reach 100% train accuracy).
EPOCHS = {"mlp": 15, "cnn": 30, "resnet": 15}
LR = {"mlp": 0.1, "cnn": 0.05, "resnet": 0.1}
#: The measures every reproduction reports at the end of training (rho 0.05 for worst and average; the
#: adaptive ones at rho 0.5, since |w| scales the ball down; Keskar's box at 1e-3 as Keskar et al. use).
MEASURE_SETTINGS = {
    "worst": ("worst", 0.05, {}),
    "average": ("average", 0.05, {"perturbations": 32}),
    "worst_adaptive": ("worst", 0.5, {"adaptive": True}),
    "average_adaptive": ("average", 0.5, {"adaptive": True, "perturbations": 32}),
    "keskar": ("keskar", 1e-3, {}),
}


def train(model: str, opt: str, seed: int, out: Path, **options: Any) -> Path:
    """A run on the digits training split (1,438 samples; the 359 test digits held out); the final checkpoint."""
    settings: dict[str, Any] = {
        "lr": LR[model],
        "momentum": 0.9,
        "batch_size": 64,
        "epochs": EPOCHS[model],
        "rho": 0.05,
    }
    settings.update(options)
    config = TrainConfig(model=MODELS[model], data=data_spec("digits", "train", 0, {}), out_dir=out, opt=opt,
                         seed=seed, **settings)  # fmt: skip
    return train_model(config, quiet=True)


def measure(ckpt: Path, measures: Sequence[str] = tuple(MEASURE_SETTINGS), samples: int = 1000) -> dict[str, float]:
    """The final checkpoint's sharpness, each measure as `landscape` computes it, and its losses and accuracies
    on the whole training and test splits."""
    out: dict[str, float] = {}
    scape = ls.load(ckpt, samples=samples, device="cpu", seed=0)
    spectrum = scape.spectrum(1, trace=True, tol=1e-3)
    assert spectrum.lanczos is not None and spectrum.trace is not None
    out["top_eigenvalue"] = float(spectrum.lanczos.top.values[0])
    out["trace"] = float(spectrum.trace.estimate)
    for name in measures:
        kind, rho, options = MEASURE_SETTINGS[name]
        out[name] = scape.measure(kind, rho, seed=0, **options).value
    for split in ("train", "test"):
        values = ls.load(ckpt, split=split, device="cpu").problem.evaluate()
        out[f"{split}_loss"] = values["loss"]
        out[f"{split}_accuracy"] = values.get("accuracy", math.nan)
    out["gap_loss"] = out["test_loss"] - out["train_loss"]
    out["gap_accuracy"] = out["train_accuracy"] - out["test_accuracy"]
    return out


def train_and_measure(model: str, opt: str, seed: int, measures: Sequence[str] = tuple(MEASURE_SETTINGS),
                      **options: Any) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        final = train(model, opt, seed, Path(tmp) / "run", **options)
        row = {"model": model, "opt": opt, "seed": seed, **options, **measure(final, measures)}
        row["diverged"] = not math.isfinite(float(load_checkpoint(final).metrics.get("train_loss", math.nan)))
    row["seconds"] = time.perf_counter() - started
    return row


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}  # fmt: skip


def verdict(claimed_lower: Sequence[float], other: Sequence[float]) -> tuple[str, float]:
    """Whether `claimed_lower` is lower than `other` beyond the seeds' spread: (verdict, t)."""
    a, b = summary(claimed_lower), summary(other)
    se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
    t = (b["mean"] - a["mean"]) / se if se > 0 else math.copysign(math.inf, b["mean"] - a["mean"])
    return ("reproduced" if t >= 2 else "contradicted" if t <= -2 else "not at this scale"), t


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path


def threads() -> None:
    torch.set_num_threads(1)  # small models: one thread each is faster and steadier on 2 cores
