"""A check of the one structure in an HDF5 file that sends libhdf5 into an endless loop when damaged.

A global heap collection (where variable-length strings live, e.g. every text attribute h5py writes)
lists its objects as (index, references, size); a free-space entry of size zero makes libhdf5's reader
loop forever without returning to Python, so no timeout or signal handler of ours could stop it. Each
collection is walked here first, in pure Python, and a damaged one is refused.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from .errors import LandscapeError

SIGNATURE = b"\x89HDF\r\n\x1a\n"
HEAP = b"GCOL"
MIN_COLLECTION = 4096  # libhdf5 never writes a smaller collection


def is_hdf5(path: Path) -> bool:
    """Whether `path` carries the HDF5 signature (at 0, or after a user block at 512, 1024, ... bytes)."""
    with open(path, "rb") as fh:
        at = 0
        while True:
            fh.seek(at)
            head = fh.read(8)
            if head == SIGNATURE:
                return True
            if len(head) < 8:
                return False
            at = 512 if at == 0 else at * 2


def _size_of_lengths(data: mmap.mmap) -> int:
    """From the superblock (at 0, 512, 1024, ... when a user block precedes it); 8 when unreadable."""
    at = 0
    while at + 16 <= len(data):
        if data[at : at + 8] == SIGNATURE:
            version = data[at + 8]
            offset = at + (14 if version in (0, 1) else 10)
            size = data[offset] if offset < len(data) else 8
            return size if size in (2, 4, 8) else 8
        at = 512 if at == 0 else at * 2
    return 8


def check_global_heaps(path: Path) -> None:
    """Refuse `path` when a global heap collection in it is inconsistent (see the module docstring)."""
    with open(path, "rb") as fh:
        try:
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file: h5py reports it
            return
    with data:
        length = _size_of_lengths(data)
        header = 8 + length  # index (2), references (2), reserved (4), size (length)
        form = {2: "<H", 4: "<I", 8: "<Q"}[length]
        at = data.find(HEAP)
        while at != -1:
            _walk(data, at, length, header, form, path)
            at = data.find(HEAP, at + 4)


def _walk(data: mmap.mmap, start: int, length: int, header: int, form: str, path: Path) -> None:
    if start + 8 + length > len(data) or data[start + 4] != 1:
        return  # not a collection: the four bytes occur by chance (version is always 1)
    (size,) = struct.unpack_from(form, data, start + 8)
    if size < MIN_COLLECTION or start + size > len(data):
        raise LandscapeError(f"{path} is damaged (a global heap of {size} bytes at offset {start})")
    p, end = start + 8 + length, start + size
    while p < end:
        if p + header > end:
            return  # a tail too small for an object header is free space
        (index,) = struct.unpack_from("<H", data, p)
        (object_size,) = struct.unpack_from(form, data, p + 8)
        need = object_size if index == 0 else header + ((object_size + 7) & ~7)
        if need <= 0 or p + need > end:
            raise LandscapeError(f"{path} is damaged (global heap object {index} at offset {p} is {object_size} bytes)")
        p += need
