"""Your own training loop: `landscape_cli.optim`'s SAM family against pytorch-optimizer's SAM, and what
`SharpnessTracker(every=100)` adds to the training time on the digits CNN.

    python bench/optim_bench.py            # in a venv with the bench extra (pip install -e '.[bench]'), ~6 min
    python bench/optim_bench.py --quick    # smoke run, about 10 s

1. Step time. Every contestant trains a fresh copy of the same model (same seed) on the same mini-batches of
   128 digits in the loop a user writes: forward, loss, backward, `first_step`, forward, loss, backward,
   `second_step` (SGD: zero_grad, forward, loss, backward, step; mSAM: `step(closure, batch)`; Eigen-SAM passes
   `loss_fn` to `first_step`). Each step is timed; the contestants are interleaved step by step, their order
   rotating, so that another process's burst falls on all of them alike; the median step time (the median over
   repeats of each run's median) is reported as a ratio to SGD's. The mean step time is reported
   too: it carries Eigen-SAM's eigenvector refresh (every 100 steps), which the median leaves out. The peer is
   pytorch-optimizer's `SAM` in the identical loop, with its defaults (`foreach=None`: a loop over the
   parameters on CPU) and with `foreach=True`. Target (issue 14): our SAM no slower than the peer.
2. Agreement. Our SAM and pytorch-optimizer's SAM, from the same initial weights on the same batches for a few
   steps: the largest weight difference. The same for our ASAM and the peer's `adaptive=True`, whose T is |w|
   where ours is |w| + 0.01 (Kwon et al.'s eta), also with eta set to 0 here to show that this is the only
   difference.
3. Tracker overhead. The digits CNN trains 1000 steps in a user loop, with no tracker and with
   `SharpnessTracker(model, (x, y), every=100, measures=("top", "grad_norm"))` (defaults otherwise: 1,024
   samples, warm-started Lanczos), with `warm_start=False`, and with fewer samples, trained with SGD and with
   SAM. The runs go in lockstep (step i of each, the order rotating, then step i + 1). Reported, as medians over
   repeats: the time spent in the tracker (its construction and every `tracker.step` call) over the untracked
   run's training time, and the overhead (the tracked run's training steps plus tracker over the untracked run's
   training steps, minus 1: it also counts any slowdown of the training steps themselves). Target: under 5%.

Torch threads as `bench/train_bench.py` sets them; glibc's malloc tunables and one BLAS thread as the other
benches (`bench/_harness.py`). Results: bench/results/optim_bench.{md,json}.
"""

from __future__ import annotations

import argparse
import os

from _harness import ENV, git_state, json_default, log, machine, reexec_with_env, versions

if __name__ == "__main__":
    reexec_with_env()

# ruff: noqa: E402 - the imports follow the re-exec on purpose
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import landscape_cli.train.optimizers as train_optimizers
from landscape_cli.optim import ASAM, MSAM, SAM, SSAM, USAM, EigenSAM
from landscape_cli.track import SharpnessTracker
from landscape_cli.zoo.data import data_spec, load_data
from landscape_cli.zoo.models import build_model, model_spec

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {
    "mlp 64-128-128-10": model_spec("mlp", {"widths": [64, 128, 128, 10]}),
    "cnn 8-16": model_spec("cnn", {"channels": [8, 16]}),  # the sample checkpoint cnn_digits.pt's model
}
CNN = "cnn 8-16"
CONTESTANTS = ["sgd", "sam", "asam", "ssam", "msam", "usam", "eigensam", "po-sam", "po-sam foreach"]
OURS = {"sam": SAM, "asam": ASAM, "ssam": SSAM, "usam": USAM, "eigensam": EigenSAM}
LR, MOMENTUM, RHO, MICRO_BATCHES, EIGEN_EVERY, EIGEN_ITERS = 0.05, 0.9, 0.05, 4, 100, 5
TRACKER_SETTINGS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "defaults (1024 samples, warm start)": {},
    "warm_start=False": {"warm_start": False},
    "samples=512": {"samples": 512},
    "samples=256": {"samples": 256},
    "samples=64": {"samples": 64},
}
QUICK_TRACKER_SETTINGS = ["none", "defaults (1024 samples, warm start)", "samples=64"]

Step = Callable[[torch.Tensor, torch.Tensor], None]


def user_loop_step(name: str, model: torch.nn.Module) -> tuple[Step, torch.optim.Optimizer]:
    """One training step of `name` as a user writes it in their own loop, and its optimizer."""
    params = model.parameters()
    if name == "sgd":
        sgd = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)

        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            sgd.zero_grad()
            F.cross_entropy(model(x), y).backward()
            sgd.step()

        return step, sgd
    if name == "msam":
        msam = MSAM(params, torch.optim.SGD, rho=RHO, micro_batches=MICRO_BATCHES, lr=LR, momentum=MOMENTUM)

        def closure(part: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            loss = F.cross_entropy(model(part[0]), part[1])
            loss.backward()
            return loss

        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            msam.step(closure, (x, y))

        return step, msam
    if name == "eigensam":
        eigensam = EigenSAM(params, torch.optim.SGD, rho=RHO, eigen_every=EIGEN_EVERY, eigen_iters=EIGEN_ITERS,
                            lr=LR, momentum=MOMENTUM)  # fmt: skip

        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            F.cross_entropy(model(x), y).backward()
            eigensam.first_step(zero_grad=True, loss_fn=lambda: F.cross_entropy(model(x), y))
            F.cross_entropy(model(x), y).backward()
            eigensam.second_step(zero_grad=True)

        return step, eigensam
    if name.startswith("po-sam"):
        from pytorch_optimizer import SAM as PeerSAM

        foreach = True if name.endswith("foreach") else None
        opt: Any = PeerSAM(params, torch.optim.SGD, rho=RHO, foreach=foreach, lr=LR, momentum=MOMENTUM)
    else:
        opt = OURS[name](params, torch.optim.SGD, rho=RHO, lr=LR, momentum=MOMENTUM)

    def two_step(x: torch.Tensor, y: torch.Tensor) -> None:
        F.cross_entropy(model(x), y).backward()
        opt.first_step(zero_grad=True)
        F.cross_entropy(model(x), y).backward()
        opt.second_step(zero_grad=True)

    return two_step, opt


def rotated(names: list[str], r: int) -> list[str]:
    """The interleaving order of repeat r: every name once, the first one moving along."""
    return names[r % len(names) :] + names[: r % len(names)]


def step_times(spec: dict, batches: list[torch.Tensor], x, y, warmup: int, r: int) -> dict[str, list[float]]:
    """Every contestant's step times over `batches`, each on its own fresh copy of the model: interleaved step by
    step (the order rotating), so that whatever else the machine does falls on all of them alike."""
    steps = {}
    for name in CONTESTANTS:
        torch.manual_seed(0)
        steps[name], _ = user_loop_step(name, build_model(spec))
    times: dict[str, list[float]] = {name: [] for name in CONTESTANTS}
    for i, idx in enumerate(batches):
        xb, yb = x[idx], y[idx]
        for name in rotated(CONTESTANTS, r + i):
            start = time.perf_counter()
            steps[name](xb, yb)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def timing(data, batches: list[torch.Tensor], warmup: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, spec in MODELS.items():
        medians: dict[str, list[float]] = {c: [] for c in CONTESTANTS}
        means: dict[str, list[float]] = {c: [] for c in CONTESTANTS}
        for r in range(repeats):
            times = step_times(spec, batches, data.x, data.y, warmup, r)
            for name, t in times.items():
                medians[name].append(statistics.median(t))
                means[name].append(statistics.fmean(t))
        sgd_median, sgd_mean = statistics.median(medians["sgd"]), statistics.median(means["sgd"])
        per_repeat = {peer: [a / b for a, b in zip(medians["sam"], medians[peer], strict=True)]
                      for peer in ("po-sam", "po-sam foreach")}  # fmt: skip
        out[label] = {
            "median_ratio_to_sgd": {c: statistics.median(v) / sgd_median for c, v in medians.items()},
            "mean_ratio_to_sgd": {c: statistics.median(v) / sgd_mean for c, v in means.items()},
            "sam_over_peer": {p: statistics.median(medians["sam"]) / statistics.median(medians[p]) for p in per_repeat},
            "sam_over_peer_per_repeat": per_repeat,
            "median_step_seconds": medians,
            "mean_step_seconds": means,
        }
        log(f"{label}: " + json.dumps({k: round(v, 3) for k, v in out[label]["median_ratio_to_sgd"].items()}))
        log(f"{label}: sam / peer " + json.dumps({k: round(v, 3) for k, v in out[label]["sam_over_peer"].items()}))
    return out


def max_weight_difference(spec: dict, ours_cls, peer_kwargs: dict, data, batches, rho: float) -> tuple[float, float]:
    """Largest |w_ours - w_peer| after len(batches) steps from the same weights, and the largest |w|."""
    from pytorch_optimizer import SAM as PeerSAM

    torch.manual_seed(0)
    ours_model = build_model(spec)
    peer_model = build_model(spec)
    peer_model.load_state_dict(ours_model.state_dict())
    ours = ours_cls(ours_model.parameters(), torch.optim.SGD, rho=rho, lr=LR, momentum=MOMENTUM)
    peer = PeerSAM(peer_model.parameters(), torch.optim.SGD, rho=rho, lr=LR, momentum=MOMENTUM, **peer_kwargs)
    for idx in batches:
        x, y = data.x[idx], data.y[idx]
        for model, opt in ((ours_model, ours), (peer_model, peer)):
            F.cross_entropy(model(x), y).backward()
            opt.first_step(zero_grad=True)
            F.cross_entropy(model(x), y).backward()
            opt.second_step(zero_grad=True)
    pairs = list(zip(ours_model.parameters(), peer_model.parameters(), strict=True))
    with torch.no_grad():
        return max(float((a - b).abs().max()) for a, b in pairs), max(float(a.abs().max()) for a, _ in pairs)


def agreement(data, batches: list[torch.Tensor]) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": len(batches), "rho": RHO, "asam_rho": 0.5}
    for label, spec in MODELS.items():
        sam, scale = max_weight_difference(spec, SAM, {}, data, batches, RHO)
        sam_foreach, _ = max_weight_difference(spec, SAM, {"foreach": True}, data, batches, RHO)
        asam, _ = max_weight_difference(spec, ASAM, {"adaptive": True}, data, batches, 0.5)
        eta = train_optimizers.ASAM_ETA
        try:
            train_optimizers.ASAM_ETA = 0.0  # T = |w|, as the peer's adaptive SAM (and davda54/sam) define it
            asam_eta0, _ = max_weight_difference(spec, ASAM, {"adaptive": True}, data, batches, 0.5)
        finally:
            train_optimizers.ASAM_ETA = eta
        out[label] = {"sam": sam, "sam_foreach": sam_foreach, "asam": asam, "asam_eta0": asam_eta0, "max_abs_w": scale}
        log(f"{label}: agreement " + json.dumps({k: f"{v:.1e}" for k, v in out[label].items()}))
    return out


def tracked_runs(name: str, settings: list[str], data, batches: list[torch.Tensor], every: int, r: int) -> dict:
    """The digits CNN trained over `batches` once per tracker setting, each run on its own copy of the model, the
    runs in lockstep (step i of every run, the order rotating, before step i + 1), so that another process's burst
    falls on all of them alike. Per run: seconds in the training steps, in the tracker's construction, in all its
    `tracker.step` calls, in each call that measured, and the tracker's rows."""
    runs: dict[str, dict[str, Any]] = {}
    for label in settings:
        torch.manual_seed(0)
        model = build_model(MODELS[CNN])
        step, optimizer = user_loop_step(name, model)
        start, tracker = time.perf_counter(), None
        if TRACKER_SETTINGS[label] is not None:
            tracker = SharpnessTracker(model, (data.x, data.y), "cross_entropy", every=every,
                                       measures=("top", "grad_norm"), **TRACKER_SETTINGS[label])  # fmt: skip
        runs[label] = {"step": step, "optimizer": optimizer, "tracker": tracker, "train": 0.0, "in_tracker": 0.0,
                       "construction": time.perf_counter() - start, "measurements": []}  # fmt: skip
    for i, idx in enumerate(batches, 1):
        xb, yb = data.x[idx], data.y[idx]
        for label in rotated(settings, r + i):
            run = runs[label]
            start = time.perf_counter()
            run["step"](xb, yb)
            mark = time.perf_counter()
            run["train"] += mark - start
            if run["tracker"] is not None:
                run["tracker"].step(i, run["optimizer"])
                seconds = time.perf_counter() - mark
                run["in_tracker"] += seconds
                if i % every == 0:
                    run["measurements"].append(seconds)
    return {label: {"train": run["train"], "construction": run["construction"], "in_tracker": run["in_tracker"],
                    "measurements": run["measurements"], "rows": [] if run["tracker"] is None else run["tracker"].rows}
            for label, run in runs.items()}  # fmt: skip


def first_use(data) -> float:
    """Seconds of a process's first measurement, spent once: torch.func's modules are imported on first use.
    Made before the timed runs so that no setting pays it."""
    model = build_model(MODELS[CNN])
    start = time.perf_counter()
    SharpnessTracker(model, (data.x, data.y), "cross_entropy", samples=64).measure(0)
    return time.perf_counter() - start


def tracker_overhead(data, batches: list[torch.Tensor], every: int, repeats: int, settings: list[str]) -> dict:
    out: dict[str, Any] = {"steps": len(batches), "every": every, "first_use_seconds": first_use(data),
                           "settings": {s: TRACKER_SETTINGS[s] for s in settings}}  # fmt: skip
    for name in ("sgd", "sam"):
        repeats_ = [tracked_runs(name, settings, data, batches, every, r) for r in range(repeats)]
        tracked = [s for s in settings if s != "none"]
        base = statistics.median([runs["none"]["train"] for runs in repeats_])
        step_seconds = base / len(batches)
        result: dict[str, Any] = {"untracked_seconds": base}
        for key in ("overhead", "in_tracker_share", "first_measurement_seconds", "later_measurement_seconds",
                    "every_for_5_percent", "hvps_per_measurement", "hvps_total"):  # fmt: skip
            result[key] = {}
        for s in tracked:
            inside = [(runs[s]["construction"] + runs[s]["in_tracker"]) / runs["none"]["train"] for runs in repeats_]
            trained = [runs[s]["train"] / runs["none"]["train"] for runs in repeats_]
            # (training steps + tracker) / untracked training steps - 1, in each repeat
            result["overhead"][s] = statistics.median([t + i - 1 for t, i in zip(trained, inside, strict=True)])
            result["in_tracker_share"][s] = statistics.median(inside)
            first = [runs[s]["measurements"][0] for runs in repeats_]
            result["first_measurement_seconds"][s] = statistics.median(first)
            # a measurement after the first (warm-started, the HVP method chosen): the steady cost, and the `every`
            # at which it would be 5% of training
            later = statistics.median([m for runs in repeats_ for m in runs[s]["measurements"][1:]] or [math.nan])
            result["later_measurement_seconds"][s] = later
            result["every_for_5_percent"][s] = later / (0.05 * step_seconds)
            result["hvps_per_measurement"][s] = [row["hvps"] for row in repeats_[0][s]["rows"]]
            result["hvps_total"][s] = sum(result["hvps_per_measurement"][s])
        result["runs"] = [{s: {k: v for k, v in run.items() if k != "rows"} for s, run in runs.items()}
                          for runs in repeats_]  # fmt: skip
        out[name] = result
        log(f"tracker, {name} training: " + json.dumps({k: f"{v:+.1%}" for k, v in out[name]["overhead"].items()}))
        log(
            f"tracker, {name} training, in tracker: "
            + json.dumps({k: f"{v:.1%}" for k, v in out[name]["in_tracker_share"].items()})
        )
        log(f"tracker, {name} training, hvps: " + json.dumps(out[name]["hvps_total"]))
    return out


def markdown(results: dict[str, Any]) -> str:
    timing_, agree, track = results["timing"], results["agreement"], results["tracker"]
    labels = list(MODELS)
    lines = [f"Step time in a user loop, ratio to SGD's (median step; mean step in parentheses, which includes "
             f"Eigen-SAM's refresh every {EIGEN_EVERY} steps):", "",
             "| optimizer | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]  # fmt: skip
    for c in CONTESTANTS:
        ratios = [(timing_[m]["median_ratio_to_sgd"][c], timing_[m]["mean_ratio_to_sgd"][c]) for m in labels]
        cells = [f"{median:.2f}x ({mean:.2f}x)" for median, mean in ratios]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "Our SAM / pytorch-optimizer's SAM (median step; min-max of the per-repeat ratios):", "",
              "| model | vs po-sam (default) | vs po-sam foreach=True |", "|---|---|---|"]  # fmt: skip
    for m in labels:
        cells = []
        for peer in ("po-sam", "po-sam foreach"):
            per = timing_[m]["sam_over_peer_per_repeat"][peer]
            cells.append(f"{timing_[m]['sam_over_peer'][peer]:.2f}x ({min(per):.2f}-{max(per):.2f})")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", f"Agreement after {agree['steps']} steps from the same weights on the same batches (SGD base, "
              f"lr {LR}, momentum {MOMENTUM}): largest |w_ours - w_peer|:", "",
              f"| model | SAM rho {RHO} | SAM vs peer foreach | ASAM rho {agree['asam_rho']} vs adaptive=True "
              "| the same, our eta set to 0 | largest abs w |", "|---|---|---|---|---|---|"]  # fmt: skip
    for m in labels:
        a = agree[m]
        lines.append(f"| {m} | {a['sam']:.1e} | {a['sam_foreach']:.1e} | {a['asam']:.1e} | {a['asam_eta0']:.1e} "
                     f"| {a['max_abs_w']:.2f} |")  # fmt: skip
    lines += ["", f"Tracker overhead on the {CNN} CNN: {track['steps']} steps of batch 128, "
              f"`every={track['every']}`, `measures=(\"top\", \"grad_norm\")`, runs in lockstep. Time spent in the "
              "tracker (construction and `tracker.step`) over the untracked run's training time; the overhead (the "
              "tracked run's training steps and tracker over the untracked run's training steps, minus 1; medians "
              "of repeats); the Hessian-vector products of all measurements; and the `every` at which a "
              "measurement after the first would cost 5% of training:", "",
              "| tracker | in tracker, SGD | overhead, SGD | in tracker, SAM | overhead, SAM | HVPs, SGD | HVPs, SAM "
              "| every for 5%, SGD | every for 5%, SAM |", "|---" * 9 + "|"]  # fmt: skip
    for s in track["settings"]:
        if s == "none":
            continue
        sgd, sam = track["sgd"], track["sam"]
        lines.append(f"| {s} | {sgd['in_tracker_share'][s]:.1%} | {sgd['overhead'][s]:+.1%} "
                     f"| {sam['in_tracker_share'][s]:.1%} | {sam['overhead'][s]:+.1%} | {sgd['hvps_total'][s]:.0f} "
                     f"| {sam['hvps_total'][s]:.0f} | {sgd['every_for_5_percent'][s]:.0f} "
                     f"| {sam['every_for_5_percent'][s]:.0f} |")  # fmt: skip
    base = {o: track[o]["untracked_seconds"] for o in ("sgd", "sam")}
    lines += ["", f"Untracked: {base['sgd']:.2f} s (SGD), {base['sam']:.2f} s (SAM) of training steps for "
              f"{track['steps']} steps. "
              "A process's first measurement also imports torch.func's modules once "
              f"({track['first_use_seconds']:.1f} s, made before the timed runs)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, one repeat (smoke run)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    steps, repeats, warmup = (20, 1, 2) if args.quick else (200, 7, 5)
    track_steps, track_every, track_repeats = (100, 50, 1) if args.quick else (1000, 100, 5)
    track_settings = QUICK_TRACKER_SETTINGS if args.quick else list(TRACKER_SETTINGS)
    torch.set_num_threads(torch.get_num_threads())
    load = os.getloadavg()
    data = load_data(data_spec("digits"))
    generator = torch.Generator().manual_seed(0)

    def draw(n: int) -> list[torch.Tensor]:
        return [torch.randperm(len(data), generator=generator)[: args.batch_size] for _ in range(n)]

    settings = {"batch_size": args.batch_size, "steps": steps, "warmup": warmup, "repeats": repeats, "lr": LR,
                "momentum": MOMENTUM, "rho": RHO, "micro_batches": MICRO_BATCHES, "eigen_every": EIGEN_EVERY,
                "eigen_iters": EIGEN_ITERS, "quick": args.quick}  # fmt: skip
    results: dict[str, Any] = {
        "settings": settings,
        "timing": timing(data, draw(steps + warmup), warmup, repeats),
        "agreement": agreement(data, draw(10)),
        "tracker": tracker_overhead(data, draw(track_steps), track_every, track_repeats, track_settings),
    }
    results["meta"] = {
        "machine": machine(torch.get_num_threads(), load),
        "versions": versions({"torch": torch.__version__}, ("pytorch-optimizer",)),
        "git": git_state(),
        "env": ENV,
    }
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (RESULTS / f"optim_bench{suffix}.json").write_text(json.dumps(results, indent=1, default=json_default))
    text = markdown(results)
    (RESULTS / f"optim_bench{suffix}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
