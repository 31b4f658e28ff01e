"""Streamed data: a fixed sample set read batch by batch gives the operator of the same samples in memory,
whatever the batch size, without holding the set; bad data and losses fail in one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import landscape_cli as ls
from landscape_cli import sources
from landscape_cli.problem import Problem, per_sample_loss_sum
from landscape_cli.zoo.data import Dataset as InMemory

from .conftest import SAMPLE_DIR
from .lazy_data import Lazy, model


@pytest.fixture(scope="module")
def reference():
    data = Lazy()
    indices = sources.subset_indices(len(data), 4096, seed=0)
    x = torch.stack([data[int(i)][0] for i in indices])
    y = torch.tensor([data[int(i)][1] for i in indices])
    problem = Problem(model(), InMemory(x, y), "cross_entropy", dtype=torch.float64, batch_size=4096)
    v = torch.randn(problem.n_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return problem, v


@pytest.mark.parametrize("batch_size", [512, 1000, 4096])
def test_a_lazy_million_sample_dataset_gives_the_in_memory_operator(reference, batch_size) -> None:
    problem, v = reference
    streamed = Problem(model(), Lazy(), "cross_entropy", dtype=torch.float64, batch_size=batch_size, samples=4096)
    assert streamed.n_samples == 4096 and not streamed.in_memory
    assert streamed.n_batches == -(-4096 // batch_size)
    expected = problem.hvp(v)
    assert float((streamed.hvp(v) - expected).norm() / expected.norm()) < 1e-10
    assert streamed.evaluate()["loss"] == pytest.approx(problem.evaluate()["loss"], rel=1e-12)


def test_streaming_keeps_memory_bounded() -> None:
    """Top eigenvalue over 4,096 of the million samples in a fresh process: peak RSS far below the 4.4 GB
    the data would take materialised (torch itself takes about 0.3 GB)."""
    script = textwrap.dedent(
        f"""
        import resource, sys, torch
        sys.path.insert(0, {str(__file__.rsplit("/", 1)[0])!r})
        from lazy_data import Lazy, model
        import landscape_cli as ls
        op = ls.hessian(model(), Lazy(), batch_size=256, samples=4096, device="cpu")
        top = ls.lanczos_extremal(op, top_k=1, tol=1e-3).top.values[0]
        print(top, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    top, peak_kib = out.stdout.split()
    assert float(top) > 0
    assert int(peak_kib) < 1_200_000, f"peak RSS {int(peak_kib) / 1e6:.2f} GB"


def test_iterables_and_iterable_datasets() -> None:
    x, y = torch.randn(50, 4, dtype=torch.float64), torch.randint(0, 3, (50,))
    net = nn.Sequential(nn.Linear(4, 3)).double()
    full = Problem(net, InMemory(x[:30], y[:30]), "cross_entropy", dtype=torch.float64)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(zip(x, y, strict=True))

    v = torch.randn(full.n_params, dtype=torch.float64)
    expected = full.hvp(v)
    batches = [(x[i : i + 7], y[i : i + 7]) for i in range(0, 50, 7)]
    for data in (Stream(), batches, (b for b in batches)):
        problem = Problem(net, data, "cross_entropy", dtype=torch.float64, batch_size=8, samples=30)
        assert problem.n_samples == 30
        assert float((problem.hvp(v) - expected).norm() / expected.norm()) < 1e-12
    with pytest.raises(ls.LandscapeError, match="the data has 50 samples, fewer than the 60 asked for"):
        Problem(net, Stream(), "cross_entropy", samples=60)


def test_data_that_changes_between_passes_is_refused(monkeypatch) -> None:
    """Past the cache budget a re-read iterable must give the same batches (a shuffling loader does not)."""
    monkeypatch.setattr(sources, "CACHE_BYTES", 0)

    class Shuffling:
        def __iter__(self):
            order = torch.randperm(40)
            return iter([(torch.randn(40, 3)[order[i : i + 10]], torch.zeros(10, dtype=torch.long)) for i in (0, 10)])

    with pytest.raises(ls.LandscapeError, match="other batches on each pass"):
        Problem(nn.Linear(3, 2), Shuffling(), "cross_entropy").evaluate()


def test_bad_batches_and_losses_fail_in_one_line() -> None:
    net = nn.Linear(3, 4)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 3])
    cases = [
        ([{"input": x}], "cross_entropy", "cross_entropy needs targets; the batch has none"),
        ((x, y + 4), "cross_entropy", "the model has 4 outputs but the data has labels up to 7"),
        ([(x, y + 4)], "cross_entropy", "targets range over 4..5 but the model has 4 classes"),
        ([(x, y.float())], "cross_entropy", "cross_entropy needs class labels"),
        ([["text", y]], "cross_entropy", "first element must be a tensor"),
        ((torch.randn(6, 5), y), "cross_entropy", r"does not accept inputs of shape \(5,\) from the data"),
        ([(torch.randn(6, 5), y)], "cross_entropy", "the model does not accept the data's batches: RuntimeError"),
        ((x, y), lambda out, batch: 1 / 0, "failed: ZeroDivisionError"),
        ((x, y), lambda out, batch: out.sum(0), r"must return a scalar tensor .* got \(4,\)"),
        ([(x, torch.randn(6, 2))], "mse", r"mse: model outputs \(2, 4\) but targets are \(2, 2\)"),
        ((x, y), "hinge", "unknown loss 'hinge'"),
    ]
    for data, loss, message in cases:
        with pytest.raises(ls.LandscapeError, match=message):
            ls.wrap(net, data, loss, device="cpu")


def test_half_sse_is_the_old_mse_and_old_checkpoints_keep_their_numbers(tmp_path) -> None:
    out, target = torch.randn(9, 4), torch.randint(0, 4, (9,))
    old = 0.5 * (out - F.one_hot(target, 4).to(out.dtype)).pow(2).sum()
    assert torch.equal(per_sample_loss_sum(out, target, "half_sse"), old)
    assert torch.allclose(per_sample_loss_sum(out, target, "mse") * 4 / 2, old, rtol=1e-6)  # C / 2
    sample = ls.load_checkpoint(SAMPLE_DIR / "mlp_digits.pt")
    raw = torch.load(SAMPLE_DIR / "mlp_digits.pt", weights_only=True)
    raw.update(format_version=1, loss="mse")
    torch.save(raw, tmp_path / "old.pt")
    assert ls.load_checkpoint(tmp_path / "old.pt").loss == "half_sse"
    raw.update(format_version=2)
    torch.save(raw, tmp_path / "new.pt")
    assert ls.load_checkpoint(tmp_path / "new.pt").loss == "mse"
    assert sample.loss == "cross_entropy"
    old_scape = ls.load(tmp_path / "old.pt", device="cpu", samples=200)
    half = ls.load(tmp_path / "new.pt", device="cpu", samples=200, loss="half_sse")
    assert old_scape.loss() == half.loss()


def test_batches_are_cut_to_fit_the_graph_memory_budget() -> None:
    """A batch whose double-backward graph would exceed a quarter of the memory limit is cut into pieces;
    the operator does not change (exact weighting), in memory or streamed."""
    from landscape_cli.limits import memory_limit

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 3)).double()
    x, y = torch.randn(600, 20, dtype=torch.float64), torch.randint(0, 3, (600,))
    whole = Problem(net, InMemory(x, y), "cross_entropy", dtype=torch.float64)
    v = torch.randn(whole.n_params, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = whole.hvp(v)
    assert whole.max_rows is None and whole.n_batches == 1
    for data in (InMemory(x, y), [(x[:300], y[:300]), (x[300:], y[300:])]):
        with memory_limit("2M"):
            cut = Problem(net, data, "cross_entropy", dtype=torch.float64)
            got = cut.hvp(v)
        assert cut.max_rows is not None and cut.max_rows < 300, cut.graph_bytes_per_sample
        assert sum(b.size for _, b in cut.batches()) == 600
        assert float((got - expected).norm() / expected.norm()) < 1e-12


def test_memory_mapped_npy_files_and_token_files_on_the_command_line(tmp_path, cli) -> None:
    """inputs.npy with --data-arg targets=targets.npy is read a batch at a time (memory-mapped); a .npz of
    integer token ids keeps them integers. Both give what the same arrays give in memory."""
    import json

    import numpy as np

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    torch.save({f"layers.{k}": v for k, v in net.state_dict().items()}, tmp_path / "net.pt")
    x = np.random.default_rng(0).normal(size=(500, 6)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, size=500)
    np.save(tmp_path / "inputs.npy", x)
    np.save(tmp_path / "targets.npy", y)
    np.savez(tmp_path / "same.npz", x=x, y=y)
    model = ["--model", "mlp", "--model-arg", "widths=[6,8,3]", "--model-arg", "activation=tanh", "--device", "cpu"]
    runs = {}
    for name, data in (("npy", ["--data", str(tmp_path / "inputs.npy"), "--data-arg",
                                f"targets={tmp_path / 'targets.npy'}"]),
                       ("npz", ["--data", str(tmp_path / "same.npz")])):  # fmt: skip
        result = cli("spectrum", tmp_path / "net.pt", *model, *data, "--samples", "300", "--batch-size", "64",
                     "--top-k", "2", "--json", "--no-plot", "--out", tmp_path / f"{name}.h5")  # fmt: skip
        assert result.code == 0, result.err
        runs[name] = json.loads(result.out)
    assert runs["npy"]["loss"] == pytest.approx(runs["npz"]["loss"], rel=1e-6)
    assert [t["eigenvalue"] for t in runs["npy"]["top"]] == pytest.approx(
        [t["eigenvalue"] for t in runs["npz"]["top"]], rel=1e-4
    )
    missing = cli("spectrum", tmp_path / "net.pt", *model, "--data", str(tmp_path / "inputs.npy"), "--no-plot")
    assert missing.code == 2 and "--data-arg targets=FILE.npy" in missing.err


def test_token_ids_from_a_file_stay_integers(tmp_path, cli) -> None:
    """A .npz of int64 token ids and next-token targets (-100 padding) with a model entry point: the
    command's loss and top eigenvalue are those of ls.hessian on the same tensors (exact token weighting)."""
    import json

    import numpy as np

    (tmp_path / "lm.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "class Bigram(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        torch.manual_seed(0)\n"
        "        self.embed = nn.Embedding(9, 4)\n"
        "        self.head = nn.Linear(4, 9)\n"
        "    def forward(self, ids):\n"
        "        return self.head(torch.tanh(self.embed(ids)))\n"
        "def build():\n"
        "    return Bigram()\n"
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 9, size=(40, 7))
    targets = rng.integers(0, 9, size=(40, 7))
    for row in range(40):
        targets[row, 3 + row % 4 :] = -100
    np.savez(tmp_path / "tokens.npz", x=ids, y=targets)
    import importlib.util

    spec = importlib.util.spec_from_file_location("lm_for_test", tmp_path / "lm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.build().state_dict(), tmp_path / "lm.pt")
    result = cli("spectrum", tmp_path / "lm.pt", "--model", f"{tmp_path}/lm.py:build", "--data",
                 tmp_path / "tokens.npz", "--batch-size", "16", "--top-k", "1", "--tol", "1e-6", "--dtype", "float64",
                 "--device", "cpu", "--json", "--no-plot")  # fmt: skip
    assert result.code == 0, result.err
    payload = json.loads(result.out)
    x, y = torch.from_numpy(ids), torch.from_numpy(targets)
    op = ls.hessian(module.build(), (x, y), device="cpu", dtype="float64")
    top = ls.lanczos_extremal(op, top_k=1, tol=1e-6).top.values[0]
    assert payload["top"][0]["eigenvalue"] == pytest.approx(top, rel=1e-5)
    logits = module.build().double()(x)
    expected = F.cross_entropy(logits.reshape(-1, 9), y.reshape(-1), ignore_index=-100)
    assert payload["loss"] == pytest.approx(float(expected.detach()), rel=1e-10)


@pytest.mark.parametrize("batch_size", [97, 4096])
def test_msam_micro_batch_gradients_from_streamed_data(reference, batch_size) -> None:
    """mSAM's edge needs the gradient norm of each micro-batch (a seeded permutation cut in m parts): streamed
    batches give the norms computed directly on each part's samples, as data in memory does."""
    from landscape_cli.eos.measure import micro_batch_grad_norms

    problem, _ = reference
    order = torch.randperm(4096, generator=torch.Generator().manual_seed(5))
    expected = []
    for part in torch.tensor_split(order, 3):
        net = model().double()
        F.cross_entropy(net(problem.x[part]), problem.y[part]).backward()
        expected.append(float(torch.cat([p.grad.reshape(-1) for p in net.parameters()]).norm()))
    streamed = Problem(model(), Lazy(), "cross_entropy", dtype=torch.float64, batch_size=batch_size, samples=4096)
    assert micro_batch_grad_norms(streamed, 3, seed=5) == pytest.approx(expected, rel=1e-10)
    assert micro_batch_grad_norms(problem, 3, seed=5) == pytest.approx(expected, rel=1e-10)
    assert len(set(expected)) == 3  # three different parts, so a wrong cut could not pass
