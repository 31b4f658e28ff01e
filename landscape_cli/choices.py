"""The names the command line offers (optimizers, losses, measurements): plain constants, importable
without torch, so that `--help` and the option checks stay fast. The modules that implement them
import these; this is the one list of each."""

from __future__ import annotations

#: `--loss` (landscape_cli.losses says what each is): PyTorch's cross-entropy, MSELoss and BCEWithLogitsLoss,
#: Cohen et al.'s MSE (0.5 ||f - onehot||^2 summed over outputs, this project's `mse` before checkpoint
#: format 2), and the model's own loss (HuggingFace's `.loss`).
LOSSES = ("cross_entropy", "mse", "half_sse", "bce_with_logits", "model")
#: The losses `train` trains with (its models return tensors).
TRAIN_LOSSES = ("cross_entropy", "mse", "half_sse", "bce_with_logits")
#: `--curvature`: the matrix a spectrum is of (landscape_cli.operators says what each is).
CURVATURES = ("hessian", "ggn", "fisher")
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
    "worst": ("max_sharpness_worst", True),
    "average": ("max_sharpness_avg", True),
}
