"""The names the command line offers (optimizers, losses, measurements): plain constants, importable
without torch, so that `--help` and the option checks stay fast. The modules that implement them
import these; this is the one list of each."""

from __future__ import annotations

#: `--loss`: PyTorch's cross-entropy, and Cohen et al.'s MSE (0.5 ||f - onehot||^2 summed over outputs).
LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("sgd", "sam", "asam", "ssam", "msam", "eigensam", "usam")
BASES = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
#: What `compare` compares: (the check gate that measures it, whether larger is sharper).
MEASURES = {
    "top": ("max_top_eig", True),
    "bottom": ("min_bottom_eig", False),
    "trace": ("max_trace", True),
    "eos": ("max_eos_ratio", True),
    "surface": ("max_surface_rise", True),
}
