"""Built-in models and datasets, and resolution of user entry points."""

from .data import DATASETS, Dataset, data_spec, describe_data, load_data
from .entrypoints import is_entrypoint, resolve_entrypoint
from .models import MODELS, build_model, model_spec

__all__ = [
    "DATASETS",
    "MODELS",
    "Dataset",
    "build_model",
    "data_spec",
    "describe_data",
    "is_entrypoint",
    "load_data",
    "model_spec",
    "resolve_entrypoint",
]
