"""Edges of stability: closed-form thresholds per optimizer (pure functions with their sources)."""

from .thresholds import (
    adam_edge,
    gd_edge,
    heavy_ball_edge,
    msam_edge,
    nesterov_edge,
    sam_edge,
    ssam_edge,
    usam_edge,
)

__all__ = [
    "adam_edge",
    "gd_edge",
    "heavy_ball_edge",
    "msam_edge",
    "nesterov_edge",
    "sam_edge",
    "ssam_edge",
    "usam_edge",
]
