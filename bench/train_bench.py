"""Step time of every optimizer relative to SGD, and a cross-check of our SAM against pytorch-optimizer.

    python bench/train_bench.py            # in a venv with the bench extra (pip install -e '.[bench]')
    python bench/train_bench.py --quick

Each optimizer steps the same model on the same mini-batches with the same closure; the timed part
is `optimizer.step(closure)` (forward, backward and update). Contestants are interleaved and the
median over repeats is reported as a ratio to SGD's, which is what the issue's targets are about
(SAM family <= 2.05x SGD; Eigen-SAM with --eigen-every 100 <= 1.1x SAM). Results go to
bench/results/train_bench.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from landscape_cli.train.config import TrainConfig
from landscape_cli.train.optimizers import make_optimizer
from landscape_cli.zoo.data import data_spec, load_data
from landscape_cli.zoo.models import build_model, model_spec

OPTIMIZERS = ["sgd", "sam", "asam", "ssam", "msam", "eigensam", "usam"]
MODELS = {
    "mlp 64-128-128-10": model_spec("mlp", {"widths": [64, 128, 128, 10]}),
    "resnet width 8 (BatchNorm)": model_spec("resnet", {"width": 8}),
}
RESULTS = Path(__file__).resolve().parent / "results"


def step_times(spec: dict, opt: str, batches: list[torch.Tensor], x, y, warmup: int) -> list[float]:
    torch.manual_seed(0)
    model = build_model(spec)
    config = TrainConfig(model=spec, data={}, out_dir=Path("."), opt=opt, lr=0.05, momentum=0.9, rho=0.05,
                         micro_batches=4, eigen_every=100, eigen_iters=5)  # fmt: skip
    optimizer = make_optimizer(config, model)
    model.train()
    times = []
    for i, idx in enumerate(batches):

        def closure(j: int, m: int, idx: torch.Tensor = idx) -> torch.Tensor:
            part = idx.chunk(m)[j] if m > 1 else idx
            return F.cross_entropy(model(x[part]), y[part])

        start = time.perf_counter()
        optimizer.step(closure)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def cross_check() -> float:
    """Max |difference| of the weights after one SAM step: ours vs pytorch-optimizer's SAM."""
    from pytorch_optimizer import SAM

    data = load_data(data_spec("digits"))
    x, y = data.x[:128], data.y[:128]
    spec = model_spec("mlp", {"widths": [64, 32, 10], "activation": "tanh"})
    torch.manual_seed(0)
    ours_model = build_model(spec)
    theirs_model = build_model(spec)
    theirs_model.load_state_dict(ours_model.state_dict())
    config = TrainConfig(model=spec, data={}, out_dir=Path("."), opt="sam", lr=0.1, momentum=0.9, rho=0.05)
    ours = make_optimizer(config, ours_model)
    theirs = SAM(theirs_model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)
    for _ in range(3):
        ours.step(lambda j, m: F.cross_entropy(ours_model(x), y))
        F.cross_entropy(theirs_model(x), y).backward()
        theirs.first_step(zero_grad=True)
        F.cross_entropy(theirs_model(x), y).backward()
        theirs.second_step(zero_grad=True)
    return max(
        float((a - b).abs().max()) for a, b in zip(ours_model.parameters(), theirs_model.parameters(), strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, one repeat (smoke run)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    steps, repeats, warmup = (12, 1, 2) if args.quick else (60, 5, 5)
    torch.set_num_threads(torch.get_num_threads())
    data = load_data(data_spec("digits"))
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randperm(len(data), generator=generator)[: args.batch_size] for _ in range(steps + warmup)]
    results: dict[str, dict[str, float]] = {}
    for label, spec in MODELS.items():
        medians: dict[str, list[float]] = {opt: [] for opt in OPTIMIZERS}
        for _ in range(repeats):  # interleaved: every repeat runs every optimizer once
            for opt in OPTIMIZERS:
                medians[opt].append(statistics.median(step_times(spec, opt, batches, data.x, data.y, warmup)))
        sgd = statistics.median(medians["sgd"])
        results[label] = {opt: statistics.median(v) / sgd for opt, v in medians.items()}
        print(label, {k: round(v, 3) for k, v in results[label].items()}, flush=True)
    diff = cross_check()
    print(f"max |w_ours - w_pytorch_optimizer| after 3 SAM steps: {diff:.2e}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_bench.json").write_text(json.dumps({"ratios_to_sgd": results, "cross_check": diff}, indent=2))
    lines = ["| model | " + " | ".join(OPTIMIZERS) + " | eigensam / sam |", "|---" * (len(OPTIMIZERS) + 2) + "|"]
    for label, ratios in results.items():
        cells = " | ".join(f"{ratios[o]:.2f}x" for o in OPTIMIZERS)
        lines.append(f"| {label} | {cells} | {ratios['eigensam'] / ratios['sam']:.2f}x |")
    lines.append("")
    lines.append(f"Cross-check: after 3 SAM steps (SGD base, momentum 0.9, rho 0.05) our weights and "
                 f"pytorch-optimizer's `SAM` differ by at most {diff:.1e}.")  # fmt: skip
    (RESULTS / "train_bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
