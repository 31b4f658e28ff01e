"""landscape: loss-landscape analysis of PyTorch models.

A checkpoint or a live module, ready to analyse::

    import landscape_cli as ls
    scape = ls.load("sample_checkpoints/mlp_digits.pt")      # or ls.wrap(model, (x, y), "cross_entropy")
    print(scape.spectrum(top_k=5, trace=True).lanczos.top.values)
    scape.check(max_top_eig=0.2, max_surface_rise=0.1).assert_passed()
    ls.compare("base.pt", "new.pt", max_increase="10%").assert_passed()

The lower-level functions the commands call (compute_spectrum, compute_surface, ...) are exported too.
"""

from ._version import __version__
from .api import CheckResult, CompareResult, Landscape, compare, load, wrap
from .checkpoint import Checkpoint, instantiate, load_checkpoint, save_checkpoint
from .errors import LandscapeError
from .linalg import hutchpp_trace, lanczos_extremal, slq_density
from .plotting import plot_spectrum
from .problem import ParamLayout, Problem
from .results import describe_results, provenance, write_spectrum
from .session import problem_from_checkpoint, resolve_device
from .spectrum import SpectrumOptions, SpectrumResult, compute_spectrum
from .surface import SurfaceOptions, SurfaceResult, compute_surface
from .train import TrainConfig, train_model
from .zoo import build_model, data_spec, load_data, model_spec

__all__ = [
    "CheckResult",
    "Checkpoint",
    "CompareResult",
    "Landscape",
    "LandscapeError",
    "ParamLayout",
    "Problem",
    "SpectrumOptions",
    "SpectrumResult",
    "SurfaceOptions",
    "SurfaceResult",
    "TrainConfig",
    "__version__",
    "build_model",
    "compare",
    "compute_spectrum",
    "compute_surface",
    "data_spec",
    "describe_results",
    "hutchpp_trace",
    "instantiate",
    "lanczos_extremal",
    "load",
    "load_checkpoint",
    "load_data",
    "model_spec",
    "plot_spectrum",
    "problem_from_checkpoint",
    "provenance",
    "resolve_device",
    "save_checkpoint",
    "slq_density",
    "train_model",
    "wrap",
    "write_spectrum",
]
