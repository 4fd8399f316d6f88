"""A build's parameters as one raw file that loads memory-mapped: ``weights.bin``.

Why not ``np.savez``: a zip must be inflated and copied into fresh arrays on every load, so a
435 MB BERT-base build cost ~0.5 s and a second copy of its weights in memory before it ran.
Here each parameter is its raw bytes (the layout the steps read: packed, transposed, folded),
starting on a 64-byte boundary; an index (name -> offset, dtype name, shape) sits in
``program.json``. Loading maps the file copy-on-write: no read until a page is touched, pages
shared with the page cache (and with other processes running the same build), and arrays that
are writable as the generated kernels' signatures require, without any write reaching the file.

String parameters (object arrays) have no raw layout; they are kept in the index as lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from dcopt.ir import dtypes

ALIGN = 64
WEIGHTS = "weights.bin"


class WeightsWriter:
    """Appends parameters to a weights file one at a time (the code generator hands each packed
    weight over as it is made, so packed copies never pile up in memory); :meth:`close` returns
    the index."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.index: dict[str, dict] = {}
        self._file = open(self.path, "wb")
        self._offset = 0

    def add(self, name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        dtype = dtypes.from_numpy(array.dtype)
        if array.dtype == object or dtype == "string":
            self.index[name] = {"dtype": "string", "shape": list(array.shape), "values": array.tolist()}
            return
        pad = -self._offset % ALIGN
        self._file.write(b"\0" * pad)
        self._offset += pad
        self.index[name] = {"offset": self._offset, "dtype": dtype, "shape": list(array.shape)}
        data = np.ascontiguousarray(array)
        self._file.write(memoryview(data.reshape(-1).view(np.uint8)) if data.size else b"")
        self._offset += data.nbytes

    def close(self) -> dict[str, dict]:
        self._file.close()
        return self.index

    def __enter__(self) -> "WeightsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def write_weights(path: Path, params: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, dict]:
    """Write ``params`` (in ``names`` order) to ``path``; return the index to store beside it."""
    with WeightsWriter(path) as writer:
        for name in names:
            writer.add(name, params[name])
    return writer.index


def read_weights(path: Path, index: Mapping[str, Mapping]) -> dict[str, np.ndarray]:
    """The parameters of ``index`` as arrays backed by a copy-on-write map of ``path``.

    Raises ValueError when an entry reaches past the end of the file (a truncated or foreign
    file; the caller has verified the file's hash, so this is a damaged index)."""
    size = Path(path).stat().st_size
    mapped = np.memmap(path, dtype=np.uint8, mode="c") if size else np.zeros(0, np.uint8)
    params: dict[str, np.ndarray] = {}
    for name, entry in index.items():
        shape = tuple(entry["shape"])
        if entry["dtype"] == "string":
            params[name] = np.array(entry["values"], dtype=object).reshape(shape)
            continue
        dtype = dtypes.to_numpy(entry["dtype"])
        count = int(np.prod(shape, dtype=np.int64))
        end = entry["offset"] + count * dtype.itemsize
        if end > size:
            raise ValueError(f"parameter '{name}' ends at byte {end}, past the end of {Path(path).name} ({size} bytes)")
        if count == 0:
            params[name] = np.zeros(shape, dtype)
            continue
        params[name] = np.ndarray(shape, dtype=dtype, buffer=mapped, offset=entry["offset"])
    return params
