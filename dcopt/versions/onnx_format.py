"""ONNX protobuf models: parameters are the graph's initializers (external data included).

Payloads are found on the wire (:mod:`dcopt.versions.wire`), so the file can be split and put
back together byte for byte; structure and arrays go through ``onnx`` itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np

from dcopt.errors import ModelLoadError
from dcopt.versions import wire
from dcopt.versions.formats import ModelFormat, NodeRecord, Payload, Structure

# ModelProto / GraphProto / TensorProto field numbers (onnx.proto)
_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5
_T_DIMS, _T_TYPE, _T_NAME, _T_LOCATION = 1, 2, 8, 14
#: data field -> encoding of its payload; raw_data, float_data, double_data hold the array's
#: little-endian bytes, the others packed varints.
_DATA_FIELDS = {9: "raw", 4: "raw", 10: "raw", 5: "varint", 7: "varint", 11: "varint"}
#: ModelProto fields and their wire types, for sniffing.
_MODEL_FIELDS = {1: wire.VARINT, 2: wire.LENGTH, 3: wire.LENGTH, 4: wire.LENGTH, 5: wire.VARINT,
                 6: wire.LENGTH, 7: wire.LENGTH, 8: wire.LENGTH, 14: wire.LENGTH, 20: wire.LENGTH,
                 25: wire.LENGTH}


def _parse(data: bytes, file: str):
    import onnx

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 - any decode failure is a bad file
        raise ModelLoadError(f"not a valid ONNX model: {type(exc).__name__}: {exc}", file=file) from None
    return model


def _dtype_name(data_type: int) -> str | None:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).name
    except Exception:  # noqa: BLE001 - an unknown or string type: not stored apart
        return None


def _value_type(vi) -> str:
    from onnx import TensorProto

    t = vi.type
    if not t.HasField("tensor_type"):
        return t.WhichOneof("value") or "?"
    elem = TensorProto.DataType.Name(t.tensor_type.elem_type).lower()
    if not t.tensor_type.HasField("shape"):
        return elem
    dims = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in t.tensor_type.shape.dim]
    return f"{elem}[{','.join(dims)}]"


def _attribute_text(attr) -> str:
    from onnx import helper

    value = helper.get_attribute_value(attr)
    if hasattr(value, "SerializeToString"):  # tensor, graph, sparse tensor, type proto
        digest = hashlib.sha256(value.SerializeToString()).hexdigest()[:12]
        if hasattr(value, "dims"):
            return f"tensor{list(value.dims)} sha256:{digest}"
        if hasattr(value, "node"):
            return f"graph({len(value.node)} nodes) sha256:{digest}"
        return f"{type(value).__name__} sha256:{digest}"
    if isinstance(value, list) and value and hasattr(value[0], "SerializeToString"):
        return f"[{len(value)} {type(value[0]).__name__}] sha256:" + hashlib.sha256(
            b"".join(v.SerializeToString() for v in value)).hexdigest()[:12]
    if isinstance(value, bytes):
        return repr(value.decode("utf-8", "replace"))
    if isinstance(value, list):
        return "[" + ", ".join(repr(v.decode("utf-8", "replace")) if isinstance(v, bytes) else repr(v)
                               for v in value) + "]"
    return repr(value)


class OnnxFormat(ModelFormat):
    name = "onnx"

    def sniff(self, head: bytes) -> bool:
        seen = set()
        try:
            for f in wire.fields(head):
                if _MODEL_FIELDS.get(f.number) != f.wire_type:
                    return False
                seen.add(f.number)
        except wire.WireError as exc:  # the head cuts the file: only a field running past it is fine
            if "past the end" not in str(exc) and "truncated" not in str(exc):
                return False
        return bool(seen & {1, 7}) or head[:1] == b"\x3a"  # ir_version, or the graph field first

    def payloads(self, data: bytes, file: str) -> list[Payload]:
        out, names = [], set()
        try:
            for f in wire.fields(data):
                if f.number != _MODEL_GRAPH or f.wire_type != wire.LENGTH:
                    continue
                for g in wire.fields(data, f.start, f.end):
                    if g.number == _GRAPH_INITIALIZER and g.wire_type == wire.LENGTH:
                        payload = self._tensor_payload(data, g.start, g.end)
                        if payload is not None and payload.name not in names:
                            names.add(payload.name)
                            out.append(payload)
        except wire.WireError as exc:
            raise ModelLoadError(f"not a valid ONNX model: {exc}", file=file) from None
        return out

    @staticmethod
    def _tensor_payload(data: bytes, start: int, end: int) -> Payload | None:
        dims, data_type, name, location, found = [], 0, None, 0, []
        for f in wire.fields(data, start, end):
            if f.number == _T_DIMS:
                dims += [f.value] if f.wire_type == wire.VARINT else wire.varints(data[f.start:f.end])
            elif f.number == _T_TYPE and f.wire_type == wire.VARINT:
                data_type = f.value
            elif f.number == _T_NAME and f.wire_type == wire.LENGTH:
                name = bytes(data[f.start:f.end]).decode("utf-8", "replace")
            elif f.number == _T_LOCATION and f.wire_type == wire.VARINT:
                location = f.value
            elif f.number in _DATA_FIELDS:
                found.append(f)
        # one packed data field, in the file (not external), with bytes: else it stays in the skeleton
        if not name or location == 1 or len(found) != 1 or found[0].wire_type != wire.LENGTH:
            return None
        data_field, dtype = found[0], _dtype_name(data_type)
        encoding = _DATA_FIELDS[data_field.number]
        if dtype is None or data_field.end == data_field.start:
            return None
        shape = tuple(int(d) for d in dims)
        if encoding == "raw" and int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != \
                data_field.end - data_field.start:
            return None  # sub-byte types, or a tensor whose bytes disagree with its dims
        return Payload(name, dtype, shape, encoding, data_field.start, data_field.end)

    def arrays(self, data: bytes, file: str, path=None) -> dict[str, np.ndarray]:
        from onnx import external_data_helper, numpy_helper

        model = _parse(data, file)
        if any(external_data_helper.uses_external_data(t) for t in model.graph.initializer):
            if path is None:
                raise ModelLoadError("the model keeps parameters in external data files, but was given "
                                     "without a path to find them", file=file)
            from dcopt.frontends.onnx_load import check_external_data

            check_external_data(model, Path(path).parent, file)
            external_data_helper.load_external_data_for_model(model, str(Path(path).parent))
        out = {}
        for t in model.graph.initializer:
            try:
                out[t.name] = numpy_helper.to_array(t)
            except Exception as exc:  # noqa: BLE001
                raise ModelLoadError(f"initializer '{t.name}' cannot be read: {exc}", file=file) from None
        return out

    def structure(self, data: bytes, file: str) -> Structure:
        model = _parse(data, file)
        g = model.graph
        params = {t.name for t in g.initializer}
        nodes = [NodeRecord(n.name, f"{n.domain}::{n.op_type}" if n.domain else n.op_type, tuple(n.input),
                            tuple(n.output), {a.name: _attribute_text(a) for a in n.attribute}) for n in g.node]
        meta = {p.key: p.value for p in model.metadata_props}
        meta["ir_version"] = str(model.ir_version)
        return Structure(nodes=nodes,
                         inputs=[f"{i.name}: {_value_type(i)}" for i in g.input if i.name not in params],
                         outputs=[f"{o.name}: {_value_type(o)}" for o in g.output],
                         opsets={o.domain: o.version for o in model.opset_import}, metadata=meta)

    def replace(self, data: bytes, arrays: Mapping[str, np.ndarray], file: str) -> bytes:
        payloads = {p.name: p for p in self.payloads(data, file)}
        if all(n in payloads and payloads[n].encoding == "raw" and np.asarray(a).nbytes == payloads[n].nbytes
               for n, a in arrays.items()):  # same sizes: write in place, every other byte unchanged
            out, pos = bytearray(), 0
            for p in sorted((payloads[n] for n in arrays), key=lambda p: p.start):
                out += data[pos:p.start]
                out += np.ascontiguousarray(arrays[p.name], dtype=p.dtype).tobytes()
                pos = p.end
            return bytes(out + data[pos:])
        from onnx import numpy_helper

        model = _parse(data, file)
        for t in model.graph.initializer:
            if t.name in arrays:
                old = numpy_helper.to_array(t) if t.data_location != 1 else None
                dtype = old.dtype if old is not None else np.asarray(arrays[t.name]).dtype
                t.CopyFrom(numpy_helper.from_array(np.asarray(arrays[t.name]).astype(dtype, copy=False), t.name))
        return model.SerializeToString()
