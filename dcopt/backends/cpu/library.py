"""Hand-written numba kernels inside the ``blas`` convolution routine (:mod:`gemm`): im2col,
depthwise convolution, zero-padded plane copies for shifted GEMMs, and their crops.

Why hand-written: they are parts of one library routine (a convolution over OpenBLAS), not ops:
their loop structure is fixed and their sizes arrive as array shapes and a few integers, so one
compiled (numba-cached) function serves every model. Everything an op computes by itself is
generated from the IR (:mod:`map_codegen`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from dcopt.backends.cpu.mathlib import FASTMATH
from dcopt.backends.cpu.numba_cache import cached

_OPTS = dict(fastmath=FASTMATH, nogil=True, error_model="numpy", boundscheck=False)


def _kernel(fn):
    """``njit`` with numba's on-disk cache, keyed by the backend's code (:mod:`numba_cache`)."""
    return cached(njit(**_OPTS)(fn))
_Z = np.float32(0.0)

# Indexing note: numba wraps negative indices, so ``a[j + off]`` with a possibly negative
# ``off`` compiles to a per-element select that stops LLVM from vectorizing, and slicing a row
# per inner loop costs more than the inner loop itself on 7-56 wide rows. Kernels compute the
# in-bounds span once (:func:`_span`) and index with unsigned integers (``uint64``), which
# numba does not wrap.


@njit(inline="always")
def _span(n_out, size, stride, offset):
    """Output indices j in [lo, hi) whose input index j * stride + offset lies in [0, size)."""
    lo = (stride - 1 - offset) // stride if offset < 0 else 0
    hi = min(n_out, (size - 1 - offset) // stride + 1) if size - 1 - offset >= 0 else 0
    return lo, max(lo, hi)


@_kernel
def im2col(x, col, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    """Unfold one image ``x`` [C, H, W] into ``col`` [C*kh*kw, OH*OW] (zero padding)."""
    im2col_rows(x, col, kh, kw, sh, sw, ph, pw, dh, dw, 0, oh, ow)


@_kernel
def im2col_rows(x, col, kh, kw, sh, sw, ph, pw, dh, dw, i0, i1, ow):
    """Output rows [i0, i1) of :func:`im2col`: ``col`` [C*kh*kw, (i1-i0)*OW]. Unsigned indices
    over the in-bounds column span instead of per-row slices."""
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
                for i in range(i0, i1):
                    y = i * sh - ph + u * dh
                    row = uint64((i - i0) * ow)
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


@njit(inline="always")
def _epilogue(v, b, lo, hi):
    """``min(max(v + b, lo), hi)`` as compares and selects: NaN stays NaN (its compares are
    false), open sides are -inf/+inf, crossed bounds give ``hi`` (:mod:`dcopt.ir.clamp`)."""
    v = v + b
    v = lo if v < lo else v
    return hi if v > hi else v


@_kernel
def depthwise2d(x, wt, out, sh, sw, ph, pw, dh, dw, bias, lo, hi):
    """Depthwise conv (group == channels, one filter per channel): x [C,H,W], wt [C,kh,kw];
    each output gets ``bias[c]`` added and is clamped to ``[lo, hi]`` as it is stored (the
    conv's fused epilogue: a bias and a ReLU/ReLU6/Clip; zeros and -inf/+inf when it has none).

    Each channel is copied into a zero-padded plane of width ``wp``; every tap is then one
    long multiply-add over the flattened plane (``acc[p] += k * xp[p + shift]``), which
    vectorizes, where row-by-row loops over 7-28 wide rows stayed mostly in scalar remainder
    code (136x28x28: 574-1100 us row-wise). Columns past the output width are computed and
    dropped. Stride 2 computes the stride-1 result over the strided output's span and keeps
    every second row/column: 4x the multiply-adds, still 3x faster than the row-wise loop
    (ShuffleNet's 112x56x56 -> 28x28: 0.27 ms row-wise); larger strides use the row-wise loop.
    3x3 undilated kernels with equal strides 1 or 2, and 5x5 ones with stride 1, take the faster
    :func:`_depthwise_small`."""
    k = wt.shape[1]
    if k == wt.shape[2] and dh == 1 and dw == 1 and sh == sw and (k == 3 and sh <= 2 or k == 5 and sh == 1):
        _depthwise_small(x, wt, out, sh, ph, pw, bias, lo, hi)
        return
    if sh * sw > 4:
        _depthwise_rows(x, wt, out, sh, sw, ph, pw, dh, dw, bias, lo, hi)
        return
    c, h, w = x.shape
    kh, kw = wt.shape[1], wt.shape[2]
    oh, ow = out.shape[1], out.shape[2]
    wp = (ow - 1) * sw + 1 + (kw - 1) * dw
    hp = (oh - 1) * sh + 1 + (kh - 1) * dh
    xp = np.zeros(hp * wp + wp, np.float32)
    n = ((oh - 1) * sh + 1) * wp
    acc = np.empty(n, np.float32)
    z0, z1 = max(0, -pw), min(w, wp - pw)
    for ch in range(c):  # unsigned indices, no slices: per-row slicing cost more than the math
        src_plane = x[ch]
        for p in range(xp.shape[0]):
            xp[p] = _Z
        for y in range(max(0, -ph), min(h, hp - ph)):
            base = uint64((y + ph) * wp + pw)
            for z in range(z0, z1):
                xp[base + uint64(z)] = src_plane[uint64(y), uint64(z)]
        for p in range(n):
            acc[p] = _Z
        for u in range(kh):
            for v in range(kw):
                k = wt[ch, u, v]
                src = xp[u * dh * wp + v * dw:]  # a view: plain loop indices vectorize
                for p in range(n):
                    acc[p] += k * src[p]
        dst = out[ch]
        usw = uint64(sw)
        b = bias[ch]
        for i in range(oh):
            row = uint64(i * sh * wp)
            for j in range(ow):
                dst[uint64(i), uint64(j)] = _epilogue(acc[row + uint64(j) * usw], b, lo, hi)


@_kernel
def _depthwise_small(x, wt, out, s, ph, pw, bias, lo, hi):
    """3x3 depthwise with stride ``s`` in (1, 2) (every ShuffleNet/MobileNet one), or 5x5 with
    stride 1 (EfficientNet's), no dilation.

    Differs from the generic path in :func:`depthwise2d` in three ways, each measured on
    ShuffleNet's shapes: (1) the nine taps are summed per element in one pass
    (:func:`_taps3x3_s1`, :func:`_taps3x3_s2`) instead of nine read-modify-write sweeps over ``acc``; (2) the padded
    planes are zeroed once, not per channel -- the interior positions written are the same for
    every channel, so the border stays zero; (3) stride 2 splits the padded input into its four
    (row, column) parity planes, so that tap (u, v) is a contiguous shifted window of plane
    (u%2, v%2) and only the kept outputs are computed, where the generic path computes the
    full stride-1 result and drops 3/4 of it. The stride-2 split reads each row once and writes
    both column-parity planes in the same loop. ShuffleNet per-conv medians, generic -> this:
    112x56x56 s2 140 -> 86 us, 136x28x28 66 -> 38-44, 272x14x14 54 -> 34-40, 544x7x7 57 ->
    41-46; the model's 16 depthwise convs 1.11 -> 0.72 ms. The 5x5 taps (:func:`_taps5x5_s1`),
    generic -> this, one core: 2304x7x7 432 -> 317 us, 1344x14x14 560 -> 317, 480x28x28 372 ->
    249."""
    c, h, w = x.shape
    oh, ow = out.shape[1], out.shape[2]
    q = wt.shape[1] - s  # halo of each plane: 2 or 4 (stride 1, one plane), 1 (stride 2, four planes)
    wq, hq = ow + q, oh + q
    L = hq * wq + wq
    xp = np.zeros(s * s * L, np.float32)
    n = oh * wq
    acc = np.empty(n, np.float32)
    ylo, yhi = max(0, -ph), min(h, s * hq - ph)
    zlo, zhi = max(0, -pw), min(w, s * wq - pw)
    for ch in range(c):
        src = x[ch]
        for y in range(ylo, yhi):
            yy = y + ph
            if s == 1:
                base = uint64(yy * wq + pw)
                for z in range(zlo, zhi):
                    xp[base + uint64(z)] = src[uint64(y), uint64(z)]
            else:  # column z goes to parity plane (z + pw) & 1, position (z + pw) >> 1
                row = ((yy & 1) * 2) * L + (yy >> 1) * wq
                za, zb = zlo + pw, zlo + 1 + pw
                ba = uint64(row + (za & 1) * L + (za >> 1))
                bb = uint64(row + (zb & 1) * L + (zb >> 1))
                uz = uint64(zlo)
                npair = (zhi - zlo) >> 1
                for t in range(npair):  # one pass over the row, both planes at once
                    ut = uint64(2 * t)
                    xp[ba + uint64(t)] = src[uint64(y), uz + ut]
                    xp[bb + uint64(t)] = src[uint64(y), uz + ut + uint64(1)]
                if zhi > zlo and (zhi - zlo) & 1:
                    xp[ba + uint64(npair)] = src[uint64(y), uint64(zhi - 1)]
        if s == 1 and wt.shape[1] == 5:
            _taps5x5_s1(acc, n, wt[ch], xp, wq)
        elif s == 1:
            _taps3x3_s1(acc, n, wt[ch], xp, wq)
        else:
            _taps3x3_s2(acc, n, wt[ch], xp, wq, L)
        dst = out[ch]
        b = bias[ch]
        for i in range(oh):
            row = uint64(i * wq)
            for j in range(ow):
                dst[uint64(i), uint64(j)] = _epilogue(acc[row + uint64(j)], b, lo, hi)


@_kernel
def _taps3x3_s2(acc, n, k, xp, wq, L):
    """Stride-2 taps over the four parity planes (ee, eo, oe, oo at 0, L, 2L, 3L; width
    ``wq``): ``acc[p] = sum_uv k[u,v] * plane(u%2, v%2)[p + (u//2)*wq + v//2]``, all nine in
    one pass so the partial sum stays in a register instead of nine load/store sweeps over
    ``acc``. One base array with unsigned offsets built from ``wq``/``L``, not nine shifted
    views or an offsets array: with ten possibly-aliasing arrays LLVM's runtime alias checks
    ate the gain on short planes (544x7x7 taps: 71 us vs 16 us)."""
    k00, k01, k02 = k[0, 0], k[0, 1], k[0, 2]
    k10, k11, k12 = k[1, 0], k[1, 1], k[1, 2]
    k20, k21, k22 = k[2, 0], k[2, 1], k[2, 2]
    r1, c1 = uint64(wq), uint64(1)
    eo, oe, oo = uint64(L), uint64(2 * L), uint64(3 * L)
    for p in range(n):
        r = uint64(p)
        acc[r] = (k00 * xp[r] + k01 * xp[r + eo] + k02 * xp[r + c1]
                  + k10 * xp[r + oe] + k11 * xp[r + oo] + k12 * xp[r + oe + c1]
                  + k20 * xp[r + r1] + k21 * xp[r + eo + r1] + k22 * xp[r + r1 + c1])


@_kernel
def _taps3x3_s1(acc, n, k, xp, wq):
    """:func:`_taps3x3_s2` for one plane of width ``wq``: offsets built from ``wq`` in registers."""
    k00, k01, k02 = k[0, 0], k[0, 1], k[0, 2]
    k10, k11, k12 = k[1, 0], k[1, 1], k[1, 2]
    k20, k21, k22 = k[2, 0], k[2, 1], k[2, 2]
    r1, r2, c1, c2 = uint64(wq), uint64(2 * wq), uint64(1), uint64(2)
    for p in range(n):
        r = uint64(p)
        acc[r] = (k00 * xp[r] + k01 * xp[r + c1] + k02 * xp[r + c2]
                  + k10 * xp[r + r1] + k11 * xp[r + r1 + c1] + k12 * xp[r + r1 + c2]
                  + k20 * xp[r + r2] + k21 * xp[r + r2 + c1] + k22 * xp[r + r2 + c2])


@njit(inline="always")
def _row5(xp, r, a, b, c, d, e):
    """One row of a 5x5 tap sum: ``a*xp[r] + ... + e*xp[r+4]``."""
    return (a * xp[r] + b * xp[r + uint64(1)] + c * xp[r + uint64(2)] + d * xp[r + uint64(3)]
            + e * xp[r + uint64(4)])


@_kernel
def _taps5x5_s1(acc, n, k, xp, wq):
    """:func:`_taps3x3_s1` for 5x5: all 25 taps summed per element in one pass, the weights
    loaded into registers first (``acc`` may alias ``k`` as far as LLVM knows, so loads of ``k``
    inside the loop would stay there)."""
    k00, k01, k02, k03, k04 = k[0, 0], k[0, 1], k[0, 2], k[0, 3], k[0, 4]
    k10, k11, k12, k13, k14 = k[1, 0], k[1, 1], k[1, 2], k[1, 3], k[1, 4]
    k20, k21, k22, k23, k24 = k[2, 0], k[2, 1], k[2, 2], k[2, 3], k[2, 4]
    k30, k31, k32, k33, k34 = k[3, 0], k[3, 1], k[3, 2], k[3, 3], k[3, 4]
    k40, k41, k42, k43, k44 = k[4, 0], k[4, 1], k[4, 2], k[4, 3], k[4, 4]
    r1, r2, r3, r4 = uint64(wq), uint64(2 * wq), uint64(3 * wq), uint64(4 * wq)
    for p in range(n):
        r = uint64(p)
        acc[r] = (_row5(xp, r, k00, k01, k02, k03, k04) + _row5(xp, r + r1, k10, k11, k12, k13, k14)
                  + _row5(xp, r + r2, k20, k21, k22, k23, k24) + _row5(xp, r + r3, k30, k31, k32, k33, k34)
                  + _row5(xp, r + r4, k40, k41, k42, k43, k44))


@_kernel
def _depthwise_rows(x, wt, out, sh, sw, ph, pw, dh, dw, bias, lo, hi):
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
                jlo, jhi = _span(ow, w, sw, off)
                base, ulo, usw = uint64(jlo * sw + off), uint64(jlo), uint64(sw)
                for i in range(ilo, ihi):
                    ui, uy = uint64(i), uint64(i * sh + yoff)
                    for t in range(jhi - jlo):
                        ut = uint64(t)
                        plane[ui, ulo + ut] += k * src[uy, base + ut * usw]
        b = bias[ch]
        for i in range(oh):
            for j in range(ow):
                plane[uint64(i), uint64(j)] = _epilogue(plane[uint64(i), uint64(j)], b, lo, hi)


@_kernel
def pad_planes(x, xp, ph, pw, wp):
    """Copy ``x`` [C, H, W] into zero-padded planes: row r of the flattened ``xp[c]`` grid of
    width ``wp`` holds input row r - ph at columns pw...; everything else (borders, the slack
    after the grid) is zero. The input of :func:`gemm.bind_conv`'s shifted-GEMM convs."""
    c, h, w = x.shape
    plane = xp.shape[1]
    hp = plane // wp
    y0, y1 = max(0, -ph), min(h, hp - ph)
    z0, z1 = max(0, -pw), min(w, wp - pw)
    for ch in range(c):
        dst, src = xp[ch], x[ch]
        for p in range(plane):
            dst[uint64(p)] = _Z
        for y in range(y0, y1):
            base = uint64((y + ph) * wp + pw)
            for z in range(z0, z1):
                dst[base + uint64(z)] = src[uint64(y), uint64(z)]


@_kernel
def crop_rows(wide, out, wp, i0, i1):
    """``out[m, i, j] = wide[m, i * wp + j]`` for rows i0 <= i < i1: drop the junk columns of a
    wide-grid result."""
    m, oh, ow = out.shape
    for k in range(m):
        src, dst = wide[k], out[k]
        for i in range(i0, i1):
            base = uint64(i * wp)
            for j in range(ow):
                dst[uint64(i), uint64(j)] = src[base + uint64(j)]
