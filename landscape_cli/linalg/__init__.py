"""Pure numerics on a symmetric matvec over flat tensors; testable with explicit matrices."""

from .density import DensityResult, slq_density
from .lanczos import LanczosResult, RitzValues, lanczos_extremal
from .power import power_iteration
from .trace import TraceResult, hutchpp_trace

__all__ = [
    "DensityResult",
    "LanczosResult",
    "RitzValues",
    "TraceResult",
    "hutchpp_trace",
    "lanczos_extremal",
    "power_iteration",
    "slq_density",
]
