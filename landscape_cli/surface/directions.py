"""Directions of a loss surface: random (filter-normalized, Li et al. 2018), Hessian eigenvectors,
interpolation toward other checkpoints, principal components of a training run, or reused from an
earlier surface file.

A direction is a flat vector in the Problem's parameter layout. Interpolation also moves the
floating-point buffers (BatchNorm's running statistics), so that the point x = 1 is exactly the
other checkpoint; every other kind leaves the buffers at the centre's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ..checkpoint import load_checkpoint
from ..errors import LandscapeError, ParameterError
from ..hdf5 import open_results, read_attrs
from ..problem import Problem
from ..progress import Tracker

KINDS = ("random", "eigen", "interp", "pca", "file")
NORMS = ("filter", "layer", "none")
IGNORES = ("biasbn", "none")
#: Directions this close to parallel span no plane.
PARALLEL_COSINE = 1 - 1e-6


@dataclass
class Direction:
    """A flat parameter-space direction, the buffer deltas that go with it, and what it is."""

    vector: torch.Tensor
    attrs: dict[str, Any]
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class DirectionSpec:
    """`--dirs` parsed: the kind and its argument (a path, or two for an interpolation plane)."""

    kind: str
    paths: tuple[Path, ...] = ()

    @classmethod
    def parse(cls, text: str) -> DirectionSpec:
        kind, _, arg = text.partition(":")
        if kind not in KINDS:
            raise ParameterError(
                "dirs",
                f"unknown direction kind '{kind}' in dirs {text}; choose random, eigen, eigen:SPECTRUM.h5, "
                "interp:B.pt, interp:B.pt,C.pt, pca:RUN_DIR or file:SURFACE.h5",
            )
        if kind == "random":
            if arg:
                raise ParameterError(("dirs", "seed"), "dirs random takes no argument; the seed is seed")
            return cls(kind)
        if kind == "eigen":
            return cls(kind, (Path(arg),) if arg else ())
        if not arg:
            raise ParameterError("dirs", f"dirs {kind} needs an argument, e.g. {kind}:{_EXAMPLES[kind]}")
        parts = arg.split(",") if kind == "interp" else [arg]
        if any(not part.strip() for part in parts):
            raise ParameterError("dirs", f"dirs {text}: an empty file name")
        paths = tuple(Path(part) for part in parts)
        if len(paths) > 2:
            raise ParameterError("dirs", "dirs interp takes one checkpoint (a line) or two (a plane)")
        return cls(kind, paths)

    def default_norm(self) -> str:
        """Filter normalization is for random directions; the others have a meaning of their own
        (an eigenvector, the way to another checkpoint) that rescaling would destroy."""
        return "filter" if self.kind == "random" else "none"

    def __str__(self) -> str:
        return self.kind + (":" + ",".join(str(p) for p in self.paths) if self.paths else "")


_EXAMPLES = {"interp": "B.pt", "pca": "runs/sgd", "file": "sgd.surface.h5"}


# -- normalization ------------------------------------------------------------------------------
def normalize(
    direction: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], norm: str, ignore: str
) -> dict[str, torch.Tensor]:
    """Rescale in place, tensor by tensor, and return `direction`.

    `filter`: every slice along dim 0 (a conv output channel, a Linear output row) gets the norm of
    the weight's slice. `layer`: every tensor gets the norm of its weight tensor. Tensors with
    dim <= 1 (biases, BatchNorm) are zeroed under ignore=biasbn (Li et al.'s setting), else treated
    as one filter each.
    """
    if norm not in NORMS:
        raise ParameterError("norm", f"unknown norm '{norm}'; choose {', '.join(NORMS)}")
    if ignore not in IGNORES:
        raise ParameterError("ignore", f"unknown ignore '{ignore}'; choose {', '.join(IGNORES)}")
    for name, d in direction.items():
        w = weights[name]
        if w.dim() <= 1:
            if ignore == "biasbn":
                d.zero_()
                continue
            if norm != "none":
                _rescale(d.reshape(1, -1), w.reshape(1, -1))
        elif norm == "filter":
            _rescale(d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1))
        elif norm == "layer":
            _rescale(d.reshape(1, -1), w.reshape(1, -1))
    return direction


def _rescale(d_rows: torch.Tensor, w_rows: torch.Tensor) -> None:
    """Give every row of `d_rows` (a view) the norm of the matching row of `w_rows`."""
    d_norm = d_rows.norm(dim=1, keepdim=True)
    scale = torch.where(d_norm > 0, w_rows.norm(dim=1, keepdim=True) / d_norm, torch.zeros_like(d_norm))
    d_rows.mul_(scale)


# -- the kinds ------------------------------------------------------------------------------------
def random_directions(problem: Problem, count: int, seed: int, norm: str, ignore: str) -> list[Direction]:
    """Gaussian directions drawn on the CPU in float64 from `seed` (the same on every device)."""
    generator = torch.Generator().manual_seed(seed)
    weights = problem.layout.unflatten(problem.w)
    out = []
    for i in range(count):
        flat = torch.randn(problem.n_params, generator=generator, dtype=torch.float64)
        flat = flat.to(problem.device, problem.dtype)
        normalize(problem.layout.unflatten(flat), weights, norm, ignore)
        out.append(Direction(flat, {"kind": "random", "norm": norm, "ignore": ignore, "seed": seed, "index": i}))
    return out


def eigen_directions_from_file(path: Path, problem: Problem, count: int) -> list[Direction]:
    """The top eigenvectors stored by `landscape spectrum --save-eigenvectors`."""
    with open_results(path) as f:
        if read_attrs(f).get("kind") != "spectrum":
            raise LandscapeError(f"{path} is not a spectrum file (written by landscape spectrum)")
        if "eigenvectors/top" not in f:
            raise ParameterError(
                "save_eigenvectors", f"{path} holds no eigenvectors; run landscape spectrum with save_eigenvectors"
            )
        group = f["eigenvectors/top"]
        if len(group) < count:
            raise LandscapeError(f"{path} holds {len(group)} top eigenvector(s); this surface needs {count}")
        out = []
        for i in range(count):
            g = group[str(i)]
            arrays = {name: g[name][()] for name in g}
            vector = _flat_from_arrays(arrays, problem, path)
            eigenvalue = float(g.attrs["eigenvalue"])
            out.append(Direction(vector, {"kind": "eigen", "eigenvalue": eigenvalue, "index": i, "source": str(path)}))
    return out


def eigen_directions_computed(
    problem: Problem, count: int, seed: int, tracker: Tracker | None = None
) -> list[Direction]:
    """The top eigenvectors by Lanczos (tolerance 1e-4), computed here."""
    from ..spectrum import SpectrumOptions, compute_spectrum

    options = SpectrumOptions(top_k=count, save_eigenvectors=True, seed=seed)
    result = compute_spectrum(problem, options, tracker)
    assert result.lanczos is not None and result.lanczos.top.vectors is not None
    vectors = result.lanczos.top.vectors
    if len(vectors) < count:
        raise LandscapeError(f"Lanczos found {len(vectors)} eigenvector(s); the surface needs {count}")
    out = []
    for i in range(count):
        vector = vectors[i].to(problem.device, problem.dtype)
        vector = vector / vector.norm()
        eigenvalue = float(result.lanczos.top.values[i])
        out.append(Direction(vector, {"kind": "eigen", "eigenvalue": eigenvalue, "index": i, "source": "lanczos"}))
    return out


def interp_directions(problem: Problem, targets: tuple[Path, ...]) -> list[Direction]:
    """B - A (and C - A for a plane), buffers included, so that x = 1 is exactly checkpoint B."""
    out = []
    for path in targets:
        ckpt = load_checkpoint(path)
        state = ckpt.state_dict
        arrays = {name: state[name] for name in problem.layout.names if name in state}
        target = _flat_from_arrays(arrays, problem, path, what="the centre checkpoint's")
        buffers = {}
        for name, mine in problem.buffers.items():
            if not mine.is_floating_point():
                continue
            if name not in state or tuple(state[name].shape) != tuple(mine.shape):
                raise LandscapeError(f"{path} does not have the centre checkpoint's architecture: buffer '{name}'")
            delta = state[name].to(problem.device, problem.dtype) - mine
            if bool(delta.any()):
                buffers[name] = delta
        out.append(
            Direction(
                target - problem.w,
                {"kind": "interp", "norm": "none", "source": str(path), "source_sha256": ckpt.sha256},
                buffers,
            )
        )
    return out


@dataclass
class Trajectory:
    """A run's checkpoints projected onto the PCA plane, relative to the surface's centre."""

    x: np.ndarray
    y: np.ndarray
    step: np.ndarray
    explained_variance_ratio: list[float]


def run_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints of a `landscape train` run in training order, final.pt last."""
    if not run_dir.is_dir():
        raise LandscapeError(f"pca: {run_dir} is not a run directory")
    steps = sorted(run_dir.glob("step_*.pt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    final = run_dir / "final.pt"
    if not final.exists():
        raise LandscapeError(f"pca: {run_dir} has no final.pt (is the run finished?)")
    return [*steps, final]


def pca_directions(
    problem: Problem, run_dir: Path, count: int, norm: str = "none", ignore: str = "biasbn"
) -> tuple[list[Direction], Trajectory]:
    """Principal directions of (w_i - w_final) over a run's checkpoints (uncentred: the plane passes
    through the final weights, which is where the surface is drawn), optionally rescaled by `norm`,
    and the path's coordinates in those directions (least squares, so right after rescaling too)."""
    paths = run_checkpoints(run_dir)
    if len(paths) < count + 1:
        raise LandscapeError(
            f"pca: {run_dir} holds {len(paths)} checkpoint(s); {count} direction(s) need at least {count + 1} "
            "(train with --save-every)"
        )
    weights, steps = [], []
    for path in paths:
        ckpt = load_checkpoint(path)
        arrays = {name: ckpt.state_dict[name] for name in problem.layout.names if name in ckpt.state_dict}
        weights.append(_flat_from_arrays(arrays, problem, path, what="the centre checkpoint's").double())
        steps.append(int(ckpt.step or 0))
    final = weights[-1]
    diffs = torch.stack([w - final for w in weights[:-1]])
    _, singular, vh = torch.linalg.svd(diffs, full_matrices=False)
    energy = singular.pow(2)
    if len(energy) < count or float(energy[count - 1]) <= float(energy.sum()) * 1e-24:
        raise LandscapeError(f"pca: the checkpoints of {run_dir} span fewer than {count} direction(s)")
    ratio = (energy / energy.sum()).tolist()
    directions = []
    for k in range(count):
        d = vh[k] if float((weights[0] - final) @ vh[k]) <= 0 else -vh[k]  # the run starts on the negative side
        vector = d.to(problem.dtype)
        if norm != "none":
            normalize(problem.layout.unflatten(vector), problem.layout.unflatten(problem.w), norm, ignore)
        attrs = {"kind": "pca", "norm": norm, "explained_variance_ratio": ratio[k], "index": k, "source": str(run_dir)}
        if norm != "none":
            attrs["ignore"] = ignore
        directions.append(Direction(vector, attrs))
    basis = torch.stack([d.vector.double() for d in directions])  # (count, n)
    offsets = torch.stack([w - problem.w.double() for w in weights])  # (checkpoints, n)
    coords = torch.linalg.solve(basis @ basis.T, basis @ offsets.T).cpu().numpy()  # (count, checkpoints)
    trajectory = Trajectory(
        x=coords[0],
        y=coords[1] if count > 1 else np.zeros(len(weights)),
        step=np.array(steps),
        explained_variance_ratio=ratio[:2],
    )
    return directions, trajectory


def file_directions(path: Path, problem: Problem, count: int, as_stored: bool = False) -> list[Direction]:
    """The directions of an earlier surface file, checked against this model's parameter layout.

    `as_stored`: keep their attributes as written (a resumed sweep reports what it started with)
    instead of naming `path` as their source."""
    with open_results(path) as f:
        if "directions" not in f:
            raise LandscapeError(f"{path} holds no directions (not a surface file written by landscape surface)")
        group = f["directions"]
        available = [k for k in ("d1", "d2") if k in group]
        if len(available) < count:
            raise LandscapeError(f"{path} is a {len(available)}D surface; a {count}D surface needs {count} directions")
        out = []
        for key in available[:count]:
            g = group[key]
            arrays = {name: g[name][()] for name in g if isinstance(g[name], h5py.Dataset)}
            vector = _flat_from_arrays(arrays, problem, path)
            buffers = {}
            if "buffers" in g:
                for name in g["buffers"]:
                    if name not in problem.buffers or tuple(problem.buffers[name].shape) != g["buffers"][name].shape:
                        raise LandscapeError(f"{path}: buffer '{name}' does not fit this model")
                    buffers[name] = torch.as_tensor(g["buffers"][name][()]).to(problem.device, problem.dtype)
            attrs = read_attrs(g)
            attrs.pop("l2_norm", None)
            if not as_stored:
                attrs["source"] = str(path)
            out.append(Direction(vector, attrs, buffers))
    return out


def _flat_from_arrays(
    arrays: dict[str, Any], problem: Problem, source: Path, what: str = "this model's"
) -> torch.Tensor:
    """Arrays by parameter name -> a flat vector in the problem's layout, or a clear refusal."""
    layout = problem.layout
    missing = [n for n in layout.names if n not in arrays]
    extra = [n for n in arrays if n not in layout.names]
    if missing or extra:
        detail = f"missing {', '.join(missing[:4])}" if missing else f"unexpected {', '.join(extra[:4])}"
        raise LandscapeError(f"{source} does not have {what} parameters ({detail})")
    parts = []
    for name, shape in zip(layout.names, layout.shapes, strict=True):
        try:
            array = (
                torch.as_tensor(np.asarray(arrays[name]))
                if not isinstance(arrays[name], torch.Tensor)
                else arrays[name]
            )
        except (TypeError, ValueError, RuntimeError):
            raise LandscapeError(f"{source}: '{name}' is not an array of numbers") from None
        if not (array.is_floating_point() or array.dtype in (torch.int32, torch.int64)):
            raise LandscapeError(f"{source}: '{name}' is not an array of real numbers ({array.dtype})")
        if tuple(array.shape) != tuple(shape):
            raise LandscapeError(
                f"{source} does not have {what} parameter layout: '{name}' has shape {tuple(array.shape)} "
                f"there and {tuple(shape)} here"
            )
        parts.append(array.reshape(-1).to(problem.device, problem.dtype))
    return torch.cat(parts)


def check_directions(directions: list[Direction]) -> None:
    """Refuse a non-finite or zero direction (nothing would move) and, in 2D, two parallel ones (no plane)."""
    for i, d in enumerate(directions, start=1):
        source = d.attrs.get("source")
        where = f" (from {source})" if source else ""
        if not bool(torch.isfinite(d.vector).all()) or not all(
            bool(torch.isfinite(b).all()) for b in d.buffers.values()
        ):
            raise LandscapeError(f"direction {i}{where} holds NaN or infinite values")
        if not bool(d.vector.any()) and not d.buffers:
            reason = {
                "random": "every perturbed tensor is a bias or BatchNorm parameter; try --ignore none",
                "interp": "the two checkpoints have the same weights",
            }.get(d.attrs.get("kind", ""), "it is zero")
            raise LandscapeError(f"direction {i} has zero norm: {reason}")
    if len(directions) == 2:
        a, b = (d.vector.double() for d in directions)
        denominator = float(a.norm() * b.norm())
        if denominator > 0 and abs(float(a @ b)) / denominator > PARALLEL_COSINE:
            raise LandscapeError("directions 1 and 2 are parallel; they span no plane")
