"""Scalar math that LLVM can vectorize, for generated kernels.

Why: without Intel SVML (absent here: ``numba -s`` says ``SVML State: False``) numba lowers
``np.exp``/``np.tanh``/``math.erf`` on a float32 to a scalar libm call, which blocks loop
vectorization. Measured on this machine (400k float32, one core): libm ``expf`` loop 0.74 ms,
``np.exp`` 0.14 ms, the polynomial :func:`fexp` below 0.047 ms (zmm code), max relative error
1.2e-7. GELU/tanh/sigmoid are built on it. Every function is ``inline='always'`` so it melts
into the caller's loop body.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

#: Fast-math flags that keep IEEE inf/NaN semantics (no ``nnan``/``ninf``) but allow
#: reassociation (vectorized reductions), contraction (FMA) and approximate functions.
FASTMATH = set({"nsz", "arcp", "contract", "afn", "reassoc"})

f32 = np.float32


@intrinsic
def _bits_to_f32(typingctx, x):
    """Reinterpret an int32 as float32 (a bitcast, not a conversion)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


_LOG2E = f32(1.4426950408889634)
_LN2_HI, _LN2_LO = f32(0.693359375), f32(-2.12194440e-4)
_P = tuple(f32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                            1.6666665459e-1, 5.0000001201e-1))
_ONE, _HALF, _TWO, _ZERO = f32(1.0), f32(0.5), f32(2.0), f32(0.0)
_XMAX, _XMIN = f32(88.0), f32(-87.0)


@njit(inline="always", fastmath=FASTMATH)
def fexp(x):
    """exp(x) for float32: Cephes-style range reduction and a degree-6 polynomial."""
    x = min(max(x, _XMIN), _XMAX)
    n = np.floor(x * _LOG2E + _HALF)
    r = x - n * _LN2_HI - n * _LN2_LO
    p = ((((_P[0] * r + _P[1]) * r + _P[2]) * r + _P[3]) * r + _P[4]) * r + _P[5]
    p = p * (r * r) + r + _ONE
    return p * _bits_to_f32((np.int32(n) + np.int32(127)) << np.int32(23))


@njit(inline="always", fastmath=FASTMATH)
def fsigmoid(x):
    return _ONE / (_ONE + fexp(-x))


@njit(inline="always", fastmath=FASTMATH)
def ftanh(x):
    """tanh via exp; for |x| < 0.01 the odd Taylor series keeps the relative error small."""
    if abs(x) < f32(0.01):
        return x - x * x * x * f32(1.0 / 3.0)
    return _ONE - _TWO / (fexp(_TWO * x) + _ONE)


_ERF_A = tuple(f32(c) for c in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429))
_ERF_P = f32(0.3275911)
_ERF_CLAMP = f32(4.0)


@njit(inline="always", fastmath=FASTMATH)
def ferf(x):
    """erf(x), Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7). |x| is clamped at 4, where
    erf is 1 in float32: beyond it exp(-x*x) times the polynomial goes subnormal, and subnormal
    arithmetic made a BERT GELU kernel 5x slower."""
    a = min(abs(x), _ERF_CLAMP)
    t = _ONE / (_ONE + _ERF_P * a)
    y = _ONE - (((((_ERF_A[4] * t + _ERF_A[3]) * t + _ERF_A[2]) * t + _ERF_A[1]) * t + _ERF_A[0]) * t) * fexp(-a * a)
    return y if x >= _ZERO else -y


_SQRT1_2 = f32(0.7071067811865476)
_GELU_C = f32(0.7978845608028654)


@njit(inline="always", fastmath=FASTMATH)
def fgelu(x):
    return _HALF * x * (_ONE + ferf(x * _SQRT1_2))


@njit(inline="always", fastmath=FASTMATH)
def fgelu_tanh(x):
    return _HALF * x * (_ONE + ftanh(_GELU_C * (x + f32(0.044715) * x * x * x)))
