"""Loss surfaces (Li et al. 2018): directions, a resumable sweep that evaluates many points per data
pass where that pays, a scalar sharpness summary, and Li et al.'s file format."""

from .directions import Direction, DirectionSpec, normalize
from .grid import Axis, Grid
from .run import SurfaceOptions, SurfaceResult, compute_surface
from .summary import summarize

__all__ = [
    "Axis",
    "Direction",
    "DirectionSpec",
    "Grid",
    "SurfaceOptions",
    "SurfaceResult",
    "compute_surface",
    "normalize",
    "summarize",
]
