"""Tensor types with possibly symbolic dimensions.

A dimension is an ``int`` (static), a ``str`` (a named symbolic dim such as ``"N"``, shared by
every tensor that uses the same name), or ``None`` (unknown). A shape of ``None`` means even the
rank is unknown. Backends may specialize symbolic dims; the IR never has to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from dcopt.ir import dtypes

Dim = Union[int, str, None]


@dataclass(frozen=True)
class TensorType:
    """Element type and shape of a data container."""

    dtype: str
    shape: tuple[Dim, ...] | None = None

    def __post_init__(self):
        if not dtypes.is_dtype_name(self.dtype):
            raise ValueError(f"unknown dtype {self.dtype!r}")
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        """True when every dimension is a known integer."""
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int | None:
        """Number of elements, or None when the shape is not static."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.is_static else None

    @property
    def nbytes(self) -> int | None:
        n = self.numel
        return None if n is None else int(np.ceil(n * dtypes.itemsize(self.dtype)))

    @property
    def symbols(self) -> set[str]:
        return {d for d in (self.shape or ()) if isinstance(d, str)}

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, None if shape is None else tuple(shape))

    def specialize(self, bindings: dict[str, int]) -> "TensorType":
        """Replace symbolic dims by the integers bound to them (dims that are expressions over
        symbols, such as ``N*S`` or ``min(64,S)``, evaluate when all their symbols are bound)."""
        if self.shape is None:
            return self
        from dcopt.ops.shapes.dims import substitute

        return TensorType(self.dtype, tuple(substitute(d, bindings) if isinstance(d, str) else d for d in self.shape))

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.dtype}[?]"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.dtype}[{dims}]"

    @classmethod
    def of(cls, array: np.ndarray) -> "TensorType":
        return cls(dtypes.from_numpy(array.dtype), tuple(int(d) for d in array.shape))

    def matches(self, array: np.ndarray, bindings: dict[str, int] | None = None) -> str | None:
        """Check a concrete array against this type; return why it does not match, or None.

        ``bindings`` collects the values of symbolic dims so that two inputs sharing ``N`` must
        agree on it.
        """
        if not isinstance(array, np.ndarray):
            return f"expected a tensor, got {type(array).__name__}"
        actual = dtypes.from_numpy(array.dtype) if array.dtype != object else "string"
        if actual != self.dtype:
            return f"expected dtype {self.dtype}, got {actual}"
        if self.shape is None:
            return None
        if array.ndim != len(self.shape):
            return f"expected shape {self.shape_str()}, got {tuple(array.shape)} (rank {len(self.shape)} vs {array.ndim})"
        for axis, (want, got) in enumerate(zip(self.shape, array.shape)):
            if isinstance(want, int) and want != got:
                return f"expected shape {self.shape_str()}, got {tuple(array.shape)} (axis {axis}: {want} vs {got})"
            if isinstance(want, str) and bindings is not None:
                bound = bindings.setdefault(want, got)
                if bound != got:
                    return f"symbolic dim '{want}' is {bound} elsewhere but {got} here (axis {axis})"
        return None

    def shape_str(self) -> str:
        if self.shape is None:
            return "[?]"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"


class _ContainerOfTensors:
    """Shared shape-less surface of SequenceType and OptionalType: code written for tensors sees
    an unknown shape (no static size, no symbols) and the element dtype."""

    dtype = property(lambda self: self.elem.dtype)
    shape = None
    rank = None
    is_static = False
    numel = None
    nbytes = None
    symbols = frozenset()

    def shape_str(self) -> str:
        return str(self)

    def specialize(self, bindings) -> "_ContainerOfTensors":
        """The same type: a sequence's or optional's size is known only at run time."""
        return self


@dataclass(frozen=True)
class SequenceType(_ContainerOfTensors):
    """An ONNX sequence: a list of tensors of one element type (shapes may differ)."""

    elem: "TensorType | SequenceType | OptionalType"

    def __str__(self) -> str:
        return f"seq<{self.elem}>"

    def matches(self, value, bindings=None) -> str | None:
        if not isinstance(value, list):
            return f"expected a sequence (list of arrays), got {type(value).__name__}"
        for i, item in enumerate(value):
            if isinstance(self.elem, TensorType):
                ok = getattr(item, "dtype", None) is not None and dtypes.from_numpy(item.dtype) == self.dtype
                problem = None if ok else f"element {i}: expected dtype {self.dtype}"
            else:
                problem = self.elem.matches(item, None)
            if problem:
                return problem
        return None


@dataclass(frozen=True)
class OptionalType(_ContainerOfTensors):
    """An ONNX optional: a tensor or sequence, or nothing (``None``)."""

    elem: "TensorType | SequenceType"

    def __str__(self) -> str:
        return f"optional<{self.elem}>"

    def matches(self, value, bindings=None) -> str | None:
        return None if value is None else self.elem.matches(value, bindings)


ValueType = Union[TensorType, SequenceType, OptionalType]
