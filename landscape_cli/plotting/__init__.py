"""Matplotlib figures drawn from results files only: plotting never recomputes anything.

Modules, one job each: `inputs` (what a path holds), `surface_data` (a surface file as arrays),
`surface` (1D and 2D surface figures), `trainlog` (training-log figures), `spectrum` (the spectrum
figure), `vtk` (a 2D surface as a ParaView .vtp file) and `style` (shared look, labels, saving).
"""

from __future__ import annotations

from .inputs import SPECTRUM, SURFACE, TRAIN_LOG, Source, detect
from .spectrum import draw_spectrum, plot_spectrum, spectrum_figure
from .style import FORMATS, save_figure
from .surface import KINDS_2D, ColourScale, figure_1d, figure_2d
from .surface_data import Anchors, Surface, Trajectory, grid_xyz, load_surface
from .trainlog import (
    ReferenceCurve,
    TrainLogData,
    draw_sharpness_panel,
    read_train_log,
    train_figure,
)
from .vtk import surface_polydata, write_vtp

__all__ = [
    "FORMATS",
    "KINDS_2D",
    "SPECTRUM",
    "SURFACE",
    "TRAIN_LOG",
    "Anchors",
    "ColourScale",
    "ReferenceCurve",
    "Source",
    "Surface",
    "TrainLogData",
    "Trajectory",
    "detect",
    "draw_sharpness_panel",
    "draw_spectrum",
    "figure_1d",
    "figure_2d",
    "grid_xyz",
    "load_surface",
    "plot_spectrum",
    "read_train_log",
    "save_figure",
    "spectrum_figure",
    "surface_polydata",
    "train_figure",
    "write_vtp",
]
