"""The blas conv routine's hand-written parts (im2col, depthwise conv, shifted GEMMs) against
the reference ops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dcopt.backends.cpu import library
from dcopt.ops.nn import conv

CASES = [(k, s, p, hw) for k, s, p, hw in itertools.product([1, 2, 3, 7], [1, 2, 3], [0, 1, 3], [5, 8, 13])
         if p < k and (hw + 2 * p - k) // s + 1 > 0]


@pytest.mark.parametrize("k, s, p, hw", CASES)
def test_window_kernels_match_reference(k, s, p, hw):
    rng = np.random.default_rng(k * 100 + s * 10 + p)
    x = rng.standard_normal((1, 4, hw, hw)).astype(np.float32)
    oh = (hw + 2 * p - k) // s + 1
    wt = rng.standard_normal((4, k, k)).astype(np.float32)
    dw = np.empty((4, oh, oh), np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    library.depthwise2d(x[0], wt, dw, s, s, p, p, 1, 1, bias, np.float32(-1.0), np.float32(2.0))
    expected = conv(x, wt[:, None], bias, group=4, strides=(s, s), pads=(p,) * 4, kernel_shape=(k, k))[0]
    np.testing.assert_allclose(dw, np.clip(expected, -1.0, 2.0), atol=1e-5)
    col = np.empty((4 * k * k, oh * oh), np.float32)
    library.im2col(x[0], col, k, k, s, s, p, p, 1, 1, oh, oh)
    w = rng.standard_normal((3, 4 * k * k)).astype(np.float32)
    expected = conv(x, w.reshape(3, 4, k, k), strides=(s, s), pads=(p,) * 4, kernel_shape=(k, k))[0]
    np.testing.assert_allclose((w @ col).reshape(expected.shape), expected, atol=1e-4)


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
