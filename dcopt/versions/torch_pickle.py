"""Which state-dict key owns which storage of a ``torch.save`` zip, read without running the pickle.

The version store keys a parameter by its state-dict name (``fc.weight``), not by the zip member
its bytes live in (``archive/data/3``): member numbers follow pickling order, so they shift when a
key is added or reordered, and a member is only bytes, while a named float32[768, 768] can be
stored as a low-rank delta against the previous ``fc.weight``. ``data.pkl`` says which tensor uses
which storage, with what dtype, shape, offset and strides.

It is read with the standard :class:`pickle.Unpickler` whose ``find_class`` returns inert stand-ins
(the documented way to restrict unpickling): tensor rebuild calls become :class:`TensorRef`
records, storage types become dtypes, anything else an :class:`_Opaque` that does nothing. Nothing
from the file is imported or called, and torch is not needed.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from typing import Mapping

#: legacy typed storage classes (``torch.FloatStorage``) and torch dtypes -> numpy dtype names
STORAGE_DTYPES = {"DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
                  "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
                  "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
                  "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128"}
TORCH_DTYPES = {"float64": "float64", "float32": "float32", "float16": "float16", "bfloat16": "bfloat16",
                "int64": "int64", "int32": "int32", "int16": "int16", "int8": "int8", "uint8": "uint8",
                "bool": "bool", "complex64": "complex64", "complex128": "complex128",
                "float8_e4m3fn": "float8_e4m3fn", "float8_e5m2": "float8_e5m2"}


@dataclass(frozen=True)
class StorageRef:
    key: str           # the zip member is <archive>/data/<key>
    dtype: str | None  # None: an untyped storage (the tensor's rebuild call says its dtype)


@dataclass(frozen=True)
class TensorRef:
    storage: StorageRef
    offset: int        # in elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str | None

    def whole(self, nbytes: int, itemsize: int) -> bool:
        """Whether this tensor is its whole storage, contiguous (so its bytes are the member's)."""
        count, expected = 1, []
        for dim in reversed(self.shape):
            expected.append(count)
            count *= dim
        return self.offset == 0 and count * itemsize == nbytes and \
            all(s == e for s, e, d in zip(self.stride, reversed(expected), self.shape) if d != 1)


class _Opaque:
    """Anything the restricted unpickler does not know: accepts every call and state, does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return _Opaque()


class _Dtype(str):
    """A ``torch.<dtype>`` global, as its numpy name."""


def _rebuild_v2(storage, offset, shape, stride, *rest):
    return TensorRef(storage, int(offset), tuple(shape), tuple(stride), getattr(storage, "dtype", None))


def _rebuild_v3(storage, offset, shape, stride, requires_grad, hooks, dtype, *rest):
    return TensorRef(storage, int(offset), tuple(shape), tuple(stride), str(dtype) if dtype else None)


def _rebuild_parameter(data, *rest):
    return data


class _StorageType(str):
    """A storage class global (``torch.FloatStorage``), carrying its element dtype."""

    @property
    def dtype(self):
        return STORAGE_DTYPES.get(str(self))


class _Unpickler(pickle.Unpickler):
    _FUNCTIONS = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_v2,
                  ("torch._utils", "_rebuild_tensor_v3"): _rebuild_v3,
                  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
                  ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
                  ("collections", "OrderedDict"): collections.OrderedDict}

    def find_class(self, module, name):
        if (module, name) in self._FUNCTIONS:
            return self._FUNCTIONS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in TORCH_DTYPES:
            return _Dtype(TORCH_DTYPES[name])
        return _Opaque

    def persistent_load(self, pid):
        if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage":
            return StorageRef(str(pid[2]), getattr(pid[1], "dtype", None))
        return _Opaque()


def _walk(obj, prefix: str, out: dict[str, TensorRef]) -> None:
    """Tensors of nested dicts, flattened with dots as :mod:`dcopt.versions.torch_format` does."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if isinstance(value, TensorRef):
                out.setdefault(name, value)
            elif isinstance(value, Mapping):
                _walk(value, name + ".", out)


def tensor_refs(pickled: bytes) -> dict[str, TensorRef]:
    """State-dict key -> where its tensor lives, in pickle order; empty if ``data.pkl`` is not a
    dict of tensors this reader understands (the caller then keys payloads by zip member)."""
    try:
        obj = _Unpickler(io.BytesIO(pickled)).load()
    except Exception:  # noqa: BLE001 - any surprise: fall back, never guess
        return {}
    out: dict[str, TensorRef] = {}
    _walk(obj, "", out)
    return out
