"""Batch sources: a fixed, reproducible set of samples, read batch by batch as often as the analysis needs.

Curvature and surfaces pass over the same samples many times (an HVP is one pass). A source yields the
same batches every pass without holding the set in memory: tensors in memory are cut into batches, a
map-style `Dataset` is read by index (a seeded subset for `samples`), an `IterableDataset` is collated
into batches, and a `DataLoader` or any iterable of batches is re-iterated, its first `samples` samples
kept. An iterable whose batches fit in `CACHE_BYTES` is read once and kept (so a shuffling DataLoader
still gives a fixed set); a larger one is re-read every pass and checked to give the same first batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, TensorDataset, default_collate

from .batches import as_batch, fingerprint, nbytes, rows, take
from .errors import LandscapeError, ParameterError, ParameterWarning
from .zoo.data import Arrays

#: Host memory an iterable source may keep to avoid re-reading it (its batches, on the CPU).
CACHE_BYTES = 512 << 20


class BatchSource:
    """Yields the batches of a fixed sample set, in the user's structure, on the CPU (or wherever they live)."""

    #: Samples in the set and batches per pass (known before the first pass).
    n_samples: int
    n_batches: int

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    def part(self, start: int, stop: int) -> BatchSource:
        """The samples at positions [start, stop) of the set, in order (one rank's share). Sources that can
        address samples read only those; others are read through and cut."""
        if (start, stop) == (0, self.n_samples):
            return self
        return PartSource(self, start, stop)


class PartSource(BatchSource):
    """Positions [start, stop) of another source's sample set, cut from its batches as they pass."""

    def __init__(self, base: BatchSource, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= base.n_samples:
            raise ParameterError("part", f"[{start}, {stop}) is not within the {base.n_samples} samples")
        self.base, self.start, self.stop = base, start, stop
        self.n_samples = stop - start
        self.n_batches = base.n_batches

    def __iter__(self) -> Iterator[Any]:
        position = 0
        for raw in self.base:
            size = as_batch(raw).size
            lo, hi = max(self.start, position), min(self.stop, position + size)
            if lo < hi:
                yield raw if (lo, hi) == (position, position + size) else rows(raw, lo - position, hi - lo)
            position += size
            if position >= self.stop:
                return


class TensorSource(BatchSource):
    """Tensors held in memory, cut into batches of `batch_size`."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int) -> None:
        self.tensors = tensors
        self.n_samples = int(tensors[0].shape[0])
        self.batch_size = max(1, min(batch_size, self.n_samples))
        self.n_batches = -(-self.n_samples // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        for start in range(0, self.n_samples, self.batch_size):
            yield tuple(t[start : start + self.batch_size] for t in self.tensors)

    def part(self, start: int, stop: int) -> BatchSource:
        return TensorSource(tuple(t[start:stop] for t in self.tensors), self.batch_size)


class IndexedSource(BatchSource):
    """A map-style Dataset read by index in order (a DataLoader over the fixed `indices`, with the user's
    collate function and worker processes), collated into batches."""

    def __init__(
        self, dataset: Any, indices: torch.Tensor, batch_size: int, collate: Any = None, workers: int = 0
    ) -> None:
        self.dataset = dataset
        self.indices = indices
        self.collate, self.workers = collate, workers
        self.n_samples = len(indices)
        self.batch_size = max(1, batch_size)
        self.n_batches = -(-self.n_samples // self.batch_size)
        self.loader = DataLoader(
            Subset(dataset, indices.tolist()),
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=collate or default_collate,
            num_workers=workers,
        )

    def __iter__(self) -> Iterator[Any]:
        yield from self.loader

    def part(self, start: int, stop: int) -> BatchSource:
        return IndexedSource(self.dataset, self.indices[start:stop], self.batch_size, self.collate, self.workers)


class IterableSource(BatchSource):
    """Any iterable of batches (a DataLoader) or of samples (an IterableDataset, collated), re-iterated."""

    def __init__(self, iterable: Iterable[Any], samples: int | None, batch_size: int, of_samples: bool) -> None:
        self.iterable = iterable
        self.limit = samples
        self.batch_size = max(1, batch_size)
        self.of_samples = of_samples
        self._cache: list[Any] | None = None
        self._first: tuple | None = None
        batches = self._read()  # the first pass counts the samples and decides whether to keep them
        self.n_samples = sum(as_batch(b).size for b in batches) if batches is not None else self._counted

    def _batches(self) -> Iterator[Any]:
        if not self.of_samples:
            yield from self.iterable
            return
        group: list[Any] = []
        for sample in self.iterable:
            group.append(sample)
            if len(group) == self.batch_size:
                yield default_collate(group)
                group = []
        if group:
            yield default_collate(group)

    def _limited(self) -> Iterator[Any]:
        seen = 0
        for raw in self._batches():
            size = as_batch(raw).size
            if self.limit is not None and seen + size >= self.limit:
                yield take(raw, self.limit - seen) if seen + size > self.limit else raw
                return
            seen += size
            yield raw
        if self.limit is not None:
            raise LandscapeError(f"the data has {seen:,} samples, fewer than the {self.limit:,} asked for")

    def _read(self) -> list[Any] | None:
        kept: list[Any] | None = []
        held, count = 0, 0
        for index, raw in enumerate(self._limited()):
            if index == 0:
                self._first = fingerprint(raw)
            count += as_batch(raw).size
            if kept is not None:
                held += nbytes(raw)
                kept.append(raw)
                if held > CACHE_BYTES:
                    kept = None
        if count == 0:
            raise LandscapeError("the data yields no batches")
        self._counted = count
        self.n_batches = index + 1
        self._cache = kept
        return kept

    def __iter__(self) -> Iterator[Any]:
        if self._cache is not None:
            yield from self._cache
            return
        for index, raw in enumerate(self._limited()):
            if index == 0 and fingerprint(raw) != self._first:
                raise LandscapeError(
                    "the data gives other batches on each pass (a DataLoader with shuffle=True?); the analysis "
                    "needs a fixed sample set: pass shuffle=False, or the Dataset itself"
                )
            yield raw


class ArraySource(BatchSource):
    """NumPy arrays (memory-mapped .npy files): each batch reads its rows, so nothing else is in memory."""

    def __init__(self, arrays: tuple[Any, ...], indices: torch.Tensor | None, batch_size: int) -> None:
        self.arrays = arrays
        self.requested_batch_size = batch_size
        n = int(arrays[0].shape[0])
        self.indices = indices.numpy() if indices is not None else None
        self.n_samples = n if indices is None else len(indices)
        self.batch_size = max(1, min(batch_size, self.n_samples))
        self.n_batches = -(-self.n_samples // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        import numpy as np

        for start in range(0, self.n_samples, self.batch_size):
            if self.indices is None:
                rows = slice(start, start + self.batch_size)
                parts = [np.array(a[rows]) for a in self.arrays]
            else:
                picked = self.indices[start : start + self.batch_size]
                parts = [np.asarray(a[picked]) for a in self.arrays]
            tensors = [torch.from_numpy(np.ascontiguousarray(p)) for p in parts]
            target = tensors[1]
            if target.is_floating_point() and target.dim() == 1:
                target = target.unsqueeze(-1)  # regression targets are (N, outputs)
            elif not target.is_floating_point():
                target = target.long()
            yield (tensors[0], target)

    def part(self, start: int, stop: int) -> BatchSource:
        positions = self.indices[start:stop] if self.indices is not None else None
        picked = torch.from_numpy(positions) if positions is not None else torch.arange(start, stop)
        return ArraySource(self.arrays, picked, self.requested_batch_size)


def subset_indices(n: int, samples: int | None, seed: int) -> torch.Tensor | None:
    """A fixed seeded subset of `samples` indices (sorted), or None for all `n` (with a warning when more
    were asked for than there are)."""
    if samples is not None and samples < 1:
        raise ParameterError("samples", f"must be at least 1, got {samples}")
    if samples is None or samples >= n:
        if samples is not None and samples > n:
            warnings.warn(ParameterWarning("samples", f"{samples:,} is more than the {n:,} there are; using all of "
                                           "them"), stacklevel=3)  # fmt: skip
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:samples].sort().values


def as_source(data: Any, *, batch_size: int, samples: int | None = None, seed: int = 0) -> BatchSource:
    """A batch source over `data`: tensors `(x, y, ...)`, a Dataset, an IterableDataset, a DataLoader or an
    iterable of batches. `samples` keeps a seeded subset of a Dataset, or an iterable's first samples."""
    if isinstance(data, BatchSource):
        return data
    if batch_size < 1:
        raise ParameterError("batch_size", f"must be at least 1, got {batch_size}")
    if isinstance(data, torch.Tensor):
        data = (data,)
    if isinstance(data, tuple | list) and data and all(isinstance(t, torch.Tensor) for t in data):
        n = int(data[0].shape[0]) if data[0].dim() else 0
        if n == 0 or any(t.dim() == 0 or t.shape[0] != n for t in data):
            raise LandscapeError(f"tensors of the data must share a non-empty leading dimension, got "
                                 f"{[tuple(t.shape) for t in data]}")  # fmt: skip
        indices = subset_indices(n, samples, seed)
        tensors = tuple(data) if indices is None else tuple(t[indices] for t in data)
        return TensorSource(tensors, batch_size)
    if isinstance(data, Arrays):
        indices = subset_indices(len(data), samples, seed)
        return ArraySource((data.x, data.y), indices, batch_size)
    if isinstance(data, DataLoader):
        return _loader_source(data, samples, seed)
    if isinstance(data, IterableDataset):
        return IterableSource(data, samples, batch_size, of_samples=True)
    if isinstance(data, TensorDataset):  # tensors already: cut them, no per-sample fetch and collate
        return _tensor_dataset_source(data, batch_size, samples, seed)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise LandscapeError("the Dataset is empty")
        indices = subset_indices(n, samples, seed)
        return IndexedSource(data, torch.arange(n) if indices is None else indices, batch_size)
    if isinstance(data, Iterable) and not isinstance(data, str | bytes | dict):
        return IterableSource(data, samples, batch_size, of_samples=False)
    raise LandscapeError(
        f"data must be tensors (x, y), a Dataset, a DataLoader or an iterable of batches, got {type(data).__name__}"
    )


def _tensor_dataset_source(data: TensorDataset, batch_size: int, samples: int | None, seed: int) -> BatchSource:
    """A TensorDataset's tensors cut into batches: per-sample fetching and collating cost 2.5x the digits
    MLP's HVP."""
    n = len(data)
    if n == 0:
        raise LandscapeError("the Dataset is empty")
    indices = subset_indices(n, samples, seed)
    tensors = tuple(data.tensors) if indices is None else tuple(t[indices] for t in data.tensors)
    return TensorSource(tensors, batch_size)


def _loader_source(loader: DataLoader, samples: int | None, seed: int) -> BatchSource:
    """A DataLoader over a map-style Dataset is read by index with its own batch size and collate function
    (a fixed set, in order, whatever its sampler); otherwise its batches are re-iterated."""
    dataset = loader.dataset
    if isinstance(dataset, TensorDataset) and loader.collate_fn is default_collate and loader.batch_size:
        return _tensor_dataset_source(dataset, loader.batch_size, samples, seed)
    if not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__") and loader.batch_size is not None:
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise LandscapeError("the DataLoader's Dataset is empty")
        indices = subset_indices(n, samples, seed)
        return IndexedSource(dataset, torch.arange(n) if indices is None else indices, loader.batch_size,
                             loader.collate_fn, loader.num_workers)  # fmt: skip
    return IterableSource(loader, samples, 1, of_samples=False)
