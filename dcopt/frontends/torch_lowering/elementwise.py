"""Elementwise lowerings: unary math and activations, binary arithmetic, comparisons, logic."""

from __future__ import annotations

import math

import torch
from dcopt.frontends.torch_context import LoweringError
from dcopt.frontends.torch_lowering import lower
from dcopt.frontends.torch_lowering._helpers import _operands, _promoted, _scaled, _truth


# ---------------------------------------------------------------------------------------------
# Elementwise: unary


_UNARY = {
    "neg": "Neg", "abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "tanh": "Tanh",
    "sigmoid": "Sigmoid", "relu": "Relu", "erf": "Erf", "sin": "Sin", "cos": "Cos", "tan": "Tan",
    "floor": "Floor", "ceil": "Ceil", "round": "Round", "reciprocal": "Reciprocal", "sign": "Sign",
    "hardswish": "HardSwish", "asin": "Asin", "acos": "Acos", "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh",
}


def _unary(onnx_op: str):
    def lowering(ctx, x, **_):
        return ctx.emit(onnx_op, [ctx.tensor(x, ctx.out_dtype())])

    lowering.__name__ = onnx_op.lower()
    return lowering


for _aten, _onnx in _UNARY.items():
    lower(f"aten.{_aten}.default")(_unary(_onnx))


@lower("aten.isnan.default", "aten.isinf.default")
def isnan_isinf(ctx, x):
    op = "IsNaN" if "isnan" in str(ctx.node.target) else "IsInf"
    return ctx.emit(op, [ctx.tensor(x)], dtype="bool")


@lower("aten.rsqrt.default")
def rsqrt(ctx, x):
    return ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.tensor(x, ctx.out_dtype())])])


@lower("aten.log1p.default")
def log1p(ctx, x):
    dt = ctx.out_dtype()
    return ctx.emit("Log", [ctx.emit("Add", [ctx.tensor(x, dt), ctx.const(1, dt)])])


@lower("aten.expm1.default")
def expm1(ctx, x):
    dt = ctx.out_dtype()
    return ctx.emit("Sub", [ctx.emit("Exp", [ctx.tensor(x, dt)]), ctx.const(1, dt)])


@lower("aten.silu.default")
def silu(ctx, x):
    xs = ctx.tensor(x, ctx.out_dtype())
    return ctx.emit("Mul", [xs, ctx.emit("Sigmoid", [xs])])


@lower("aten.gelu.default")
def gelu(ctx, x, *, approximate="none"):
    """Gelu is an ONNX op from opset 20; before that, its defining formula (erf or tanh form)."""
    dt = ctx.out_dtype()
    xs = ctx.tensor(x, dt)
    if ctx.opset >= 20:
        return ctx.emit("Gelu", [xs], approximate=approximate)
    c = lambda v: ctx.const(v, dt)  # noqa: E731
    if approximate == "tanh":
        cube = ctx.emit("Mul", [ctx.emit("Mul", [xs, xs]), xs])
        inner = ctx.emit("Mul", [ctx.emit("Add", [xs, ctx.emit("Mul", [cube, c(0.044715)])]),
                                 c(math.sqrt(2 / math.pi))])
        gate = ctx.emit("Tanh", [inner])
    else:
        gate = ctx.emit("Erf", [ctx.emit("Mul", [xs, c(1 / math.sqrt(2))])])
    return ctx.emit("Mul", [ctx.emit("Mul", [xs, c(0.5)]), ctx.emit("Add", [gate, c(1.0)])])


@lower("aten.leaky_relu.default")
def leaky_relu(ctx, x, negative_slope=0.01):
    return ctx.emit("LeakyRelu", [ctx.tensor(x)], alpha=float(negative_slope))


@lower("aten.elu.default")
def elu(ctx, x, alpha=1.0, scale=1.0, input_scale=1.0):
    if scale != 1 or input_scale != 1:
        raise LoweringError("elu with scale/input_scale other than 1 (selu form) is not supported")
    return ctx.emit("Elu", [ctx.tensor(x)], alpha=float(alpha))


@lower("aten.hardsigmoid.default")
def hardsigmoid(ctx, x):
    return ctx.emit("HardSigmoid", [ctx.tensor(x)], alpha=1 / 6, beta=0.5)


@lower("aten.softplus.default")
def softplus(ctx, x, beta=1, threshold=20):
    """log(1 + exp(beta x)) / beta; torch's linear region above ``threshold`` differs by < 1e-8."""
    dt = ctx.out_dtype()
    scaled = _scaled(ctx, ctx.tensor(x, dt), beta, dt)
    out = ctx.emit("Softplus", [scaled])
    return out if beta == 1 else ctx.emit("Div", [out, ctx.const(beta, dt)])


@lower("aten.hardtanh.default")
def hardtanh(ctx, x, min_val=-1.0, max_val=1.0):
    return _clip(ctx, x, min_val, max_val)


@lower("aten.clamp.default")
def clamp(ctx, x, min=None, max=None):  # noqa: A002 (ATen argument names)
    return _clip(ctx, x, min, max)


@lower("aten.clamp_min.default")
def clamp_min(ctx, x, min):  # noqa: A002
    return _clip(ctx, x, min, None)


@lower("aten.clamp_max.default")
def clamp_max(ctx, x, max):  # noqa: A002
    return _clip(ctx, x, None, max)


def _clip(ctx, x, lo, hi):
    dt = ctx.out_dtype()
    bound = lambda v: None if v is None else ctx.const(v, dt)  # noqa: E731
    return ctx.emit("Clip", [ctx.tensor(x, dt), bound(lo), bound(hi)])


@lower("aten.clamp.Tensor")
def clamp_tensor(ctx, x, min=None, max=None):  # noqa: A002
    dt = ctx.out_dtype()
    out = ctx.tensor(x, dt)
    if min is not None:
        out = ctx.emit("Max", [out, ctx.tensor(min, dt)])
    if max is not None:
        out = ctx.emit("Min", [out, ctx.tensor(max, dt)])
    return out


@lower("aten.logical_not.default")
def logical_not(ctx, x):
    return ctx.emit("Not", [_truth(ctx, x)])


@lower("aten.bitwise_not.default")
def bitwise_not(ctx, x):
    """Not for bools; ~x == -x - 1 for integers (BitwiseNot only exists from opset 18)."""
    if ctx.dtype(x) == "bool":
        return ctx.emit("Not", [ctx.tensor(x)])
    if ctx.opset >= 18:
        return ctx.emit("BitwiseNot", [ctx.tensor(x)])
    dt = ctx.dtype(x)
    return ctx.emit("Sub", [ctx.emit("Neg", [ctx.tensor(x)]), ctx.const(1, dt)])


# ---------------------------------------------------------------------------------------------
# Elementwise: binary arithmetic and comparisons


def _arith(onnx_op: str, *, swap: bool = False):
    """add/sub/mul/div in their Tensor and Scalar overloads; ``alpha`` scales the second operand."""

    def lowering(ctx, a, b, *, alpha=1, **_):
        dt = ctx.out_dtype()
        x, y = _operands(ctx, dt, a, b)
        if swap:  # rsub: b - alpha * a
            x, y = y, _scaled(ctx, x, alpha, dt)
        else:
            y = _scaled(ctx, y, alpha, dt)
        return ctx.emit(onnx_op, [x, y])

    lowering.__name__ = onnx_op.lower()
    return lowering


for _name, _onnx in (("add", "Add"), ("sub", "Sub"), ("mul", "Mul"), ("div", "Div")):
    lower(f"aten.{_name}.Tensor", f"aten.{_name}.Scalar")(_arith(_onnx))
lower("aten.rsub.Tensor", "aten.rsub.Scalar")(_arith("Sub", swap=True))
lower("aten.maximum.default")(_arith("Max"))
lower("aten.minimum.default")(_arith("Min"))


@lower("aten.div.Tensor_mode", "aten.div.Scalar_mode", "aten.floor_divide.default")
def div_mode(ctx, a, b, *, rounding_mode="floor"):
    """Division with rounding. Integers go through float64 (exact below 2**53) for floor."""
    dt = ctx.out_dtype()
    if rounding_mode is None:
        return ctx.emit("Div", _operands(ctx, dt, a, b))
    if dt not in ("float16", "bfloat16", "float32", "float64"):
        if rounding_mode == "trunc":
            return ctx.emit("Div", _operands(ctx, dt, a, b))  # ONNX integer Div truncates
        quotient = ctx.emit("Div", _operands(ctx, "float64", a, b))
        return ctx.cast(ctx.emit("Floor", [quotient]), dt)
    quotient = ctx.emit("Div", _operands(ctx, dt, a, b))
    if rounding_mode == "floor":
        return ctx.emit("Floor", [quotient])
    return ctx.emit("Mul", [ctx.emit("Sign", [quotient]), ctx.emit("Floor", [ctx.emit("Abs", [quotient])])])


@lower("aten.remainder.Tensor", "aten.remainder.Scalar")
def remainder(ctx, a, b):
    """Python-style remainder (sign of the divisor): ONNX Mod fmod=0 for ints, a - floor(a/b)*b for floats."""
    dt = ctx.out_dtype()
    x, y = _operands(ctx, dt, a, b)
    if dt not in ("float16", "bfloat16", "float32", "float64"):
        return ctx.emit("Mod", [x, y], fmod=0)
    floor = ctx.emit("Floor", [ctx.emit("Div", [x, y])])
    return ctx.emit("Sub", [x, ctx.emit("Mul", [floor, y])])


@lower("aten.fmod.Tensor", "aten.fmod.Scalar")
def fmod(ctx, a, b):
    return ctx.emit("Mod", _operands(ctx, ctx.out_dtype(), a, b), fmod=1)


@lower("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor", "aten.pow.Scalar")
def pow_(ctx, a, b):
    dt = ctx.out_dtype()
    return ctx.emit("Pow", _operands(ctx, dt, a, b))


_COMPARE = {"eq": ("Equal", False), "ne": ("Equal", True), "lt": ("Less", False), "le": ("LessOrEqual", False),
            "gt": ("Greater", False), "ge": ("GreaterOrEqual", False)}


def _compare(onnx_op: str, negate: bool):
    def lowering(ctx, a, b):
        out = ctx.emit(onnx_op, _operands(ctx, _promoted(ctx, a, b), a, b), dtype="bool")
        return ctx.emit("Not", [out]) if negate else out

    lowering.__name__ = onnx_op.lower()
    return lowering


for _name, (_onnx, _negate) in _COMPARE.items():
    lower(f"aten.{_name}.Tensor", f"aten.{_name}.Scalar")(_compare(_onnx, _negate))


def _logical(onnx_op: str, bitwise_op: str):
    """bool and/or/xor; for integers the Bitwise ops need opset 18."""

    def lowering(ctx, a, b):
        dt = ctx.out_dtype()
        if dt == "bool":
            return ctx.emit(onnx_op, [_truth(ctx, a), _truth(ctx, b)])
        if ctx.opset < 18:
            raise LoweringError(f"integer {bitwise_op} needs opset 18 (the graph uses {ctx.opset})")
        return ctx.emit(bitwise_op, _operands(ctx, dt, a, b))

    return lowering


for _name, _onnx in (("and", "And"), ("or", "Or"), ("xor", "Xor")):
    lower(f"aten.logical_{_name}.default")(_logical(_onnx, f"Bitwise{_onnx}"))
    lower(f"aten.bitwise_{_name}.Tensor", f"aten.bitwise_{_name}.Scalar")(_logical(_onnx, f"Bitwise{_onnx}"))


@lower("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar")
def where(ctx, condition, a, b):
    dt = ctx.out_dtype()
    return ctx.emit("Where", [ctx.tensor(condition, "bool"), *_operands(ctx, dt, a, b)])


@lower("aten.masked_fill.Scalar", "aten.masked_fill.Tensor")
def masked_fill(ctx, x, mask, value):
    dt = ctx.out_dtype()
    return ctx.emit("Where", [ctx.tensor(mask, "bool"), ctx.tensor(value, dt), ctx.tensor(x, dt)])
