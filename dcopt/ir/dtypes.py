"""Element types: one table mapping dcopt dtype names to numpy and ONNX.

dcopt names a dtype by its numpy name (``float32``, ``int64``, ``bool``, ``bfloat16``,
``float8_e4m3fn``, ``int4``); strings are ``string`` (object arrays, as in onnx). The table is
derived from onnx's own ONNX<->numpy mapping, so every ONNX element type onnx knows (the
ml_dtypes-backed narrow floats and sub-byte ints included) is supported without a hand-kept list.
"""

from __future__ import annotations

import functools

import numpy as np

from dcopt.errors import UnsupportedError

#: numpy's own types: their dcopt names are their numpy names, so they resolve without onnx.
#: Importing onnx costs ~0.7 s (most of it ml_dtypes' extension), which a process that only
#: loads and runs a float32 build need not pay; the narrow types (bfloat16, float8, int4...)
#: come from onnx's mapping when first asked for.
_NUMPY_NATIVE = {name: np.dtype(name) for name in (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
    "float64", "complex64", "complex128")}
_NUMPY_NATIVE["string"] = np.dtype(object)
FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64"})
#: Bits per element of the sub-byte types (numpy stores them one per byte).
_SUB_BYTE_BITS = {"int4": 4, "uint4": 4, "float4_e2m1fn": 4, "int2": 2, "uint2": 2}


@functools.cache
def _tables() -> tuple[dict[int, str], dict[str, int], dict[str, np.dtype]]:
    """ONNX element type <-> dcopt name <-> numpy dtype, from onnx's own mapping."""
    from onnx import TensorProto, helper

    onnx_to_name, name_to_numpy = {}, {}
    for elem_type in TensorProto.DataType.values():
        if elem_type == TensorProto.UNDEFINED:
            continue
        try:
            np_dtype = helper.tensor_dtype_to_np_dtype(elem_type)
        except Exception:  # an ONNX type this onnx/ml_dtypes pair cannot represent in numpy
            continue
        name = "string" if elem_type == TensorProto.STRING else np_dtype.name
        onnx_to_name[elem_type] = name
        name_to_numpy[name] = np_dtype
    return onnx_to_name, {v: k for k, v in onnx_to_name.items()}, name_to_numpy


def __getattr__(name: str):
    if name == "DTYPE_NAMES":  # every dtype name onnx knows (computed on first use)
        return frozenset(_tables()[1])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_dtype_name(name) -> bool:
    """Whether ``name`` is a dcopt dtype name (numpy's types answer without importing onnx)."""
    return isinstance(name, str) and (name in _NUMPY_NATIVE or name in _tables()[1])


def from_onnx(elem_type: int) -> str:
    """ONNX TensorProto element type -> dcopt dtype name."""
    from onnx import TensorProto

    try:
        return _tables()[0][elem_type]
    except KeyError:
        known = elem_type in TensorProto.DataType.values()
        label = TensorProto.DataType.Name(elem_type) if known else elem_type
        raise UnsupportedError(f"unsupported ONNX element type {label}") from None


def to_onnx(dtype: str) -> int:
    """dcopt dtype name -> ONNX TensorProto element type."""
    try:
        return _tables()[1][dtype]
    except KeyError:
        raise UnsupportedError(f"unknown dtype '{dtype}'") from None


def to_numpy(dtype: str) -> np.dtype:
    """dcopt dtype name -> numpy dtype (strings map to object arrays, as in onnx)."""
    native = _NUMPY_NATIVE.get(dtype)
    if native is not None:
        return native
    try:
        return _tables()[2][dtype]
    except KeyError:
        raise UnsupportedError(f"unknown dtype '{dtype}'") from None


def from_numpy(dtype) -> str:
    """numpy dtype -> dcopt dtype name."""
    dt = np.dtype(dtype)
    if dt == np.dtype(object) or dt.kind in ("U", "S"):
        return "string"
    if dt.name in _NUMPY_NATIVE or dt.name in _tables()[1]:
        return dt.name
    raise UnsupportedError(f"numpy dtype {dt} has no dcopt equivalent")


def itemsize(dtype: str) -> float:
    """Bytes per element as stored in a model (sub-byte types count their fraction of a byte)."""
    if dtype in _SUB_BYTE_BITS:
        return _SUB_BYTE_BITS[dtype] / 8
    return to_numpy(dtype).itemsize
