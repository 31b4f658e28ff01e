"""A ResNet-18 (11.2M parameters) on CIFAR-shaped images: the top Hessian eigenvalue at tol 1e-3, landscape_cli
against PyHessian, each in a fresh process (wall time from building to the eigenvalue, peak RSS).

    python bench/scale_bench.py --images 128      # a few minutes per tool on 2 CPU cores

Results: printed, and bench/results/scale_bench.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import torch
from torch import nn
import torch.nn.functional as F
torch.set_num_threads(2)

sys.path.insert(0, BENCH)
from scale_model import ResNet18

tool, images = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
model = ResNet18().eval()
g = torch.Generator().manual_seed(1)
x = torch.randn(images, 3, 32, 32, generator=g)
y = torch.randint(0, 10, (images,), generator=g)
start = time.perf_counter()
if tool == "ours":
    import landscape_cli as ls
    op = ls.hessian(model, (x, y), device="cpu")
    result = ls.lanczos_extremal(op, top_k=1, tol=1e-3, max_iter=100)
    value, products = float(result.top.values[0]), result.matvecs
else:
    from pyhessian import hessian
    h = hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    values, _ = h.eigenvalues(maxIter=100, tol=1e-3, top_n=1)
    value, products = float(values[0]), None
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"tool": tool, "images": images, "top": value, "seconds": seconds, "peak_rss_bytes": peak,
                  "products": products}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--tools", default="ours,pyhessian")
    args = parser.parse_args()
    rows = []
    for tool in args.tools.split(","):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD.replace("BENCH", repr(str(ROOT / "bench"))), tool, str(args.images)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            rows.append({"tool": tool, "images": args.images, "failed": out.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows[-1]["process_seconds"] = time.perf_counter() - started
        print(json.dumps(rows[-1]), flush=True)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"scale_bench_{args.images}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
