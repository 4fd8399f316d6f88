"""Reference semantics of ONNX's elementwise ops: math, logic, comparisons, activations.

Each op is a few lines of numpy. The shared work is in two wrappers: :func:`_keeps_dtype`
runs a numpy expression on inputs widened where numpy lacks arithmetic (bfloat16 and the
float8 types compute in float32) and casts the result back to the first input's dtype,
which is what ONNX specifies for every op here except comparisons, logic and Pow's
exponent. Without the cast, numpy's promotion rules would silently change result dtypes
(float32 with a numpy float64 constant, np.where, integer true division). Floating point
exceptions are ignored: log(0) = -inf and friends are the specified results, not errors.

Cast, CastLike, BitCast and the Quantize ops are here too: they are elementwise, and the
float8/int4 conversions are ml_dtypes casts plus ONNX's saturation and rounding rules.
"""

from __future__ import annotations

import functools
import math

import ml_dtypes
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from dcopt.ops.registry import reference


def _lift(x):
    """Arrays of ml_dtypes types (bfloat16, float8, int4) as float32, which holds them exactly;
    anything else unchanged."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "V":
        return x.astype(np.float32)
    return x


def _keeps_dtype(fn):
    """Wrap ``fn`` so it sees lifted inputs and its result gets the first input's dtype."""

    @functools.wraps(fn)
    def op(x, *args, **kwargs):
        with np.errstate(all="ignore"):
            result = fn(_lift(x), *map(_lift, args), **kwargs)
        return np.asarray(result).astype(x.dtype, copy=False)

    return op


def _register(table, wrap=_keeps_dtype):
    """Register ``{op name: numpy function}`` entries, each wrapped by ``wrap``."""
    for name, fn in table.items():
        reference(name)(wrap(_positional(fn)))


def _positional(fn):
    """A plain-Python wrapper around a ufunc, so the registry can read its signature."""

    def op(*xs):
        return fn(*xs)

    op.__name__ = getattr(fn, "__name__", "op")
    return op


_erf_impl = None


def _erf(x):
    """erf in float64: scipy's vectorized erf when installed, else math.erf elementwise."""
    global _erf_impl
    if _erf_impl is None:
        try:
            from scipy.special import erf as _erf_impl
        except ImportError:  # scipy is optional; math.erf is exact but slower
            _erf_impl = np.vectorize(math.erf, otypes=[np.float64])
    return _erf_impl(np.asarray(x, dtype=np.float64))


# ---------------------------------------------------------------- unary math (result dtype = input dtype)

_register({
    "Abs": np.abs, "Neg": np.negative, "Reciprocal": np.reciprocal, "Sqrt": np.sqrt,
    "Exp": np.exp, "Log": np.log, "Sin": np.sin, "Cos": np.cos, "Tan": np.tan,
    "Asin": np.arcsin, "Acos": np.arccos, "Atan": np.arctan, "Sinh": np.sinh, "Cosh": np.cosh,
    "Asinh": np.arcsinh, "Acosh": np.arccosh, "Atanh": np.arctanh, "Floor": np.floor,
    "Ceil": np.ceil, "Round": np.round,  # np.round rounds half to even, as ONNX specifies
    "Sign": np.sign, "Erf": _erf, "Tanh": np.tanh, "Softsign": lambda x: x / (1 + np.abs(x)),
    "Sigmoid": lambda x: 1 / (1 + np.exp(-x)), "Relu": lambda x: np.maximum(x, 0),
    "Softplus": lambda x: np.logaddexp(x, 0),  # log(exp(x) + 1) without overflow
    "Mish": lambda x: x * np.tanh(np.logaddexp(x, 0)),
    "HardSwish": lambda x: x * np.clip(x / 6 + 0.5, 0, 1),
    "BitwiseNot": np.invert, "Not": np.logical_not,
})

# Binary arithmetic and bitwise ops: ONNX requires equal input dtypes (numpy broadcasting).
_register({
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
    "BitwiseAnd": np.bitwise_and, "BitwiseOr": np.bitwise_or, "BitwiseXor": np.bitwise_xor,
})


def _results_bool(fn):
    """Wrap a predicate ufunc: lifted inputs, bool result (object arrays compare as strings)."""

    def op(*xs):
        with np.errstate(all="ignore"):
            return np.asarray(fn(*map(_lift, xs)), dtype=bool)

    return op


_register({
    "Equal": np.equal, "Less": np.less, "LessOrEqual": np.less_equal, "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal, "And": np.logical_and, "Or": np.logical_or,
    "Xor": np.logical_xor, "IsNaN": np.isnan,
}, wrap=_results_bool)


@reference("IsInf")
def is_inf(x, *, detect_negative=1, detect_positive=1):
    x = _lift(x)
    return np.isinf(x) & (((x > 0) & bool(detect_positive)) | ((x < 0) & bool(detect_negative)))


@reference("Div")
@_keeps_dtype
def div(a, b):
    """Integer division truncates toward zero (C semantics), not toward -inf as numpy's //."""
    if a.dtype.kind not in "iu":
        return np.true_divide(a, b)
    q = np.floor_divide(a, b)
    if a.dtype.kind == "i":
        q = q + ((np.remainder(a, b) != 0) & ((a < 0) ^ (b < 0))).astype(q.dtype)
    return q


@reference("Pow")
def pow_(a, b):
    """The result has the base's dtype whatever the exponent's (ints, floats mixed freely)."""
    base, exponent = _lift(a), _lift(b)
    if base.dtype.kind in "iu" and exponent.dtype.kind in "iu" and np.any(exponent < 0):
        base = base.astype(np.float64)  # numpy refuses negative integer powers of integers
    with np.errstate(all="ignore"):
        return np.asarray(np.power(base, exponent)).astype(a.dtype)


@reference("Mod")
@_keeps_dtype
def mod(a, b, *, fmod=0):
    """fmod=0: the remainder takes the divisor's sign (Python); fmod=1: the dividend's (C)."""
    return np.fmod(a, b) if fmod else np.mod(a, b)


@reference("BitShift")
def bit_shift(x, shift, *, direction):
    """Shifts by a negative amount or by at least the bit width give 0 (or -1 for a negative
    signed input shifted right), rather than C's undefined behaviour; left shifts wrap."""
    x, shift = np.broadcast_arrays(x, shift)
    bits = x.dtype.itemsize * 8
    valid = (shift >= 0) & (shift < bits)
    amount = np.where(valid, shift, 0).astype(x.dtype)
    if direction == "RIGHT":
        out = np.right_shift(x, amount)
        fill = np.where(x < 0, -1, 0) if x.dtype.kind == "i" else 0
    else:  # shift the unsigned view so signed overflow wraps instead of being undefined
        unsigned = np.dtype(f"u{x.dtype.itemsize}")
        out = np.left_shift(x.view(unsigned), amount.view(unsigned)).view(x.dtype)
        fill = 0
    return np.where(valid, out, fill).astype(x.dtype)


# ---------------------------------------------------------------- variadic ops (numpy broadcasting)

def _variadic(ufunc):
    @_keeps_dtype
    def op(*xs):
        return functools.reduce(ufunc, xs)

    return op


reference("Max")(_variadic(np.maximum))
reference("Min")(_variadic(np.minimum))
reference("Sum")(_variadic(np.add))


@reference("Mean")
@_keeps_dtype
def mean(*xs):
    return functools.reduce(np.add, xs) / len(xs)


@reference("Where")
def where(condition, x, y):
    return np.asarray(np.where(condition, x, y)).astype(x.dtype, copy=False)


@reference("Clip")
@_keeps_dtype
def clip(x, lo=None, hi=None, *, min=None, max=None):  # noqa: A002 (ONNX attribute names)
    """Bounds are attributes before opset 11 and optional inputs from 11 on; a missing bound
    does not clip. When min > max every element becomes max, as ONNX specifies."""
    lo = min if lo is None else lo
    hi = max if hi is None else hi
    if lo is not None:
        x = np.maximum(x, lo)
    if hi is not None:
        x = np.minimum(x, hi)
    return x


@reference("Identity")
def identity(x):
    return (x,)  # a tuple, so a sequence value (a list) stays one output


# ---------------------------------------------------------------- activations with attributes

@reference("LeakyRelu")
@_keeps_dtype
def leaky_relu(x, *, alpha=0.01):
    return np.where(x >= 0, x, x * alpha)


@reference("PRelu")
@_keeps_dtype
def prelu(x, slope):
    return np.where(x >= 0, x, x * slope)


@reference("ThresholdedRelu")
@_keeps_dtype
def thresholded_relu(x, *, alpha=1.0):
    return np.where(x > alpha, x, 0)


@reference("Elu")
@_keeps_dtype
def elu(x, *, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(x))


@reference("Selu")
@_keeps_dtype
def selu(x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    return gamma * np.where(x > 0, x, alpha * np.expm1(x))


@reference("Celu")
@_keeps_dtype
def celu(x, *, alpha=1.0):
    return np.maximum(x, 0) + np.minimum(0, alpha * np.expm1(x / alpha))


@reference("Gelu")
@_keeps_dtype
def gelu(x, *, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)).astype(x.dtype))


@reference("HardSigmoid")
@_keeps_dtype
def hard_sigmoid(x, *, alpha=0.2, beta=0.5):
    return np.clip(alpha * x + beta, 0, 1)


@reference("Swish")
@_keeps_dtype
def swish(x, *, alpha=1.0):
    return x / (1 + np.exp(-alpha * x))


@reference("Shrink")
@_keeps_dtype
def shrink(x, *, bias=0.0, lambd=0.5):
    return np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0))


# ---------------------------------------------------------------- casting and quantization

_FLOAT8 = frozenset(np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                          ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz))
_NARROW_INTS = frozenset(np.dtype(t) for t in (ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2))


def _np_dtype(to) -> np.dtype:
    """numpy dtype of an ONNX element type (an enum int, or a name as in Cast-1's ``to``).

    onnx's own table is used because it covers every type Cast may name, including those
    dcopt does not carry through graphs (float4e2m1, int2, float8e8m0).
    """
    if isinstance(to, str):
        to = TensorProto.DataType.Value(to.upper())
    return np.dtype(helper.tensor_dtype_to_np_dtype(to))


def _parse_strings(x, dtype):
    """Strings to numbers: ints parse exactly, everything else via float ('INF', 'NaN' included)."""
    texts = [s.decode() if isinstance(s, bytes) else str(s) for s in x.ravel()]
    if dtype.kind in "iu":
        values = [int(t) if t.lstrip("+-").isdigit() else int(float(t)) for t in texts]
        return np.array(values, dtype=dtype).reshape(x.shape)
    return np.array([float(t) for t in texts], dtype=np.float64).astype(dtype).reshape(x.shape)


def cast_array(x, dtype, saturate=1, round_mode="up"):
    """Convert ``x`` to ``dtype`` with ONNX Cast semantics.

    Floats round to nearest even. ``saturate`` matters for float8 targets: values beyond the
    type's range become its largest finite value (±inf too) instead of inf or NaN.
    """
    dtype = np.dtype(dtype)
    if dtype == object:
        return x.astype(object) if x.dtype == object else x.astype(str).astype(object)
    if x.dtype == object or x.dtype.kind in "US":
        return _parse_strings(x, dtype)
    if dtype == np.dtype(ml_dtypes.float8_e8m0fnu):
        return numpy_helper.to_float8e8m0(_lift(x), bool(saturate), round_mode).astype(dtype)
    if dtype in _FLOAT8 and saturate and x.dtype.kind in "fV":
        limit = float(ml_dtypes.finfo(dtype).max)
        x = np.clip(_lift(x), -limit, limit)
    with np.errstate(all="ignore"):
        return x.astype(dtype)


@reference("Cast")
def cast(x, *, to, saturate=1, round_mode="up"):
    return cast_array(x, _np_dtype(to), saturate, round_mode)


@reference("CastLike")
def cast_like(x, like, *, saturate=1, round_mode="up"):
    return cast_array(x, like.dtype, saturate, round_mode)


@reference("BitCast")
def bit_cast(x, *, to):
    """Reinterpret the bytes of each element as ``to``; both types must be equally wide."""
    dtype = _np_dtype(to)
    if dtype == object or x.dtype == object or dtype.itemsize != x.dtype.itemsize:
        raise ValueError(f"BitCast needs two non-string types of equal width, got {x.dtype} -> {dtype}")
    return x.view(dtype)


def _along_axis(param, x, axis, block_size):
    """Shape a scale or zero point to broadcast against ``x``: per tensor (one value), per axis
    (1-D, length x.shape[axis]) or blocked (x's shape with ceil(D/block_size) along axis)."""
    if param.size == 1 and not block_size:
        return param.reshape(())
    axis = axis % x.ndim
    if block_size:
        return np.repeat(param, block_size, axis=axis).take(np.arange(x.shape[axis]), axis=axis)
    shape = [1] * x.ndim
    shape[axis] = param.size
    return param.reshape(shape)


@reference("QuantizeLinear")
def quantize_linear(x, scale, zero_point=None, *, axis=1, saturate=1, block_size=0, output_dtype=0, precision=0):
    """y = saturate(round_half_even(x / scale) + zero_point); the zero point's dtype (else
    ``output_dtype``, else uint8) is the result's. The division runs in ``precision`` if set,
    else in the scale's dtype."""
    target = zero_point.dtype if zero_point is not None else _np_dtype(output_dtype) if output_dtype else np.dtype(np.uint8)
    scale = _along_axis(scale, x, axis, block_size)
    work = _np_dtype(precision) if precision else scale.dtype
    with np.errstate(all="ignore"):
        q = _lift(np.asarray(x.astype(work) / scale.astype(work))).astype(np.float64)
        zp = 0.0 if zero_point is None else _along_axis(zero_point, x, axis, block_size).astype(np.float64)
        if target.kind in "iu" or target in _NARROW_INTS:
            info = ml_dtypes.iinfo(target)
            return np.clip(np.rint(q) + zp, info.min, info.max).astype(target)
        return cast_array(q + zp, target, saturate)  # float8 and float4 targets round to nearest even


@reference("DequantizeLinear")
def dequantize_linear(x, scale, zero_point=None, *, axis=1, block_size=0, output_dtype=0):
    """y = (x - zero_point) * scale, computed in float32; result dtype is ``output_dtype`` or the scale's."""
    values = x.astype(np.float32)
    if zero_point is not None:
        values = values - _along_axis(zero_point, x, axis, block_size).astype(np.float32)
    y = values * _lift(_along_axis(scale, x, axis, block_size)).astype(np.float32)
    return y.astype(_np_dtype(output_dtype) if output_dtype else scale.dtype)


@reference("DynamicQuantizeLinear")
def dynamic_quantize_linear(x):
    """uint8 quantization over the range of x widened to include 0; returns (y, scale, zero point)."""
    hi = np.float32(max(0.0, float(np.max(x)) if x.size else 0.0))
    lo = np.float32(min(0.0, float(np.min(x)) if x.size else 0.0))
    scale = np.float32((hi - lo) if hi != lo else 1.0) / np.float32(255)
    zero_point = np.rint(np.clip(np.float32(0) - lo / scale, 0, 255))
    y = np.clip(np.rint(x / scale) + zero_point, 0, 255).astype(np.uint8)
    return y, np.asarray(scale, dtype=x.dtype), np.asarray(zero_point, dtype=np.uint8)
