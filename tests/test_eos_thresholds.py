"""The closed-form edges of stability against the optimizers themselves on quadratics.

Each optimizer runs on L(w) = 0.5 w'Hw with a chosen Hessian whose top eigenvalue sits 2% above or
below the predicted edge: above, the iterates blow up; below, they go to zero (or, for normalized SAM,
settle into the two-cycle whose size the theory gives).
"""

from __future__ import annotations

import math

import pytest
import torch

from landscape_cli import optim
from landscape_cli.eos.thresholds import (
    adam_edge,
    gd_edge,
    heavy_ball_edge,
    msam_edge,
    nesterov_edge,
    sam_edge,
    ssam_edge,
    usam_edge,
)
from landscape_cli.errors import LandscapeError

from .helpers import sam_step

LR = 0.1
STEPS = 3000


def _run(top: float, make_optimizer, steps: int = STEPS) -> float:
    """|w| after `steps` on 0.5 w'Hw, H = diag(top, top/3), from w = (1, 1), float64."""
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    h = torch.tensor([top, top / 3], dtype=torch.float64)
    optimizer = make_optimizer([w])

    def closure(j: int = 0, m: int = 1) -> torch.Tensor:
        return 0.5 * (h * w * w).sum()

    for _ in range(steps):
        if isinstance(optimizer, optim.SharpnessAwareOptimizer):
            sam_step(optimizer, closure)
        else:
            optimizer.zero_grad()
            closure().backward()
            optimizer.step()
        if not torch.isfinite(w).all() or float(w.detach().norm()) > 1e6:
            return math.inf
    return float(w.detach().norm())


def _sgd(momentum: float = 0.0, nesterov: bool = False):
    return lambda params: torch.optim.SGD(params, lr=LR, momentum=momentum, nesterov=nesterov)


@pytest.mark.parametrize(
    "edge, make",
    [
        (gd_edge(LR), _sgd()),
        (heavy_ball_edge(LR, 0.9), _sgd(0.9)),
        (heavy_ball_edge(LR, 0.5), _sgd(0.5)),
        (nesterov_edge(LR, 0.9), _sgd(0.9, nesterov=True)),
        (nesterov_edge(LR, 0.5), _sgd(0.5, nesterov=True)),
        (usam_edge(LR, 0.05), lambda p: optim.USAM(p, torch.optim.SGD, rho=0.05, lr=LR)),
        (
            usam_edge(LR, 0.05, momentum=0.9),
            lambda p: optim.USAM(p, torch.optim.SGD, rho=0.05, lr=LR, momentum=0.9),
        ),
        (ssam_edge(LR), lambda p: optim.SSAM(p, torch.optim.SGD, rho=0.05, lr=LR)),
    ],
    ids=["gd", "heavy-ball 0.9", "heavy-ball 0.5", "nesterov 0.9", "nesterov 0.5", "usam", "usam+momentum", "ssam"],
)
def test_diverges_just_above_the_edge_and_converges_just_below(edge: float, make) -> None:
    assert _run(1.02 * edge, make) == math.inf
    assert _run(0.98 * edge, make) < 1e-6


def test_sam_two_cycle_and_its_edge() -> None:
    """1-D normalized SAM below 2/eta ends in the two-cycle |x| = eta lambda rho / (2 - eta lambda), and
    the SAM edge at that cycle's gradient norm is exactly lambda (Long & Bartlett)."""
    rho = 0.05
    for lam in (5.0, 12.0, 19.0):
        w = torch.nn.Parameter(torch.tensor([0.3], dtype=torch.float64))
        sam = optim.SAM([w], torch.optim.SGD, rho=rho, lr=LR)
        for _ in range(2000):
            sam_step(sam, lambda lam=lam, w=w: 0.5 * lam * (w * w).sum())
        cycle = LR * lam * rho / (2 - LR * lam)
        assert abs(float(w.detach())) == pytest.approx(cycle, rel=1e-9)
        assert sam_edge(LR, rho, lam * cycle) == pytest.approx(lam, rel=1e-12)


def test_ssam_is_gd_in_one_dimension() -> None:
    w_gd = torch.nn.Parameter(torch.tensor([0.7], dtype=torch.float64))
    w_ssam = torch.nn.Parameter(torch.tensor([0.7], dtype=torch.float64))
    gd = torch.optim.SGD([w_gd], lr=LR)
    ssam = optim.SSAM([w_ssam], torch.optim.SGD, rho=0.1, lr=LR)
    for _ in range(50):
        gd.zero_grad()
        (0.5 * 15.0 * w_gd * w_gd).sum().backward()
        gd.step()
        sam_step(ssam, lambda: (0.5 * 15.0 * w_ssam * w_ssam).sum())
    assert float(w_ssam.detach()) == pytest.approx(float(w_gd.detach()), rel=1e-12, abs=1e-300)


def test_sam_edge_limits_and_momentum() -> None:
    assert sam_edge(LR, 1e-12, 0.5) == pytest.approx(gd_edge(LR), rel=1e-9)  # rho -> 0: the GD edge
    assert sam_edge(LR, 0.05, 1e12) == pytest.approx(gd_edge(LR), rel=1e-9)  # large gradient: GD edge
    assert sam_edge(LR, 0.05, 0.3) < gd_edge(LR)
    assert sam_edge(LR, 0.05, 0.0) == 0.0
    # with momentum the formula solves eta (lambda + rho lambda^2 / ||g||) = 2 + 2 beta
    lam = sam_edge(LR, 0.05, 0.3, momentum=0.9)
    assert LR * (lam + 0.05 * lam**2 / 0.3) == pytest.approx(2 + 2 * 0.9, rel=1e-12)
    lam = usam_edge(LR, 0.05)
    assert LR * (lam + 0.05 * lam**2) == pytest.approx(2.0, rel=1e-12)


def test_msam_edge_is_sam_at_the_harmonic_mean() -> None:
    assert msam_edge(LR, 0.05, [0.4]) == sam_edge(LR, 0.05, 0.4)
    assert msam_edge(LR, 0.05, [0.2, 0.2, 0.2]) == pytest.approx(sam_edge(LR, 0.05, 0.2), rel=1e-15)
    assert msam_edge(LR, 0.05, [0.1, 0.3]) == pytest.approx(sam_edge(LR, 0.05, 0.15), rel=1e-15)


def test_adam_edge_is_38_over_lr_for_beta1_09() -> None:
    assert adam_edge(0.001, 0.9) == pytest.approx(38_000.0, rel=1e-12)


@pytest.mark.parametrize(
    "call",
    [
        lambda: gd_edge(0.0),
        lambda: heavy_ball_edge(0.1, 1.0),
        lambda: sam_edge(0.1, -1.0, 0.2),
        lambda: sam_edge(0.1, 0.05, math.nan),
        lambda: msam_edge(0.1, 0.05, []),
        lambda: msam_edge(0.1, 0.05, [0.1, 0.0]),
    ],
)
def test_impossible_hyper_parameters_are_refused(call) -> None:
    with pytest.raises(LandscapeError):
        call()


@pytest.mark.parametrize(
    "setting, rule, edge",
    [
        ({"lr": 0.1}, "gd", 20.0),
        ({"lr": 0.1, "momentum": 0.9}, "heavy-ball", 38.0),
        ({"lr": 0.1, "momentum": 0.9, "nesterov": True}, "nesterov", nesterov_edge(0.1, 0.9)),
        ({"lr": 0.001, "base": "adam", "beta1": 0.9}, "adam", 38_000.0),
        ({"lr": 0.1, "opt": "usam", "rho": 0.05}, "usam", usam_edge(0.1, 0.05)),
        ({"lr": 0.1, "opt": "ssam", "rho": 0.05, "momentum": 0.5}, "ssam", heavy_ball_edge(0.1, 0.5)),
        ({"lr": 0.1, "opt": "sam", "rho": 0.05, "momentum": 0.9}, "sam", sam_edge(0.1, 0.05, 0.3, momentum=0.9)),
    ],
)
def test_each_optimizer_gets_its_edge(setting: dict, rule: str, edge: float) -> None:
    from landscape_cli.eos.setting import OptimizerSetting

    s = OptimizerSetting(**setting)
    assert s.rule() == rule
    assert s.edge(grad_norm=0.3) == pytest.approx(edge, rel=1e-12)


@pytest.mark.parametrize(
    "setting, fragment",
    [
        ({"lr": None}, "pass lr"),
        ({"lr": 0.1, "opt": "sam", "rho": None}, "pass rho"),
        ({"lr": 0.1, "opt": "asam", "rho": 0.5}, "no edge-of-stability formula"),
        ({"lr": 0.1, "opt": "eigensam", "rho": 0.05}, "no edge-of-stability formula"),
        ({"lr": 0.1, "base": "adamw"}, "adamw"),
        ({"lr": 0.1, "opt": "sam", "rho": 0.05, "base": "adam"}, "over adam"),
    ],
)
def test_missing_or_unsupported_settings_are_refused(setting: dict, fragment: str) -> None:
    from landscape_cli.eos.setting import OptimizerSetting

    with pytest.raises(LandscapeError, match=fragment):
        OptimizerSetting(**setting).rule()
