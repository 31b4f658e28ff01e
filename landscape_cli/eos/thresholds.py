"""Closed-form edges of stability: the largest sharpness at which an optimizer's step is stable on a
quadratic model. Pure functions of the hyper-parameters (and, for SAM, the gradient norm), each with
its formula and source. eta is the learning rate, rho the SAM radius, beta the momentum (PyTorch's
heavy-ball convention: v <- beta v + g, w <- w - eta v).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import LandscapeError


def _positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise LandscapeError(f"{name} must be positive and finite, got {value}")


def _momentum(beta: float) -> None:
    if not (0 <= beta < 1):
        raise LandscapeError(f"momentum must be in [0, 1), got {beta}")


def gd_edge(lr: float) -> float:
    """2 / eta. Gradient descent on a quadratic is stable iff lambda_max < 2/eta; under full-batch GD
    the sharpness rises to this value and hovers there (Cohen et al. 2021, "Gradient descent on neural
    networks typically occurs at the edge of stability")."""
    _positive("lr", lr)
    return 2.0 / lr


def heavy_ball_edge(lr: float, momentum: float) -> float:
    """(2 + 2 beta) / eta: the stability limit of heavy-ball momentum on a quadratic (the
    characteristic polynomial z^2 - (1 + beta - eta lambda) z + beta has a root at -1 when
    eta lambda = 2 + 2 beta); Cohen et al. 2021, Appendix."""
    _positive("lr", lr)
    _momentum(momentum)
    return (2.0 + 2.0 * momentum) / lr


def nesterov_edge(lr: float, momentum: float) -> float:
    """(2 + 2 beta) / (eta (1 + 2 beta)): Nesterov momentum in PyTorch's form (step with
    g + beta v) on a quadratic, root at -1 when eta lambda (1 + 2 beta) = 2 + 2 beta; Cohen et al. 2021."""
    _positive("lr", lr)
    _momentum(momentum)
    return (2.0 + 2.0 * momentum) / (lr * (1.0 + 2.0 * momentum))


def adam_edge(lr: float, beta1: float) -> float:
    """(2 + 2 beta1) / (eta (1 - beta1)), 38/eta for beta1 = 0.9: the edge of the *preconditioned*
    sharpness lambda_max(P^-1/2 H P^-1/2), P = diag(sqrt(v_hat) + eps), at which adaptive methods
    train (Cohen et al. 2022, "Adaptive gradient methods at the edge of stability"). Adam's update is
    an EMA of gradients, i.e. heavy-ball with step eta (1 - beta1) in the preconditioned metric."""
    _positive("lr", lr)
    _momentum(beta1)
    return (2.0 + 2.0 * beta1) / (lr * (1.0 - beta1))


def sam_edge(lr: float, rho: float, grad_norm: float, momentum: float = 0.0) -> float:
    """(||g|| / (2 rho)) (sqrt(1 + 4 (2 + 2 beta) rho / (eta ||g||)) - 1); with beta = 0,
    (||g|| / (2 rho)) (sqrt(1 + 8 rho / (eta ||g||)) - 1). Normalized SAM's perturbation
    rho g/||g|| adds rho lambda^2 / ||g|| to the curvature along an eigenvector orthogonal to g, so the
    step is stable iff eta (lambda + rho lambda^2/||g||) < 2 + 2 beta (Long & Bartlett 2024,
    "Sharpness-aware minimization and the edge of stability"). g is the full-batch gradient at w. The
    edge lies below the GD edge and tends to it as rho -> 0 or ||g|| grows."""
    _positive("lr", lr)
    _positive("rho", rho)
    _momentum(momentum)
    if not (grad_norm >= 0 and math.isfinite(grad_norm)):
        raise LandscapeError(f"the gradient norm must be finite and >= 0, got {grad_norm}")
    if grad_norm == 0:
        return 0.0
    ratio = 4.0 * (2.0 + 2.0 * momentum) * rho / (lr * grad_norm)
    # sqrt(1 + r) - 1 = r / (sqrt(1 + r) + 1): no cancellation when r is small (rho -> 0)
    return (grad_norm / (2.0 * rho)) * ratio / (math.sqrt(1.0 + ratio) + 1.0)


def usam_edge(lr: float, rho: float, momentum: float = 0.0) -> float:
    """(sqrt(1 + 4 (2 + 2 beta) rho / eta) - 1) / (2 rho); with beta = 0, (sqrt(1 + 8 rho/eta) - 1)/(2 rho).
    Unnormalized SAM (eps = rho g) steps with (H + rho H^2) w on a quadratic, stable iff
    eta (lambda + rho lambda^2) < 2 + 2 beta (Long & Bartlett 2024; Andriushchenko et al. 2023)."""
    _positive("lr", lr)
    _positive("rho", rho)
    _momentum(momentum)
    ratio = 4.0 * (2.0 + 2.0 * momentum) * rho / lr
    return ratio / (math.sqrt(1.0 + ratio) + 1.0) / (2.0 * rho)


def ssam_edge(lr: float, momentum: float = 0.0) -> float:
    """2 / eta ((2 + 2 beta)/eta with momentum): SSAM rescales the SAM gradient to the norm of the
    plain one, g_ssam = (||g|| / ||g_sam||) g_sam (Tan et al. 2024, "Stabilizing sharpness-aware
    minimization through a simple renormalization strategy"); in one dimension it is GD, and the
    renormalization moves SAM's edge back to the GD edge."""
    return heavy_ball_edge(lr, momentum) if momentum else gd_edge(lr)


def msam_edge(lr: float, rho: float, micro_grad_norms: Sequence[float], momentum: float = 0.0) -> float:
    """The SAM edge at the harmonic mean of the micro-batch gradient norms. mSAM perturbs each
    micro-batch j by rho g_j/||g_j|| and averages the perturbed gradients (Behdin et al. 2023); along an
    eigenvector orthogonal to every g_j the curvature becomes lambda + rho lambda^2 mean_j(1/||g_j||),
    so the SAM derivation holds with 1/||g|| replaced by mean_j 1/||g_j||. One micro-batch is SAM."""
    norms = [float(n) for n in micro_grad_norms]
    if not norms:
        raise LandscapeError("mSAM's edge needs the gradient norm of every micro-batch")
    if any(not (n > 0 and math.isfinite(n)) for n in norms):
        raise LandscapeError("every micro-batch gradient norm must be positive and finite")
    harmonic = len(norms) / sum(1.0 / n for n in norms)
    return sam_edge(lr, rho, harmonic, momentum)
