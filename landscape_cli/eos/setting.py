"""Which edge applies: the optimizer and its hyper-parameters, read from a checkpoint or a run's config
and overridable, mapped to the closed-form threshold that governs it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import LandscapeError, ParameterError
from . import thresholds as t

#: The edge each optimizer trains at, and the formula as printed in reports.
FORMULAS = {
    "gd": "2 / lr",
    "heavy-ball": "(2 + 2 momentum) / lr",
    "nesterov": "(2 + 2 momentum) / (lr (1 + 2 momentum))",
    "adam": "(2 + 2 beta1) / (lr (1 - beta1)), for the preconditioned sharpness",
    "sam": "(|g| / 2 rho) (sqrt(1 + 4 (2 + 2 momentum) rho / (lr |g|)) - 1)",
    "usam": "(sqrt(1 + 4 (2 + 2 momentum) rho / lr) - 1) / (2 rho)",
    "ssam": "(2 + 2 momentum) / lr",
    "msam": "the SAM edge at the harmonic mean of the micro-batch gradient norms",
}


@dataclass
class OptimizerSetting:
    """An optimizer as far as its edge of stability is concerned."""

    opt: str = "sgd"  # sgd, sam, ssam, usam, msam (asam and eigensam have no edge formula)
    base: str = "sgd"  # sgd or adam
    lr: float | None = None
    momentum: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    rho: float | None = None
    micro_batches: int = 1

    @classmethod
    def from_record(cls, opt: str | None, hparams: dict[str, Any], current_lr: float | None = None) -> OptimizerSetting:
        """From what `landscape train` records (a checkpoint's optimizer entry or a run's config)."""
        try:
            betas = hparams.get("betas") or (0.9, 0.999)
            lr = current_lr if current_lr is not None else hparams.get("lr")
            rho = hparams.get("rho")
            return cls(
                opt=str(opt or "sgd"),
                base=str(hparams.get("base", "sgd")),
                lr=None if lr is None else _number(lr),
                momentum=_number(hparams.get("momentum") or 0.0),
                nesterov=bool(hparams.get("nesterov", False)),
                beta1=_number(betas[0]),
                rho=None if rho is None else _number(rho),
                micro_batches=int(_number(hparams.get("micro_batches") or 1)),
            )
        except (TypeError, ValueError, IndexError, KeyError, OverflowError):
            raise LandscapeError(f"the recorded optimizer hyper-parameters are malformed: {hparams!r:.200}") from None

    @classmethod
    def from_checkpoint(cls, optimizer_record: dict[str, Any] | None) -> OptimizerSetting:
        """From a checkpoint's optimizer entry, at the learning rate the schedule had reached."""
        record = optimizer_record or {}
        return cls.from_record(record.get("name"), dict(record.get("hparams") or {}), current_lr(record))

    def override(self, **values: Any) -> OptimizerSetting:
        """A copy with the options the user gave (None means: keep the recorded value)."""
        return OptimizerSetting(**{**asdict(self), **{k: v for k, v in values.items() if v is not None}})

    def validate(self) -> None:
        """Every value in range, whether or not the rule uses it (a bad value given is a mistake either way)."""
        checks = [
            (self.lr is None or 0 < self.lr < math.inf, "lr", f"must be positive and finite, got {self.lr}"),
            (0 <= self.momentum < 1, "momentum", f"must lie in [0, 1), got {self.momentum}"),
            (0 <= self.beta1 < 1, "beta1", f"must lie in [0, 1), got {self.beta1}"),
            (self.rho is None or 0 < self.rho < math.inf, "rho", f"must be positive and finite, got {self.rho}"),
            (self.micro_batches >= 1, "micro_batches", f"must be at least 1, got {self.micro_batches}"),
        ]
        for ok, param, message in checks:
            if not ok:
                raise ParameterError(param, message)

    def rule(self) -> str:
        """The name of the edge that applies, or a clear refusal."""
        self.validate()
        if self.lr is None:
            raise ParameterError("lr", "the learning rate is not recorded; pass lr")
        if self.base not in ("sgd", "adam"):
            raise LandscapeError(f"no edge-of-stability formula for base optimizer '{self.base}' (sgd and adam have)")
        if self.opt == "sgd":
            if self.base == "adam":
                return "adam"
            if self.momentum and self.nesterov:
                return "nesterov"
            return "heavy-ball" if self.momentum else "gd"
        if self.opt not in ("sam", "usam", "ssam", "msam"):
            raise LandscapeError(
                f"no edge-of-stability formula for '{self.opt}'; there is one for sgd (with momentum or Nesterov), "
                "adam, sam, usam, ssam and msam"
            )
        if self.base != "sgd" or self.nesterov:
            over = f"{self.base} with Nesterov" if self.nesterov else self.base
            raise LandscapeError(f"no edge-of-stability formula for {self.opt} over {over}")
        if self.rho is None and self.opt != "ssam":
            raise ParameterError("rho", f"{self.opt}'s radius is not recorded; pass rho")
        return self.opt

    def edge(self, grad_norm: float | None = None, micro_grad_norms: list[float] | None = None) -> float:
        """The threshold the sharpness is compared with (SAM's moves with the full-batch gradient norm)."""
        rule = self.rule()
        lr = float(self.lr)  # type: ignore[arg-type]
        if rule == "gd":
            return t.gd_edge(lr)
        if rule == "heavy-ball":
            return t.heavy_ball_edge(lr, self.momentum)
        if rule == "nesterov":
            return t.nesterov_edge(lr, self.momentum)
        if rule == "adam":
            return t.adam_edge(lr, self.beta1)
        if rule == "ssam":
            return t.ssam_edge(lr, self.momentum)
        rho = float(self.rho)  # type: ignore[arg-type]
        if rule == "usam":
            return t.usam_edge(lr, rho, self.momentum)
        if rule == "msam":
            if not micro_grad_norms:
                raise LandscapeError("mSAM's edge needs the micro-batch gradient norms")
            return t.msam_edge(lr, rho, micro_grad_norms, self.momentum)
        if grad_norm is None:
            raise LandscapeError("SAM's edge needs the full-batch gradient norm")
        return t.sam_edge(lr, rho, grad_norm, self.momentum)

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "rule": self.rule(), "formula": FORMULAS[self.rule()]}


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(value)
    return float(value)


def current_lr(record: dict[str, Any]) -> float | None:
    """The learning rate in a saved optimizer state (what the schedule had reached), if recorded."""
    try:
        return float(record["state"]["base"]["param_groups"][0]["lr"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def verdict(ratio: float, band: float) -> str:
    """below / at / above the edge, `at` meaning within +-band (relative)."""
    if ratio > 1 + band:
        return "above"
    if ratio < 1 - band:
        return "below"
    return "at"
