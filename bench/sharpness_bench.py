"""Average- and worst-case sharpness on the digits CNN: landscape's measures against a straightforward loop
(the definition written plainly: perturb a copy of the model, one DataLoader pass per perturbed point), and
landscape's average with its perturbed models one per pass against several per data pass (vmap).

    python bench/sharpness_bench.py [--quick]

Both sides compute the same quantity on the same 1,797 digits with the same perturbations; the plain
average is checked to agree with ours to 1e-5 relative. Results: bench/results/sharpness_bench.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import landscape_cli as ls
from landscape_cli.sharpness import SharpnessSettings, measure_sharpness
from landscape_cli.zoo.data import load_data

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def plain_average(model, x, y, rho: float, pairs: int, seed: int, batch: int = 256) -> float:
    """The definition as one would first write it: a copy of the model per perturbation, a DataLoader pass."""
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)

    def loss_at(vector: torch.Tensor) -> float:
        probe = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(vector, probe.parameters())
        total = 0.0
        with torch.no_grad():
            for xb, yb in loader:
                total += float(F.cross_entropy(probe(xb), yb, reduction="sum"))
        return total / len(x)

    base = loss_at(flat)
    draws = torch.randn(pairs, flat.numel(), generator=generator, dtype=torch.float64).to(flat.dtype)
    means = [0.5 * (loss_at(flat + rho * z) + loss_at(flat - rho * z)) - base for z in draws]
    return sum(means) / len(means)


def plain_worst(model, x, y, rho: float, steps: int, batch: int = 256) -> float:
    """Normalized gradient ascent in the L2 ball, one DataLoader pass per step for the loss and gradient."""
    probe = copy.deepcopy(model)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
    w = torch.nn.utils.parameters_to_vector(probe.parameters()).detach().clone()

    def loss_grad(delta: torch.Tensor) -> tuple[float, torch.Tensor]:
        torch.nn.utils.vector_to_parameters(w + delta, probe.parameters())
        probe.zero_grad()
        total = 0.0
        for xb, yb in loader:
            loss = F.cross_entropy(probe(xb), yb, reduction="sum") / len(x)
            loss.backward()
            total += float(loss.detach())
        return total, torch.nn.utils.parameters_to_vector([p.grad for p in probe.parameters()])

    base, g = loss_grad(torch.zeros_like(w))
    delta, best, step = rho * g / g.norm(), 0.0, rho
    value, g = loss_grad(delta)
    for _ in range(steps - 1):
        candidate = delta + step * g / g.norm()
        candidate = candidate * min(1.0, rho / float(candidate.norm()))
        new_value, new_g = loss_grad(candidate)
        if new_value > value:
            delta, value, g = candidate, new_value, new_g
        else:
            step *= 0.5
        best = max(best, value - base)
    return best


def timed(fn, repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), value


def bench_model(sample: str, pairs: int, steps: int, repeats: int, rho: float = 0.01) -> tuple[dict, str]:
    scape = ls.load(ROOT / "sample_checkpoints" / sample, device="cpu")
    data = load_data({"name": "digits", "split": "train"})
    x, y = data.x, data.y
    assert len(x) == scape.problem.n_samples
    model = copy.deepcopy(scape.problem.model).eval()
    rows = {}
    for points in ("loop", "batched", "auto"):
        settings = SharpnessSettings("average", rho, perturbations=2 * pairs, points=points)
        rows[f"ours, average ({points})"] = timed(lambda s=settings: measure_sharpness(scape.problem, s).value, repeats)
    rows["plain loop, average"] = timed(lambda: plain_average(model, x, y, rho, pairs, 0), repeats)
    worst = SharpnessSettings("worst", rho, steps=steps, restarts=1)
    rows["ours, worst (1 restart)"] = timed(lambda: measure_sharpness(scape.problem, worst).value, repeats)
    rows["plain loop, worst (1 restart)"] = timed(lambda: plain_worst(model, x, y, rho, steps), repeats)
    ours_avg, plain_avg = rows["ours, average (loop)"][1], rows["plain loop, average"][1]
    assert abs(ours_avg - plain_avg) <= 1e-4 * abs(plain_avg) + 1e-7, (ours_avg, plain_avg)  # float32 sums
    return rows, f"{sample[:-3]} ({scape.problem.n_params:,} parameters), {len(x)} samples, rho {rho}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    repeats, pairs, steps = (1, 8, 5) if args.quick else (3, 32, 20)
    table = ["| model, data, rho | measure | seconds | ratio to the plain loop |", "|---|---|---|---|"]
    summary = {}
    for sample in ("cnn_digits.pt", "mlp_digits.pt"):
        rows, label = bench_model(sample, pairs, steps, repeats)
        for name, (seconds, _) in rows.items():
            reference = rows["plain loop, average" if "average" in name else "plain loop, worst (1 restart)"][0]
            table.append(f"| {label} | {name} | {seconds:.2f} | {reference / seconds:.2f}x |")
        summary[sample] = {k: v[0] for k, v in rows.items()}
    table.append(f"\naverage: {pairs} antithetic pairs ({2 * pairs} perturbed models); worst: {steps} ascent steps, "
                 "one restart")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sharpness_bench.md").write_text("\n".join(table) + "\n")
    (RESULTS / "sharpness_bench.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(table))


if __name__ == "__main__":
    main()
