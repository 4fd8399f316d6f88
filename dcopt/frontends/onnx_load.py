"""Reading .onnx files safely.

Turns every way a file can be bad (missing, empty, truncated, not protobuf, external data that
escapes the model's folder or is missing, offsets that are negative, not numbers or past the
end of the data file, tensors beyond the size limits) into a :class:`ModelLoadError` naming the
file and the tensor.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import external_data_helper, helper

from dcopt.errors import ModelLoadError
from dcopt.frontends.onnx_mapped import MAPPED_MIN_BYTES, mappable, parse_mapped
from dcopt.limits import INT64_MAX, SizeLimitError, check_tensor_size

#: ONNX element types packed below one byte per element (bits each).
SUB_BYTE_BITS = {getattr(onnx.TensorProto, n): b for n, b in
                 (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2)) if hasattr(onnx.TensorProto, n)}


def _tensors_with_external_data(model: onnx.ModelProto):
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor):
            yield tensor


def _entry_int(tensor: onnx.TensorProto, key: str, value: str, file: str) -> int:
    """An ``offset``/``length`` entry: decimal digits only (onnx would call ``int()`` on anything,
    and a negative offset would seek backwards from the end)."""
    if not value.isascii() or not value.isdigit():
        raise ModelLoadError(f"tensor '{tensor.name}': external data {key} '{value[:40]}' is not a non-negative "
                             "integer", file=file)
    number = int(value)
    if number > INT64_MAX:
        raise ModelLoadError(f"tensor '{tensor.name}': external data {key} {value[:40]} does not fit in int64",
                             file=file)
    return number


def _external_entries(tensor: onnx.TensorProto, file: str) -> tuple[str, int, int | None]:
    """(location, offset, length) of a tensor's external data, each checked."""
    entries = {}
    for entry in tensor.external_data:
        if entry.key in entries:
            raise ModelLoadError(f"tensor '{tensor.name}': external data key '{entry.key}' is given twice", file=file)
        entries[entry.key] = entry.value
    offset = _entry_int(tensor, "offset", entries["offset"], file) if "offset" in entries else 0
    length = _entry_int(tensor, "length", entries["length"], file) if "length" in entries else None
    return entries.get("location", ""), offset, length


def _expected_bytes(tensor: onnx.TensorProto, file: str) -> int | None:
    """Bytes the tensor's dims and type need (None for strings: their size is not fixed); the dims
    and the size are checked against int64 and the memory cap before anything is read."""
    where = f"initializer '{tensor.name}'"
    try:
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    except Exception:
        raise ModelLoadError(f"{where} has an unknown element type {tensor.data_type}", file=file) from None
    if tensor.data_type == onnx.TensorProto.STRING:
        raise ModelLoadError(f"{where}: string tensors cannot be stored as external data", file=file)
    try:
        check_tensor_size(tensor.name, list(tensor.dims), dtype, where="initializer")
    except SizeLimitError as exc:
        raise exc.at(file=file)
    count = 1
    for d in tensor.dims:
        count *= d
    bits = SUB_BYTE_BITS.get(tensor.data_type)
    return (count * bits + 7) // 8 if bits else count * dtype.itemsize


def check_external_data(model: onnx.ModelProto, base_dir: Path, file: str) -> None:
    """Refuse external data locations outside ``base_dir`` (path traversal, absolute paths,
    symlinks pointing out), offsets and lengths that are not non-negative integers or that lie
    past the end of the data file, sizes that do not match the tensor's dims, and tensors beyond
    the size limits (:mod:`dcopt.limits`) -- all before anything is read."""
    root = base_dir.resolve()
    for tensor in _tensors_with_external_data(model):
        location, offset, length = _external_entries(tensor, file)
        where = f"tensor '{tensor.name}'"
        if not location:
            raise ModelLoadError(f"{where} uses external data but names no location", file=file)
        if "\0" in location or os.path.isabs(location) or location.startswith(("/", "\\")):
            raise ModelLoadError(f"{where}: external data location '{location}' is absolute; "
                                 "it must be relative to the model's folder", file=file)
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise ModelLoadError(f"{where}: external data location '{location}' points outside the model's "
                                 f"folder {root}", file=file)
        if not target.is_file():
            raise ModelLoadError(f"{where}: external data file '{location}' not found next to the model", file=file)
        size = target.stat().st_size
        expected = _expected_bytes(tensor, file)
        if offset > size:
            raise ModelLoadError(f"{where}: external data offset {offset} lies past the end of '{location}' "
                                 f"({size} bytes)", file=file)
        available = size - offset if length is None else length
        if length is not None and offset + length > size:
            raise ModelLoadError(f"{where}: external data [{offset}, {offset + length}) lies past the end of "
                                 f"'{location}' ({size} bytes)", file=file)
        if expected is not None and available != expected:
            span = f"{available} bytes" + ("" if length is not None else f" (from offset {offset} to the end)")
            raise ModelLoadError(f"{where}: external data in '{location}' holds {span}, but its dims "
                                 f"{list(tensor.dims)} need {expected}", file=file)


def load_onnx(path: str | os.PathLike, external: list | None = None, *, mapped: bool = False) -> onnx.ModelProto:
    """Load an ONNX model with its external data; raise ModelLoadError on any bad input.
    ``external``, when given, receives the external data files' locations (relative to the
    model), which loading folds into the tensors and so no longer names.

    ``mapped``: leave the weights in the files (:mod:`dcopt.frontends.onnx_mapped`): large
    initializers stored inline become external-data references to the model file itself, and no
    external data is read; :func:`dcopt.frontends.onnx_import.import_model` with ``base_dir``
    maps them. ``external`` then lists only the other files."""
    path = Path(path)
    file = str(path)
    try:
        if not path.exists():
            raise ModelLoadError("file not found", file=file)
        if path.is_dir():
            raise ModelLoadError("is a directory, expected an .onnx file", file=file)
        model = parse_mapped(path) if mapped else None
        data = path.read_bytes() if model is None else None
    except (OSError, ValueError) as exc:  # permissions, a NUL in the name, a FIFO gone away...
        raise ModelLoadError(f"cannot read the file: {getattr(exc, 'strerror', None) or exc}", file=file) from None
    if model is None:
        if not data:
            raise ModelLoadError("file is empty", file=file)
        try:
            model = onnx.ModelProto()
            model.ParseFromString(data)
        except Exception as exc:
            raise ModelLoadError(f"not a valid ONNX model (truncated or not protobuf): {type(exc).__name__}: {exc}",
                                 file=file) from None
        del data
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelLoadError("not a valid ONNX model: it has no graph (truncated or another file type?)", file=file)
    check_external_data(model, path.parent, file)
    if external is not None:
        locations = {_external_entries(t, file)[0] for t in _tensors_with_external_data(model)}
        external.extend(sorted(loc for loc in locations if not (mapped and loc == path.name)))
    try:
        if mapped:
            _load_small_external_data(model, path.parent)
        else:
            external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise ModelLoadError(f"could not read external data: {exc}", file=file) from None
    return model


def _load_small_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Read into the proto the external data that stays unmapped: tensors below the mapping
    threshold (shape constants that the checker, shape inference and reshape checks read as
    values; the skeleton keeps them inline), element types numpy cannot view, and tensors
    in attributes (Constant nodes) and subgraphs. Top-level weights stay in the file."""
    def unmapped(graph: onnx.GraphProto, top: bool):
        for tensor in graph.initializer:
            if not (top and mappable(tensor) and _expected_bytes(tensor, "") >= MAPPED_MIN_BYTES):
                yield tensor
        for node in graph.node:
            for attr in node.attribute:
                yield from ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    yield from unmapped(sub, False)

    for tensor in list(unmapped(model.graph, True)):
        if not external_data_helper.uses_external_data(tensor):
            continue
        external_data_helper.load_external_data_for_tensor(tensor, str(base_dir))
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]
