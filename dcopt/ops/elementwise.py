"""Reference semantics of ONNX's elementwise ops: math, logic, comparisons, activations, casts.

**One definition per op.** Most ops here are one line of :data:`TABLE`: a tasklet expression
(the language of :mod:`dcopt.ir.tasklet`) over the op's inputs ``a, b, c, ...`` with
``{attr}`` placeholders, and the dtypes a kernel may take it in. That line is the op's meaning
three times over: the reference implementation below evaluates the tasklet with numpy on the
broadcast inputs, the shape rule broadcasts the input shapes, and the expansion
(:mod:`dcopt.passes.expansions.elementwise`) puts the same tasklet into a map. Adding an
elementwise op is adding a line (or calling :func:`define`).

Shared rules, applied to every table op:

* float16 and the inputs numpy has no arithmetic for (bfloat16, float8, int4: ml_dtypes types)
  are lifted to float32, which holds them exactly, and the result is rounded once, at the end
  (what a kernel does: it computes half types in float32);
* the result dtype is ONNX's: the first input's (``result="a"``), another input's, or bool;
  numpy's promotion inside the tasklet (float64 for ``int / int``, NEP 50 weak literals) never
  leaks out, because the result is cast to that dtype (``astype``: NaN and out-of-range floats
  into ints as numpy converts them);
* floating point exceptions are ignored: log(0) = -inf and friends are the specified results.

Some ops need more than one tasklet: ``by`` names what picks the variant -- an attribute
(Gelu's ``approximate``, Mod's ``fmod``, BitShift's ``direction``) or ``"kind"``, the dtype
kind of the inputs (integer Div truncates toward zero, float Div does not). Placeholders besides
attributes: ``{T}`` (the result dtype), ``{bits}`` (the first input's bit width) and, for
variadic ops, ``{args}``, ``{sum}``, ``{n}``.

Ops whose semantics are not one tasklet keep a hand-written reference, each saying why: Clip
(bounds are attributes or optional inputs by opset), Identity (sequences pass through), Cast,
CastLike, BitCast (strings, float8 saturation, byte views) and the Quantize ops (scales shaped
per tensor, axis or block; narrow targets).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import ml_dtypes
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from dcopt.ir.tasklet import parse_tasklet, run_numpy
from dcopt.ops.registry import reference
from dcopt.ops.shapes.registry import shape_rule

HALF = ("float16", "bfloat16")
FLOATS = HALF + ("float32", "float64")
SIGNED = ("int8", "int16", "int32", "int64")
UNSIGNED = ("uint8", "uint16", "uint32", "uint64")
INTS = SIGNED + UNSIGNED
NUMBERS = FLOATS + INTS
BOOLS = ("bool",)
ALL = NUMBERS + BOOLS

CONNECTORS = "abcdefghijklmnopqrstuvwxyz"


def _lift(x):
    """Arrays of ml_dtypes types (bfloat16, float8, int4) as float32, which holds them exactly;
    anything else unchanged."""
    if isinstance(x, np.ndarray) and x.dtype.kind == "V":
        return x.astype(np.float32)
    return x


def _lift_halves(x):
    """:func:`_lift`, and float16 as float32 too: a table op computes in float32 and rounds once,
    as the kernels do."""
    if isinstance(x, np.ndarray) and x.dtype == np.float16:
        return x.astype(np.float32)
    return _lift(x)


def _keeps_dtype(fn):
    """Wrap ``fn`` so it sees lifted inputs and its result gets the first input's dtype."""

    @functools.wraps(fn)
    def op(x, *args, **kwargs):
        with np.errstate(all="ignore"):
            result = fn(_lift(x), *map(_lift, args), **kwargs)
        return np.asarray(result).astype(x.dtype, copy=False)

    return op


def dtype_kind(dtypes: Sequence[str]) -> str:
    """What picks an op's variant by ``"kind"``: "float" if any input is a float, else "int"
    if any is a signed integer, else "uint", else "bool"."""
    for kind, group in (("float", FLOATS), ("int", SIGNED), ("uint", UNSIGNED)):
        if any(d in group or (kind == "float" and d.startswith("float")) for d in dtypes):
            return kind
    return "bool"


def literal(value) -> str:
    """An attribute value as tasklet text: floats read back exactly (negatives parenthesized),
    ints and bools as integers."""
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return str(int(value))
    text = "inf" if value == math.inf else "(-inf)" if value == -math.inf else repr(float(value))
    return f"({text})" if text.startswith("-") else text


@dataclass(frozen=True)
class Elementwise:
    """One elementwise op: tasklet expression(s), the dtypes kernels take, the result dtype.

    ``code``: the expression, or ``{variant key: expression}`` chosen by ``by`` (the values of
    the named selectors, space-separated; the lookup drops selectors from the right until a key
    matches, then tries ``"*"``). ``dtypes``: input dtypes an expansion accepts, for every input
    or per connector (``{"a": BOOLS, "*": ALL}``); the reference accepts any dtype numpy can
    compute in. ``result``: ``"bool"`` or the connector whose dtype the result has.
    ``variadic``: any number of inputs (``{args}``, ``{sum}``, ``{n}``). ``defaults``: attribute
    defaults for ops without an ONNX schema (custom domains)."""

    code: str | Mapping[str, str]
    dtypes: Sequence[str] | Mapping[str, Sequence[str]]
    result: str = "a"
    by: tuple[str, ...] = ()
    variadic: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def allowed(self, connector: str) -> tuple[str, ...]:
        if isinstance(self.dtypes, Mapping):
            return tuple(self.dtypes.get(connector, self.dtypes.get("*", ())))
        return tuple(self.dtypes)

    def result_dtype(self, dtypes: Sequence[str]) -> str:
        return "bool" if self.result == "bool" else dtypes[CONNECTORS.index(self.result)]

    def template(self, attr: Callable[[str], Any], dtypes: Sequence[str]) -> str:
        """The expression variant for these attributes and input dtypes (KeyError if none)."""
        if isinstance(self.code, str):
            return self.code
        parts = [dtype_kind(dtypes) if s == "kind" else str(attr(s)) for s in self.by]
        for k in range(len(parts), 0, -1):
            key = " ".join(parts[:k])
            if key in self.code:
                return self.code[key]
        if "*" in self.code:
            return self.code["*"]
        raise KeyError(f"no variant for {' '.join(parts)!r} (variants: {', '.join(self.code)})")

    def expression(self, attr: Callable[[str], Any], dtypes: Sequence[str], result: str | None = None) -> str:
        """The tasklet expression for inputs of ``dtypes`` (connectors ``a, b, ...`` in order),
        placeholders filled: attributes through ``attr(name)``, ``{T}`` = ``result`` (default:
        the result dtype), ``{bits}``, and the variadic ones."""
        template = self.template(attr, dtypes)
        conns = CONNECTORS[:len(dtypes)]
        derived = {"T": lambda: result or self.result_dtype(dtypes), "n": lambda: str(len(dtypes)),
                   "args": lambda: ", ".join(conns if len(conns) > 1 else conns * 2),
                   "sum": lambda: " + ".join(conns), "bits": lambda: str(8 * _itemsize(dtypes[0]))}
        names = {part.split("}")[0] for part in template.split("{")[1:]}
        return template.format(**{n: derived[n]() if n in derived else literal(attr(n)) for n in names})

    def attr_getter(self, attrs: Mapping[str, Any], op: str) -> Callable[[str], Any]:
        def attr(name):
            if name in attrs:
                return attrs[name]
            if name in self.defaults:
                return self.defaults[name]
            raise KeyError(f"{op} needs attribute '{name}'")

        return attr


def _itemsize(dtype: str) -> int:
    return np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype).itemsize


# ------------------------------------------------------------------------- the tasklet table

#: signed integer division truncating toward zero (C); x // 0 is 0 as numpy gives it, and
#: INT_MIN / -1 wraps to INT_MIN (numpy's result), written as a negation: numba's // gives 0
_DIV_SIGNED = "-a if b == -1 else a // b + (1 if (a % b != 0 and (a < 0) != (b < 0)) else 0)"
#: integer powers stay integers (wrapping); a negative exponent takes numpy's float64 path,
#: written out: 0 -> inf (then the integer numpy converts inf to), +-1 -> +-1, the rest -> 0
_POW_INT = ("pow(a, max(b, 0)) if b >= 0 else as_{T}(inf if as_float64(a) == 0.0 else (1.0 if as_float64(a) == 1.0 "
            "else ((-1.0 if b % 2 != 0 else 1.0) if as_float64(a) == -1.0 else 0.0)))")
#: C's remainder (sign of the dividend) from Python's (sign of the divisor); x fmod 0 is 0
_FMOD_INT = "a % b - b if (a % b != 0 and (a % b < 0) != (a < 0)) else a % b"
#: shifts by a negative amount or by the bit width or more give 0 (-1 for negative signed
#: values shifted right) instead of C's undefined behaviour; left shifts wrap
_SHIFTS = {"RIGHT int": "a >> b if (b >= 0 and b < {bits}) else (-1 if a < 0 else 0)",
           "RIGHT uint": "a >> b if b < {bits} else 0",
           "LEFT int": "a << b if (b >= 0 and b < {bits}) else 0",
           "LEFT uint": "a << b if b < {bits} else 0"}
_SOFTPLUS = "max(a, 0.0) + log1p(exp(-abs(a)))"  # log(1 + e^a) without overflow: numpy's logaddexp(a, 0)

E = Elementwise
TABLE: dict[tuple[str, str], Elementwise] = {("", op): entry for op, entry in {
    # unary math: the result has the input's dtype
    "Abs": E("abs(a)", NUMBERS), "Neg": E("-a", NUMBERS), "Relu": E("max(a, 0)", NUMBERS),
    "Exp": E("exp(a)", FLOATS), "Log": E("log(a)", FLOATS), "Sqrt": E("sqrt(a)", FLOATS),
    "Reciprocal": E("1.0 / a", FLOATS), "Tanh": E("tanh(a)", FLOATS), "Erf": E("erf(a)", FLOATS),
    "Sin": E("sin(a)", FLOATS), "Cos": E("cos(a)", FLOATS), "Tan": E("tan(a)", FLOATS),
    "Asin": E("asin(a)", FLOATS), "Acos": E("acos(a)", FLOATS), "Atan": E("atan(a)", FLOATS),
    "Sinh": E("sinh(a)", FLOATS), "Cosh": E("cosh(a)", FLOATS), "Asinh": E("asinh(a)", FLOATS),
    "Acosh": E("acosh(a)", FLOATS), "Atanh": E("atanh(a)", FLOATS),
    "Floor": E("floor(a)", FLOATS), "Ceil": E("ceil(a)", FLOATS), "Round": E("rint(a)", FLOATS),  # half to even
    "Sign": E({"float": "sign(a)", "*": "1 if a > 0 else (-1 if a < 0 else 0)"}, NUMBERS, by=("kind",)),
    # activations
    "Sigmoid": E("1.0 / (1.0 + exp(-a))", FLOATS),
    "Softplus": E(_SOFTPLUS, FLOATS),
    "Softsign": E("a / (1.0 + abs(a))", FLOATS),
    "Mish": E(f"a * tanh({_SOFTPLUS})", FLOATS),
    "HardSigmoid": E("max(0.0, min(1.0, {alpha} * a + {beta}))", FLOATS),
    "HardSwish": E("a * max(0.0, min(1.0, a / 6.0 + 0.5))", FLOATS),
    "LeakyRelu": E("a if a >= 0 else a * {alpha}", FLOATS),
    "PRelu": E("a if a >= 0 else a * b", NUMBERS),
    "ThresholdedRelu": E("a if a > {alpha} else 0.0", FLOATS),
    "Elu": E("a if a > 0 else {alpha} * expm1(a)", FLOATS),
    "Selu": E("{gamma} * (a if a > 0 else {alpha} * expm1(a))", FLOATS),
    "Celu": E("max(a, 0.0) + min(0.0, {alpha} * expm1(a / {alpha}))", FLOATS),
    "Gelu": E({"none": "0.5 * a * (1.0 + erf(a * 0.7071067811865476))",
               "tanh": "0.5 * a * (1.0 + tanh(0.7978845608028654 * (a + 0.044715 * a * a * a)))"},
              FLOATS, by=("approximate",)),
    "Swish": E("a / (1.0 + exp(-{alpha} * a))", FLOATS),
    "Shrink": E("a + {bias} if a < -{lambd} else (a - {bias} if a > {lambd} else 0.0)", NUMBERS),
    # binary arithmetic (ONNX: equal input dtypes, numpy broadcasting)
    "Add": E("a + b", NUMBERS), "Sub": E("a - b", NUMBERS), "Mul": E("a * b", NUMBERS),
    "Div": E({"float": "a / b", "int": _DIV_SIGNED, "uint": "a // b"}, NUMBERS, by=("kind",)),
    "Pow": E({"float": "pow(a, b)", "int": _POW_INT, "uint": _POW_INT}, NUMBERS, by=("kind",)),
    "Mod": E({"0": "a % b", "1 float": "fmod(a, b)", "1 int": _FMOD_INT, "1 uint": "a % b"}, NUMBERS,
             by=("fmod", "kind")),  # fmod=0: the remainder has the divisor's sign (Python), 1: the dividend's (C)
    "BitShift": E(_SHIFTS, INTS, by=("direction", "kind")),
    "BitwiseAnd": E("a & b", INTS), "BitwiseOr": E("a | b", INTS), "BitwiseXor": E("a ^ b", INTS),
    "BitwiseNot": E("~a", INTS),
    # variadic (numpy broadcasting over all inputs); an integer mean divides the wrapped sum
    "Max": E("max({args})", NUMBERS, variadic=True), "Min": E("min({args})", NUMBERS, variadic=True),
    "Sum": E("{sum}", NUMBERS, variadic=True),
    "Mean": E({"float": "({sum}) / {n}", "*": "as_{T}({sum}) / {n}"}, NUMBERS, by=("kind",), variadic=True),
    # predicates and logic: bool results
    "Equal": E("a == b", ALL, "bool"), "Less": E("a < b", NUMBERS, "bool"),
    "LessOrEqual": E("a <= b", NUMBERS, "bool"), "Greater": E("a > b", NUMBERS, "bool"),
    "GreaterOrEqual": E("a >= b", NUMBERS, "bool"),
    "IsNaN": E("isnan(a)", FLOATS, "bool"),
    "IsInf": E("isinf(a) and ((a > 0 and {detect_positive}) or (a < 0 and {detect_negative}))", FLOATS, "bool"),
    "Not": E("not a", BOOLS), "And": E("a and b", BOOLS), "Or": E("a or b", BOOLS), "Xor": E("a != b", BOOLS),
    "Where": E("b if a else c", {"a": BOOLS, "*": ALL}, "b"),
}.items()}
del E


def evaluate(entry: Elementwise, inputs: Sequence[np.ndarray], attrs: Mapping[str, Any], op: str = "op"):
    """An op of the table applied to numpy arrays: the tasklet run by numpy on the lifted,
    broadcast inputs, the result in the op's dtype."""
    dtypes = [_dtype_name(x.dtype) for x in inputs]
    lifted = [_lift_halves(np.asarray(x)) for x in inputs]
    code = entry.expression(entry.attr_getter(attrs, op), [_dtype_name(x.dtype) for x in lifted],
                            result=entry.result_dtype(dtypes))
    values = dict(zip(CONNECTORS, lifted))
    shape = np.broadcast_shapes(*(x.shape for x in lifted))
    result = run_numpy(parse_tasklet(f"out = {code}"), values)["out"]
    target = np.dtype(bool) if entry.result == "bool" else np.asarray(inputs[CONNECTORS.index(entry.result)]).dtype
    with np.errstate(all="ignore"):
        return np.array(np.broadcast_to(np.asarray(result), shape), dtype=target)


def _dtype_name(dtype: np.dtype) -> str:
    return "string" if dtype == object or dtype.kind in "US" else dtype.name


def _reference(op: str, entry: Elementwise):
    def run(*inputs, **attrs):
        return evaluate(entry, inputs, attrs, op)

    run.__name__ = run.__qualname__ = op
    run.__doc__ = f"{op}: the tasklet of its table line, run by numpy."
    return run


def _shape_rule(entry: Elementwise):
    def rule(ctx):
        """The inputs broadcast (numpy rules); the result dtype of the op's table line."""
        return ctx.tensor("bool" if entry.result == "bool" else ctx.dtype(CONNECTORS.index(entry.result)),
                          ctx.broadcast())

    return rule


def define(op: str, entry: Elementwise, domain: str = "") -> Elementwise:
    """Add an op to the table and register its reference and its shape rule (the expansion
    module's :func:`~dcopt.passes.expansions.elementwise.define_elementwise` registers its
    expansion too)."""
    TABLE[(domain, op)] = entry
    reference(op, domain=domain)(_reference(op, entry))
    shape_rule(op, domain=domain)(_shape_rule(entry))
    return entry


for (_domain, _op), _entry in list(TABLE.items()):
    define(_op, _entry, _domain)

#: The default-domain ops the table defines (one tasklet each).
TASKLET_OPS = frozenset(op for domain, op in TABLE if domain == "")
#: Every op of this family computed one output element from the same element of its inputs
#: (broadcast): the table's and the hand-written ones below.
ELEMENTWISE_OPS = TASKLET_OPS | {"Clip", "Identity", "Cast", "CastLike", "QuantizeLinear", "DequantizeLinear"}


# ---------------------------------------------------------------- hand-written references

@reference("Clip")
@_keeps_dtype
def clip(x, lo=None, hi=None, *, min=None, max=None):  # noqa: A002 (ONNX attribute names)
    """Not one tasklet: bounds are attributes before opset 11 and optional inputs from 11 on,
    and a missing bound does not clip. When min > max every element becomes max, as ONNX
    specifies."""
    lo = min if lo is None else lo
    hi = max if hi is None else hi
    if lo is not None:
        x = np.maximum(x, lo)
    if hi is not None:
        x = np.minimum(x, hi)
    return x


@reference("Identity")
def identity(x):
    """Not a tasklet: a sequence value (a list) or an optional passes through unchanged."""
    return (x,)  # a tuple, so a sequence value stays one output


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
    with np.errstate(all="ignore"):  # infinite inputs: an infinite scale, NaN quotients
        zero_point = np.rint(np.clip(np.float32(0) - lo / scale, 0, 255))
        y = np.clip(np.rint(x / scale) + zero_point, 0, 255).astype(np.uint8)
        return y, np.asarray(scale, dtype=x.dtype), np.asarray(zero_point, dtype=np.uint8)
