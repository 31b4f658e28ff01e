"""Step time of each optimizer in a user's own loop, relative to SGD and to pytorch-optimizer's SAM, and the
overhead of sharpness tracking in that loop.

    python bench/train_bench.py            # in a venv with the bench extra (pip install -e '.[bench]')
    python bench/train_bench.py --quick

The loop is the one users write around davda54/sam's interface: forward, loss, backward, `first_step`,
forward, loss, backward, `second_step` (mSAM: `step(closure, batch)`; Eigen-SAM: `first_step(loss_fn=...)`;
SGD: forward, loss, backward, `step`). Each optimizer steps the same model from the same weights on the same
mini-batches of digits (batch 128); contestants are interleaved, and the median step over repeats is reported
as a ratio. pytorch-optimizer's `SAM` (and `SAM(adaptive=True)`, its ASAM) runs in the identical loop; the
weights after 3 steps of ours and theirs are compared. The tracker's overhead: 1,000 SGD steps of the digits
CNN with and without `SharpnessTracker(every=100)`. Results: bench/results/train_bench.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from landscape_cli import optim
from landscape_cli.track import SharpnessTracker
from landscape_cli.zoo.data import data_spec, load_data
from landscape_cli.zoo.models import build_model, model_spec

MODELS = {
    "mlp 64-128-128-10": model_spec("mlp", {"widths": [64, 128, 128, 10]}),
    "resnet width 8 (BatchNorm)": model_spec("resnet", {"width": 8}),
}
RESULTS = Path(__file__).resolve().parent / "results"
LR, MOMENTUM, RHO = 0.05, 0.9, 0.05


def contestants(model: torch.nn.Module) -> dict[str, Callable[[torch.Tensor, torch.Tensor], None]]:
    """One step of each optimizer in the loop a user writes, as a function of the batch."""
    from pytorch_optimizer import SAM as TheirSAM

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    def plain(opt: torch.optim.Optimizer) -> Callable:
        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            loss(x, y).backward()
            opt.step()
            opt.zero_grad()

        return step

    def two_step(opt: torch.optim.Optimizer, **first: object) -> Callable:
        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            loss(x, y).backward()
            opt.first_step(zero_grad=True, **{k: (v(x, y) if callable(v) else v) for k, v in first.items()})
            loss(x, y).backward()
            opt.second_step(zero_grad=True)

        return step

    def micro(opt: optim.MSAM) -> Callable:
        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            def on_part(part: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
                value = loss(*part)
                value.backward()
                return value

            opt.step(on_part, (x, y))
            opt.zero_grad()

        return step

    params = list(model.parameters())
    sgd = dict(lr=LR, momentum=MOMENTUM)
    return {
        "sgd": plain(torch.optim.SGD(params, **sgd)),
        "sam": two_step(optim.SAM(params, torch.optim.SGD, rho=RHO, **sgd)),
        "asam": two_step(optim.ASAM(params, torch.optim.SGD, rho=RHO, **sgd)),
        "ssam": two_step(optim.SSAM(params, torch.optim.SGD, rho=RHO, **sgd)),
        "usam": two_step(optim.USAM(params, torch.optim.SGD, rho=RHO, **sgd)),
        "msam (4)": micro(optim.MSAM(params, torch.optim.SGD, rho=RHO, micro_batches=4, **sgd)),
        "eigensam (every 100)": two_step(
            optim.EigenSAM(params, torch.optim.SGD, rho=RHO, eigen_every=100, **sgd),
            loss_fn=lambda x, y: lambda: loss(x, y),
        ),  # fmt: skip
        "pytorch-optimizer SAM": two_step(TheirSAM(params, torch.optim.SGD, rho=RHO, **sgd)),
        "pytorch-optimizer SAM(adaptive)": two_step(TheirSAM(params, torch.optim.SGD, rho=RHO, adaptive=True, **sgd)),
    }


def step_times(spec: dict, batches: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, warmup: int,
               repeats: int) -> dict[str, float]:  # fmt: skip
    """The median step of each contestant; each repeat runs every contestant on the same batches from the same
    weights, in turn (interleaved, so a slow spell of the machine hits all alike)."""
    torch.manual_seed(0)
    model = build_model(spec)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    names = list(contestants(model))
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            model.load_state_dict(start)
            step = contestants(model)[name]  # a fresh optimizer: no state carried between contestants
            model.train()
            for i, idx in enumerate(batches):
                started = time.perf_counter()
                step(x[idx], y[idx])
                if i >= warmup:
                    times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def cross_check() -> dict[str, float]:
    """Max |difference| of the weights after 3 steps from the same start: ours against pytorch-optimizer's."""
    data = load_data(data_spec("digits"))
    x, y = data.x[:128], data.y[:128]
    spec = model_spec("mlp", {"widths": [64, 32, 10], "activation": "tanh"})
    out = {}
    for ours_name, theirs_name in (("sam", "pytorch-optimizer SAM"), ("asam", "pytorch-optimizer SAM(adaptive)")):
        weights = []
        for name in (ours_name, theirs_name):
            torch.manual_seed(0)
            model = build_model(spec)
            step = contestants(model)[name]
            for _ in range(3):
                step(x, y)
            weights.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
        out[f"{ours_name} vs {theirs_name}"] = float((weights[0] - weights[1]).abs().max())
    return out


def tracker_overhead(steps: int, every: int, repeats: int) -> dict[str, float]:
    """SGD on the digits CNN in a user loop, without and with a tracker (top eigenvalue and gradient norm every
    `every` steps, warm-started, on 1,024 (the default), 256 and 64 samples; and from random starts). Each
    setting runs `repeats` times in turn after an untimed warm-up run; medians."""
    data = load_data(data_spec("digits"))
    x, y = data.x, data.y
    generator = torch.Generator().manual_seed(0)
    order = torch.cat([torch.randperm(len(x), generator=generator) for _ in range(steps * 64 // len(x) + 1)])
    spec = model_spec("cnn", {})
    settings = {"none": None, "warm 1024": {"samples": 1024}, "warm 256": {"samples": 256},
                "warm 64": {"samples": 64}, "cold 1024": {"samples": 1024, "warm_start": False}}  # fmt: skip

    def run(options: dict | None) -> tuple[float, float]:
        torch.manual_seed(0)
        model = build_model(spec)
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        started = time.perf_counter()
        tracker = SharpnessTracker(model, (x, y), every=every, **options) if options is not None else None
        for step in range(1, steps + 1):
            idx = order[(step - 1) * 64 : step * 64]
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            opt.zero_grad()
            if tracker is not None:
                tracker.step(step, opt)
        return time.perf_counter() - started, sum(row["hvps"] for row in tracker.rows) if tracker else 0.0

    run(None)  # warm-up: first-call costs of the model and the allocator
    times: dict[str, list[float]] = {name: [] for name in settings}
    hvps: dict[str, float] = {}
    for _ in range(repeats):
        for name, options in settings.items():
            seconds, products = run(options)
            times[name].append(seconds)
            hvps[name] = products
    base = statistics.median(times["none"])
    out = {"seconds_none": base}
    for name in settings:
        if name != "none":
            out[f"overhead {name}"] = statistics.median(times[name]) / base - 1
            out[f"hvps {name}"] = hvps[name]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_data(data_spec("digits"))
    x, y = data.x, data.y
    steps, warmup, repeats, tracked = (8, 2, 1, 200) if args.quick else (30, 5, 5, 1000)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randperm(len(x), generator=generator)[:128] for _ in range(steps)]
    lines = ["| optimizer | " + " | ".join(MODELS) + " |", "|---|" + "---|" * len(MODELS)]
    medians = {model: step_times(spec, batches, x, y, warmup, repeats) for model, spec in MODELS.items()}
    for name in medians[next(iter(MODELS))]:
        cells = [f"{medians[m][name] / medians[m]['sgd']:.2f}x" for m in MODELS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ours_vs_theirs = {m: medians[m]["sam"] / medians[m]["pytorch-optimizer SAM"] for m in MODELS}
    lines.append("| ours SAM / pytorch-optimizer SAM | " + " | ".join(f"{v:.2f}x" for v in ours_vs_theirs.values())
                 + " |")  # fmt: skip
    adaptive = [medians[m]["asam"] / medians[m]["pytorch-optimizer SAM(adaptive)"] for m in MODELS]
    lines.append("| ours ASAM / pytorch-optimizer SAM(adaptive) | " + " | ".join(f"{v:.2f}x" for v in adaptive) + " |")
    check = cross_check()
    overhead = tracker_overhead(tracked, 100, 1 if args.quick else 3)
    pairs = ", ".join(f"{k} {v:.1e}" for k, v in check.items())
    lines += ["", f"Weights after 3 steps, max |ours - theirs|: {pairs}", "",
              f"Tracker every 100 steps during {tracked} SGD steps (batch 64) of the digits CNN:", "",
              "| tracked on | overhead | HVPs in all |", "|---|---|---|"]  # fmt: skip
    for name in ("warm 1024", "warm 256", "warm 64", "cold 1024"):
        start = "warm-started" if name.startswith("warm") else "random starts"
        lines.append(f"| {name.split()[1]} samples, {start} | {100 * overhead[f'overhead {name}']:.1f}% | "
                     f"{overhead[f'hvps {name}']:.0f} |")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "train_bench.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "train_bench.json").write_text(json.dumps({"step_seconds": medians, "cross_check": check,
                                                          "tracker": overhead}, indent=2))  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
