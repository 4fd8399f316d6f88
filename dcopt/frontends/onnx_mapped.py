"""Read an ONNX file without copying its weights: the graph is parsed, the tensors are mapped.

Why: ``onnx.load`` parses every initializer's bytes into the protobuf (one copy of the weights),
and turning them into arrays copies them again; on BERT-base (435 MB) that made the import
alone peak at 950 MB. Here the file is walked at the protobuf wire level
(:mod:`dcopt.versions.wire`): each large top-level initializer's ``raw_data`` is cut out of the
bytes handed to protobuf and replaced by an *external data* reference to the same file at the
payload's offset, which is exactly what ONNX's external-data convention expresses. The parsed
model is then small, every check (onnx.checker, shape inference, dcopt's validation) runs on it
as on any external-data model, and :func:`tensor_array` gives each tensor as a read-only view of
a memory map of the file: nothing is read until a pass touches it, and a weight that a pass
replaces (folded, packed, transposed) leaves resident memory with its last reference.

Read-only on purpose: a pass writing into a weight in place would corrupt the model for every
later user of the array; with a read-only map it fails loudly instead.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import onnx

from dcopt.ir.file_maps import FileMaps
from dcopt.versions import wire

#: Initializers at least this large are mapped instead of parsed (smaller ones: shape constants,
#: biases, which shape inference and the checker may need to see as values).
MAPPED_MIN_BYTES = 64 * 1024

_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_TENSOR_DATA_TYPE, _TENSOR_RAW_DATA, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 2, 9, 13, 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2

_NUMPY_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
                onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT8: np.int8,
                onnx.TensorProto.INT16: np.int16, onnx.TensorProto.INT32: np.int32,
                onnx.TensorProto.INT64: np.int64, onnx.TensorProto.UINT8: np.uint8,
                onnx.TensorProto.UINT16: np.uint16, onnx.TensorProto.UINT32: np.uint32,
                onnx.TensorProto.UINT64: np.uint64, onnx.TensorProto.BOOL: np.bool_}


def mappable(tensor: onnx.TensorProto) -> bool:
    """Whether a tensor's bytes can be viewed as a numpy array in place (little-endian host,
    an element type numpy has)."""
    return np.little_endian and tensor.data_type in _NUMPY_TYPES


def _entry(key: str, value: str) -> bytes:
    return wire.length_field(_TENSOR_EXTERNAL_DATA, wire.length_field(_ENTRY_KEY, key.encode())
                         + wire.length_field(_ENTRY_VALUE, value.encode()))


def _tensor(data, start: int, end: int, location: str) -> bytes | None:
    """The TensorProto in ``data[start:end]`` with its raw_data replaced by a reference to the
    same bytes in ``location`` (None: keep it as it is: small, external already, or a type
    numpy cannot view directly)."""
    raw = None
    data_type = None
    key_start = previous_end = start
    for f in wire.fields(data, start, end):
        if f.number == _TENSOR_RAW_DATA and f.wire_type == wire.LENGTH:
            raw, key_start = f, previous_end
        elif f.number == _TENSOR_DATA_TYPE and f.wire_type == wire.VARINT:
            data_type = f.value
        elif f.number in (_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION):
            return None
        previous_end = f.end
    if raw is None or raw.end - raw.start < MAPPED_MIN_BYTES or data_type not in _NUMPY_TYPES:
        return None
    return (bytes(data[start:key_start]) + bytes(data[raw.end:end])
            + _entry("location", location) + _entry("offset", str(raw.start))
            + _entry("length", str(raw.end - raw.start))
            + wire.encode_varint(_TENSOR_DATA_LOCATION << 3 | wire.VARINT) + wire.encode_varint(onnx.TensorProto.EXTERNAL))


def _rewrite(data, start: int, end: int, wanted: int, rewrite) -> tuple[bytes, bool]:
    """The message ``data[start:end]`` with each LENGTH field numbered ``wanted`` passed through
    ``rewrite`` (returning new payload bytes, or None to keep it); (bytes, whether any changed)."""
    parts: list[bytes] = []
    copied = start
    changed = False
    key_start = start  # fields are contiguous: one's key starts where the previous one ends
    for f in wire.fields(data, start, end):
        payload = rewrite(f) if f.number == wanted and f.wire_type == wire.LENGTH else None
        if payload is None:
            key_start = f.end
            continue
        parts.append(bytes(data[copied:key_start]))
        parts.append(wire.length_field(wanted, payload))
        copied = key_start = f.end
        changed = True
    parts.append(bytes(data[copied:end]))
    return b"".join(parts), changed


def parse_mapped(path: Path) -> onnx.ModelProto | None:
    """The model in ``path`` with its large top-level initializers turned into external-data
    references to their own bytes in ``path`` (None when it has none worth mapping, or the file
    is not well-formed protobuf: the caller's ordinary parse then reports what is wrong)."""
    with open(path, "rb") as f:
        try:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file
            return None
    try:
        view = memoryview(data)
        try:
            def graph(field):
                payload, changed = _rewrite(view, field.start, field.end, _GRAPH_INITIALIZER,
                                            lambda t: _tensor(view, t.start, t.end, path.name))
                return payload if changed else None

            stripped, changed = _rewrite(view, 0, len(data), _MODEL_GRAPH, graph)
        except wire.WireError:
            return None
        finally:
            view.release()
    finally:
        data.close()
    if not changed:
        return None
    model = onnx.ModelProto()
    model.ParseFromString(stripped)
    return model


def tensor_array(maps: FileMaps, tensor: onnx.TensorProto) -> np.ndarray | None:
    """The external-data tensor ``tensor`` (location and extent checked by
    :func:`dcopt.frontends.onnx_load.check_external_data`) as a read-only view of its file;
    None for element types numpy cannot view in place (the caller reads those)."""
    if not mappable(tensor):
        return None
    entries = {e.key: e.value for e in tensor.external_data}
    return maps.array(entries["location"], int(entries.get("offset", "0")), _NUMPY_TYPES[tensor.data_type],
                      tuple(tensor.dims))
