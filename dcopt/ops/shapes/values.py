"""Symbolic values: small integer tensors whose elements are dims, so shape arithmetic folds over
symbolic sizes too.

``Shape`` of an ``[N, 128, 768]`` tensor is the vector ``(N, 128, 768)``; exporters then Gather,
Concat, Unsqueeze, multiply and divide such vectors into the targets of Reshape and Expand. When
every element is an int, ordinary constant folding (running the reference op) handles the chain;
this module handles the case where some are symbols, element by element with
:mod:`dcopt.ops.shapes.dims` arithmetic, so that the Reshape downstream sees ``(N, 128, 12, 64)``.

Ops that only move elements (Gather, Slice, Concat, Reshape, ...) run their own numpy reference
on an object array of dims; arithmetic ops map a dims function over the broadcast operands. An
element no rule can compute is ``None``; an op this module does not know gives no value.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dcopt.ir.types import TensorType
from dcopt.ops import registry
from dcopt.ops.shapes import dims

#: Largest symbolic value tracked (shape vectors are short; this bounds the work per node).
MAX_ITEMS = 64

INTEGER_DTYPES = frozenset({"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"})


@dataclass(frozen=True)
class SymbolicValue:
    """A small integer (or bool) tensor of dims, row-major; ``None`` marks an unknown element."""

    dtype: str
    shape: tuple[int, ...]
    items: tuple

    @staticmethod
    def of(array: np.ndarray, dtype: str) -> "SymbolicValue":
        items = tuple(dims.normalize(x) if not isinstance(x, (bool, np.bool_)) else bool(x)
                      for x in np.asarray(array, dtype=object).reshape(-1))
        return SymbolicValue(dtype, tuple(np.shape(array)), items)

    def array(self) -> np.ndarray:
        out = np.empty(len(self.items), dtype=object)
        out[:] = list(self.items)
        return out.reshape(self.shape)

    def constant(self) -> np.ndarray | None:
        """The value as a numpy array when every element is an int."""
        if not all(isinstance(x, (int, np.integer)) for x in self.items):
            return None
        from dcopt.ir import dtypes

        return np.array(self.items, dtype=dtypes.to_numpy(self.dtype)).reshape(self.shape)


def _as_object(value) -> np.ndarray:
    """A constant or symbolic input as an object array of Python ints / dims."""
    if isinstance(value, SymbolicValue):
        return value.array()
    array = np.asarray(value)
    out = np.empty(array.size, dtype=object)
    out[:] = [x.item() if hasattr(x, "item") else x for x in array.reshape(-1)]
    return out.reshape(array.shape)


# ------------------------------------------------------------------------------ element functions

def _div(a, b):
    if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool):
        if b == 0:
            return None
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q  # integer Div truncates toward zero
    return dims.div(a, b)


def _extreme(pick):
    def fn(a, b):
        if a is None or b is None:
            return None
        if isinstance(a, int) and isinstance(b, int):
            return pick(a, b)
        if dims.equal(a, b):
            return a
        sym, c = (a, b) if isinstance(b, int) else (b, a) if isinstance(a, int) else (None, None)
        if sym is not None and c <= 0 and dims.is_negative_impossible(sym):  # a size is >= 0 >= c
            return sym if pick is max else c
        return None

    return fn


def _equal(a, b):
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    same = dims.equal(a, b)
    if same is not None:
        return same
    sym, c = (a, b) if isinstance(b, int) else (b, a) if isinstance(a, int) else (None, None)
    if sym is not None and c < 0 and dims.is_negative_impossible(sym):
        return False
    return None


def _abs(a):
    if isinstance(a, int):
        return abs(a)
    return a if dims.is_negative_impossible(a) else None


_BINARY = {
    "Add": dims.add, "Sub": dims.sub, "Mul": dims.mul, "Div": _div,
    "Max": _extreme(max), "Min": _extreme(min), "Equal": _equal,
}
_UNARY = {"Neg": lambda a: dims.mul(-1, a), "Abs": _abs, "Identity": lambda a: a}
_REDUCE = {"ReduceProd": dims.mul, "ReduceSum": dims.add, "ReduceMax": _extreme(max), "ReduceMin": _extreme(min)}

#: Ops that only move elements: the input positions holding data (the others must be constants).
_MOVERS = {"Gather": (0,), "Slice": (0,), "Concat": None, "Unsqueeze": (0,), "Squeeze": (0,), "Reshape": (0,),
           "Flatten": (0,), "Transpose": (0,), "Expand": (0,), "Tile": (0,), "Where": (1, 2)}


def _guarded(fn):
    @functools.wraps(fn)
    def safe(*xs):
        if any(x is None for x in xs):
            return None
        return fn(*xs)

    return safe


def propagate(op: str, attrs, opset: int, inputs: Sequence, in_types: Sequence,
              out_types: Sequence) -> list[SymbolicValue | None] | None:
    """Symbolic output values of one default-domain node, or None when it gives none.

    ``inputs`` holds per input a numpy constant, a SymbolicValue or None; ``out_types`` are the
    output types the shape rule gave (the value's shape and dtype)."""
    out = out_types[0] if out_types else None
    if not isinstance(out, TensorType) or not out.is_static or out.numel > MAX_ITEMS:
        return None
    if out.dtype not in INTEGER_DTYPES and out.dtype != "bool":
        return None
    if op == "Shape":
        shape = in_types[0].shape if isinstance(in_types[0], TensorType) else None
        if shape is None:
            return None
        start, end = attrs.get("start", 0), attrs.get("end")
        return [SymbolicValue("int64", out.shape, tuple(shape[start:end]))]
    if op == "Size":
        shape = in_types[0].shape if isinstance(in_types[0], TensorType) else None
        return None if shape is None else [SymbolicValue("int64", (), (dims.prod(shape),))]
    present = [x for x in inputs if x is not None]
    if not any(isinstance(x, SymbolicValue) for x in present):
        return None
    array = _evaluate(op, attrs, opset, inputs, out)
    if array is None or tuple(np.shape(array)) != tuple(out.shape):
        return None
    return [SymbolicValue.of(array, out.dtype)]


def _evaluate(op, attrs, opset, inputs, out: TensorType):
    if op == "Cast":
        if out.dtype not in INTEGER_DTYPES:
            return None
        return _as_object(inputs[0])
    if op in _UNARY:
        return np.frompyfunc(_guarded(_UNARY[op]), 1, 1)(_as_object(inputs[0]))
    if op in _BINARY:
        if any(x is None for x in inputs[:2]):
            return None
        return np.frompyfunc(_guarded(_BINARY[op]), 2, 1)(_as_object(inputs[0]), _as_object(inputs[1]))
    if op in _REDUCE:
        return _reduce_all(op, attrs, opset, inputs)
    if op in _MOVERS:
        return _move(op, attrs, opset, inputs)
    return None


def _reduce_all(op, attrs, opset, inputs):
    """A reduction over every axis (the shape-vector case); None for partial reductions."""
    data = _as_object(inputs[0])
    axes = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("axes")
    if isinstance(axes, SymbolicValue):
        return None
    axes = [] if axes is None else [int(a) % max(data.ndim, 1) for a in np.asarray(axes).reshape(-1)]
    if not axes and attrs.get("noop_with_empty_axes", 0):
        return data
    if axes and sorted(set(axes)) != list(range(data.ndim)):
        return None
    if not data.size and op not in ("ReduceProd", "ReduceSum"):
        return None
    fn = _guarded(_REDUCE[op])
    result = functools.reduce(fn, data.reshape(-1).tolist()) if data.size else (1 if op == "ReduceProd" else 0)
    keep = attrs.get("keepdims", 1)
    return _as_object(np.array([result], dtype=object).reshape((1,) * data.ndim if keep else ()))


def _move(op, attrs, opset, inputs):
    data_positions = _MOVERS[op]
    args = []
    for i, x in enumerate(inputs):
        if x is None:
            args.append(None)
        elif data_positions is None or i in data_positions:
            args.append(_as_object(x))
        elif isinstance(x, SymbolicValue):
            return None  # indices, axes or shapes that are not constants
        else:
            args.append(np.asarray(x))
    opdef = registry.lookup(op)
    try:
        with np.errstate(all="ignore"):
            (result,) = registry.call(opdef, args, dict(attrs), opset)
    except Exception:  # the reference refused (bad indices...): no value, the rule decides the type
        return None
    return result
