"""Reference semantics for ONNX convolution, pooling and matrix-product ops.

This module is the reference executor for real CNNs (resnet50, densenet121, vgg19 at 224x224),
so it is written for speed as well as exactness: every sliding-window op is a strided view
(``sliding_window_view``) over a padded input, and convolutions become one batched BLAS
matmul (im2col).  Window geometry -- kernel, strides, dilations, explicit pads, ``auto_pad``
and ``ceil_mode`` -- is resolved once, in :func:`_geometry`, for conv and pool alike; the
transposed direction (ConvTranspose, Col2Im) shares the scatter-add :func:`_col2im`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dcopt.ops.registry import reference


def _acc(dtype):
    """Dtype to compute in: float32 for float16 and ml_dtypes floats (bfloat16, float8), which numpy
    either multiplies slowly (no BLAS) or not at all; the input dtype otherwise."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype == np.float16 or dtype.kind == "V" else dtype


# ----------------------------------------------------------------------------- window geometry

def _ints(value, n, fill):
    return tuple(int(v) for v in value) if value else (fill,) * n


def _geometry(in_shape, kernel, strides, dilations, auto_pad="NOTSET", pads=None, ceil_mode=False):
    """Output spatial shape and (begin, end) pads of a sliding-window op.

    SAME_* pads so that out = ceil(in / stride) (the odd cell goes to the end for SAME_UPPER);
    VALID pads nothing; otherwise explicit ``pads`` with floor (or ``ceil_mode``) rounding, where
    a ceil-mode window must still start inside the input or left padding.
    """
    nd = len(in_shape)
    ext = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-i // s) for i, s in zip(in_shape, strides)]
        total = [max(0, (o - 1) * s + e - i) for o, s, e, i in zip(out, strides, ext, in_shape)]
        end = [t // 2 if auto_pad == "SAME_LOWER" else t - t // 2 for t in total]
        begin = [t - e for t, e in zip(total, end)]
    elif auto_pad == "VALID":
        begin = end = [0] * nd
        out = [(i - e) // s + 1 for i, e, s in zip(in_shape, ext, strides)]
    else:
        pads = _ints(pads, 2 * nd, 0)
        begin, end = list(pads[:nd]), list(pads[nd:])
        out = []
        for i, b, e_, e, s in zip(in_shape, begin, end, ext, strides):
            span = i + b + e_ - e
            o = (-(-span // s) if ceil_mode else span // s) + 1
            if ceil_mode and (o - 1) * s >= i + b:
                o -= 1
            out.append(o)
    return out, begin, end


def _pad_windows(x, out, begin, ext, strides, value=0):
    """Pad/crop the spatial axes of x so exactly ``out`` windows of extent ``ext`` fit."""
    nd = len(out)
    lead = x.ndim - nd
    widths, crop = [(0, 0)] * lead, [slice(None)] * lead
    for i, o, b, e, s in zip(x.shape[lead:], out, begin, ext, strides):
        need = (o - 1) * s + e
        widths.append((b, max(0, need - i - b)))
        crop.append(slice(0, need))
    if any(w != (0, 0) for w in widths):
        x = np.pad(x, widths, constant_values=value)
    return x[tuple(crop)]


def _windows(x, out, begin, kernel, strides, dilations, value=0):
    """Strided view (*lead, *out, *kernel) of every window over the spatial axes of x."""
    nd = len(kernel)
    ext = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    xp = _pad_windows(x, out, begin, ext, strides, value)
    view = sliding_window_view(xp, ext, axis=tuple(range(x.ndim - nd, x.ndim)))
    lead = (slice(None),) * (x.ndim - nd)
    return view[lead + tuple(slice(None, None, s) for s in strides) + tuple(slice(None, None, d) for d in dilations)]


def _window_attrs(x, kernel_shape, strides, dilations):
    nd = x.ndim - 2
    return tuple(int(k) for k in kernel_shape), _ints(strides, nd, 1), _ints(dilations, nd, 1)


# ----------------------------------------------------------------------------- convolution

_COLS_BUDGET = 1 << 26  # elements of one im2col buffer (256 MB of float32); larger batches go in chunks


def _conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, pads=None, strides=None, work=None):
    """Grouped N-d convolution as one batched im2col matmul, computed in ``work`` dtype."""
    work = work or _acc(x.dtype)
    kernel, strides, dilations = _window_attrs(x, w.shape[2:], strides, dilations)
    out, begin, _ = _geometry(x.shape[2:], kernel, strides, dilations, auto_pad, pads)
    n, c = x.shape[:2]
    m, nd, g = w.shape[0], len(kernel), group
    step = max(1, _COLS_BUDGET // max(1, c * math.prod(kernel) * math.prod(out)))
    if n > step:
        return np.concatenate([_conv(x[i:i + step], w, b, auto_pad=auto_pad, dilations=dilations, group=group,
                                     pads=pads, strides=strides, work=work) for i in range(0, n, step)])
    win = _windows(x.astype(work, copy=False), out, begin, kernel, strides, dilations)  # (N, C, *out, *k)
    win = win.reshape(n, g, c // g, *out, *kernel)
    order = (0, 1, 2) + tuple(range(3 + nd, 3 + 2 * nd)) + tuple(range(3, 3 + nd))
    cols = np.ascontiguousarray(win.transpose(order)).reshape(n, g, -1, math.prod(out))
    y = np.matmul(w.astype(work, copy=False).reshape(g, m // g, -1), cols).reshape(n, m, *out)
    if b is not None:
        y += b.astype(work, copy=False).reshape(-1, *(1,) * nd)
    return y


@reference("Conv")
def conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    return _conv(x, w, b, auto_pad=auto_pad, dilations=dilations, group=group, pads=pads,
                 strides=strides).astype(x.dtype, copy=False)


def _zero_shift(t, zp):
    """t - zp as int64; a 1-D zp of several values applies per index of axis 0 (per-channel weights)."""
    t = t.astype(np.int64)
    if zp is None:
        return t
    zp = np.asarray(zp).astype(np.int64)
    return t - (zp.reshape((-1,) + (1,) * (t.ndim - 1)) if zp.size > 1 else zp.reshape(()))


def _int_conv(x, x_zp, w, w_zp, b=None, **attrs):
    # float64 BLAS is exact for 8-bit products summed over < 2**37 terms.
    xs = _zero_shift(x, x_zp).astype(np.float64)
    ws = _zero_shift(w, w_zp).astype(np.float64)
    y = _conv(xs, ws, None, work=np.float64, **attrs)
    if b is not None:
        y += b.astype(np.float64).reshape(-1, *(1,) * (x.ndim - 2))
    return y


@reference("ConvInteger")
def conv_integer(x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET", dilations=None, group=1,
                 kernel_shape=None, pads=None, strides=None):
    y = _int_conv(x, x_zero_point, w, w_zero_point, auto_pad=auto_pad, dilations=dilations, group=group, pads=pads,
                  strides=strides)
    return y.astype(np.int32)


def _requantize(acc, scale, zp, dtype):
    """Round-half-even acc * scale + zp, saturated to ``dtype``."""
    info = np.iinfo(dtype)
    y = np.rint(acc * scale)
    if zp is not None:
        y += np.asarray(zp).astype(np.float64)
    return np.clip(y, info.min, info.max).astype(dtype)


@reference("QLinearConv")
def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point=None, b=None, *,
                 auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    acc = _int_conv(x, x_zero_point, w, w_zero_point, b, auto_pad=auto_pad, dilations=dilations, group=group,
                    pads=pads, strides=strides)
    w_scale = np.asarray(w_scale, np.float64).reshape(-1, *(1,) * (x.ndim - 2))
    scale = np.asarray(x_scale, np.float64).reshape(()) * w_scale / np.asarray(y_scale, np.float64).reshape(())
    return _requantize(acc, scale, y_zero_point, y_zero_point.dtype if y_zero_point is not None else x.dtype)


def _col2im(cols, canvas, kernel, strides, dilations):
    """Scatter-add cols (N, C, K, *blocks) into a zero canvas (N, C, *canvas): the adjoint of im2col."""
    n, c, _, *blocks = cols.shape
    y = np.zeros((n, c, *canvas), dtype=cols.dtype)
    for k, pos in enumerate(np.ndindex(*kernel)):
        dst = tuple(slice(p * d, p * d + (o - 1) * s + 1, s) for p, d, o, s in zip(pos, dilations, blocks, strides))
        y[(slice(None), slice(None)) + dst] += cols[:, :, k]
    return y


def conv_transpose_geometry(in_shape, kernel, strides, dilations, auto_pad="NOTSET", output_padding=None,
                            output_shape=None, pads=None):
    """(full, begin, out) of ConvTranspose: the extent every input position's taps cover (plus
    output_padding), the begin pads cropped off it, and the output spatial shape."""
    nd = len(kernel)
    output_padding = _ints(output_padding, nd, 0)
    full = [(i - 1) * s + (k - 1) * d + 1 + p for i, s, k, d, p in zip(in_shape, strides, kernel, dilations,
                                                                        output_padding)]
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = list(output_shape)[-nd:] if output_shape is not None else [i * s for i, s in zip(in_shape, strides)]
        total = [f - o for f, o in zip(full, out)]
        begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        if min(begin) < 0:
            raise ValueError(f"ConvTranspose: output_shape {out} exceeds the largest output {full} for this input")
    else:
        p = _ints(pads, 2 * nd, 0)
        begin = list(p[:nd])
        out = [f - p[i] - p[nd + i] for i, f in enumerate(full)]
    return full, begin, out


@reference("ConvTranspose")
def conv_transpose(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                   output_padding=None, output_shape=None, pads=None, strides=None):
    kernel, strides, dilations = _window_attrs(x, w.shape[2:], strides, dilations)
    nd, (n, c), g = len(kernel), x.shape[:2], group
    in_shape = x.shape[2:]
    full, begin, out = conv_transpose_geometry(in_shape, kernel, strides, dilations, auto_pad, output_padding,
                                               output_shape, pads)
    work = _acc(x.dtype)
    wg = w.astype(work, copy=False).reshape(g, c // g, -1)  # (G, C/G, M/G*K)
    xg = x.astype(work, copy=False).reshape(n, g, c // g, -1)  # (N, G, C/G, L)
    cols = np.matmul(wg.transpose(0, 2, 1), xg)  # (N, G, M/G*K, L)
    m = w.shape[1] * g
    cols = cols.reshape(n, m, math.prod(kernel), *in_shape)
    canvas = [max(f, b_ + o) for f, b_, o in zip(full, begin, out)]
    y = _col2im(cols, canvas, kernel, strides, dilations)
    y = y[(slice(None), slice(None)) + tuple(slice(b_, b_ + o) for b_, o in zip(begin, out))]
    if b is not None:
        y = y + b.astype(work, copy=False).reshape(-1, *(1,) * nd)
    return y.astype(x.dtype, copy=False)


@reference("Col2Im")
def col2im(x, image_shape, block_shape, *, dilations=None, pads=None, strides=None):
    image = [int(v) for v in image_shape]
    kernel = [int(v) for v in block_shape]
    nd = len(image)
    strides, dilations, p = _ints(strides, nd, 1), _ints(dilations, nd, 1), _ints(pads, 2 * nd, 0)
    blocks, begin, _ = _geometry(image, kernel, strides, dilations, "NOTSET", p)
    n, ck, _ = x.shape
    k = math.prod(kernel)
    cols = x.reshape(n, ck // k, k, *blocks)
    canvas = [i + p[d] + p[nd + d] for d, i in enumerate(image)]
    y = _col2im(cols, canvas, kernel, strides, dilations)
    return y[(slice(None), slice(None)) + tuple(slice(b_, b_ + i) for b_, i in zip(begin, image))]


@reference("DeformConv")
def deform_conv(x, w, offset, b=None, mask=None, *, dilations=None, group=1, kernel_shape=None, offset_group=1,
                pads=None, strides=None):
    from dcopt.ops.sampling import sample_linear

    kernel, strides, dilations = _window_attrs(x, w.shape[2:], strides, dilations)
    nd, (n, c), og = len(kernel), x.shape[:2], offset_group
    out = list(offset.shape[2:])
    begin = _ints(pads, 2 * nd, 0)[:nd]
    k = math.prod(kernel)
    # Sampling positions (N, OG, K, *out, nd): the regular grid plus the learned offsets.
    grid = np.stack(np.meshgrid(*[np.arange(o) * s - b_ for o, s, b_ in zip(out, strides, begin)], indexing="ij"), -1)
    taps = np.stack(np.meshgrid(*[np.arange(kk) * d for kk, d in zip(kernel, dilations)], indexing="ij"), -1)
    taps = taps.reshape(k, *(1,) * nd, nd)
    off = offset.reshape(n, og, k, nd, *out)
    pos = grid + taps + np.moveaxis(off, 3, -1).astype(np.float64)
    xs = x.reshape(n * og, c // og, *x.shape[2:]).astype(np.float64)
    cols = sample_linear(xs, pos.reshape(n * og, k, *out, nd))  # (N*OG, C/OG, K, *out)
    if mask is not None:
        cols = cols * mask.reshape(n * og, 1, k, *out)
    cols = cols.reshape(n, group, -1, math.prod(out))
    y = np.matmul(w.astype(np.float64).reshape(group, w.shape[0] // group, -1), cols).reshape(n, -1, *out)
    if b is not None:
        y += b.reshape(-1, *(1,) * nd)
    return y.astype(x.dtype)


@reference("CausalConvWithState")
def causal_conv_with_state(x, w, b=None, past_state=None, *, activation="none"):
    n, c, _ = x.shape
    k = w.shape[2]
    if past_state is None:
        past_state = np.zeros((n, c, k - 1), x.dtype)
    padded = np.concatenate([past_state.astype(x.dtype, copy=False), x], axis=2)
    y = _conv(padded, w, b, group=c)
    if activation in ("silu", "swish"):
        y = y / (1 + np.exp(-y))
    elif activation != "none":
        raise ValueError(f"CausalConvWithState: unknown activation {activation!r}")
    return y.astype(x.dtype, copy=False), padded[:, :, padded.shape[2] - (k - 1):]


# ----------------------------------------------------------------------------- pooling

def _pool_setup(x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode):
    kernel, strides, dilations = _window_attrs(x, kernel_shape, strides, dilations)
    out, begin, end = _geometry(x.shape[2:], kernel, strides, dilations, auto_pad, pads, bool(ceil_mode))
    return kernel, strides, dilations, out, begin, end


def _fold_windows(win, nd, ufunc, want_arg=False):
    """Reduce the trailing ``nd`` kernel axes of a window view with a binary ufunc, one kernel tap at a
    time: K vectorized passes over (N, C, *out) run 10-25x faster than numpy reducing the small,
    strided kernel axes.  ``want_arg`` also returns the flat tap of the first maximum."""
    acc = arg = None
    for k, pos in enumerate(np.ndindex(*win.shape[win.ndim - nd:])):
        v = win[(Ellipsis,) + pos]
        if acc is None:
            acc = v.copy()
            arg = np.zeros(acc.shape, np.int64) if want_arg else None
        else:
            if want_arg:
                arg = np.where(v > acc, k, arg)  # strict: the first maximum keeps its tap
            ufunc(acc, v, out=acc)
    return (acc, arg) if want_arg else acc


@reference("MaxPool")
def max_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape, pads=None, storage_order=0,
             strides=None, n_outputs=2):
    kernel, strides, dilations, out, begin, _ = _pool_setup(x, kernel_shape, strides, dilations, auto_pad, pads,
                                                            ceil_mode)
    nd, spatial = len(kernel), x.shape[2:]
    low = np.iinfo(x.dtype).min if x.dtype.kind in "iu" else -np.inf
    win = _windows(x, out, begin, kernel, strides, dilations, low)
    if n_outputs < 2:  # no Indices wired
        return _fold_windows(win, nd, np.maximum)
    y, arg = _fold_windows(win, nd, np.maximum, want_arg=True)
    # Indices into the flattened input (row-major, or column-major over spatial axes if storage_order=1).
    taps = np.unravel_index(arg, kernel)
    idx = np.zeros(arg.shape, np.int64)
    step = 1
    axes = range(nd) if storage_order else reversed(range(nd))
    for a in axes:
        start = (np.arange(out[a]) * strides[a] - begin[a]).reshape((-1,) + (1,) * (nd - 1 - a))
        idx += (start + taps[a] * dilations[a]) * step
        step *= spatial[a]
    idx += np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2] + (1,) * nd) * step
    return y, idx


def _pool_counts(x, kernel, strides, dilations, out, begin, end, include_pad):
    """Number of in-range window elements per output position (spatial shape only)."""
    ones = np.ones(x.shape[2:], np.float64)
    if include_pad:
        ones = np.pad(ones, list(zip(begin, end)), constant_values=1)
        begin = [0] * len(begin)
    return _fold_windows(_windows(ones, out, begin, kernel, strides, dilations), len(kernel), np.add)


@reference("AveragePool")
def average_pool(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape, pads=None,
                 strides=None):
    kernel, strides, dilations, out, begin, end = _pool_setup(x, kernel_shape, strides, dilations, auto_pad, pads,
                                                              ceil_mode)
    work = _acc(x.dtype)
    win = _windows(x.astype(work, copy=False), out, begin, kernel, strides, dilations)
    total = _fold_windows(win, len(kernel), np.add)
    counts = _pool_counts(x, kernel, strides, dilations, out, begin, end, count_include_pad)
    return (total / counts.astype(work)).astype(x.dtype)


@reference("LpPool")
def lp_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape, p=2, pads=None, strides=None):
    kernel, strides, dilations, out, begin, _ = _pool_setup(x, kernel_shape, strides, dilations, auto_pad, pads,
                                                            ceil_mode)
    win = _windows(np.abs(x) ** p, out, begin, kernel, strides, dilations)
    return (_fold_windows(win, len(kernel), np.add) ** (1.0 / p)).astype(x.dtype)


def _global(x, fn):
    return fn(x, axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype)


@reference("GlobalAveragePool")
def global_average_pool(x):
    return _global(x, np.mean)


@reference("GlobalMaxPool")
def global_max_pool(x):
    return _global(x, np.max)


@reference("GlobalLpPool")
def global_lp_pool(x, *, p=2):
    return _global(x, lambda a, **kw: np.sum(np.abs(a) ** p, **kw) ** (1.0 / p))


@reference("MaxUnpool")
def max_unpool(x, indices, output_shape=None, *, kernel_shape, pads=None, strides=None):
    nd = x.ndim - 2
    strides, p = _ints(strides, nd, 1), _ints(pads, 2 * nd, 0)
    inferred = [(i - 1) * s - p[d] - p[nd + d] + k for d, (i, s, k) in enumerate(zip(x.shape[2:], strides,
                                                                                      kernel_shape))]
    y = np.zeros(math.prod(x.shape[:2]) * math.prod(inferred), x.dtype)
    y[indices.ravel()] = x.ravel()
    y = y.reshape(*x.shape[:2], *inferred)
    if output_shape is None:
        return y
    res = np.zeros([int(v) for v in output_shape], x.dtype)
    res[tuple(slice(0, s) for s in y.shape)] = y
    return res


# ----------------------------------------------------------------------------- matrix products

@reference("Gemm")
def gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=0):
    work = _acc(a.dtype)
    y = np.matmul(a.astype(work, copy=False).T if transA else a.astype(work, copy=False),
                  b.astype(work, copy=False).T if transB else b.astype(work, copy=False))
    if alpha != 1.0:
        y = y * alpha
    if c is not None and beta != 0:
        c = c.astype(work, copy=False)
        y = y + (c * beta if beta != 1.0 else c)
    return y.astype(a.dtype, copy=False)


@reference("MatMul")
def matmul(a, b):
    work = _acc(a.dtype)
    return np.matmul(a.astype(work, copy=False), b.astype(work, copy=False)).astype(a.dtype, copy=False)


def _integer_matmul(a, a_zero_point, b, b_zero_point):
    # A's 1-D zero point is per row (axis -2), B's per column (the last axis): float64 BLAS is exact here.
    a = a.astype(np.int64)
    if a_zero_point is not None:
        zp = np.asarray(a_zero_point).astype(np.int64)
        a = a - (zp[:, None] if zp.ndim == 1 else zp)
    b = b.astype(np.int64) - (np.asarray(b_zero_point).astype(np.int64) if b_zero_point is not None else 0)
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


@reference("MatMulInteger")
def matmul_integer(a, b, a_zero_point=None, b_zero_point=None):
    return _integer_matmul(a, a_zero_point, b, b_zero_point).astype(np.int32)


@reference("QLinearMatMul")
def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    acc = _integer_matmul(a, a_zero_point, b, b_zero_point)
    a_scale = np.asarray(a_scale, np.float64)
    a_scale = a_scale[:, None] if a_scale.ndim == 1 else a_scale
    scale = a_scale * np.asarray(b_scale, np.float64) / np.asarray(y_scale, np.float64)
    return _requantize(acc, scale, y_zero_point, y_zero_point.dtype)


@reference("Einsum")
def einsum(*inputs, equation):
    work = _acc(inputs[0].dtype)
    y = np.einsum(equation.replace(" ", ""), *(t.astype(work, copy=False) for t in inputs), optimize=len(inputs) > 2)
    return np.asarray(y).astype(inputs[0].dtype, copy=False)


@reference("Dropout")
def dropout(x, ratio=None, training_mode=None, *, seed=None, is_test=0, opset, n_outputs=2):
    """Identity at inference; training mode with a nonzero ratio draws the mask from RandomState(seed)."""
    if n_outputs < 2 and (opset < 12 or training_mode is None or not bool(training_mode)):
        return x
    if opset < 12:  # ratio is an attribute there, and dropout never trains in an inference executor
        mask = np.ones(x.shape, bool if opset >= 10 else x.dtype)
        return x, mask
    ratio = 0.5 if ratio is None else float(ratio)
    if training_mode is None or not bool(training_mode) or ratio == 0:
        return x, np.ones(x.shape, bool)
    keep = np.random.RandomState(seed).uniform(0, 1, x.shape) >= ratio
    return (keep * x / (1 - ratio)).astype(x.dtype), keep
