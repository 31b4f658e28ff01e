"""Sharpness regression tests for your own suite: copy this file next to your tests and change the paths.

Two patterns: gate a saved checkpoint against limits set once, and analyse a model trained inside the
test itself, through a DataLoader. Every number is deterministic given the seed, so limits do not flake.
"""

from __future__ import annotations

from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import landscape_cli as ls

CHECKPOINT = Path(__file__).resolve().parents[1] / "sample_checkpoints" / "mlp_digits.pt"


def test_checkpoint_stays_within_its_sharpness_budget() -> None:
    # Limits set once from a measured run (top eigenvalue 0.169, surface rise 0.066 on these 500 samples),
    # with room for legitimate change; a commit that makes the model much sharper fails here.
    scape = ls.load(CHECKPOINT, samples=500, seed=0)
    result = scape.check(max_top_eig=0.20, max_surface_rise=0.08, max_eos_ratio=0.05)
    result.assert_passed()  # the message names each failed gate, its value and its limit
    assert result.value("max_top_eig") > 0.1  # and the measurement itself is sane


def test_a_model_trained_here_stays_below_the_edge_of_stability() -> None:
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.data[:600] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target[:600])
    loader = DataLoader(TensorDataset(x, y), batch_size=100, shuffle=False)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    sgd = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(40):
        for xb, yb in loader:
            sgd.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            sgd.step()

    scape = ls.wrap(model, loader, "cross_entropy", optimizer=sgd)
    eos = scape.eos()
    # GD with lr 0.5 cannot be stable where the sharpness exceeds 2 / lr = 4
    assert eos.edge == 4.0
    assert eos.sharpness < eos.edge, f"sharpness {eos.sharpness:.3g} above the edge {eos.edge:.3g}"
    assert scape.loss() < 0.5
