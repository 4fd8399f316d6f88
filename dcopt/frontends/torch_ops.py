"""ATen -> ONNX-style lowerings, one small function per ATen op (or family of overloads).

A lowering is registered for the ATen overloads it handles::

    @lower("aten.addmm.default")
    def addmm(ctx, bias, mat1, mat2, *, beta=1, alpha=1):
        return ctx.emit("Gemm", [ctx.tensor(mat1), ctx.tensor(mat2), ctx.tensor(bias)], alpha=..., beta=...)

It receives the FX node's arguments as they are (FX nodes for tensors and sizes, Python values
for the rest; ATen's keyword-only arguments arrive as keywords, device/layout/pin_memory are
swallowed by ``**_``) and returns the container name of its result, or a tuple for multi-output
ops (``None`` for an output it does not compute, e.g. max-pool indices). The importer types the
result from the node's FakeTensor, so lowerings only type the helper values they create.

The emitted ops follow the ONNX default domain at ``ctx.opset`` (17 unless asked otherwise):
e.g. ReduceMean takes ``axes`` as an attribute before 18 and ReduceSum as an input from 13,
Gelu exists from 20. Dtypes follow torch's type promotion: a lowering casts its operands to the
result dtype the FakeTensor reports, so ONNX's same-type rule always holds.

A lowering raises :class:`LoweringError` for a form it cannot express (training-mode batch norm,
dropout with p > 0 in SDPA...); the importer collects those with the unknown ops.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np
import torch
from dcopt.frontends.torch_import import LoweringContext, LoweringError, concrete_int, dtype_name

LOWERINGS: dict[str, Callable[..., Any]] = {}

INT64_MAX = 2**63 - 1


def lower(*names: str):
    """Register a lowering for one or more ATen overloads ("aten.<op>.<overload>")."""

    def register(fn):
        for name in names:
            LOWERINGS[name] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    return sorted(LOWERINGS)


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _axis(dim: int, rank: int) -> int:
    """A non-negative axis (ONNX accepts negatives too, but normalized ones read better)."""
    return dim + rank if dim < 0 else dim


def _promoted(ctx: LoweringContext, a: Any, b: Any) -> str:
    """torch's result dtype for a binary op on ``a`` and ``b`` (tensors, sizes or Python scalars),
    asked of torch itself on tiny stand-ins of the same rank class (0-d behaves like a scalar)."""

    def probe(arg):
        val = ctx.val(arg)
        if isinstance(val, torch.Tensor):
            return torch.empty((1,) * val.dim(), dtype=val.dtype)
        return torch.tensor(int(val) if isinstance(val, torch.SymInt) else val)

    return dtype_name(torch.result_type(probe(a), probe(b)))


def _operands(ctx: LoweringContext, dtype: str, *args: Any) -> list[str]:
    return [ctx.tensor(a, dtype) for a in args]


def _scaled(ctx: LoweringContext, name: str, factor: Any, dtype: str) -> str:
    """``name * factor``, skipping the multiply when factor is 1."""
    if not isinstance(factor, torch.fx.Node) and factor == 1:
        return name
    return ctx.emit("Mul", [name, ctx.tensor(factor, dtype)])


def _ints_list(value: Any, n: int) -> list[int]:
    """ATen int-list arguments may be given as one int (or a shorter list) meaning 'for every dim'."""
    values = [value] if isinstance(value, int) else list(value)
    return values * n if len(values) == 1 and n > 1 else values


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


def _truth(ctx, x) -> str:
    """``x != 0`` as bool (torch's logical ops accept any dtype and Python scalars)."""
    if not isinstance(x, torch.fx.Node):
        return ctx.const(bool(x), "bool")
    if ctx.dtype(x) == "bool":
        return ctx.tensor(x)
    xs = ctx.tensor(x)
    return ctx.emit("Not", [ctx.emit("Equal", [xs, ctx.const(0, ctx.dtype(x))], dtype="bool")])


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


# ---------------------------------------------------------------------------------------------
# Matrix products


@lower("aten.mm.default", "aten.bmm.default", "aten.matmul.default", "aten.dot.default")
def matmul(ctx, a, b):
    return ctx.emit("MatMul", _operands(ctx, ctx.out_dtype(), a, b))


@lower("aten.addmm.default")
def addmm(ctx, bias, mat1, mat2, *, beta=1, alpha=1):
    dt = ctx.out_dtype()
    a, b, c = _operands(ctx, dt, mat1, mat2, bias)
    return ctx.emit("Gemm", [a, b, c], alpha=float(alpha), beta=float(beta))


@lower("aten.baddbmm.default")
def baddbmm(ctx, x, batch1, batch2, *, beta=1, alpha=1):
    """beta * x + alpha * (batch1 @ batch2); with beta == 0, x is ignored (even NaNs), as in torch."""
    dt = ctx.out_dtype()
    product = _scaled(ctx, ctx.emit("MatMul", _operands(ctx, dt, batch1, batch2)), alpha, dt)
    if beta == 0:
        return product
    return ctx.emit("Add", [_scaled(ctx, ctx.tensor(x, dt), beta, dt), product])


@lower("aten.linear.default")
def linear(ctx, x, weight, bias=None):
    dt = ctx.out_dtype()
    wt = ctx.emit("Transpose", [ctx.tensor(weight, dt)], perm=(1, 0))
    out = ctx.emit("MatMul", [ctx.tensor(x, dt), wt])
    return out if bias is None else ctx.emit("Add", [out, ctx.tensor(bias, dt)])


@lower("aten.einsum.default")
def einsum(ctx, equation, tensors, *, path=None):
    dt = ctx.out_dtype()
    return ctx.emit("Einsum", [ctx.tensor(t, dt) for t in tensors], equation=equation)


# ---------------------------------------------------------------------------------------------
# Attention


def _attention(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa=False) -> str:
    """softmax(q @ k^T * scale + mask) @ v, the math form of scaled_dot_product_attention."""
    if dropout_p:
        raise LoweringError(f"attention dropout (p={dropout_p}) is random; only p=0 is supported")
    dt = ctx.out_dtype(0) if isinstance(ctx.out_val(), (tuple, list)) else ctx.out_dtype()
    qs, ks, vs = _operands(ctx, dt, q, k, v)
    q_shape, k_shape = ctx.shape(q), ctx.shape(k)
    if enable_gqa and (concrete_int(q_shape[-3]) is None or concrete_int(q_shape[-3]) != concrete_int(k_shape[-3])):
        raise LoweringError("grouped-query attention (enable_gqa with fewer key heads) is not supported")
    if scale is None:
        scale = 1 / math.sqrt(ctx.static_int(q_shape[-1], "attention head size"))
    rank = ctx.rank(k)
    perm = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    scores = ctx.emit("MatMul", [qs, ctx.emit("Transpose", [ks], perm=perm)])
    scores = ctx.emit("Mul", [scores, ctx.const(scale, dt)])
    neg_inf = ctx.const(-np.inf, dt)
    if is_causal:
        ones = ctx.emit("Expand", [ctx.const(True, "bool"), ctx.shape_tensor([q_shape[-2], k_shape[-2]])])
        causal = ctx.emit("Trilu", [ones, ctx.const(0, "int64")], upper=0)
        scores = ctx.emit("Where", [causal, scores, neg_inf])
    if attn_mask is not None:
        if ctx.dtype(attn_mask) == "bool":
            scores = ctx.emit("Where", [ctx.tensor(attn_mask), scores, neg_inf])
        else:
            scores = ctx.emit("Add", [scores, ctx.tensor(attn_mask, dt)])
    probs = ctx.emit("Softmax", [scores], axis=-1)
    return ctx.emit("MatMul", [probs, vs])


@lower("aten.scaled_dot_product_attention.default")
def scaled_dot_product_attention(ctx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None,
                                 enable_gqa=False):
    return _attention(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)


@lower("aten._scaled_dot_product_flash_attention_for_cpu.default")
def sdpa_flash_cpu(ctx, q, k, v, dropout_p=0.0, is_causal=False, *, attn_mask=None, scale=None):
    """Returns (output, logsumexp); the logsumexp is only for the backward pass."""
    return _attention(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale), None


# ---------------------------------------------------------------------------------------------
# Normalization


@lower("aten.native_layer_norm.default")
def native_layer_norm(ctx, x, normalized_shape, weight, bias, eps):
    """LayerNormalization computes torch's (output, mean, rstd) triple directly."""
    return _layer_norm(ctx, x, normalized_shape, weight, bias, eps, outputs=3)


@lower("aten.layer_norm.default")
def layer_norm(ctx, x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return _layer_norm(ctx, x, normalized_shape, weight, bias, eps, outputs=1)


def _layer_norm(ctx, x, normalized_shape, weight, bias, eps, outputs):
    dt = ctx.dtype(x)
    shape = [ctx.static_int(d, "normalized_shape") for d in normalized_shape]
    scale = ctx.tensor(weight, dt) if weight is not None else ctx.const(np.ones(shape), dt)
    shift = ctx.tensor(bias, dt) if bias is not None else None
    return ctx.emit("LayerNormalization", [ctx.tensor(x), scale, shift], outputs=outputs,
                    axis=-len(shape), epsilon=float(eps))


def _batch_norm(ctx, x, weight, bias, running_mean, running_var, training, eps) -> str:
    if training or running_mean is None or running_var is None:
        raise LoweringError("batch norm with batch statistics (training mode) is not supported; "
                            "call model.eval() before exporting")
    dt = ctx.dtype(x)
    channels = ctx.static_int(ctx.shape(running_mean)[0], "channel count")
    scale = ctx.tensor(weight, dt) if weight is not None else ctx.const(np.ones(channels), dt)
    shift = ctx.tensor(bias, dt) if bias is not None else ctx.const(np.zeros(channels), dt)
    return ctx.emit("BatchNormalization", [ctx.tensor(x), scale, shift, ctx.tensor(running_mean, dt),
                                           ctx.tensor(running_var, dt)], epsilon=float(eps))


@lower("aten._native_batch_norm_legit_no_training.default")
def batch_norm_no_training(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
    return _batch_norm(ctx, x, weight, bias, running_mean, running_var, False, eps), None, None


@lower("aten._native_batch_norm_legit.default", "aten.native_batch_norm.default")
def native_batch_norm(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
    return _batch_norm(ctx, x, weight, bias, running_mean, running_var, training, eps), None, None


@lower("aten.batch_norm.default")
def batch_norm(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled=True):
    return _batch_norm(ctx, x, weight, bias, running_mean, running_var, training, eps)


# ---------------------------------------------------------------------------------------------
# Softmax, reductions, scans


@lower("aten._softmax.default", "aten._log_softmax.default", "aten.softmax.int", "aten.log_softmax.int")
def softmax(ctx, x, dim, half_to_float_or_dtype=None):
    op = "LogSoftmax" if "log_softmax" in str(ctx.node.target) else "Softmax"
    return ctx.emit(op, [ctx.tensor(x, ctx.out_dtype())], axis=_axis(dim, ctx.rank(x)))


def _reduce(ctx, op: str, x: Any, dims: Any, keepdim: bool, dtype: str | None = None) -> str:
    """One ONNX Reduce* over an FX argument (cast to ``dtype`` first when given)."""
    xs = ctx.tensor(x, dtype) if dtype else ctx.tensor(x)
    return _reduce_named(ctx, op, xs, ctx.rank(x), dims, keepdim)


def _reduce_named(ctx, op: str, name: str, rank: int, dims: Any, keepdim: bool) -> str:
    """One ONNX Reduce* over a container; ``dims`` None/empty reduces everything. Axes are an
    input for ReduceSum (opset 13+) and for the others from opset 18, an attribute before."""
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    axes = [_axis(d, rank) for d in dims]
    if not axes or rank == 0:
        return ctx.emit(op, [name], keepdims=int(keepdim))
    if op == "ReduceSum" or ctx.opset >= 18:
        return ctx.emit(op, [name, ctx.const(axes, "int64")], keepdims=int(keepdim))
    return ctx.emit(op, [name], axes=tuple(axes), keepdims=int(keepdim))


def _reduction(onnx_op: str, *, cast_first: bool):
    """sum/mean/prod (which take a dtype and widen ints) and amax/amin (which keep the dtype)."""

    def lowering(ctx, x, dim=None, keepdim=False, *, dtype=None, **_):
        return _reduce(ctx, onnx_op, x, dim, keepdim, ctx.out_dtype() if cast_first else None)

    lowering.__name__ = onnx_op.lower()
    return lowering


lower("aten.sum.dim_IntList", "aten.sum.default")(_reduction("ReduceSum", cast_first=True))
lower("aten.mean.dim", "aten.mean.default")(_reduction("ReduceMean", cast_first=True))
lower("aten.prod.dim_int", "aten.prod.default")(_reduction("ReduceProd", cast_first=True))
lower("aten.amax.default", "aten.max.default")(_reduction("ReduceMax", cast_first=False))
lower("aten.amin.default", "aten.min.default")(_reduction("ReduceMin", cast_first=False))


@lower("aten.max.dim", "aten.min.dim")
def max_min_dim(ctx, x, dim, keepdim=False):
    """(values, indices) along one dim."""
    is_max = ".max." in str(ctx.node.target)
    values = _reduce(ctx, "ReduceMax" if is_max else "ReduceMin", x, [dim], keepdim)
    indices = ctx.emit("ArgMax" if is_max else "ArgMin", [ctx.tensor(x)], dtype="int64",
                       axis=_axis(dim, ctx.rank(x)), keepdims=int(keepdim))
    return values, indices


@lower("aten.argmax.default", "aten.argmin.default")
def argmax(ctx, x, dim=None, keepdim=False):
    op = "ArgMax" if "argmax" in str(ctx.node.target) else "ArgMin"
    xs = ctx.tensor(x)
    if dim is None:  # over the flattened tensor
        xs = ctx.emit("Reshape", [xs, ctx.const([-1], "int64")])
        out = ctx.emit(op, [xs], dtype="int64", axis=0, keepdims=0)
        if keepdim:
            return ctx.emit("Reshape", [out, ctx.const([1] * ctx.rank(x), "int64")])
        return out
    return ctx.emit(op, [xs], dtype="int64", axis=_axis(dim, ctx.rank(x)), keepdims=int(keepdim))


@lower("aten.any.dim", "aten.any.dims", "aten.any.default", "aten.all.dim", "aten.all.dims", "aten.all.default")
def any_all(ctx, x, dim=None, keepdim=False):
    """any = max and all = min over (x != 0) as int32 (Reduce* take no bools before opset 20)."""
    op = "ReduceMax" if ".any." in str(ctx.node.target) else "ReduceMin"
    as_int = ctx.cast(_truth(ctx, x), "int32")
    return ctx.cast(_reduce_named(ctx, op, as_int, ctx.rank(x), dim, keepdim), "bool")


@lower("aten.var.correction", "aten.var.dim", "aten.std.correction", "aten.std.dim")
def var_std(ctx, x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """sum((x - mean)^2) / (N - correction); N must be static. ``var.dim`` passes ``unbiased``."""
    dt = ctx.out_dtype()
    if correction is None:
        correction = 1 if unbiased in (None, True) else 0
    rank = ctx.rank(x)
    dims = [dim] if isinstance(dim, int) else list(dim or range(rank))
    shape = ctx.shape(x)
    count = int(np.prod([ctx.static_int(shape[d], "reduced dim") for d in dims]))
    xs = ctx.tensor(x, dt)
    centered = ctx.emit("Sub", [xs, _reduce_named(ctx, "ReduceMean", xs, rank, dims, True)])
    total = _reduce_named(ctx, "ReduceSum", ctx.emit("Mul", [centered, centered]), rank, dims, keepdim)
    out = ctx.emit("Div", [total, ctx.const(max(count - correction, 0), dt)])
    return ctx.emit("Sqrt", [out]) if ".std." in str(ctx.node.target) else out


@lower("aten.cumsum.default")
def cumsum(ctx, x, dim, *, dtype=None):
    return ctx.emit("CumSum", [ctx.tensor(x, ctx.out_dtype()), ctx.const(_axis(dim, ctx.rank(x)), "int64")])


@lower("aten.topk.default")
def topk(ctx, x, k, dim=-1, largest=True, sorted=True):  # noqa: A002
    values, indices = ctx.emit("TopK", [ctx.tensor(x), ctx.ints([k])], outputs=2,
                               axis=_axis(dim, ctx.rank(x)), largest=int(largest), sorted=int(sorted))
    return values, indices


# ---------------------------------------------------------------------------------------------
# Convolution and pooling


@lower("aten.convolution.default")
def convolution(ctx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    n = ctx.rank(weight) - 2
    attrs = dict(strides=tuple(_ints_list(stride, n)), dilations=tuple(_ints_list(dilation, n)),
                 pads=tuple(_ints_list(padding, n)) * 2, group=int(groups))
    inputs = [ctx.tensor(x), ctx.tensor(weight), None if bias is None else ctx.tensor(bias)]
    if transposed:
        return ctx.emit("ConvTranspose", inputs, output_padding=tuple(_ints_list(output_padding, n)), **attrs)
    return ctx.emit("Conv", inputs, **attrs)


@lower("aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default")
def conv_nd(ctx, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str):
        if padding != "valid":
            raise LoweringError(f"padding='{padding}' is not supported; give explicit padding")
        padding = 0
    return convolution(ctx, x, weight, bias, stride, padding, dilation, False, [0], groups)


def _spatial_dims(ctx) -> int:
    """1, 2 or 3, from the op's name (max_pool2d..., avg_pool1d...)."""
    return int(re.search(r"(\d)d", str(ctx.node.target)).group(1))


def _pool_attrs(kernel_size, stride, padding, n) -> dict:
    kernel = _ints_list(kernel_size, n)
    return dict(kernel_shape=tuple(kernel), strides=tuple(_ints_list(stride, n) if stride else kernel),
                pads=tuple(_ints_list(padding, n)) * 2)


@lower("aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default",
       "aten.max_pool1d.default", "aten.max_pool2d.default", "aten.max_pool3d.default")
def max_pool(ctx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """MaxPool; the *_with_indices forms return (values, None): torch's per-plane indices differ
    from ONNX's flattened ones, and only max_unpool/backward read them."""
    n = _spatial_dims(ctx)
    out = ctx.emit("MaxPool", [ctx.tensor(x)], dilations=tuple(_ints_list(dilation, n)), ceil_mode=int(ceil_mode),
                   **_pool_attrs(kernel_size, stride, padding, n))
    return (out, None) if "with_indices" in str(ctx.node.target) else out


@lower("aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default")
def avg_pool(ctx, x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
             divisor_override=None):
    if divisor_override is not None:
        raise LoweringError("avg_pool with divisor_override is not supported")
    n = _spatial_dims(ctx)
    return ctx.emit("AveragePool", [ctx.tensor(x)], ceil_mode=int(ceil_mode),
                    count_include_pad=int(count_include_pad), **_pool_attrs(kernel_size, stride, padding, n))


@lower("aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default",
       "aten.adaptive_avg_pool1d.default", "aten._adaptive_avg_pool3d.default", "aten.adaptive_avg_pool3d.default")
def adaptive_avg_pool(ctx, x, output_size):
    """Global pooling for output 1; an even AveragePool when the input divides the output."""
    n = _spatial_dims(ctx)
    out = _ints_list(output_size, n)
    if all(o == 1 for o in out):
        return ctx.emit("GlobalAveragePool", [ctx.tensor(x)])
    spatial = [ctx.static_int(d, "pooled spatial size") for d in ctx.shape(x)[2:]]
    if any(s % o for s, o in zip(spatial, out)):
        raise LoweringError(f"adaptive pooling from {spatial} to {out} has uneven windows")
    kernel = tuple(s // o for s, o in zip(spatial, out))
    return ctx.emit("AveragePool", [ctx.tensor(x)], kernel_shape=kernel, strides=kernel)


@lower("aten.upsample_nearest2d.vec", "aten.upsample_nearest2d.default",
       "aten.upsample_bilinear2d.vec", "aten.upsample_bilinear2d.default")
def upsample(ctx, x, output_size=None, *rest, **_):
    """Resize to the traced output size: nearest = asymmetric/floor, bilinear = half-pixel or
    align-corners, matching torch."""
    bilinear = "bilinear" in str(ctx.node.target)
    align = bool(rest[0]) if bilinear and rest and isinstance(rest[0], bool) else False
    sizes = ctx.shape_tensor(ctx.out_val().shape)
    if bilinear:
        attrs = dict(mode="linear", coordinate_transformation_mode="align_corners" if align else "pytorch_half_pixel")
    else:
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    return ctx.emit("Resize", [ctx.tensor(x), None, None, sizes], **attrs)


@lower("aten.constant_pad_nd.default")
def constant_pad_nd(ctx, x, pad, value=0):
    """torch lists (begin, end) pairs from the last dim backwards; ONNX all begins, then all ends."""
    rank = ctx.rank(x)
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):
        begins[rank - 1 - i], ends[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    return ctx.emit("Pad", [ctx.tensor(x), ctx.ints(begins + ends), ctx.const(value, ctx.dtype(x))], mode="constant")


# ---------------------------------------------------------------------------------------------
# Views and layout (all copies in the IR: values are immutable)


@lower("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.view_copy.default")
def view(ctx, x, size):
    zero = any(isinstance(s, int) and s == 0 for s in size)  # a literal 0 is a size, not 'copy dim'
    return ctx.emit("Reshape", [ctx.tensor(x), ctx.ints(size)], **({"allowzero": 1} if zero else {}))


@lower("aten.flatten.using_ints", "aten.unflatten.int")
def reshape_to_traced(ctx, x, *_):
    """Reshape to the traced output shape (symbolic dims computed from the inputs' shapes)."""
    return ctx.emit("Reshape", [ctx.tensor(x), ctx.shape_tensor(ctx.out_val().shape)])


@lower("aten.permute.default")
def permute(ctx, x, dims):
    rank = ctx.rank(x)
    return ctx.emit("Transpose", [ctx.tensor(x)], perm=tuple(_axis(d, rank) for d in dims))


@lower("aten.transpose.int")
def transpose(ctx, x, dim0, dim1):
    rank = ctx.rank(x)
    perm = list(range(rank))
    a, b = _axis(dim0, rank), _axis(dim1, rank)
    perm[a], perm[b] = perm[b], perm[a]
    return ctx.emit("Transpose", [ctx.tensor(x)], perm=tuple(perm))


@lower("aten.t.default")
def t(ctx, x):
    return ctx.tensor(x) if ctx.rank(x) < 2 else ctx.emit("Transpose", [ctx.tensor(x)], perm=(1, 0))


@lower("aten.expand.default", "aten.expand_copy.default")
def expand(ctx, x, size, *, implicit=False):
    """torch's -1 ('keep this dim') is ONNX Expand's 1 (broadcasting keeps the input's dim)."""
    sizes = [1 if isinstance(s, int) and s == -1 else s for s in size]
    return ctx.emit("Expand", [ctx.tensor(x), ctx.ints(sizes)])


@lower("aten.unsqueeze.default")
def unsqueeze(ctx, x, dim):
    return ctx.emit("Unsqueeze", [ctx.tensor(x), ctx.const([_axis(dim, ctx.rank(x) + 1)], "int64")])


@lower("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default")
def squeeze(ctx, x, dim=None):
    """torch squeezes only dims of size 1 and ignores the others (ONNX would fail on them)."""
    shape = ctx.shape(x)
    rank = len(shape)
    dims = range(rank) if dim is None else [dim] if isinstance(dim, int) else dim
    axes = [_axis(d, rank) for d in dims if rank and concrete_int(shape[d]) == 1]
    if not axes:
        return ctx.tensor(x)
    return ctx.emit("Squeeze", [ctx.tensor(x), ctx.const(axes, "int64")])


@lower("aten.cat.default", "aten.concat.default")
def cat(ctx, tensors, dim=0):
    """Concat, after dropping torch's legacy empty 1-D operands and casting to the result dtype."""
    dt = ctx.out_dtype()
    rank = len(ctx.out_val().shape)
    kept = [t for t in tensors if not (ctx.rank(t) == 1 and concrete_int(ctx.shape(t)[0]) == 0 and rank != 1)]
    return ctx.emit("Concat", [ctx.tensor(t, dt) for t in kept or tensors], axis=_axis(dim, rank))


@lower("aten.stack.default")
def stack(ctx, tensors, dim=0):
    dt = ctx.out_dtype()
    axis = _axis(dim, ctx.rank(tensors[0]) + 1)
    axes = ctx.const([axis], "int64")
    return ctx.emit("Concat", [ctx.emit("Unsqueeze", [ctx.tensor(t, dt), axes]) for t in tensors], axis=axis)


@lower("aten.slice.Tensor", "aten.slice_copy.Tensor")
def slice_(ctx, x, dim=0, start=None, end=None, step=1):
    rank = ctx.rank(x)
    axis = _axis(dim, rank)
    start = 0 if start is None else start
    end = INT64_MAX if end is None else min(end, INT64_MAX) if isinstance(end, int) else end
    size = concrete_int(ctx.shape(x)[axis])
    whole = step == 1 and isinstance(start, int) and start == 0 and isinstance(end, int) and size is not None
    if whole and end >= size:
        return ctx.tensor(x)  # a whole-dim slice, common after decompositions
    return ctx.emit("Slice", [ctx.tensor(x), ctx.ints([start]), ctx.ints([end]),
                              ctx.const([axis], "int64"), ctx.const([step], "int64")])


@lower("aten.select.int", "aten.select_copy.int")
def select(ctx, x, dim, index):
    return ctx.emit("Gather", [ctx.tensor(x), ctx.scalar_int(index)], axis=_axis(dim, ctx.rank(x)))


@lower("aten.index_select.default")
def index_select(ctx, x, dim, index):
    return ctx.emit("Gather", [ctx.tensor(x), ctx.tensor(index, "int64")], axis=_axis(dim, ctx.rank(x)))


@lower("aten.embedding.default")
def embedding(ctx, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return ctx.emit("Gather", [ctx.tensor(weight), ctx.tensor(indices, "int64")], axis=0)


@lower("aten.gather.default")
def gather(ctx, x, dim, index, *, sparse_grad=False):
    return ctx.emit("GatherElements", [ctx.tensor(x), ctx.tensor(index, "int64")], axis=_axis(dim, ctx.rank(x)))


@lower("aten.index.Tensor")
def index(ctx, x, indices):
    """Advanced indexing ``x[..., i1, i2, ...]`` with integer index tensors (None = full dim).

    One index tensor is a Gather. Several broadcast together: the indexed dims are moved to the
    front, the indices stacked for one GatherND, and the result dims put where torch puts them
    (in place of the indexed dims when those are adjacent, in front otherwise)."""
    positions = [i for i, idx in enumerate(indices) if idx is not None]
    if any(ctx.dtype(indices[p]) == "bool" for p in positions):
        raise LoweringError("indexing with a boolean mask has a data-dependent shape")
    if len(positions) == 1:
        p = positions[0]
        return ctx.emit("Gather", [ctx.tensor(x), ctx.tensor(indices[p], "int64")], axis=p)
    rank = ctx.rank(x)
    rest = [d for d in range(rank) if d not in positions]
    moved = ctx.emit("Transpose", [ctx.tensor(x)], perm=tuple(positions + rest))
    idx = [ctx.tensor(indices[p], "int64") for p in positions]
    common = idx[0]
    for other in idx[1:]:
        common = ctx.emit("Add", [common, other])  # broadcasts the index shapes together
    shape = ctx.emit("Shape", [common], dtype="int64")
    last = ctx.const([-1], "int64")
    stacked = ctx.emit("Concat", [ctx.emit("Unsqueeze", [ctx.emit("Expand", [i, shape]), last]) for i in idx], axis=-1)
    out = ctx.emit("GatherND", [moved, stacked])
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    if not adjacent or positions[0] == 0:
        return out
    b = len(ctx.out_val().shape) - len(rest)  # rank of the broadcast index shape
    lead = positions[0]
    perm = list(range(b, b + lead)) + list(range(b)) + list(range(b + lead, b + len(rest)))
    return ctx.emit("Transpose", [out], perm=tuple(perm))


def _split_sizes(ctx, dim) -> str:
    """The pieces' sizes along ``dim``, read from the traced outputs (static or symbolic)."""
    return ctx.shape_tensor([v.shape[dim] for v in ctx.out_val()])


@lower("aten.split_with_sizes.default", "aten.split.Tensor", "aten.split.sizes", "aten.chunk.default",
       "aten.split_with_sizes_copy.default", "aten.split_copy.Tensor")
def split(ctx, x, _sizes_or_chunks, dim=0):
    axis = _axis(dim, ctx.rank(x))
    pieces = len(ctx.out_val())
    outs = ctx.emit("Split", [ctx.tensor(x), _split_sizes(ctx, axis)], outputs=pieces, axis=axis)
    return outs if pieces > 1 else (outs,)


@lower("aten.unbind.int", "aten.unbind_copy.int")
def unbind(ctx, x, dim=0):
    axis = _axis(dim, ctx.rank(x))
    pieces = len(ctx.out_val())
    outs = ctx.emit("Split", [ctx.tensor(x), ctx.const([1] * pieces, "int64")], outputs=pieces, axis=axis)
    axes = ctx.const([axis], "int64")
    return tuple(ctx.emit("Squeeze", [o, axes]) for o in (outs if pieces > 1 else (outs,)))


@lower("aten.repeat.default")
def repeat(ctx, x, repeats):
    xs = ctx.tensor(x)
    extra = len(repeats) - ctx.rank(x)
    if extra > 0:
        xs = ctx.emit("Unsqueeze", [xs, ctx.const(list(range(extra)), "int64")])
    return ctx.emit("Tile", [xs, ctx.ints(repeats)])


@lower("aten.flip.default")
def flip(ctx, x, dims):
    rank = ctx.rank(x)
    n = len(dims)
    return ctx.emit("Slice", [ctx.tensor(x), ctx.const([-1] * n, "int64"), ctx.const([-INT64_MAX] * n, "int64"),
                              ctx.const([_axis(d, rank) for d in dims], "int64"), ctx.const([-1] * n, "int64")])


@lower("aten.triu.default", "aten.tril.default")
def trilu(ctx, x, diagonal=0):
    upper = int(".triu." in str(ctx.node.target))
    return ctx.emit("Trilu", [ctx.tensor(x), ctx.const(diagonal, "int64")], upper=upper)


# ---------------------------------------------------------------------------------------------
# Identity-like ops and casts (the IR is functional: copies and views are the same value)


@lower("aten.clone.default", "aten.contiguous.default", "aten.alias.default", "aten.detach.default",
       "aten.lift_fresh_copy.default", "aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout",
       "aten.to.device", "aten.to.other", "aten.type_as.default", "aten._to_dim_order_copy.default",
       "aten.alias_copy.default", "aten.detach_copy.default")
def convert(ctx, x, *_, **__):
    """A copy (or view) with the traced result dtype: a Cast when the dtype changes, else nothing."""
    return ctx.tensor(x, ctx.out_dtype())


@lower("aten.dropout.default", "aten.native_dropout.default", "aten.feature_dropout.default")
def dropout(ctx, x, p=0.0, train=False):
    if train and p:
        raise LoweringError("dropout in training mode is random; call model.eval() before exporting")
    out = ctx.tensor(x)
    return (out, None) if "native_dropout" in str(ctx.node.target) else out


@lower("aten.copy.default")
def copy(ctx, x, src, non_blocking=False):
    """Functional copy_: src broadcast to x's shape, in x's dtype."""
    return ctx.emit("Expand", [ctx.tensor(src, ctx.out_dtype()), ctx.shape_tensor(ctx.shape(x))])


# ---------------------------------------------------------------------------------------------
# Factories


def _filled(ctx, shape: str, value: Any) -> str:
    dt = ctx.out_dtype()
    return ctx.emit("ConstantOfShape", [shape], dtype=dt, value=np.asarray([value], dtype=_np(dt)))


def _np(dtype: str):
    from dcopt.ir import dtypes

    return dtypes.to_numpy(dtype)


@lower("aten.full.default", "aten.new_full.default")
def full(ctx, *args, **_):
    size, value = args[-2], args[-1]  # new_full(self, size, value) / full(size, value)
    return _filled(ctx, ctx.ints(size), value)


@lower("aten.zeros.default", "aten.ones.default", "aten.empty.memory_format", "aten.new_zeros.default",
       "aten.new_ones.default", "aten.new_empty.default", "aten.empty.default")
def zeros_ones(ctx, *args, **_):
    """zeros/ones/empty (empty reads as zeros: a functional graph overwrites it anyway)."""
    size = args[-1] if "new_" in str(ctx.node.target) else args[0]
    return _filled(ctx, ctx.ints(size), 1 if "ones" in str(ctx.node.target) else 0)


@lower("aten.full_like.default", "aten.zeros_like.default", "aten.ones_like.default", "aten.empty_like.default")
def full_like(ctx, x, fill_value=None, **_):
    target = str(ctx.node.target)
    value = fill_value if "full_like" in target else 1 if "ones_like" in target else 0
    return _filled(ctx, ctx.shape_tensor(ctx.shape(x)), value)


@lower("aten.scalar_tensor.default")
def scalar_tensor(ctx, s, **_):
    if isinstance(s, torch.fx.Node):
        return ctx.emit("Reshape", [ctx.tensor(s, ctx.out_dtype()), ctx.const([], "int64")])
    return ctx.const(s, ctx.out_dtype())


@lower("aten.arange.default", "aten.arange.start", "aten.arange.start_step")
def arange(ctx, *args, **_):
    """A constant when the bounds are static; a Range node when a bound is a dynamic size."""
    start, end, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) > 2 else 1)
    dt = ctx.out_dtype()
    bounds = [ctx.env.get(b, b) if isinstance(b, torch.fx.Node) else b for b in (start, end, step)]
    if all(isinstance(b, (int, float)) for b in bounds):
        return ctx.const(np.arange(*bounds).astype(_np(dt)), dt)
    if any(isinstance(b, float) for b in bounds):
        raise LoweringError("arange with float bounds and a dynamic size is not supported")
    return ctx.cast(ctx.emit("Range", [ctx.scalar_int(b) for b in (start, end, step)], dtype="int64"), dt)
