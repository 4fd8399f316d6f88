"""The backend's building blocks against the reference ops: library kernels (pooling, im2col,
depthwise conv), vectorizable math, dim collapsing and the buffer plan."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from numba import njit

from dcopt.backends.cpu import library
from dcopt.backends.cpu.mathlib import FASTMATH, ferf, fexp, fgelu, ftanh
from dcopt.backends.cpu.renderer import collapse
from dcopt.ops.nn import average_pool, conv, max_pool

CASES = [(k, s, p, hw) for k, s, p, hw in itertools.product([1, 2, 3, 7], [1, 2, 3], [0, 1, 3], [5, 8, 13])
         if p < k and (hw + 2 * p - k) // s + 1 > 0]


@pytest.mark.parametrize("k, s, p, hw", CASES)
def test_window_kernels_match_reference(k, s, p, hw):
    rng = np.random.default_rng(k * 100 + s * 10 + p)
    x = rng.standard_normal((1, 4, hw, hw)).astype(np.float32)
    oh = (hw + 2 * p - k) // s + 1
    out = np.empty((1, 4, oh, oh), np.float32)
    library.pool2d(x, out, k, k, s, s, p, p, p, p, True, False)
    np.testing.assert_array_equal(out, max_pool(x, kernel_shape=(k, k), strides=(s, s), pads=(p,) * 4)[0])
    for include in (0, 1):
        library.pool2d(x, out, k, k, s, s, p, p, p, p, False, bool(include))
        expected = average_pool(x, kernel_shape=(k, k), strides=(s, s), pads=(p,) * 4, count_include_pad=include)
        np.testing.assert_allclose(out, expected, atol=1e-6)
    wt = rng.standard_normal((4, k, k)).astype(np.float32)
    dw = np.empty((4, oh, oh), np.float32)
    library.depthwise2d(x[0], wt, dw, s, s, p, p, 1, 1)
    expected = conv(x, wt[:, None], group=4, strides=(s, s), pads=(p,) * 4, kernel_shape=(k, k))[0]
    np.testing.assert_allclose(dw, expected, atol=1e-5)
    col = np.empty((4 * k * k, oh * oh), np.float32)
    library.im2col(x[0], col, k, k, s, s, p, p, 1, 1, oh, oh)
    w = rng.standard_normal((3, 4 * k * k)).astype(np.float32)
    expected = conv(x, w.reshape(3, 4, k, k), strides=(s, s), pads=(p,) * 4, kernel_shape=(k, k))[0]
    np.testing.assert_allclose((w @ col).reshape(expected.shape), expected, atol=1e-4)


@njit(fastmath=FASTMATH)
def _apply(x, out):
    for i in range(x.shape[0]):
        out[0, i], out[1, i], out[2, i], out[3, i] = fexp(x[i]), ferf(x[i]), ftanh(x[i]), fgelu(x[i])


def test_vector_math_accuracy():
    x = np.concatenate([np.linspace(-30, 30, 20001), [0.0, 1e-6, -1e-6, 88.0, -87.0]]).astype(np.float32)
    out = np.empty((4, x.size), np.float32)
    _apply(x, out)
    x64 = x.astype(np.float64)
    erf = np.vectorize(math.erf)(x64)
    np.testing.assert_allclose(out[0], np.exp(x64), rtol=3e-7)
    np.testing.assert_allclose(out[1], erf, atol=5e-7)
    np.testing.assert_allclose(out[2], np.tanh(x64), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[3], 0.5 * x64 * (1 + np.vectorize(math.erf)(x64 / math.sqrt(2))), rtol=1e-6,
                               atol=1e-6)


def test_collapse_merges_dims_with_equal_broadcast():
    assert collapse((1, 128, 768), [(1, 128, 768), (768,)]) == ([128, 768], [[128, 768], [1, 768]])
    assert collapse((1, 16, 32, 32), [(1, 16, 32, 32), (16, 1, 1)]) == ([16, 1024], [[16, 1024], [16, 1]])
    assert collapse((4, 8), [(4, 8), (4, 8)]) == ([32], [[32], [32]])
    assert collapse((1, 1), [(1,)]) == ([1], [[1]])


@pytest.mark.parametrize("size, beta", [(5, 0.75), (3, 0.5), (4, 0.75)])
def test_lrn_matches_reference(size, beta):
    from dcopt.ops.normalization import lrn as reference_lrn

    x = np.random.default_rng(size).standard_normal((1, 7, 5, 5)).astype(np.float32)
    out = np.empty_like(x)
    library.lrn(x.reshape(1, 7, -1), out.reshape(1, 7, -1), size, 1e-2, beta, 2.0)
    expected = reference_lrn(x, size=size, alpha=1e-2, beta=beta, bias=2.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cin, hw, cout, k, s, p, d", [
    (8, 12, 5, 3, 1, 1, 1),     # shifted GEMMs (stride 1, plane >= SHIFTED_MIN_WIDTH), 3 row blocks
    (4, 22, 6, 5, 1, 0, 2),     # shifted, dilated, no padding
    (3, 64, 8, 7, 2, 3, 1),     # im2col in row chunks (column buffer > CHUNK_BYTES)
    (6, 8, 4, 3, 1, 1, 1),      # plain im2col (narrow plane)
])
def test_conv_paths_match_reference(cin, hw, cout, k, s, p, d, monkeypatch):
    from dcopt.backends.cpu import gemm

    monkeypatch.setattr(gemm, "CHUNK_BYTES", 1 << 11)
    monkeypatch.setattr(gemm, "CHUNK_MIN_COLUMNS", 64)
    monkeypatch.setattr(gemm, "SHIFTED_MIN_CHANNELS", 4)
    monkeypatch.setattr(gemm, "SHIFTED_BLOCK_BYTES", 1 << 11)
    rng = np.random.default_rng(cin * hw)
    x = rng.standard_normal((2, cin, hw, hw)).astype(np.float32)
    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    oh = (hw + 2 * p - d * (k - 1) - 1) // s + 1
    out = np.full((2, cout, oh, oh), np.nan, np.float32)
    params = {"kernel": [k, k], "strides": [s, s], "pads": [p, p], "dilations": [d, d], "group": 1, "depthwise": False}
    scratch = np.full(gemm.conv_scratch_elements(x.shape, (cout, cin * k * k), out.shape, params) + 7, np.nan, np.float32)
    gemm.bind_conv(x, w.reshape(cout, -1), out, params, scratch)()
    expected = conv(x, w, strides=(s, s), pads=(p,) * 4, dilations=(d, d), kernel_shape=(k, k))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
