"""Shape rules of the elementwise ops (mirrors :mod:`dcopt.ops.elementwise`).

Three shapes of rule cover nearly all of them: *unary* (the input's type), *broadcast* (numpy
broadcasting of every input, the first input's dtype -- ONNX requires equal input dtypes, and Pow's
result has the base's), and *predicate* (broadcast shape, bool). The rest are the casts and
quantizers, whose result dtype comes from an attribute or another input.
"""

from __future__ import annotations

from dcopt.ops.shapes.registry import ShapeInferenceError, onnx_dtype, shape_rule

UNARY = (
    "Abs", "Neg", "Reciprocal", "Sqrt", "Exp", "Log", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh",
    "Asinh", "Acosh", "Atanh", "Floor", "Ceil", "Round", "Sign", "Erf", "Tanh", "Softsign", "Sigmoid", "Relu",
    "Softplus", "Mish", "HardSwish", "BitwiseNot", "Not", "LeakyRelu", "ThresholdedRelu", "Elu", "Selu", "Celu",
    "Gelu", "HardSigmoid", "Swish", "Shrink", "Clip", "Identity",
)
BROADCAST = ("Add", "Sub", "Mul", "Div", "Mod", "Pow", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "PRelu",
             "Max", "Min", "Sum", "Mean")
PREDICATES = ("Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor")


@shape_rule(*UNARY)
def unary(ctx):
    """The input's type (Identity passes sequences and optionals through as well)."""
    return ctx.type(0)


@shape_rule("IsNaN", "IsInf")
def elementwise_test(ctx):
    return ctx.tensor("bool", ctx.shape(0))


@shape_rule(*BROADCAST)
def broadcast(ctx):
    return ctx.tensor(ctx.dtype(0), ctx.broadcast())


@shape_rule(*PREDICATES)
def predicate(ctx):
    return ctx.tensor("bool", ctx.broadcast())


@shape_rule("Where")
def where(ctx):
    return ctx.tensor(ctx.dtype(1), ctx.broadcast(0, 1, 2))


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
