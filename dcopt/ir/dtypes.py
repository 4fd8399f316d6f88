"""Element types: one table mapping dcopt dtype names to numpy and ONNX.

dcopt names dtypes by their numpy-style name (``float32``, ``int64``, ``bool``). ONNX types
without a native numpy dtype (bfloat16, float8 variants, int4) use ml_dtypes, which onnx
already depends on.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

try:  # ml_dtypes is an onnx dependency; keep the import soft anyway
    import ml_dtypes
except ImportError:  # pragma: no cover
    ml_dtypes = None

from dcopt.errors import UnsupportedError

_ONNX_TO_NAME = {
    TensorProto.FLOAT: "float32",
    TensorProto.DOUBLE: "float64",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.INT8: "int8",
    TensorProto.INT16: "int16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.UINT8: "uint8",
    TensorProto.UINT16: "uint16",
    TensorProto.UINT32: "uint32",
    TensorProto.UINT64: "uint64",
    TensorProto.BOOL: "bool",
    TensorProto.STRING: "string",
    TensorProto.COMPLEX64: "complex64",
    TensorProto.COMPLEX128: "complex128",
    TensorProto.FLOAT8E4M3FN: "float8e4m3fn",
    TensorProto.FLOAT8E4M3FNUZ: "float8e4m3fnuz",
    TensorProto.FLOAT8E5M2: "float8e5m2",
    TensorProto.FLOAT8E5M2FNUZ: "float8e5m2fnuz",
    TensorProto.UINT4: "uint4",
    TensorProto.INT4: "int4",
}
_NAME_TO_ONNX = {v: k for k, v in _ONNX_TO_NAME.items()}

DTYPE_NAMES = frozenset(_NAME_TO_ONNX)
FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})


def from_onnx(elem_type: int) -> str:
    """ONNX TensorProto element type -> dcopt dtype name."""
    try:
        return _ONNX_TO_NAME[elem_type]
    except KeyError:
        name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else elem_type
        raise UnsupportedError(f"unsupported ONNX element type {name}") from None


def to_onnx(dtype: str) -> int:
    """dcopt dtype name -> ONNX TensorProto element type."""
    try:
        return _NAME_TO_ONNX[dtype]
    except KeyError:
        raise UnsupportedError(f"unknown dtype '{dtype}'") from None


def to_numpy(dtype: str) -> np.dtype:
    """dcopt dtype name -> numpy dtype (strings map to object arrays, as in onnx)."""
    if dtype == "string":
        return np.dtype(object)
    if dtype in ("bfloat16", "float8e4m3fn", "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "int4", "uint4"):
        if ml_dtypes is None:  # pragma: no cover
            raise UnsupportedError(f"dtype {dtype} needs the ml_dtypes package")
        return np.dtype(getattr(ml_dtypes, dtype))
    return np.dtype(dtype)


def from_numpy(dtype) -> str:
    """numpy dtype -> dcopt dtype name."""
    dt = np.dtype(dtype)
    if dt == np.dtype(object) or dt.kind in ("U", "S"):
        return "string"
    name = dt.name
    if name in _NAME_TO_ONNX:
        return name
    raise UnsupportedError(f"numpy dtype {dt} has no dcopt equivalent")


def itemsize(dtype: str) -> float:
    """Bytes per element (4-bit types count as half a byte; strings as a pointer)."""
    if dtype in ("int4", "uint4"):
        return 0.5
    if dtype == "string":
        return 8
    return to_numpy(dtype).itemsize


def onnx_name(dtype: str) -> str:
    """Human-readable ONNX type name, e.g. ``tensor(float)``."""
    return helper.tensor_dtype_to_string(to_onnx(dtype)).replace("TensorProto.", "").lower()
