"""The self-describing checkpoint: what was trained, on what, how, and the weights.

Native checkpoints are plain dicts of strings, numbers and tensors so that
``torch.load(weights_only=True)`` reads them: nothing in a checkpoint can execute code.
Foreign files (a bare state_dict, or one under ``state_dict``/``model``/``model_state_dict``)
load too when the caller supplies the model spec.
"""

from __future__ import annotations

import datetime as _dt
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .atomic import atomic_path
from .choices import LOSSES
from .errors import LandscapeError
from .files import file_sha256, require_regular_file, verify_archive
from .metadata import validate_metadata
from .zoo.entrypoints import is_entrypoint
from .zoo.models import build_model

FORMAT = "landscape-checkpoint"
#: 2: `mse` is PyTorch's MSELoss; format 1's `mse` (0.5 x the sum over outputs) reads as `half_sse`.
FORMAT_VERSION = 2
FOREIGN_KEYS = ("state_dict", "model_state_dict", "model")


@dataclass
class Checkpoint:
    """Everything a checkpoint says about a model; `None` where a foreign file is silent."""

    state_dict: dict[str, torch.Tensor]
    model: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    loss: str | None = None
    optimizer: dict[str, Any] | None = None
    step: int | None = None
    epoch: int | None = None
    seed: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    #: What `landscape train --resume` needs: the run's config, RNG states, schedule, log position.
    train_state: dict[str, Any] | None = None
    format_version: int | None = FORMAT_VERSION
    created: str | None = None
    tool_version: str | None = None
    path: Path | None = None
    sha256: str | None = None
    native: bool = True
    #: Entry points the file names that nobody vouched for ("model"/"data" -> "pkg.module:fn"): data, not
    #: code, until the user names a model or data source or passes trust_remote_code.
    untrusted: dict[str, str] = field(default_factory=dict)
    #: Options of the loss given with it (cross_entropy's ignore_index, label_smoothing).
    loss_options: dict[str, Any] = field(default_factory=dict)

    def loss_spec(self) -> str | None:
        """The loss to measure: a name, or an entry point the user named or trusts (refused otherwise)."""
        if "loss" in self.untrusted:
            entry = self.untrusted["loss"]
            raise LandscapeError(
                f"{self.path} names the loss entry point '{entry}', and landscape runs no code named in a file: "
                f"pass --loss {entry} (or another loss) to run it, or --trust-remote-code to trust the entry points "
                "this file names"
            )
        return self.loss

    def spec(self, what: str) -> dict[str, Any]:
        """The model or data spec to build from: refused when missing, or when it names code that the file
        recorded and the user did not vouch for."""
        require(self, what)
        if what in self.untrusted:
            option = "--model" if what == "model" else "--data"
            entry = self.untrusted[what]
            raise LandscapeError(
                f"{self.path} names the {what} entry point '{entry}', and landscape runs no code named in a file: "
                f"pass {option} {entry} (or another {what}) to run it, or --trust-remote-code to trust the "
                "entry points this file names"
            )
        return getattr(self, what)

    @property
    def n_params(self) -> int:
        """Floating-point values in the state_dict, BatchNorm's running statistics aside: the parameter count
        of every model whose other buffers are not floating point (counted without building the model)."""
        return sum(
            int(t.numel())
            for name, t in self.state_dict.items()
            if t.is_floating_point() and not name.endswith(("running_mean", "running_var"))
        )

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form (only types `weights_only=True` accepts)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "created": self.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": self.model,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict.items()},
            "data": self.data,
            "loss": self.loss,
            "optimizer": self.optimizer,
            "step": self.step,
            "epoch": self.epoch,
            "seed": self.seed,
            "metrics": dict(self.metrics),
            "train_state": self.train_state,
        }


def save_checkpoint(ckpt: Checkpoint, path: str | Path, overwrite: bool = True) -> Path:
    """Save atomically: a crash mid-write leaves the previous file (or none), never half a file."""
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(ckpt.to_dict(), tmp)
    return path


def _read(path: Path) -> Any:
    require_regular_file(path, "checkpoint file")
    verify_archive(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" in msg:
            found = re.search(r"GLOBAL ([\w.]+)", msg)
            if found is None:  # e.g. a plain pickle with opcodes the safe unpickler does not know
                why = re.search(r"WeightsUnpickler error:\s*(.+)", msg)
                detail = f" ({why.group(1).strip()[:120]})" if why else ""
                raise LandscapeError(
                    f"{path} is not a checkpoint that torch.load(weights_only=True) can read{detail}; re-save it "
                    "with torch.save(model.state_dict(), ...)"
                ) from None
            raise LandscapeError(
                f"refusing to load {path}: unpickling it would run arbitrary code (it references "
                f"{found.group(1)}); landscape loads checkpoints with weights_only=True. Re-save it as a plain "
                "state_dict (torch.save(model.state_dict(), ...)) in an environment you trust"
            ) from None
        raise LandscapeError(f"{path} is not a PyTorch checkpoint ({msg.splitlines()[0]})") from None
    except PermissionError:
        raise LandscapeError(f"cannot read {path}: permission denied") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LandscapeError(f"{path} is truncated or corrupt ({first[:120]})") from None
    except Exception as exc:  # noqa: BLE001 - anything else torch.load trips over is a bad file
        raise LandscapeError(f"{path} is not a PyTorch checkpoint ({type(exc).__name__})") from None


def _tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def load_checkpoint(
    path: str | Path,
    model: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    loss: str | None = None,
    trust_remote_code: bool = False,
) -> Checkpoint:
    """Read a native or foreign checkpoint; `model`, `data`, `loss` override what the file says.

    An entry point the file records as its model or data is kept as data and marked untrusted, so that
    building from it is refused (`Checkpoint.spec`), unless `trust_remote_code`."""
    path = Path(path)
    raw = _read(path)
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        validate_metadata(raw, path)
        version = int(raw.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise LandscapeError(
                f"{path} has checkpoint format {version}; this landscape reads up to {FORMAT_VERSION}: "
                "upgrade landscape"
            )
        if not _tensor_dict(raw.get("state_dict")):
            raise LandscapeError(f"{path} is a landscape checkpoint without a state_dict")
        ckpt = Checkpoint(
            state_dict=raw["state_dict"],
            model=raw.get("model"),
            data=raw.get("data"),
            loss=raw.get("loss"),
            optimizer=raw.get("optimizer"),
            step=raw.get("step"),
            epoch=raw.get("epoch"),
            seed=raw.get("seed"),
            metrics=dict(raw.get("metrics") or {}),
            train_state=raw.get("train_state"),
            format_version=version,
            created=raw.get("created"),
            tool_version=raw.get("tool_version"),
            native=True,
        )
    else:
        ckpt = Checkpoint(state_dict=_foreign_state_dict(raw, path), format_version=None, native=False)
    ckpt.path = path
    ckpt.sha256 = file_sha256(path)
    for what, given in (("model", model), ("data", data)):
        if given is not None:
            setattr(ckpt, what, given)
        elif not trust_remote_code and isinstance(getattr(ckpt, what), dict) and "entrypoint" in getattr(ckpt, what):
            ckpt.untrusted[what] = str(getattr(ckpt, what)["entrypoint"])
    if ckpt.native and (ckpt.format_version or 0) < 2 and ckpt.loss == "mse":
        ckpt.loss = "half_sse"  # what format 1 meant by mse
    if loss is not None:
        ckpt.loss = loss
    elif not trust_remote_code and isinstance(ckpt.loss, str) and is_entrypoint(ckpt.loss):
        ckpt.untrusted["loss"] = ckpt.loss
    named_function = isinstance(ckpt.loss, str) and is_entrypoint(ckpt.loss)
    if ckpt.loss is not None and ckpt.loss not in LOSSES and not named_function:
        raise LandscapeError(
            f"unknown loss '{ckpt.loss}'; choose one of {', '.join(LOSSES)}, or name a function as file.py:fn"
        )
    return ckpt


def _foreign_state_dict(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    if _tensor_dict(raw):
        return dict(raw)
    if isinstance(raw, dict):
        for key in FOREIGN_KEYS:
            if _tensor_dict(raw.get(key)):
                return dict(raw[key])
    raise LandscapeError(
        f"{path} holds no state_dict: expected a landscape checkpoint, a state_dict, or a dict with one under "
        f"{', '.join(repr(k) for k in FOREIGN_KEYS)}"
    )


def require(ckpt: Checkpoint, what: str) -> None:
    """Fail with the option that would supply a field the checkpoint does not record."""
    option = {"model": "--model", "data": "--data", "loss": "--loss"}[what]
    if getattr(ckpt, what) is None:
        raise LandscapeError(f"{ckpt.path} does not record its {what}; pass {option}")


def instantiate(ckpt: Checkpoint, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Build the model and load the weights, naming every key that does not fit.

    A built-in model is first built without memory (on the meta device) and checked against the
    weights, so that a spec asking for a huge network next to small weights costs nothing."""
    spec = ckpt.spec("model")
    if "name" in spec:
        check_fit(build_model(spec, device="meta"), ckpt.state_dict, ckpt.path)
    module = build_model(spec)
    check_fit(module, ckpt.state_dict, ckpt.path)
    module.load_state_dict(ckpt.state_dict, strict=True)
    # Eval mode by default: a stray forward pass in train mode would move BatchNorm's statistics.
    return module.to(device=device, dtype=dtype).eval()


def check_fit(module: nn.Module, state: dict[str, torch.Tensor], source: Path | None) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    misshaped += [
        f"{k} is {str(state[k].dtype).removeprefix('torch.')}, the model's {str(v.dtype).removeprefix('torch.')}"
        for k, v in expected.items()
        if k in state and state[k].is_floating_point() != v.is_floating_point()
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped (file vs model)", misshaped),
        ):
            if keys:
                shown = ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
                parts.append(f"{label}: {shown}")
        raise LandscapeError(f"state_dict in {source} does not fit the model: " + "; ".join(parts))
