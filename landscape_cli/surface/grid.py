"""The sweep's grid: axis specs `MIN:MAX:N`, and the order in which points are visited."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import LandscapeError, ParameterError

#: Points on one axis at most (a 2D grid is further bounded by the memory limit).
MAX_AXIS_POINTS = 1_000_000


def _error(option: str, message: str) -> LandscapeError:
    """About a parameter (x, y: the CLI shows the flag) or about an axis read from a file."""
    return ParameterError(option, message) if option.isidentifier() else LandscapeError(message)


@dataclass(frozen=True)
class Axis:
    """N evenly spaced coordinates from MIN to MAX inclusive."""

    lo: float
    hi: float
    n: int

    @classmethod
    def parse(cls, spec: str, option: str) -> Axis:
        parts = spec.split(":")
        if len(parts) != 3:
            raise _error(option, f"{option} expects MIN:MAX:N (e.g. -1:1:51), got '{spec}'")
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise _error(option, f"{option}: MIN and MAX must be numbers, got '{spec}'") from None
        try:
            n = int(parts[2])
        except ValueError:
            raise _error(option, f"{option}: N must be a whole number, got '{parts[2]}'") from None
        axis = cls(lo, hi, n)
        axis.validate(option)
        return axis

    def validate(self, option: str) -> None:
        if not (np.isfinite(self.lo) and np.isfinite(self.hi)):
            raise _error(option, f"{option}: MIN and MAX must be finite")
        if self.lo >= self.hi:
            raise _error(option, f"{option}: MIN must be below MAX, got {self.lo:g}:{self.hi:g}")
        with np.errstate(over="ignore"):
            if not np.isfinite(np.float64(self.hi) - np.float64(self.lo)):
                raise _error(option, f"{option}: MAX - MIN overflows, got {self.lo:g}:{self.hi:g}")
        if self.n < 2:
            raise _error(option, f"{option}: N must be at least 2, got {self.n}")
        if self.n > MAX_AXIS_POINTS:
            raise _error(option, f"{option}: N must be at most {MAX_AXIS_POINTS:,}, got {self.n:,}")

    @property
    def coordinates(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.n)

    def spec(self) -> str:
        return f"{self.lo:g}:{self.hi:g}:{self.n}"


@dataclass(frozen=True)
class Grid:
    """A 1D line (y is None) or a 2D grid; point k is row k // nx, column k % nx."""

    x: Axis
    y: Axis | None = None

    @property
    def dims(self) -> int:
        return 1 if self.y is None else 2

    @property
    def shape(self) -> tuple[int, ...]:
        """Li et al.'s array shape: (len(y), len(x)), or (len(x),) for a line."""
        return (self.x.n,) if self.y is None else (self.y.n, self.x.n)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def coefficients(self, indices: np.ndarray) -> np.ndarray:
        """The (x, y) coefficients of the flat point indices, shape (len(indices), dims)."""
        xs = self.x.coordinates
        if self.y is None:
            return xs[indices][:, None]
        rows, cols = np.divmod(indices, self.x.n)
        return np.stack([xs[cols], self.y.coordinates[rows]], axis=1)
