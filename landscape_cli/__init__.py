"""landscape: loss-landscape analysis of PyTorch models.

The functions the CLI calls, for scripting::

    from landscape_cli import load_checkpoint, problem_from_checkpoint, compute_spectrum, SpectrumOptions
    ckpt = load_checkpoint("sample_checkpoints/mlp_digits.pt")
    problem = problem_from_checkpoint(ckpt, device="auto")
    result = compute_spectrum(problem, SpectrumOptions(top_k=5, trace=True))
    print(result.lanczos.top.values, result.trace.estimate)
"""

from ._version import __version__
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
    "Checkpoint",
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
    "compute_spectrum",
    "compute_surface",
    "data_spec",
    "describe_results",
    "hutchpp_trace",
    "instantiate",
    "lanczos_extremal",
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
    "write_spectrum",
]
