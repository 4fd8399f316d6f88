"""ONNX external data files (``onnx.save_model(..., save_as_external_data=True)``) in the store.

An external data file is bare tensor bytes: nothing in it says where one tensor ends. The layout
is in the ONNX model that points at it (each initializer's ``location``, ``offset``, ``length``,
dims and type). So the data file is versioned as a file of its own, tracked with the same filter
as the model (``dcopt git track "*.onnx"`` adds the side files' patterns too), and:

* **clean** finds the layout in the ONNX models next to it (the same directory, or one up to three
  levels above, whose initializers name this file), else in the file's previous manifest; each
  tensor becomes a parameter named after its initializer, so a fine-tune stores only the changed
  tensors (dense, sparse or low-rank), exactly as for a model with its weights inside;
* the **manifest** records the layout (names, dtypes, shapes, sizes), so smudge, diff, textconv and
  the merge driver need nothing else: :func:`from_manifest` rebuilds the format from it;
* the ONNX model itself is small and stored whole as its skeleton (its external initializers hold
  no bytes).

Why not fold the data into the model's manifest: git checks files out one at a time, and the data
file has to be a file git knows about to be written at all; two small manifests, each rebuilding
its own file byte for byte, work with plain ``git add``/``commit``/``checkout``/``merge``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from dcopt.errors import ModelLoadError
from dcopt.versions.formats import ModelFormat, Payload, Structure, numpy_dtype

NAME = "onnx-external-data"
#: how many directories above the data file are searched for the models that use it
SEARCH_UP = 3


class ExternalDataFormat(ModelFormat):
    """The bytes of one external data file, cut by a layout the ONNX model (or a manifest) gave.
    Never sniffed: the content alone cannot say it is one."""

    name = NAME

    def __init__(self, layout: list[tuple[str, str, tuple[int, ...], int, int]], models: list[str]):
        self.layout = sorted(layout, key=lambda t: t[3])  # (name, dtype, shape, start, end)
        self.models = models

    def sniff(self, head: bytes) -> bool:
        return False

    def payloads(self, data: bytes, file: str) -> list[Payload]:
        out, pos = [], 0
        for name, dtype, shape, start, end in self.layout:
            if start < pos or end > len(data):
                raise ModelLoadError(f"external data of tensor '{name}' at bytes {start}..{end} overlaps another "
                                     f"or lies past the end of the file ({len(data)} bytes)", file=file)
            out.append(Payload(name, dtype, shape, "raw", start, end))
            pos = end
        return out

    def arrays(self, data: bytes, file: str, path=None) -> dict[str, np.ndarray]:
        return {p.name: np.frombuffer(data, numpy_dtype(p.dtype), count=int(np.prod(p.shape, dtype=np.int64)),
                                      offset=p.start).reshape(p.shape) for p in self.payloads(data, file)}

    def structure(self, data: bytes, file: str) -> Structure:
        return Structure(metadata={"external data of": ", ".join(self.models)})

    def replace(self, data: bytes, arrays: Mapping[str, np.ndarray], file: str) -> bytes:
        out = bytearray(data)
        payloads = {p.name: p for p in self.payloads(data, file)}
        for name, array in arrays.items():
            p = payloads[name]
            blob = np.ascontiguousarray(array, dtype=numpy_dtype(p.dtype)).tobytes()
            if len(blob) != p.nbytes:
                raise ModelLoadError(f"tensor '{name}': a merged value must keep its dtype and shape", file=file)
            out[p.start:p.end] = blob
        return bytes(out)


def _layout_in(model_path: Path, data_path: Path) -> list[tuple[str, str, tuple[int, ...], int, int]]:
    """The tensors of ``model_path`` kept in ``data_path`` (empty if none, or not an ONNX model)."""
    import onnx

    from dcopt.frontends.onnx_load import _external_entries, _tensors_with_external_data
    from dcopt.versions.onnx_format import _dtype_name

    try:
        model = onnx.load_model(str(model_path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a model (or a manifest): it uses no external data
        return []
    out = []
    for tensor in _tensors_with_external_data(model):
        try:
            location, offset, length = _external_entries(tensor, str(model_path))
        except ModelLoadError:
            continue
        if not location or os.path.normpath(model_path.parent / location) != os.path.normpath(data_path):
            continue
        dtype = _dtype_name(tensor.data_type)
        shape = tuple(int(d) for d in tensor.dims)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(numpy_dtype(dtype)).itemsize if dtype else None
        if nbytes is None or (length is not None and length != nbytes):
            dtype, shape, nbytes = "uint8", (length,), length  # sub-byte or odd types: opaque bytes
        if nbytes:
            out.append((tensor.name, dtype, shape, offset, offset + nbytes))
    return out


def users(data_path: Path, top: Path) -> list[Path]:
    """The ONNX models (``*.onnx`` in the data file's directory and up to SEARCH_UP above, inside
    the work tree ``top``) whose initializers keep their bytes in ``data_path``."""
    found, directory = [], data_path.parent
    for _ in range(SEARCH_UP + 1):
        found += [m for m in sorted(directory.glob("*.onnx")) if m != data_path and _layout_in(m, data_path)]
        if directory == top or top not in directory.parents:
            break
        directory = directory.parent
    return found


def format_for(data: bytes, data_path: Path, top: Path, previous: dict | None) -> ExternalDataFormat | None:
    """The format of a data file from the models that use it, else from its previous manifest (the
    model may be gone from the work tree); None when neither describes a layout that fits."""
    layouts: dict[str, tuple] = {}
    models = users(data_path, top)
    for model in models:
        for entry in _layout_in(model, data_path):
            layouts.setdefault(entry[0], entry)
    names = [os.path.relpath(m, data_path.parent) for m in models]
    if not layouts and previous is not None and previous.get("format") == NAME:
        fmt = from_manifest(previous)
        layouts, names = {e[0]: e for e in fmt.layout}, fmt.models
    fmt = ExternalDataFormat(_without_overlaps(list(layouts.values())), names)
    if not fmt.layout or fmt.layout[-1][4] > len(data):
        return None
    return fmt


def _without_overlaps(layout: list[tuple]) -> list[tuple]:
    """Tensors in file order; one that overlaps an earlier one (two models disagreeing) stays in
    the skeleton rather than being cut twice."""
    out, pos = [], 0
    for entry in sorted(layout, key=lambda t: (t[3], t[4])):
        if entry[3] >= pos:
            out.append(entry)
            pos = entry[4]
    return out


def from_manifest(manifest: dict) -> ExternalDataFormat:
    """The format a data file's manifest was cut with: payload positions in the file are the
    skeleton offsets plus the sizes of the payloads before them."""
    layout, before = [], 0
    for p in manifest["params"]:
        start = p["offset"] + before
        layout.append((p["name"], p["dtype"], tuple(p["shape"]), start, start + p["size"]))
        before += p["size"]
    meta = next((line for line in manifest.get("structure", []) if line.startswith("meta external data of = ")), "")
    return ExternalDataFormat(layout, [m for m in meta.removeprefix("meta external data of = ").split(", ") if m])


def side_files(model_path: Path) -> list[Path]:
    """The external data files an ONNX model names (for ``dcopt git track``)."""
    import onnx

    from dcopt.frontends.onnx_load import _external_entries, _tensors_with_external_data

    try:
        model = onnx.load_model(str(model_path), load_external_data=False)
        locations = {_external_entries(t, str(model_path))[0] for t in _tensors_with_external_data(model)}
    except Exception:  # noqa: BLE001 - not a model, or a manifest: no side files
        return []
    return sorted(Path(os.path.normpath(model_path.parent / loc)) for loc in locations if loc)
