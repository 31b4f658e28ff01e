"""landscape: loss-landscape analysis of PyTorch models.

A checkpoint or a live module, ready to analyse::

    import landscape_cli as ls
    scape = ls.load("sample_checkpoints/mlp_digits.pt")      # or ls.wrap(model, (x, y), "cross_entropy")
    print(scape.spectrum(top_k=5, trace=True).lanczos.top.values)
    scape.check(max_top_eig=0.2, max_surface_rise=0.1).assert_passed()
    ls.compare("base.pt", "new.pt", max_increase="10%").assert_passed()

The lower-level functions the commands call (compute_spectrum, compute_surface, ...) are exported too.
Names are imported on first use, so that `import landscape_cli` (and the command line's `--help`) does
not load torch until something needs it.
"""

from __future__ import annotations

from ._lazy import lazy_exports
from ._version import __version__
from .errors import LandscapeError, LandscapeWarning

#: Public name -> the module that defines it.
_EXPORTS = {
    "CheckResult": "api",
    "CompareResult": "api",
    "Landscape": "api",
    "compare": "api",
    "fisher": "api",
    "ggn": "api",
    "hessian": "api",
    "load": "api",
    "wrap": "api",
    "Checkpoint": "checkpoint",
    "instantiate": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "hutchpp_trace": "linalg",
    "lanczos_extremal": "linalg",
    "slq_density": "linalg",
    "plot_spectrum": "plotting",
    "CurvatureOperator": "operators",
    "ParamLayout": "problem",
    "Problem": "problem",
    "describe_results": "hdf5",
    "provenance": "results",
    "write_spectrum": "results",
    "problem_from_checkpoint": "session",
    "resolve_device": "session",
    "SpectrumOptions": "spectrum",
    "SpectrumResult": "spectrum",
    "compute_spectrum": "spectrum",
    "SurfaceOptions": "surface",
    "SurfaceResult": "surface",
    "compute_surface": "surface",
    "TrainConfig": "train",
    "train_model": "train",
    "build_model": "zoo",
    "data_spec": "zoo",
    "load_data": "zoo",
    "model_spec": "zoo",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["LandscapeError", "LandscapeWarning", "__version__", *_EXPORTS]
