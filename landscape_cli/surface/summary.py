"""Scalar sharpness of a surface for scripts: the loss rise at a radius, and the curvature at the centre.

Both come from the stored grid alone (pure functions of arrays), so they can be recomputed from any
surface file, Li et al.'s included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Directions sampled on the circle of the given radius in 2D.
CIRCLE_SAMPLES = 64


def default_radius(x: np.ndarray, y: np.ndarray | None) -> float | None:
    """Half the distance from the centre to the nearest edge of the grid; None if 0 is not inside."""
    reach = [min(-float(a[0]), float(a[-1])) for a in ((x,) if y is None else (x, y))]
    return 0.5 * min(reach) if min(reach) > 0 else None


def fit_halfwidth(axis: np.ndarray) -> float:
    """The window of the quadratic fit: 10% of the axis span, and at least 2.5 grid steps."""
    step = float(axis[1] - axis[0])
    return max(0.1 * float(axis[-1] - axis[0]), 2.5 * step)


def summarize(
    x: np.ndarray, y: np.ndarray | None, loss: np.ndarray, center_loss: float, radius: float | None
) -> dict[str, Any]:
    """`rise_mean`/`rise_max`: loss increase over the centre at distance `radius` (mean and worst over
    both signs in 1D, over a circle in 2D). `curvature`: second derivative along each direction of a
    quadratic fitted to the points within `fit_halfwidth` of the centre; on a quadratic loss it is
    exactly d'Hd."""
    out: dict[str, Any] = {"center_loss": float(center_loss)}
    if radius is not None:
        if radius <= 0:
            raise ValueError("radius must be positive")
        samples = _on_circle(x, y, loss, radius)
        samples = samples[np.isfinite(samples)]
        if samples.size:
            out.update(
                radius=float(radius),
                rise_mean=float(samples.mean() - center_loss),
                rise_max=float(samples.max() - center_loss),
            )
    out.update(_quadratic_fit(x, y, loss))
    return out


def _on_circle(x: np.ndarray, y: np.ndarray | None, loss: np.ndarray, radius: float) -> np.ndarray:
    if y is None:
        points = [r for r in (-radius, radius) if x[0] <= r <= x[-1]]
        return np.array([_interp_nan(r, x, loss) for r in points])
    angles = np.linspace(0.0, 2 * np.pi, CIRCLE_SAMPLES, endpoint=False)
    px, py = radius * np.cos(angles), radius * np.sin(angles)
    inside = (px >= x[0]) & (px <= x[-1]) & (py >= y[0]) & (py <= y[-1])
    return np.array([_bilinear(x, y, loss, a, b) for a, b in zip(px[inside], py[inside], strict=True)])


def _interp_nan(r: float, x: np.ndarray, loss: np.ndarray) -> float:
    j = int(np.clip(np.searchsorted(x, r) - 1, 0, len(x) - 2))
    t = (r - x[j]) / (x[j + 1] - x[j])
    return float((1 - t) * loss[j] + t * loss[j + 1])


def _bilinear(x: np.ndarray, y: np.ndarray, z: np.ndarray, a: float, b: float) -> float:
    """z has shape (len(y), len(x)); NaN propagates from any of the four corners."""
    j = int(np.clip(np.searchsorted(x, a) - 1, 0, len(x) - 2))
    i = int(np.clip(np.searchsorted(y, b) - 1, 0, len(y) - 2))
    tx = (a - x[j]) / (x[j + 1] - x[j])
    ty = (b - y[i]) / (y[i + 1] - y[i])
    return float(
        (1 - tx) * (1 - ty) * z[i, j]
        + tx * (1 - ty) * z[i, j + 1]
        + (1 - tx) * ty * z[i + 1, j]
        + tx * ty * z[i + 1, j + 1]
    )


def _quadratic_fit(x: np.ndarray, y: np.ndarray | None, loss: np.ndarray) -> dict[str, Any]:
    hx = fit_halfwidth(x)
    if y is None:
        keep = (np.abs(x) <= hx) & np.isfinite(loss)
        if keep.sum() < 3 or not (x[0] < 0 < x[-1]):
            return {}
        coef = np.polyfit(x[keep], loss[keep], 2)
        return {"curvature": [float(2 * coef[0])], "fit_halfwidth": [hx]}
    hy = fit_halfwidth(y)
    gx, gy = np.meshgrid(x, y)
    keep = (np.abs(gx) <= hx) & (np.abs(gy) <= hy) & np.isfinite(loss)
    if keep.sum() < 6 or not (x[0] < 0 < x[-1] and y[0] < 0 < y[-1]):
        return {}
    a, b = gx[keep], gy[keep]
    design = np.stack([np.ones_like(a), a, b, a * a, a * b, b * b], axis=1)
    coef, *_ = np.linalg.lstsq(design, loss[keep], rcond=None)
    hessian = np.array([[2 * coef[3], coef[4]], [coef[4], 2 * coef[5]]])
    return {
        "curvature": [float(hessian[0, 0]), float(hessian[1, 1])],
        "fit_halfwidth": [hx, hy],
        "fit_hessian": hessian.tolist(),
        "fit_hessian_eigenvalues": np.linalg.eigvalsh(hessian).tolist(),
    }
