"""safetensors files: an 8-byte little-endian header length, a JSON header, then raw tensor bytes.

The layout is read directly (it is the format's whole point to be that simple): every tensor is
a raw payload at ``8 + header length + data_offsets``.
"""

from __future__ import annotations

import json
import struct
from typing import Mapping

import numpy as np

from dcopt.errors import ModelLoadError
from dcopt.versions.formats import ModelFormat, Payload, Structure, numpy_dtype

#: safetensors dtype names -> numpy dtype names
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
          "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8",
          "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _header(data: bytes, file: str) -> tuple[dict, int]:
    if len(data) < 8:
        raise ModelLoadError("not a safetensors file: shorter than its 8-byte header length", file=file)
    (size,) = struct.unpack("<Q", data[:8])
    if 8 + size > len(data):
        raise ModelLoadError(f"safetensors header of {size} bytes runs past the end of the file", file=file)
    try:
        header = json.loads(bytes(data[8:8 + size]))
    except ValueError as exc:
        raise ModelLoadError(f"safetensors header is not JSON: {exc}", file=file) from None
    if not isinstance(header, dict):
        raise ModelLoadError("safetensors header is not a JSON object", file=file)
    return header, 8 + size


class SafetensorsFormat(ModelFormat):
    name = "safetensors"

    def sniff(self, head: bytes) -> bool:
        if len(head) < 10:
            return False
        (size,) = struct.unpack("<Q", head[:8])
        return 2 <= size < (1 << 31) and head[8:9] == b"{" and head[9:10] in (b'"', b"}", b" ", b"\n")

    def payloads(self, data: bytes, file: str) -> list[Payload]:
        header, base = _header(data, file)
        out = []
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = DTYPES[entry["dtype"]]
                begin, end = (int(x) for x in entry["data_offsets"])
                shape = tuple(int(d) for d in entry["shape"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelLoadError(f"tensor '{name}': bad header entry ({type(exc).__name__}: {exc})",
                                     file=file) from None
            if not 0 <= begin <= end <= len(data) - base:
                raise ModelLoadError(f"tensor '{name}': data_offsets {begin}..{end} outside the file", file=file)
            if end > begin:
                out.append(Payload(name, dtype, shape, "raw", base + begin, base + end))
        return sorted(out, key=lambda p: p.start)

    def arrays(self, data: bytes, file: str, path=None) -> dict[str, np.ndarray]:
        header, _ = _header(data, file)
        out = {}
        for p in self.payloads(data, file):
            out[p.name] = np.frombuffer(data, numpy_dtype(p.dtype), count=int(np.prod(p.shape, dtype=np.int64)),
                                        offset=p.start).reshape(p.shape)
        for name, entry in header.items():  # zero-size tensors have no payload
            if name != "__metadata__" and name not in out:
                out[name] = np.zeros(entry["shape"], numpy_dtype(DTYPES[entry["dtype"]]))
        return out

    def structure(self, data: bytes, file: str) -> Structure:
        header, _ = _header(data, file)
        meta = header.get("__metadata__") or {}
        return Structure(metadata={str(k): str(v) for k, v in meta.items()})

    def replace(self, data: bytes, arrays: Mapping[str, np.ndarray], file: str) -> bytes:
        payloads = {p.name: p for p in self.payloads(data, file)}
        out = bytearray(data)
        for name, array in arrays.items():
            p = payloads.get(name)
            blob = np.ascontiguousarray(array, dtype=numpy_dtype(p.dtype) if p else None).tobytes()
            if p is None or len(blob) != p.nbytes:
                raise ModelLoadError(f"tensor '{name}': a merged value must keep its dtype and shape", file=file)
            out[p.start:p.end] = blob
        return bytes(out)
