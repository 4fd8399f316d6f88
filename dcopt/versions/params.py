"""A model file seen as its structure plus named parameters.

:class:`ModelFile` holds a file's bytes and its sniffed format; it cuts the bytes into the
*skeleton* (everything but the stored parameters' payloads) and the payloads, and puts them back
together (:func:`assemble`) exactly. Arrays and structure are read lazily: the git filters only
need the cut, ``dcopt diff`` and merges the arrays.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from dcopt.errors import ModelLoadError
from dcopt.versions.errors import PluginError
from dcopt.versions.formats import ModelFormat, Payload, Structure, call, numpy_dtype, sniff


class ModelFile:
    def __init__(self, data: bytes, file: str = "<data>", path: str | os.PathLike | None = None,
                 fmt: ModelFormat | None = None):
        self.data = bytes(data)
        self.file = file
        self.path = Path(path) if path is not None else None
        self.format = fmt or sniff(self.data, file)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "ModelFile":
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from None
        if not data:
            raise ModelLoadError("file is empty", file=str(path))
        return cls(data, str(path), path)

    @functools.cached_property
    def payloads(self) -> list[Payload]:
        """The format's payloads, checked: in file order, inside the file, not overlapping, names
        unique -- else cutting and reassembling would not give the file back (a plugin's bug is
        named here instead of becoming a wrong checkout)."""
        found = call(self.format, "payloads", self.data, self.file)
        pos, names = 0, set()
        for p in found:
            problem = _payload_problem(p, pos, names, len(self.data))
            if problem:
                plugin = self.format.plugin
                who = f"model format plugin {plugin}" if plugin else f"format {self.format.name}"
                raise (PluginError if plugin else ModelLoadError)(
                    f"{who}: payload '{getattr(p, 'name', p)}' {problem}", file=self.file)
            pos = p.end
            names.add(p.name)
        return found

    def blob(self, payload: Payload) -> bytes:
        return self.data[payload.start:payload.end]

    def skeleton(self) -> tuple[bytes, list[int]]:
        """The file without its payloads, and where each payload goes back (skeleton offsets)."""
        parts, offsets, pos, size = [], [], 0, 0
        for p in self.payloads:
            parts.append(self.data[pos:p.start])
            size += p.start - pos
            offsets.append(size)
            pos = p.end
        parts.append(self.data[pos:])
        return b"".join(parts), offsets

    def replace(self, arrays) -> bytes:
        """This model's bytes with the parameters in ``arrays`` set to new values (merges)."""
        return call(self.format, "replace", self.data, arrays, self.file)

    @functools.cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        return call(self.format, "arrays", self.data, self.file, self.path)

    @functools.cached_property
    def structure(self) -> Structure:
        return call(self.format, "structure", self.data, self.file)


def _payload_problem(p, pos: int, names: set, size: int) -> str | None:
    """Why payload ``p`` cannot be cut out after the payloads ending at ``pos`` (None: it can)."""
    if not isinstance(p, Payload):
        return "is not a Payload"
    if p.start < pos:
        return f"bytes {p.start}..{p.end} overlap the previous payload or are out of order"
    if p.end < p.start or p.end > size:
        return f"bytes {p.start}..{p.end} lie outside the file ({size} bytes)"
    return "is listed twice" if p.name in names else None


def assemble(skeleton: bytes, pieces: list[tuple[int, bytes]]) -> bytes:
    """Put payloads back into a skeleton: ``pieces`` are (skeleton offset, bytes), in order."""
    out, pos = [], 0
    for offset, blob in pieces:
        out.append(skeleton[pos:offset])
        out.append(blob)
        pos = offset
    out.append(skeleton[pos:])
    return b"".join(out)


def as_array(blob: bytes, dtype: str, shape) -> np.ndarray:
    """A raw payload as a (read-only) array."""
    return np.frombuffer(blob, numpy_dtype(dtype)).reshape(tuple(shape))
