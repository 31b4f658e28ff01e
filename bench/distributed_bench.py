"""Data parallelism on this machine: the same HVPs and surface points in one process and in 2 ranks under
torchrun (Gloo), on a ResNet-18 over CIFAR-shaped images and a decoder-only token model.

    python bench/distributed_bench.py          # about 8 minutes on 2 CPU cores

Three configurations, each in fresh processes: 1 rank with 1 thread, 2 ranks with 1 thread each (scaling: each
rank has a core, as each would have a GPU), and 1 rank with 2 threads (the same two cores used by intra-op
threads instead). The time is per HVP (double backward on the retained graph, after a warm-up) and per
surface point (one pass each). Then hessian-eigenthings 1.0's DDPHessianOperator and ours under the same
2-rank torchrun on 301 digits (shares of 151 and 150): the top eigenvalue against one process's.
Results: printed, and bench/results/distributed_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import ROOT  # noqa: E402

HVPS = 6


def _workload(name: str):  # noqa: ANN202
    import torch
    from generality_bench import Decoder, Shifted, token_batches  # the token model of the generality bench

    g = torch.Generator().manual_seed(1)
    if name == "resnet18":
        from scale_model import ResNet18

        torch.manual_seed(0)
        return ResNet18().eval(), (torch.randn(48, 3, 32, 32, generator=g), torch.randint(0, 10, (48,), generator=g))
    torch.manual_seed(0)
    model = Shifted(Decoder(vocab=2048, width=192, layers=3, heads=4, length=64), hf=False).eval()
    batches = token_batches(2048, 48, 64, 48, 2)
    return model, batches[0]


def worker(name: str) -> None:
    """Run inside one process or one rank: time HVPs and surface points; rank 0 prints the result."""
    import torch
    import torch.distributed as dist

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    torch.set_num_threads(int(os.environ["BENCH_THREADS"]))
    import landscape_cli as ls

    model, data = _workload(name)
    land = ls.wrap(model, data, device="cpu", hvp="double-backward", distributed=distributed)
    op = land.operator()
    v = torch.randn(op.shape[0], generator=torch.Generator().manual_seed(0))
    op @ v  # the retained graph is built here
    start = time.perf_counter()
    for _ in range(HVPS):
        w = op @ v
    hvp_seconds = (time.perf_counter() - start) / HVPS
    start = time.perf_counter()
    surface = land.surface(x="-1:1:8", points_per_pass=1, seed=0)
    point_seconds = (time.perf_counter() - start) / 8
    losses = surface.arrays["train_loss"]
    if not distributed or dist.get_rank() == 0:
        row = {"workload": name, "ranks": dist.get_world_size() if distributed else 1,
               "threads": torch.get_num_threads(), "hvp_seconds": hvp_seconds,
               "point_seconds": point_seconds, "hvp_norm": float(w.double().norm()),
               "centre_loss": float(losses[len(losses) // 2])}  # fmt: skip
        print(json.dumps(row))
    if distributed:
        dist.destroy_process_group()


def _launch(ranks: int, args: list[str], env: dict[str, str]) -> dict:
    script = [str(Path(__file__).resolve()), *args]
    launcher = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                      f"--nproc_per_node={ranks}"]  # fmt: skip
    out = subprocess.run([*launcher, *script], capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        raise SystemExit(1)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peer() -> None:
    """Top Hessian eigenvalue of the MLP sample on 301 digits: ours and hessian-eigenthings' DDPHessianOperator,
    each rank on its contiguous share (151/150 under 2 ranks), and the time per HVP."""
    import hessian_eigenthings as he
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    import landscape_cli as ls

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    torch.set_num_threads(1)
    land = ls.load(ROOT / "sample_checkpoints" / "mlp_digits.pt", samples=301, device="cpu", dtype="float64",
                   hvp="double-backward")  # fmt: skip
    start = time.perf_counter()
    ours = land.spectrum(1, tol=1e-8, max_iter=100).lanczos
    ours_seconds = (time.perf_counter() - start) / ours.matvecs
    x, y = land.problem.x, land.problem.y  # this rank's share
    model = ls.instantiate(land.checkpoint).double().eval()
    op = (he.DDPHessianOperator if distributed else he.HessianOperator)(
        model, [(x, y)], he.supervised_loss(lambda out, target: F.cross_entropy(out, target))
    )
    start = time.perf_counter()
    theirs = he.lanczos(op, k=1, which="LA", tol=1e-8, max_iter=100, seed=0)
    elapsed = time.perf_counter() - start
    if not distributed or dist.get_rank() == 0:
        print(json.dumps({"ranks": dist.get_world_size() if distributed else 1, "ours_top": float(ours.top.values[0]),
                          "ours_seconds_per_hvp": ours_seconds, "eigenthings_top": float(theirs.eigenvalues[0]),
                          "eigenthings_seconds": elapsed}))  # fmt: skip
    if distributed:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workloads", default="resnet18,tokens")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    if args.peer:
        peer()
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rows = []
    for name in args.workloads.split(","):
        for ranks, threads in ((1, 1), (2, 1), (1, 2)):
            rows.append(_launch(ranks, ["--worker", name], {**env, "BENCH_THREADS": str(threads)}))
            print(json.dumps(rows[-1]), flush=True)
    for name in args.workloads.split(","):
        one, two, threaded = (r for r in rows if r["workload"] == name)
        print(f"{name}: 2 ranks vs 1 rank (1 thread each): HVP {one['hvp_seconds'] / two['hvp_seconds']:.2f}x, "
              f"surface point {one['point_seconds'] / two['point_seconds']:.2f}x; 2 ranks vs 1 rank with 2 threads: "
              f"HVP {threaded['hvp_seconds'] / two['hvp_seconds']:.2f}x, surface point "
              f"{threaded['point_seconds'] / two['point_seconds']:.2f}x; HVP norms differ by "
              f"{abs(one['hvp_norm'] - two['hvp_norm']) / one['hvp_norm']:.1e}")  # fmt: skip
    exact = _launch(1, ["--peer"], {**env, "BENCH_THREADS": "1"})
    peers = _launch(2, ["--peer"], {**env, "BENCH_THREADS": "1"})
    rows.append({"peer_comparison": {"one_process": exact, "two_ranks": peers}})
    print(json.dumps(rows[-1]))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "distributed_bench.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
