"""The scalar math generated kernels call (dcopt.backends.cpu.mathlib): accurate, and exact at the
edges where numpy is (inf, NaN, subnormals, signed zeros), vectorized by LLVM."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from numba import njit

from dcopt.backends.cpu.mathlib import FASTMATH, bf2f, f2bf, f2h, ferf, fexp, flog, fmaxp, fminp, ftanh, h2f

EDGES = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 1e-40, 3.4e38, -3.4e38, 88.72, 88.73, -87.3,
                  -103.9, -104.0, 1e-7, -1e-7], np.float32)


def _unary(fn):
    @njit(fastmath=FASTMATH)
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = fn(x[i])

    def call(x):
        out = np.empty_like(x)
        run(x, out)
        return out

    return call


def _check(got, want, rtol, atol=0.0):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got) & (got > 0), np.isinf(want) & (want > 0))
    np.testing.assert_array_equal(np.isinf(got) & (got < 0), np.isinf(want) & (want < 0))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite].astype(np.float64), want[finite], rtol=rtol, atol=atol)


def test_exp_is_exact_at_overflow_and_in_the_subnormals():
    x = np.concatenate([np.linspace(-110, 95, 100001), EDGES, EDGES * 100]).astype(np.float32)
    with np.errstate(all="ignore"):
        want = np.exp(x.astype(np.float64)).astype(np.float32).astype(np.float64)
    got = _unary(fexp)(x)
    normal = (np.abs(want) >= 1.18e-38) | ~np.isfinite(want)
    _check(got[normal], want[normal], rtol=4e-7)
    assert np.max(np.abs(got[~normal].astype(np.float64) - want[~normal])) <= 4 * 1.4e-45  # a few subnormal ulps


def test_log_matches_numpy_everywhere():
    x = np.concatenate([np.exp(np.linspace(-100, 88, 100001)), EDGES, np.abs(EDGES) * 100]).astype(np.float32)
    with np.errstate(all="ignore"):
        want = np.log(x.astype(np.float64)).astype(np.float32).astype(np.float64)
    _check(_unary(flog)(x), want, rtol=2e-7, atol=1e-6)


def test_tanh_and_erf_accuracy_and_edges():
    x = np.concatenate([np.linspace(-30, 30, 20001), EDGES, [1e-6, -1e-6, 0.12, -0.12]]).astype(np.float32)
    x64 = x.astype(np.float64)
    _check(_unary(ftanh)(x), np.tanh(x64), rtol=2e-5, atol=1e-7)
    with np.errstate(all="ignore"):
        erf = np.array([math.erf(v) if not math.isnan(v) else np.nan for v in x64])
    _check(_unary(ferf)(x), erf, rtol=2e-5, atol=5e-7)


@pytest.mark.parametrize("fn, ufunc", [(fmaxp, np.maximum), (fminp, np.minimum)])
def test_min_max_propagate_nan_like_numpy(fn, ufunc):
    @njit
    def run(a, b, out):
        for i in range(a.shape[0]):
            out[i] = fn(a[i], b[i])

    a = np.array([np.nan, 1.0, np.nan, -0.0, np.inf], np.float32)
    b = np.array([1.0, np.nan, np.nan, 0.0, -np.inf], np.float32)
    out = np.empty_like(a)
    run(a, b, out)
    np.testing.assert_array_equal(out, ufunc(a, b))


def test_half_and_bfloat16_conversions_round_to_nearest_even():
    values = np.concatenate([np.random.default_rng(0).standard_normal(2000) * 1e3, EDGES, [65504, 65520, 1e-8]])
    values = values.astype(np.float32)

    @njit
    def roundtrip(x, h, b):
        for i in range(x.shape[0]):
            h[i] = f2h(x[i])
            b[i] = f2bf(x[i])

    h, b = np.empty(values.size, np.uint16), np.empty(values.size, np.uint16)
    roundtrip(values, h, b)
    np.testing.assert_array_equal(h.view(np.float16), values.astype(np.float16))
    np.testing.assert_array_equal(b.view(ml_dtypes.bfloat16).astype(np.float32),
                                  values.astype(ml_dtypes.bfloat16).astype(np.float32))

    @njit
    def back(h, b, fh, fb):
        for i in range(h.shape[0]):
            fh[i] = h2f(h[i])
            fb[i] = bf2f(b[i])

    fh, fb = np.empty(values.size, np.float32), np.empty(values.size, np.float32)
    back(h, b, fh, fb)
    np.testing.assert_array_equal(fh, h.view(np.float16).astype(np.float32))
    np.testing.assert_array_equal(fb, b.view(ml_dtypes.bfloat16).astype(np.float32))


def test_maxnum_minnum_reductions_with_a_nan_flag_match_numpy():
    """The register max/min reduction generated kernels use (map_codegen): maxnum/minnum ignore
    NaN, a maxnum of 0/1 flags brings it back, as np.max/np.min propagate it."""
    from dcopt.backends.cpu.mathlib import fmaxnum, fminnum

    @njit(fastmath=FASTMATH)
    def reduce_rows(x, hi, lo):
        for r in range(x.shape[0]):
            big, small, flag = np.float32(-np.inf), np.float32(np.inf), np.float32(0)
            for p in range(x.shape[1]):
                v = x[r, p]
                big, small = fmaxnum(big, v), fminnum(small, v)
                flag = fmaxnum(flag, np.float32(1) if v != v else np.float32(0))
            hi[r] = np.float32(np.nan) if flag > 0 else big
            lo[r] = np.float32(np.nan) if flag > 0 else small

    x = np.random.default_rng(0).standard_normal((6, 37)).astype(np.float32) * 1e30
    x[1, 5], x[2, 0], x[3, -1], x[4, :] = np.nan, np.inf, -np.inf, np.nan
    hi, lo = np.empty(6, np.float32), np.empty(6, np.float32)
    reduce_rows(x, hi, lo)
    np.testing.assert_array_equal(hi, x.max(axis=1))
    np.testing.assert_array_equal(lo, x.min(axis=1))


@pytest.mark.parametrize("n", [72, 120, 191, 4096])
def test_max_reductions_hide_their_trip_count_and_stay_exact(n):
    """A maxnum reduction over a constant count in 72..191 aborted the process inside LLVM's
    vectorizer (an assertion of llvmlite's LLVM, on znver4); generated code hides the count."""
    from onnx import TensorProto, helper

    import dcopt
    from tests.conftest import make_model

    model = make_model([helper.make_node("ReduceMax", ["x"], ["y"], keepdims=0, axes=[1])],
                       [("x", TensorProto.FLOAT, [3, n])], [("y", TensorProto.FLOAT, [3])], opset=17)
    sess = dcopt.compile(model)
    assert "opaque_count(" in sess._built().program.kernels[next(iter(sess._built().program.kernels))]
    x = np.random.default_rng(0).standard_normal((3, n)).astype(np.float32)
    x[1, n // 2] = np.nan
    got = sess.run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, np.max(x, axis=1))


def test_both_forms_of_the_exponent_scale_agree_bitwise():
    """``_scale`` is ``ldexp`` (one ``vscalefps``) on AVX-512 hosts and integer exponent arithmetic
    elsewhere; the two must give the same bits for every p in [0.5, 2) and k fexp can pass, the
    subnormal results (k near -150), exact powers and the overflow to inf included."""
    from dcopt.backends.cpu import mathlib

    @njit(fastmath=FASTMATH)
    def both(p, k, a, b):
        for i in range(p.shape[0]):
            a[i] = mathlib._ldexp(p[i], k[i])
            b[i] = mathlib._scale_bits(p[i], k[i])

    rng = np.random.default_rng(0)
    ps = np.concatenate([np.float32([0.5, 1.0, np.nextafter(np.float32(2), np.float32(0)), 0.75, 1.5]),
                         rng.uniform(0.5, 2.0, 2000).astype(np.float32)])
    ks = np.arange(-150, 129, dtype=np.int32)
    p, k = (a.reshape(-1) for a in np.meshgrid(ps, ks))
    p, k = np.ascontiguousarray(p), np.ascontiguousarray(k)
    a, b = np.empty_like(p), np.empty_like(p)
    both(p, k, a, b)
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    assert (a == 0).any() and (a[a > 0] < np.finfo(np.float32).tiny).any() and np.isinf(a).any()
