"""`landscape train`: SGD and the SAM family, with sharpness tracking, writing self-describing checkpoints."""

from pathlib import Path
from typing import Annotated

import typer

from ..choices import BASES, OPTIMIZERS, SCHEDULES
from ..errors import LandscapeError
from ..limits import set_memory_limit
from . import common as c

OPT = "Optimization"
SAM = "SAM family"
RUN = "Run length, logging and tracking"


def _opt(name: str, help: str, panel: str, *aliases: str) -> typer.models.OptionInfo:
    return typer.Option(name, *aliases, help=help, rich_help_panel=panel)


def train_command(
    out: Annotated[Path, _opt("--out", "Run directory: checkpoints, train.h5.", c.OUTPUT_PANEL)],
    model: Annotated[
        str, _opt("--model", "Built-in model (mlp, cnn, resnet) or entry point 'pkg.module:factory'.", c.PROBLEM_PANEL)
    ] = "mlp",
    model_arg: c.ModelArgOpt = None,
    data: Annotated[
        str,
        _opt(
            "--data",
            "digits, gaussian-mixture, spirals, teacher-student, a .npz/.pt file or an entry point.",
            c.PROBLEM_PANEL,
        ),
    ] = "digits",
    data_arg: c.DataArgOpt = None,
    loss: Annotated[
        str,
        _opt(
            "--loss",
            "cross_entropy, mse (PyTorch's MSELoss), half_sse (0.5*||f-y||^2 summed over outputs, Cohen et al.'s "
            "MSE) or bce_with_logits.",
            c.PROBLEM_PANEL,
        ),
    ] = "cross_entropy",
    opt: Annotated[str, _opt("--opt", f"Optimizer: {', '.join(OPTIMIZERS)}.", OPT)] = "sgd",
    base: Annotated[str, _opt("--base", f"Base optimizer the SAM family steps with: {', '.join(BASES)}.", OPT)] = "sgd",
    lr: Annotated[float, _opt("--lr", "Learning rate.", OPT)] = 0.1,
    momentum: Annotated[float, _opt("--momentum", "Heavy-ball momentum (--base sgd).", OPT)] = 0.0,
    nesterov: Annotated[bool, _opt("--nesterov", "Nesterov momentum (--base sgd).", OPT)] = False,
    weight_decay: Annotated[float, _opt("--weight-decay", "Weight decay (decoupled for adamw).", OPT)] = 0.0,
    beta1: Annotated[float, _opt("--beta1", "Adam's first-moment decay (--base adam/adamw).", OPT)] = 0.9,
    beta2: Annotated[float, _opt("--beta2", "Adam's second-moment decay (--base adam/adamw).", OPT)] = 0.999,
    clip_grad_norm: Annotated[
        float | None, _opt("--clip-grad-norm", "Clip the descent gradient to this global norm.", OPT)
    ] = None,
    lr_schedule: Annotated[
        str, _opt("--lr-schedule", f"{', '.join(SCHEDULES)} (cosine decays to 0 at the last step).", OPT)
    ] = "constant",
    lr_step_size: Annotated[int, _opt("--lr-step-size", "Steps between decays of the step schedule.", OPT)] = 1000,
    lr_gamma: Annotated[float, _opt("--lr-gamma", "Decay factor of the step schedule.", OPT)] = 0.1,
    batch_size: Annotated[
        str, _opt("--batch-size", "Mini-batch size, or 'full' for full-batch training.", OPT)
    ] = "128",
    rho: Annotated[float, _opt("--rho", "Perturbation radius of the SAM family.", SAM)] = 0.05,
    ascent: Annotated[
        str, _opt("--ascent", "ssam: normalized (eps = rho g/||g||) or unnormalized (eps = rho g).", SAM)
    ] = "normalized",
    micro_batches: Annotated[
        int, _opt("--micro-batches", "msam: micro-batches per batch (must divide the batch size).", SAM)
    ] = 1,
    ascent_scope: Annotated[
        str,
        _opt(
            "--ascent-scope",
            "Under torchrun: global (the ascent on the whole batch's gradient, as one process) or "
            "rank (each rank's own: mSAM with one micro-batch per rank).",
            SAM,
        ),
    ] = "global",
    eigen_iters: Annotated[int, _opt("--eigen-iters", "eigensam: power iterations per estimate.", SAM)] = 5,
    eigen_every: Annotated[int, _opt("--eigen-every", "eigensam: steps between eigenvector estimates.", SAM)] = 100,
    alpha: Annotated[float, _opt("--alpha", "eigensam: weight of the eigenvector component.", SAM)] = 0.2,
    epochs: Annotated[
        int | None, _opt("--epochs", "Epochs to train (default 10 when --steps is not given).", RUN)
    ] = None,
    steps: Annotated[int | None, _opt("--steps", "Optimizer steps to train.", RUN)] = None,
    save_every: Annotated[
        int | None, _opt("--save-every", "Also save a checkpoint every N steps (the final one is always saved).", RUN)
    ] = None,
    save_every_epochs: Annotated[
        int | None, _opt("--save-every-epochs", "Also save a checkpoint every N epochs (instead of --save-every).", RUN)
    ] = None,
    log_every: Annotated[int, _opt("--log-every", "Log the mini-batch loss and accuracy every N steps.", RUN)] = 1,
    eval_every: Annotated[
        int | None, _opt("--eval-every", "Evaluate train and test loss every N steps (default: every epoch).", RUN)
    ] = None,
    track_sharpness_every: Annotated[
        int | None,
        _opt(
            "--track-sharpness-every",
            "Every N steps: top Hessian eigenvalue (Lanczos), full-batch gradient norm and, for the SAM "
            "family, |cos(eps, v)| on a fixed subset.",
            RUN,
        ),
    ] = None,
    track_samples: Annotated[
        int,
        _opt(
            "--track-samples",
            "Size of the seeded training subset sharpness is tracked on (all samples when fewer).",
            RUN,
        ),
    ] = 5000,
    tensorboard: Annotated[
        Path | None,
        _opt(
            "--tensorboard",
            "Also log every row as TensorBoard scalars (train/loss, sharpness/top_eigenvalue, "
            "...) into this directory (needs the tensorboard extra).",
            RUN,
        ),
    ] = None,
    csv: Annotated[
        bool, _opt("--csv", "Also write the log's tables as train.csv, eval.csv and sharpness.csv in --out.", RUN)
    ] = False,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            help="Seed of the initialization, batch order and dropout.",
            rich_help_panel=c.COMPUTE_PANEL,
            min=0,
            max=c.SEED_MAX,
        ),
    ] = 0,
    device: c.DeviceOpt = "auto",
    dtype: c.DtypeOpt = "float32",
    max_memory: c.MaxMemoryOpt = None,
    resume: Annotated[
        bool, _opt("--resume", "Continue the run in --out from its latest checkpoint, exactly.", c.OUTPUT_PANEL)
    ] = False,
    overwrite: Annotated[bool, _opt("--overwrite", "Replace an existing run directory.", c.OUTPUT_PANEL)] = False,
    quiet: Annotated[bool, _opt("--quiet", "No live display, no log lines on stderr.", c.OUTPUT_PANEL, "-q")] = False,
) -> None:
    """Train with SGD or a sharpness-aware optimizer (sam, asam, ssam, msam, eigensam, usam) and save
    checkpoints.

    Writes <out>/final.pt, <out>/step_NNNNNNN.pt with --save-every, and the log <out>/train.h5
    (per-step loss, accuracy and lr; evaluations; tracked sharpness), in the native format that every
    other command reads; the same rows also as CSV (--csv) and TensorBoard scalars (--tensorboard DIR).
    A live table shows progress on a terminal; plain lines otherwise.
    """
    from ..session import resolve_device, resolve_dtype
    from ..train import TrainConfig, train_model
    from ..zoo.data import data_spec
    from ..zoo.models import model_spec

    set_memory_limit(max_memory)
    if batch_size == "full":
        size: int | None = None
    else:
        try:
            size = int(batch_size)
        except ValueError:
            raise LandscapeError(f"--batch-size must be a positive integer or 'full', got '{batch_size}'") from None
    if epochs is None and steps is None:
        epochs = 10
    if micro_batches != 1 and opt != "msam":
        raise LandscapeError(f"--micro-batches applies to --opt msam, not {opt}")
    config = TrainConfig(
        model=model_spec(model, c.parse_kv(model_arg, "--model-arg")),
        data=data_spec(data, "train", seed, c.parse_kv(data_arg, "--data-arg")),
        out_dir=out, loss=loss, opt=opt, base=base, lr=lr, momentum=momentum, nesterov=nesterov,
        weight_decay=weight_decay, betas=(beta1, beta2), rho=rho, ascent=ascent, micro_batches=micro_batches,
        ascent_scope=ascent_scope,
        eigen_iters=eigen_iters, eigen_every=eigen_every, alpha=alpha, clip_grad_norm=clip_grad_norm,
        schedule=lr_schedule, lr_step_size=lr_step_size, lr_gamma=lr_gamma, batch_size=size, epochs=epochs,
        steps=steps, save_every=save_every, save_every_epochs=save_every_epochs, log_every=log_every,
        eval_every=eval_every,
        track_sharpness_every=track_sharpness_every, track_samples=track_samples, seed=seed,
        device=str(resolve_device(device)), dtype=resolve_dtype(dtype),
    )  # fmt: skip
    final = train_model(
        config,
        log=(lambda _: None) if quiet else (lambda line: typer.echo(line, err=True)),
        overwrite=overwrite,
        resume=resume,
        quiet=quiet,
        tensorboard=tensorboard,
        csv=csv,
    )
    typer.echo(str(final))
