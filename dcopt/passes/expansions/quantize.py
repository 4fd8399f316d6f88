"""QuantizeLinear, DequantizeLinear -> one map; DynamicQuantizeLinear -> a min/max reduction, a
scalar map for the scale and zero point, then a map.

Scales and zero points are read through memlets that say how they are laid out (the reference's
``_along_axis`` in :mod:`dcopt.ops.elementwise`): one value (rank 0 or one element) per tensor,
a 1-D vector along ``axis``, or blocks of ``block_size`` along ``axis`` (``s[i0, i1 // 32]``).

The tasklets are the references' arithmetic step for step: QuantizeLinear divides in the
``precision`` (else the scale's) dtype, rounding the quotient to that dtype (``as_W`` after the
division: a kernel computes float16/bfloat16 in float32), rounds half to even in float64, adds
the zero point and saturates to the target's range; DequantizeLinear subtracts and multiplies
in float32. Float8 and int4 targets are not kernel dtypes: those nodes stay ops.
"""

from __future__ import annotations

import numpy as np

from dcopt.ir import dtypes as dt
from dcopt.ops.elementwise import FLOATS, INTS
from dcopt.passes.expand import LoopBuilder, Refused, expansion, index, params_of
from dcopt.passes.expansions.conversions import exact_conversions

QUANTIZED_INPUTS = ("int8", "uint8", "int16", "uint16", "int32")


def _layout(b: LoopBuilder, name: str, x: str) -> str:
    """Subset reading scale/zero point ``name`` at element ``i0, i1, ...`` of ``x``."""
    shape, x_shape = b.shape(name), b.shape(x)
    if not all(isinstance(d, int) for d in shape):
        raise Refused(f"'{name}' needs a static shape (has {list(shape)})")
    block = int(b.attr("block_size", 0) or 0)
    if int(np.prod(shape)) == 1 and not block:
        return index("0" for _ in shape)
    axis = int(b.attr("axis", 1))
    if not -len(x_shape) <= axis < len(x_shape):
        raise Refused(f"axis {axis} is out of range for rank {len(x_shape)}")
    axis %= len(x_shape)
    if block:
        if len(shape) != len(x_shape) or any(s != d for k, (s, d) in enumerate(zip(shape, x_shape)) if k != axis):
            raise Refused(f"blocked '{name}' of shape {list(shape)} does not match {list(x_shape)} off axis {axis}")
        return index(f"i{k} // {block}" if k == axis else f"i{k}" for k in range(len(x_shape)))
    if len(shape) != 1 or shape[0] != x_shape[axis]:
        raise Refused(f"per-axis '{name}' of shape {list(shape)} does not match dim {axis} of {list(x_shape)}")
    return f"i{axis}"


def _map(b: LoopBuilder, code: str, reads: dict[str, tuple[str, str]], out: str, types: dict[str, str]) -> None:
    shape = b.shape(out)
    b.map("map", shape, exact_conversions(code, types, b.dtype(out)),
          [(conn, name, subset) for conn, (name, subset) in reads.items()], [("out", out, index(params_of(len(shape))))])


@expansion("QuantizeLinear")
def quantize_linear(graph, node):
    b = LoopBuilder(graph, node)
    x, scale, zero, y = b.input(0), b.input(1), b.input(2, optional=True), b.output()
    b.require_dtype(x, allowed=FLOATS + ("int32",))
    b.require_dtype(scale, allowed=FLOATS)
    b.require_dtype(y, zero, allowed=INTS)
    precision = int(b.attr("precision", 0) or 0)
    work = dt.from_onnx(precision) if precision else b.dtype(scale)
    if work not in FLOATS:
        raise Refused(f"precision {work} is not a kernel float")
    info = np.iinfo(np.dtype(b.dtype(y)))
    full = index(params_of(len(b.shape(x))))
    reads = {"a": (x, full), "s": (scale, _layout(b, scale, x))}
    offset = ""
    if zero:
        reads["z"] = (zero, _layout(b, zero, x))
        offset = " + as_float64(z)"
    code = (f"q = rint(as_float64(as_{work}(as_{work}(a) / as_{work}(s)))){offset}\n"
            f"out = as_{b.dtype(y)}(min(max(q, {float(info.min)!r}), {float(info.max)!r}))")
    _map(b, code, reads, y, {conn: b.dtype(name) for conn, (name, _) in reads.items()})
    return b.nodes


@expansion("DequantizeLinear")
def dequantize_linear(graph, node):
    b = LoopBuilder(graph, node)
    x, scale, zero, y = b.input(0), b.input(1), b.input(2, optional=True), b.output()
    b.require_dtype(x, zero, allowed=QUANTIZED_INPUTS)
    b.require_dtype(scale, y, allowed=FLOATS)
    reads = {"a": (x, index(params_of(len(b.shape(x))))), "s": (scale, _layout(b, scale, x))}
    value = "as_float32(a)"
    if zero:
        reads["z"] = (zero, _layout(b, zero, x))
        value = "(as_float32(a) - as_float32(z))"
    _map(b, f"out = {value} * as_float32(s)", reads, y, {conn: b.dtype(name) for conn, (name, _) in reads.items()})
    return b.nodes


@expansion("DynamicQuantizeLinear")
def dynamic_quantize_linear(graph, node):
    """uint8 over [min(x, 0), max(x, 0)]: one pass for both extremes (two wcr outputs), a scalar
    map for the scale and zero point (NaN extremes count as 0, as the reference's Python max/min
    of a NaN give), then the quantizing map."""
    b = LoopBuilder(graph, node)
    x = b.input(0)
    y, scale, zero = b.output(0), b.output(1), b.output(2)
    b.require_dtype(x, allowed=("float32",))
    shape = b.shape(x)
    full = index(params_of(len(shape)))
    hi, lo = b.transient((), "float32", "max"), b.transient((), "float32", "min")
    b.map("extremes", shape, "hi = a\nlo = a", [("a", x, full)], [("hi", hi, "", "max"), ("lo", lo, "", "min")])
    scale = scale or b.transient((), "float32", "scale")
    zero = zero or b.transient((), "uint8", "zero_point")
    zero_f = b.transient((), "float32", "zero_point_f")
    code = ("h = m if m > 0.0 else 0.0\nl = n if n < 0.0 else 0.0\n"
            "s = (h - l if h != l else 1.0) / 255.0\nzf = rint(min(max(0.0 - l / s, 0.0), 255.0))")
    code = exact_conversions(code + "\nz = as_uint8(zf)", {"m": "float32", "n": "float32"})
    b.map("scale", (), code, [("m", hi, ""), ("n", lo, "")], [("s", scale, ""), ("z", zero, ""), ("zf", zero_f, "")])
    if y:
        code = exact_conversions("out = as_uint8(min(max(rint(a / s) + z, 0.0), 255.0))",
                                 {"a": "float32", "s": "float32", "z": "float32"})
        b.map("quantize", shape, code, [("a", x, full), ("s", scale, ""), ("z", zero_f, "")], [("out", y, full)])
    return b.nodes
