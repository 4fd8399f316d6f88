"""Shape rules of the elementwise ops the table of :mod:`dcopt.ops.elementwise` does not define.

Every table op gets its rule from its table entry (``define`` registers it with the reference);
what is left here are Clip and Identity (the input's type), the casts and the quantizers, whose
result dtype comes from an attribute or another input.
"""

from __future__ import annotations

from dcopt.ops.shapes.registry import ShapeInferenceError, onnx_dtype, shape_rule


@shape_rule("Clip", "Identity")
def unary(ctx):
    """The input's type (Identity passes sequences and optionals through as well)."""
    return ctx.type(0)


def _cast_target(ctx, to) -> str:
    dtype = onnx_dtype(to)
    if dtype is None:
        raise ShapeInferenceError(f"{ctx.op} to element type {to} has no dcopt dtype")
    return dtype


@shape_rule("Cast", "BitCast")
def cast(ctx):
    return ctx.tensor(_cast_target(ctx, ctx.attrs["to"]), ctx.shape(0))


@shape_rule("CastLike")
def cast_like(ctx):
    return ctx.tensor(ctx.dtype(1), ctx.shape(0))


@shape_rule("QuantizeLinear")
def quantize_linear(ctx):
    """The zero point's dtype, else ``output_dtype``, else uint8."""
    if ctx.has(2):
        dtype = ctx.dtype(2)
    elif ctx.attrs.get("output_dtype"):
        dtype = _cast_target(ctx, ctx.attrs["output_dtype"])
    else:
        dtype = "uint8"
    return ctx.tensor(dtype, ctx.shape(0))


@shape_rule("DequantizeLinear")
def dequantize_linear(ctx):
    """``output_dtype`` if set, else the scale's dtype."""
    out = ctx.attrs.get("output_dtype")
    return ctx.tensor(_cast_target(ctx, out) if out else ctx.dtype(1), ctx.shape(0))


@shape_rule("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx):
    return [ctx.tensor("uint8", ctx.shape(0)), ctx.tensor(ctx.dtype(0), ()), ctx.tensor("uint8", ())]
