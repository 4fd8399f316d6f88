"""Arrays that view files: weights read in place from a model file (or a build's weights file)
instead of copied into memory, and the means to drop their pages from resident memory once
they have been consumed (folded, packed) while their replacement is being built.

Why here (the IR layer) and not in a frontend: any frontend may map its weights, and the
passes and the code generator, which consume them, release their pages through
:func:`release_pages` without knowing where they came from.
"""

from __future__ import annotations

import mmap
import weakref
from pathlib import Path

import numpy as np


class FileMaps:
    """Read-only maps of the files external-data tensors live in (one map per file, so a model
    with thousands of tensors holds one descriptor per file, not one per tensor), and each
    tensor as an array viewing its byte range.

    A tensor's pages leave this process's resident memory when its array is freed (a weight
    replaced by a folded or packed one): they stay in the page cache, so a later reader maps
    them again without I/O. The map itself is unmapped when its last array goes."""

    def __init__(self, base_dir: Path):
        self.base_dir = Path(base_dir)
        self._maps: dict[str, mmap.mmap] = {}

    def _map(self, location: str) -> mmap.mmap:
        found = self._maps.get(location)
        if found is None:
            with open(self.base_dir / location, "rb") as f:
                found = self._maps[location] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return found

    def array(self, location: str, offset: int, dtype, shape: tuple[int, ...]) -> np.ndarray:
        """A read-only array of ``dtype`` and ``shape`` at byte ``offset`` of the file
        ``location`` (relative to the base folder; the caller has checked that it lies inside
        and that the file is long enough)."""
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:
            return np.zeros(shape, dtype)
        mapped = self._map(location)
        array = np.frombuffer(mapped, dtype=dtype, count=count, offset=offset).reshape(shape)
        weakref.finalize(array, _release, mapped, offset, count * np.dtype(dtype).itemsize)
        return array


def _release(mapped: mmap.mmap, offset: int, nbytes: int) -> None:
    """Drop the whole pages inside ``[offset, offset + nbytes)`` from resident memory (pages
    shared with a neighbouring tensor are left: it may still be in use). Always safe: the map
    is a read-only view of a file, so a page touched again is read back from the page cache."""
    start = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE
    end = (offset + nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if end > start and not mapped.closed and hasattr(mapped, "madvise"):
        try:
            mapped.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            pass


def release_pages(arrays) -> None:
    """Drop the resident pages of those ``arrays`` that are read-only maps of a model file (others
    are left alone): called once a weight has been consumed (folded, packed), so the original
    and its replacement are not resident together. The arrays stay valid."""
    for array in arrays:
        base = array
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        # only read-only maps (FileMaps'): dropping a written copy-on-write page would lose the write
        mapped = base.obj if isinstance(base, memoryview) and base.readonly else None
        if not isinstance(mapped, mmap.mmap) or not isinstance(array, np.ndarray) or mapped.closed:
            continue
        start = np.frombuffer(mapped, np.uint8, count=1).ctypes.data
        _release(mapped, array.ctypes.data - start, array.nbytes)
