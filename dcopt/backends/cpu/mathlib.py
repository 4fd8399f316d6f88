"""Scalar math that LLVM can vectorize, for generated kernels, with IEEE results at the edges.

Why: without Intel SVML (absent here: ``numba -s`` says ``SVML State: False``; PyPI's llvmlite is
not SVML-patched) numba lowers ``np.exp``/``np.tanh``/``math.erf`` on a float32 to a scalar libm
call, which blocks loop vectorization. Measured on this machine (400k float32, one core): libm
``expf`` loop 0.74 ms, the polynomial :func:`fexp` below 0.047 ms (zmm code), max relative error
1.2e-7. Tanh and erf are built on it. Every function is ``inline='always'`` so
it melts into the caller's loop body.

Edges are part of the contract (the reference executor is numpy, and compiled results must match
it at large magnitudes, not only on randn): ``fexp`` overflows to ``inf`` above ~88.72, returns
the exact subnormal results down to ~-103.97 and 0 below, and propagates NaN. It scales by 2**n
exactly (:func:`_scale`: AVX-512's ``vscalefps``, or integer operations on the exponent bits
elsewhere) -- an earlier version clamped its argument to [-87, 88] and returned finite values
where numpy gives inf (Softplus(100) came out as 88.0).

``fmaxp``/``fminp`` are ``np.maximum``/``np.minimum``: NaN in either argument gives NaN (Python's
``max`` in numba keeps whichever operand the comparison picks, so ``max(nan, 0)`` was 0).

Half and bfloat16 storage: numba has no float16 arithmetic on the CPU, so such arrays are handed
to kernels as ``uint16`` views and converted on load/store: :func:`h2f`/:func:`f2h` are LLVM's
``fpext``/``fptrunc`` on ``half`` (one ``vcvtph2ps``/``vcvtps2ph`` with F16C, round to nearest
even), :func:`bf2f`/:func:`f2bf` shift the bits (round to nearest even, NaN kept quiet).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from dcopt.kernels.keys import host_has

#: Fast-math flags that keep IEEE inf/NaN semantics (no ``nnan``/``ninf``) but allow
#: reassociation (vectorized reductions) and contraction (FMA). Not ``arcp``: with it LLVM turns
#: ``1 / sqrt(x)`` into a reciprocal-root estimate that gives NaN at 0 and at inf (numpy: inf
#: and 0) and 0.49999997 for 1/sqrt(4). Not ``afn``: with it LLVM rewrites a float power with a
#: narrow integer exponent into ``powi``, whose runtime routine (``__powidf2``) numba's JIT does
#: not link -- the process aborts; the transcendental functions kernels use are our own anyway.
FASTMATH = set({"nsz", "contract", "reassoc"})

f32 = np.float32


@intrinsic
def _bits_to_f32(typingctx, x):
    """Reinterpret an int32 as float32 (a bitcast, not a conversion)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _f32_to_bits(typingctx, x):
    """Reinterpret a float32 as uint32."""
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def h2f(typingctx, x):
    """IEEE half (stored as uint16) -> float32."""
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return sig, codegen


@intrinsic
def _f2h(typingctx, x):
    sig = types.uint16(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return sig, codegen


@njit(inline="always")
def f2h(x):
    """float (any width) -> IEEE half bits (uint16), round to nearest even."""
    return _f2h(np.float32(x))


@njit(inline="always")
def bf2f(x):
    """bfloat16 bits (uint16) -> float32."""
    return _bits_to_f32(np.int32(np.uint32(x) << np.uint32(16)))


@njit(inline="always")
def f2bf(x):
    """float -> bfloat16 bits (uint16): round to nearest even; NaN stays a quiet NaN."""
    v = np.float32(x)
    bits = _f32_to_bits(v)
    if v != v:
        return np.uint16((bits >> np.uint32(16)) | np.uint32(0x40))
    bits = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return np.uint16(bits >> np.uint32(16))


_LOG2E = f32(1.4426950408889634)
_LN2_HI, _LN2_LO = f32(0.693359375), f32(-2.12194440e-4)
_P = tuple(f32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                            1.6666665459e-1, 5.0000001201e-1))
_ONE, _HALF, _TWO, _ZERO = f32(1.0), f32(0.5), f32(2.0), f32(0.0)
# Beyond these exp is inf / rounds to 0 in float32.
_XMAX, _XMIN = f32(89.0), f32(-104.0)
_I = np.int32


@intrinsic
def _ldexp(typingctx, p, k):
    """LLVM's ``ldexp`` (p * 2**k, correctly rounded, subnormals and inf included): in a loop it
    vectorizes to AVX-512's ``vscalefps``, one instruction."""
    sig = types.float32(types.float32, types.int32)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.FloatType(), [ir.FloatType(), ir.IntType(32)])
        return builder.call(builder.module.declare_intrinsic("llvm.ldexp.f32.i32", fnty=fnty), args)

    return sig, codegen


#: Whether :func:`_scale` is one ``vscalefps`` (AVX-512 hosts); elsewhere LLVM would lower
#: ``ldexp`` to a scalar libm call per element, so the integer form below is used. (The host
#: CPU is part of every kernel's store key, so the two never mix.)
_VSCALEF = host_has("avx512f")


@njit(inline="always")
def _scale(p, k):
    """p * 2**k for p in [0.5, 2) and k in [-150, 128], exactly as ``ldexp``: on AVX-512 hosts
    ``ldexp`` itself (``vscalefps``; ``fexp`` over 300k float32 took 90 us with the integer form
    and 33 us with it), elsewhere :func:`_scale_bits`. A test checks the two agree bitwise."""
    if _VSCALEF:
        return _ldexp(p, k)
    return _scale_bits(p, k)


@njit(inline="always")
def _scale_bits(p, k):
    """p * 2**k by adding k to the exponent bits: a float product chain
    (``p * 2**64 * 2**64``) was reassociated under fast-math into ``p * inf``. Exponents past
    254 give inf. A result below the normal range is built without a float operation that
    underflows: the significand placed at exponent ``k + 149`` (a normal float, since ``fexp``
    clamps k >= -150, whose value is the subnormal's integer bits) is rounded to nearest even by
    ``rint`` and reinterpreted. A multiply that underflows costs a microcode assist on Intel
    cores (about 150 cycles per vector): a masked softmax, whose exp(-1e30) lanes took that path,
    ran 9x slower."""
    pb = _I(_f32_to_bits(p))
    e = ((pb >> _I(23)) & _I(255)) + k
    normal = _bits_to_f32(pb + (k << _I(23)))
    tiny = _bits_to_f32(_I(np.rint(_bits_to_f32(pb + ((k + _I(149)) << _I(23))))))
    y = normal if e >= _I(1) else tiny
    return y if e < _I(255) else f32(np.inf)


@njit(inline="always", fastmath=FASTMATH)
def fexp(x):
    """exp(x) for float32: Cephes-style range reduction, a degree-6 polynomial, and an exact
    scale by 2**n (:func:`_scale`) that reaches inf and the subnormals where numpy does."""
    c = min(max(x, _XMIN), _XMAX)
    n = np.floor(c * _LOG2E + _HALF)
    r = c - n * _LN2_HI - n * _LN2_LO
    p = ((((_P[0] * r + _P[1]) * r + _P[2]) * r + _P[3]) * r + _P[4]) * r + _P[5]
    p = p * (r * r) + r + _ONE
    y = _scale(p, _I(n))
    return y if x == x else x


_LOG_P = tuple(f32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                                 1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                                 3.3333331174e-1))
_SQRTHF = f32(0.707106781186547524)
_MIN_NORMAL = f32(1.17549435e-38)
_TWO_23 = f32(8388608.0)


@njit(inline="always", fastmath=FASTMATH)
def flog(x):
    """log(x) for float32 (Cephes logf: mantissa in [sqrt(1/2), sqrt(2)), degree-9 polynomial),
    vectorizable -- numba's ``np.log`` is a scalar libm call. Subnormal inputs are scaled by
    2**23 first; log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, NaN stays NaN, as numpy."""
    tiny = x < _MIN_NORMAL
    v = x * _TWO_23 if tiny else x
    bits = _I(_f32_to_bits(v))
    e = f32(((bits >> _I(23)) & _I(255)) - _I(126)) - (f32(23.0) if tiny else _ZERO)
    m = _bits_to_f32((bits & _I(0x007FFFFF)) | _I(0x3F000000))
    small = m < _SQRTHF
    e = e - _ONE if small else e
    m = (m + m - _ONE) if small else (m - _ONE)
    z = m * m
    y = _LOG_P[0]
    for c in _LOG_P[1:]:
        y = y * m + c
    y = y * m * z
    y = y + f32(-2.12194440e-4) * e
    y = y - _HALF * z
    r = m + y + f32(0.693359375) * e
    r = -f32(np.inf) if x == _ZERO else r
    r = f32(np.nan) if x < _ZERO else r
    r = x if (x != x or x == f32(np.inf)) else r
    return r


_SQRT2_M1 = f32(0.41421356237309503)
_SQRTHF_M1 = f32(-0.29289321881345254)


@njit(inline="always", fastmath=FASTMATH)
def flog1p(x):
    """log(1 + x) for float32, vectorizable (numba's ``np.log1p`` is a scalar libm call: it kept
    Softplus and Mish kernels from vectorizing). For x in [sqrt(1/2) - 1, sqrt(2) - 1] the
    :func:`flog` polynomial is applied to x itself, so 1 + x is never rounded (Cephes log1pf);
    elsewhere ``flog(1 + x)``, where rounding 1 + x costs at most half an ulp of a result at least
    0.34 in magnitude. -1 gives -inf, below -1 NaN, inf and NaN pass through, as numpy."""
    z = x * x
    y = _LOG_P[0]
    for c in _LOG_P[1:]:
        y = y * x + c
    y = y * x * z
    near = x + (y - _HALF * z)
    return near if (x >= _SQRTHF_M1 and x <= _SQRT2_M1) else flog(_ONE + x)


@njit(inline="always", fastmath=FASTMATH)
def fpow_pos(x, y):
    """x**y for x >= 0 (bases of normalizations and LRN): exp(y * log(x)) with the IEEE ends
    (0**y, inf**y, x**0) as ``pow`` gives them; negative x gives NaN (not pow's integer-exponent
    cases: callers use it only where the base is non-negative)."""
    r = fexp(y * flog(x))
    r = _ONE if y == _ZERO else r
    return r


@njit(inline="always", fastmath=FASTMATH)
def ftanh(x):
    """tanh via exp; for |x| < 0.01 the odd Taylor series keeps the relative error small."""
    if abs(x) < f32(0.01):
        return x - x * x * x * f32(1.0 / 3.0)
    return _ONE - _TWO / (fexp(_TWO * x) + _ONE)


_ERF_A = tuple(f32(c) for c in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429))
_ERF_P = f32(0.3275911)
_ERF_CLAMP = f32(4.0)
_ERF_SMALL = f32(0.125)
_TWO_OVER_SQRT_PI = f32(1.1283791670955126)


@njit(inline="always", fastmath=FASTMATH)
def ferf(x):
    """erf(x): the Maclaurin series below |x| = 0.125 (relative error < 1e-8 there, where the
    absolute error of the rational form would be a large relative one), Abramowitz & Stegun
    7.1.26 above (absolute error < 1.5e-7). |x| is clamped at 4, where erf is 1 in float32:
    beyond it exp(-x*x) times the polynomial goes subnormal, and subnormal arithmetic made a
    BERT GELU kernel 5x slower."""
    a = min(abs(x), _ERF_CLAMP)
    if a < _ERF_SMALL:
        x2 = x * x
        return _TWO_OVER_SQRT_PI * x * (_ONE - x2 * (f32(1.0 / 3.0) - x2 * (f32(0.1) - x2 * f32(1.0 / 42.0))))
    t = _ONE / (_ONE + _ERF_P * a)
    y = _ONE - (((((_ERF_A[4] * t + _ERF_A[3]) * t + _ERF_A[2]) * t + _ERF_A[1]) * t + _ERF_A[0]) * t) * fexp(-a * a)
    y = y if x >= _ZERO else -y
    return y if x == x else x


def _float_minmax(name: str):
    """LLVM's ``maxnum``/``minnum`` on two floats of one width: the larger/smaller operand, the
    other one if an operand is NaN. A register max/min reduction written with them vectorizes
    (a compare-and-select one does not without ``nnan``: 0.053 -> 0.013 ms on 512 rows of 128);
    the reduction tracks NaN with a second ``maxnum`` of 0/1 flags."""

    @intrinsic
    def minmax(typingctx, a, b):
        if a not in (types.float32, types.float64) or a != b:
            return None
        sig = a(a, a)

        def codegen(context, builder, signature, args):
            t = args[0].type
            fn = builder.module.declare_intrinsic(f"llvm.{name}", [t], ir.FunctionType(t, [t, t]))
            return builder.call(fn, args)

        return sig, codegen

    return minmax


fmaxnum = _float_minmax("maxnum")
fminnum = _float_minmax("minnum")


@njit(inline="always")
def fmaxp(a, b):
    """np.maximum: NaN in either argument gives NaN."""
    return a if (a > b or a != a) else b


@njit(inline="always")
def fminp(a, b):
    """np.minimum: NaN in either argument gives NaN."""
    return a if (a < b or a != a) else b


@intrinsic
def opaque_count(typingctx, n):
    """``n``, passed through an empty inline-asm statement, so LLVM does not know the value: a
    loop ``range(0, opaque_count(120))`` is vectorized for an unknown trip count. Why: the
    LLVM in llvmlite 0.49/0.50 wheels is built with assertions, and its loop vectorizer aborts the
    process ("VPlan cost model and legacy cost model disagreed", LLVM issue 156091, assert
    removed upstream in PR 190838) on a ``maxnum``/``minnum`` reduction whose constant trip count
    is in 72..191 with a remainder of 8..15 after 16 lanes (found on znver4: ReduceMax of 120
    values). With the count hidden the same loop vectorizes and runs as fast (0.467 us for 4,096
    values either way); map codegen hides the trip counts of those reductions only."""
    if not isinstance(n, types.Integer):
        return None
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.int64)
        i64 = ir.IntType(64)
        return builder.asm(ir.FunctionType(i64, [i64]), "", "=r,0", [value], side_effect=False, name="count")

    return sig, codegen
