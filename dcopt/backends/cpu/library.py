"""Hand-written numba kernels whose code does not depend on the model: row reductions
(softmax, layer norm, reduce), pooling, im2col, depthwise conv.

Why not generated: their loop structure is fixed and their sizes arrive as array shapes and
a few integer parameters, so one compiled (and numba-cached) function serves every model.
Generated code (:mod:`renderer`) is kept for what varies per model: fused elementwise
expressions. All kernels are serial on purpose: BLAS owns the cores (see :mod:`gemm`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from dcopt.backends.cpu.mathlib import FASTMATH, fexp

_OPTS = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy", boundscheck=False)
_Z = np.float32(0.0)

# Indexing note: numba wraps negative indices, so ``a[j + off]`` with a possibly negative
# ``off`` compiles to a per-element select that stops LLVM from vectorizing, and slicing a row
# per inner loop costs more than the inner loop itself on 7-56 wide rows. Kernels compute the
# in-bounds span once (:func:`_span`) and index with unsigned integers (``uint64``), which
# numba does not wrap.


@njit(**_OPTS)
def softmax_rows(x, out, log):
    """Softmax (or log-softmax) of each row of a 2-D array; a row that is all -inf (every key
    masked) gives zeros, as ONNX Attention specifies, instead of NaN."""
    for r in range(x.shape[0]):
        m = x[r, 0]
        for j in range(1, x.shape[1]):
            m = max(m, x[r, j])
        if m == -np.inf and not log:
            for j in range(x.shape[1]):
                out[r, j] = _Z
            continue
        s = _Z
        for j in range(x.shape[1]):
            e = fexp(x[r, j] - m)
            out[r, j] = e
            s += e
        if log:
            ls = np.log(s)
            for j in range(x.shape[1]):
                out[r, j] = x[r, j] - m - ls
        else:
            inv = np.float32(1.0) / s
            for j in range(x.shape[1]):
                out[r, j] *= inv


@njit(**_OPTS)
def layernorm_rows(x, scale, bias, out, eps):
    """LayerNormalization over each row; ``scale``/``bias`` are rows (1-D, length = row).
    Statistics are accumulated in float64 like the reference executor's."""
    n = x.shape[1]
    for r in range(x.shape[0]):
        s = 0.0
        for j in range(n):
            s += x[r, j]
        mean = s / n
        v = 0.0
        for j in range(n):
            d = x[r, j] - mean
            v += d * d
        inv = np.float32(1.0 / np.sqrt(v / n + eps))
        m32 = np.float32(mean)
        for j in range(n):
            out[r, j] = (x[r, j] - m32) * inv * scale[j] + bias[j]


@njit(**_OPTS)
def reduce_rows(x, out, op):
    """op 0 sum, 1 mean, 2 max, 3 min of each row into ``out`` (1-D, one per row)."""
    n = x.shape[1]
    for r in range(x.shape[0]):
        if op >= 2:
            acc32 = x[r, 0]
            for j in range(1, n):
                acc32 = max(acc32, x[r, j]) if op == 2 else min(acc32, x[r, j])
            out[r] = acc32
        else:
            acc = _Z
            for j in range(n):
                acc += x[r, j]
            out[r] = acc / np.float32(n) if op == 1 else acc


@njit(inline="always")
def _span(n_out, size, stride, offset):
    """Output indices j in [lo, hi) whose input index j * stride + offset lies in [0, size)."""
    lo = (stride - 1 - offset) // stride if offset < 0 else 0
    hi = min(n_out, (size - 1 - offset) // stride + 1) if size - 1 - offset >= 0 else 0
    return lo, max(lo, hi)


@njit(**_OPTS)
def pool2d(x, out, kh, kw, sh, sw, ph, pw, ph_end, pw_end, is_max, include_pad):
    """Max/average pooling of NCHW ``x`` into ``out`` (its shape carries the output size).

    Kernel offsets (u, v) run outside, output columns inside over the in-bounds span
    (:func:`_span`), indexed with unsigned integers (no wraparound select): 2-3x faster than
    signed indexing on GoogLeNet's pools (192x28x28 3x3/s1: 1572 -> 358 us)."""
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    init = -np.inf if is_max else 0.0
    usw = uint64(sw)
    for b in range(n):
        for ch in range(c):
            src, dst = x[b, ch], out[b, ch]
            for i in range(oh):
                ui = uint64(i)
                for j in range(ow):
                    dst[ui, uint64(j)] = init
                for u in range(kh):
                    y = i * sh - ph + u
                    if y < 0 or y >= h:
                        continue
                    uy = uint64(y)
                    for v in range(kw):
                        lo, hi = _span(ow, w, sw, v - pw)
                        base, ulo = uint64(lo * sw + v - pw), uint64(lo)
                        for t in range(hi - lo):
                            ut = uint64(t)
                            if is_max:
                                dst[ui, ulo + ut] = max(dst[ui, ulo + ut], src[uy, base + ut * usw])
                            else:
                                dst[ui, ulo + ut] += src[uy, base + ut * usw]
                if not is_max:
                    h0 = i * sh - ph
                    if include_pad:
                        rows = min(h0 + kh, h + ph_end) - max(h0, -ph)
                    else:
                        rows = min(h0 + kh, h) - max(h0, 0)
                    for j in range(ow):
                        w0 = j * sw - pw
                        if include_pad:
                            cols = min(w0 + kw, w + pw_end) - max(w0, -pw)
                        else:
                            cols = min(w0 + kw, w) - max(w0, 0)
                        dst[ui, uint64(j)] = dst[ui, uint64(j)] / np.float32(rows * cols)


@njit(**_OPTS)
def im2col(x, col, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Unfold one image ``x`` [C, H, W] into ``col`` [C*kh*kw, OH*OW] (zero padding), with
    unsigned indices over the in-bounds column span instead of per-row slices."""
    c, h, w = x.shape
    usw = uint64(sw)
    for ch in range(c):
        src = x[ch]
        for u in range(kh):
            for v in range(kw):
                r = uint64((ch * kh + u) * kw + v)
                off = v * dw - pw
                lo, hi = _span(ow, w, sw, off)
                base = uint64(lo * sw + off)
                for i in range(oh):
                    y = i * sh - ph + u * dh
                    row = uint64(i * ow)
                    if y < 0 or y >= h:
                        for j in range(ow):
                            col[r, row + uint64(j)] = _Z
                        continue
                    uy = uint64(y)
                    for j in range(lo):
                        col[r, row + uint64(j)] = _Z
                    for t in range(hi - lo):
                        col[r, row + uint64(lo + t)] = src[uy, base + uint64(t) * usw]
                    for j in range(hi, ow):
                        col[r, row + uint64(j)] = _Z


@njit(**_OPTS)
def depthwise2d(x, wt, out, sh, sw, ph, pw, dh, dw):
    """Depthwise conv (group == channels, one filter per channel): x [C,H,W], wt [C,kh,kw].

    Unit stride: each channel is copied into a zero-padded plane of width ``wp``; every tap is
    then one long multiply-add over the flattened plane (``acc[p] += k * xp[p + shift]``),
    which vectorizes, where row-by-row loops over 7-28 wide rows stayed mostly in scalar
    remainder code (136x28x28: 574-1100 us row-wise). Columns past the output width are
    computed and dropped. Other strides use the row-wise loop."""
    if sh != 1 or sw != 1:
        _depthwise_rows(x, wt, out, sh, sw, ph, pw, dh, dw)
        return
    c, h, w = x.shape
    kh, kw = wt.shape[1], wt.shape[2]
    oh, ow = out.shape[1], out.shape[2]
    wp = ow + (kw - 1) * dw
    hp = oh + (kh - 1) * dh
    xp = np.zeros(hp * wp + wp, np.float32)
    acc = np.empty(oh * wp, np.float32)
    z0, z1 = max(0, -pw), min(w, wp - pw)
    for ch in range(c):  # unsigned indices, no slices: per-row slicing cost more than the math
        src_plane = x[ch]
        for p in range(xp.shape[0]):
            xp[p] = _Z
        for y in range(max(0, -ph), min(h, hp - ph)):
            base = uint64((y + ph) * wp + pw)
            for z in range(z0, z1):
                xp[base + uint64(z)] = src_plane[uint64(y), uint64(z)]
        for p in range(acc.shape[0]):
            acc[p] = _Z
        n = oh * wp
        for u in range(kh):
            for v in range(kw):
                k = wt[ch, u, v]
                src = xp[u * dh * wp + v * dw:]  # a view: plain loop indices vectorize
                for p in range(n):
                    acc[p] += k * src[p]
        dst = out[ch]
        for i in range(oh):
            row = uint64(i * wp)
            for j in range(ow):
                dst[uint64(i), uint64(j)] = acc[row + uint64(j)]


@njit(**_OPTS)
def _depthwise_rows(x, wt, out, sh, sw, ph, pw, dh, dw):
    c, h, w = x.shape
    kh, kw = wt.shape[1], wt.shape[2]
    oh, ow = out.shape[1], out.shape[2]
    for ch in range(c):
        plane = out[ch]
        plane[:, :] = _Z
        src = x[ch]
        for u in range(kh):
            yoff = u * dh - ph
            ilo, ihi = _span(oh, h, sh, yoff)
            for v in range(kw):
                k = wt[ch, u, v]
                off = v * dw - pw
                lo, hi = _span(ow, w, sw, off)
                base, ulo, usw = uint64(lo * sw + off), uint64(lo), uint64(sw)
                for i in range(ilo, ihi):
                    ui, uy = uint64(i), uint64(i * sh + yoff)
                    for t in range(hi - lo):
                        ut = uint64(t)
                        plane[ui, ulo + ut] += k * src[uy, base + ut * usw]


@njit(**_OPTS)
def lrn(x, out, size, alpha, beta, bias):
    """LocalResponseNormalization across channels of ``x`` [N, C, HW] (ONNX window: from
    c - floor((size-1)/2) to c + ceil((size-1)/2)). beta == 0.75 (AlexNet, GoogLeNet) is
    computed as rsqrt * sqrt(rsqrt), which vectorizes; other betas use a scalar power."""
    n, c, hw = x.shape
    lo_off, hi_off = (size - 1) // 2, size - 1 - (size - 1) // 2
    acc = np.empty(hw, np.float32)
    scale = np.float32(alpha / size)
    fast = beta == 0.75
    for b in range(n):
        for ch in range(c):
            acc[:] = _Z
            for k in range(max(0, ch - lo_off), min(c - 1, ch + hi_off) + 1):
                src = x[b, k]
                for p in range(hw):
                    acc[p] += src[p] * src[p]
            src, dst = x[b, ch], out[b, ch]
            for p in range(hw):
                t = np.float32(bias) + scale * acc[p]
                if fast:
                    r = np.float32(1.0) / np.sqrt(t)
                    dst[p] = src[p] * r * np.sqrt(r)
                else:
                    dst[p] = src[p] * t ** np.float32(-beta)
