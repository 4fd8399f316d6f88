"""Reference semantics for ONNX resampling ops: Resize, Upsample, GridSample, AffineGrid, RoiAlign and
MaxRoiPool.

All interpolation here is separable: for each spatial axis we compute, per output point, a few
source indices and weights ("taps"), then gather and sum.  Resize does this one axis at a time
(so a 4-tap cubic costs 4 gathers per axis, not 4**rank); GridSample and DeformConv's bilinear
sampler (:func:`sample_linear`) combine per-axis taps of scattered points in :func:`_gather_taps`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from dcopt.ops.registry import reference


def _work_dtype(dtype):
    return dtype if dtype in (np.float32, np.float64) else np.float64


def _saturate(y, dtype):
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(y), info.min, info.max).astype(dtype)
    return y.astype(dtype, copy=False)


# ----------------------------------------------------------------------------- Resize / Upsample

def _source_coords(mode, out_size, in_size, scale, roi):
    """Map output indices to (float) input coordinates per ``coordinate_transformation_mode``."""
    y = np.arange(out_size, dtype=np.float64)
    length = scale * in_size  # the spec's length_resized: fractional when scales don't divide evenly
    length = out_size if math.isclose(length, out_size) else length
    if mode == "align_corners":
        return y * (in_size - 1) / (length - 1) if length != 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return y / scale
    if mode == "pytorch_half_pixel":
        return (y + 0.5) / scale - 0.5 if length != 1 else np.full(out_size, -0.5)
    if mode == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / length)
        return offset + (y + 0.5) / scale - 0.5
    if mode == "tf_crop_and_resize":
        start, end = roi
        if length != 1:
            return start * (in_size - 1) + y * (end - start) * (in_size - 1) / (length - 1)
        return np.full(out_size, start * (in_size - 1) + (end - start) * (in_size - 1) / 2)
    raise ValueError(f"Resize: unknown coordinate_transformation_mode {mode!r}")


def _nearest_index(x, nearest_mode, scale):
    if nearest_mode == "simple":  # Upsample and Resize-10: truncate, or ceil when downsampling
        return np.ceil(x) if scale < 1 else np.trunc(x)
    frac = x - np.floor(x)
    if nearest_mode == "round_prefer_floor":
        return np.where(frac <= 0.5, np.floor(x), np.ceil(x))
    if nearest_mode == "round_prefer_ceil":
        return np.where(frac < 0.5, np.floor(x), np.ceil(x))
    if nearest_mode == "floor":
        return np.floor(x)
    if nearest_mode == "ceil":
        return np.ceil(x)
    raise ValueError(f"Resize: unknown nearest_mode {nearest_mode!r}")


def _cubic_kernel(t, a):
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _resize_taps(x, in_size, mode, scale, cubic_a, antialias, exclude_outside):
    """Indices (out, n) and weights (out, n) of linear/cubic interpolation at coordinates x."""
    support = 1.0 if mode == "linear" else 2.0
    shrink = min(scale, 1.0) if antialias else 1.0  # antialias widens the filter when downsampling
    start = math.floor(-support / shrink) + 1
    base = np.floor(x)
    base = np.where(base == x, x - 1, base)  # ratio in (0, 1], matching the spec's neighbour choice
    idx = base[:, None] + np.arange(start, 1 - start + 1)[None, :]
    dist = (idx - x[:, None]) * shrink
    w = np.clip(1 - np.abs(dist), 0, 1) if mode == "linear" else _cubic_kernel(dist, cubic_a)
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= in_size), 0.0, w)
    if antialias or exclude_outside:
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, in_size - 1).astype(np.intp), w


def resize_axis_taps(in_size, out_size, scale, roi, *, mode, ctm, nearest_mode, cubic_a, antialias, exclude_outside):
    """One axis of Resize as a table: source indices (out, n) and weights (out, n) in float64 (None for
    nearest, n = 1), and which outputs lie outside the crop (tf_crop_and_resize; else None).
    The expansion turns these tables into constant containers, so they are computed exactly here."""
    x = _source_coords(ctm, out_size, in_size, scale, roi)
    if mode == "nearest":
        idx, w = np.clip(_nearest_index(x, nearest_mode, scale), 0, in_size - 1).astype(np.intp)[:, None], None
    else:
        idx, w = _resize_taps(x, in_size, mode, scale, cubic_a, antialias and scale < 1, exclude_outside)
    outside = ((x < 0) | (x > in_size - 1)) if ctm == "tf_crop_and_resize" else None
    return idx, w, outside


def _resize_axis(data, axis, out_size, scale, roi, *, extrapolation_value, **kw):
    idx, w, outside = resize_axis_taps(data.shape[axis], out_size, scale, roi, **kw)
    if w is None:
        y = np.take(data, idx[:, 0], axis=axis)
    else:
        shape = (1,) * axis + (out_size,) + (1,) * (data.ndim - axis - 1)
        y = sum(np.take(data, idx[:, j], axis=axis) * w[:, j].astype(data.dtype).reshape(shape)
                for j in range(idx.shape[1]))
    if outside is not None and outside.any():
        outside = outside.reshape((1,) * axis + (-1,) + (1,) * (data.ndim - axis - 1))
        y = np.where(outside, np.asarray(extrapolation_value, y.dtype), y)
    return y


def resize_steps(shape, roi, scales, sizes, *, axes=None, keep_aspect_ratio_policy="stretch", ctm="asymmetric"):
    """The axes Resize changes, in the order it resizes them: (axis, out size, scale, (roi start, end) or None).
    Axes left as they are (same size, scale 1, no crop) are skipped."""
    rank = len(shape)
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    roi = None if roi is None or np.size(roi) == 0 else np.asarray(roi, np.float64).ravel()
    if roi is not None and len(roi) == 2 * len(axes) and len(axes) != rank:
        full = np.array([0.0] * rank + [1.0] * rank)
        full[axes] = roi[:len(axes)]
        full[[rank + a for a in axes]] = roi[len(axes):]
        roi = full
    if sizes is not None and np.size(sizes):
        sizes = [int(s) for s in np.ravel(sizes)]
        factors = [s / shape[a] for s, a in zip(sizes, axes)]
        if keep_aspect_ratio_policy != "stretch":
            pick = min if keep_aspect_ratio_policy == "not_larger" else max
            s = pick(factors)
            factors = [s] * len(axes)
            sizes = [int(s * shape[a] + 0.5) for a in axes]
    else:
        factors = [float(s) for s in np.ravel(scales)]
        sizes = [int(f * shape[a]) for f, a in zip(factors, axes)]
    steps = []
    for a, size, f in zip(axes, sizes, factors):
        if size == shape[a] and f == 1.0 and ctm != "tf_crop_and_resize":
            continue
        steps.append((a, size, f, None if roi is None else (roi[a], roi[rank + a])))
    return steps


def _resize(x, roi, scales, sizes, *, axes=None, keep_aspect_ratio_policy="stretch", **kw):
    work = _work_dtype(x.dtype) if kw["mode"] != "nearest" else x.dtype
    y = x.astype(work, copy=False)
    for a, size, f, axis_roi in resize_steps(x.shape, roi, scales, sizes, axes=axes,
                                             keep_aspect_ratio_policy=keep_aspect_ratio_policy, ctm=kw["ctm"]):
        y = _resize_axis(y, a, size, f, axis_roi, **kw)
    return _saturate(y, x.dtype)


@reference("Resize")
def resize(x, roi=None, scales=None, sizes=None, *, antialias=0, axes=None, coordinate_transformation_mode="asymmetric",
           cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0, keep_aspect_ratio_policy="stretch",
           mode="nearest", nearest_mode="simple", opset):
    if opset < 11:  # Resize-10 has inputs (X, scales) and Upsample's coordinate conventions
        roi, scales = None, roi
    return _resize(x, roi, scales, sizes, axes=axes, keep_aspect_ratio_policy=keep_aspect_ratio_policy,
                   mode=mode, ctm=coordinate_transformation_mode, nearest_mode=nearest_mode, cubic_a=cubic_coeff_a,
                   antialias=antialias, exclude_outside=exclude_outside, extrapolation_value=extrapolation_value)


@reference("Upsample")
def upsample(x, scales_input=None, *, mode="nearest", scales=None, height_scale=None, width_scale=None):
    if scales_input is not None:
        scales = scales_input
    elif scales is None:  # Upsample-1: 4-D only, height/width scale attributes
        scales = [1.0, 1.0, height_scale, width_scale]
    mode = "linear" if mode == "bilinear" else mode
    return _resize(x, None, scales, None, mode=mode, ctm="asymmetric", nearest_mode="simple", cubic_a=-0.75,
                   antialias=0, exclude_outside=0, extrapolation_value=0.0)


# ----------------------------------------------------------------------------- point sampling

def _gather_taps(img, taps):
    """Sum over tap combinations of prod(weights) * img[b, :, idx...].

    img: (B, C, *S); taps: per spatial axis, (idx, w) each shaped (B, *P, n) with idx in range.
    Returns (B, C, *P).
    """
    b, c = img.shape[:2]
    pts = taps[0][0].shape[1:-1]
    chan_last = np.moveaxis(img, 1, -1)
    bidx = np.arange(b).reshape((b,) + (1,) * len(pts))
    out = np.zeros((b, *pts, c), img.dtype)
    for combo in itertools.product(*[range(t[0].shape[-1]) for t in taps]):
        idx = tuple(t[0][..., j] for t, j in zip(taps, combo))
        w = math.prod(t[1][..., j] for t, j in zip(taps, combo))
        out += chan_last[(bidx,) + idx] * w[..., None].astype(img.dtype)
    return np.moveaxis(out, -1, 1)


def _linear_taps(x, size, valid_only=True):
    lo = np.floor(x)
    idx = np.stack([lo, lo + 1], -1)
    w = np.stack([lo + 1 - x, x - lo], -1)
    if valid_only:
        w = np.where((idx >= 0) & (idx < size), w, 0.0)
    return np.clip(idx, 0, size - 1).astype(np.intp), w


def sample_linear(img, pos):
    """(N-)linear interpolation of img (B, C, *S) at pixel coordinates pos (B, *P, nd), zero outside."""
    taps = [_linear_taps(pos[..., d], s) for d, s in enumerate(img.shape[2:])]
    return _gather_taps(img, taps)


def _reflect(x, lo, hi):
    span = hi - lo
    if span <= 0:
        return np.full_like(x, lo)
    t = np.mod(x - lo, 2 * span)
    return lo + np.where(t > span, 2 * span - t, t)


@reference("GridSample")
def grid_sample(x, grid, *, align_corners=0, mode="linear", padding_mode="zeros"):
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    spatial = x.shape[2:]
    work = _work_dtype(x.dtype)
    img = x.astype(work, copy=False)
    taps = []
    for d, size in enumerate(spatial):
        g = grid[..., len(spatial) - 1 - d].astype(np.float64)  # grid's last axis is (x, y, z): reversed
        c = (g + 1) / 2 * (size - 1) if align_corners else ((g + 1) * size - 1) / 2
        lo, hi = (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)
        if mode == "nearest":
            c = np.rint(c)
        if padding_mode == "border":  # only points outside [lo, hi] move (matters for cubic taps)
            c = np.where((c < lo) | (c > hi), np.clip(c, 0, size - 1), c)
        elif padding_mode == "reflection":
            c = _reflect(c, lo, hi)
        if mode == "nearest":
            idx, w = c[..., None], np.ones(c.shape + (1,))
        elif mode == "linear":
            lo_ = np.floor(c)
            idx, w = np.stack([lo_, lo_ + 1], -1), np.stack([lo_ + 1 - c, c - lo_], -1)
        else:
            lo_ = np.floor(c)
            idx = lo_[..., None] + np.arange(-1, 3)
            w = _cubic_kernel(idx - c[..., None], -0.75)
        if padding_mode == "zeros":
            w = np.where((idx >= 0) & (idx < size), w, 0.0)
        elif padding_mode == "reflection":
            idx = np.floor(_reflect(idx, lo, hi))
        taps.append((np.clip(idx, 0, size - 1).astype(np.intp), w))
    return _gather_taps(img, taps).astype(x.dtype, copy=False)


@reference("AffineGrid")
def affine_grid(theta, size, *, align_corners=0):
    spatial = [int(s) for s in np.ravel(size)[2:]]
    axes = [np.linspace(-1, 1, s) if align_corners else (2 * np.arange(s) + 1) / s - 1 for s in spatial]
    mesh = np.meshgrid(*axes, indexing="ij")[::-1]  # (x, y[, z]) order
    homo = np.stack([*mesh, np.ones(spatial)], -1).reshape(-1, len(spatial) + 1)
    grid = np.einsum("pk,nck->npc", homo, theta.astype(np.float64))
    return grid.reshape(theta.shape[0], *spatial, len(spatial)).astype(theta.dtype)


# ----------------------------------------------------------------------------- regions of interest

def _roi_axis_taps(start, bin_size, pooled, grid, size):
    """RoiAlign's bilinear taps along one axis: indices (pooled*grid, 2), weights, and in-range flags."""
    pos = start + (np.arange(pooled)[:, None] * bin_size + (np.arange(grid)[None, :] + 0.5) * bin_size / grid).ravel()
    valid = (pos >= -1.0) & (pos <= size)
    pos = np.maximum(pos, 0)
    lo = pos.astype(np.int64)
    clamp = lo >= size - 1
    lo = np.where(clamp, size - 1, lo)
    hi = np.where(clamp, size - 1, lo + 1)
    frac = np.where(clamp, 0.0, pos - lo)
    return np.stack([lo, hi], 1), np.stack([1 - frac, frac], 1) * valid[:, None]


@reference("RoiAlign")
def roi_align(x, rois, batch_indices, *, coordinate_transformation_mode="output_half_pixel", mode="avg",
              output_height=1, output_width=1, sampling_ratio=0, spatial_scale=1.0):
    n_rois, c = rois.shape[0], x.shape[1]
    h, w = x.shape[2:]
    out = np.empty((n_rois, c, output_height, output_width), np.float64)
    half = coordinate_transformation_mode == "half_pixel"
    for r in range(n_rois):
        x0, y0, x1, y1 = (rois[r].astype(np.float64) * spatial_scale - (0.5 if half else 0.0)).tolist()
        rh, rw = y1 - y0, x1 - x0
        if not half:
            rh, rw = max(rh, 1.0), max(rw, 1.0)
        gh = int(sampling_ratio) if sampling_ratio > 0 else math.ceil(rh / output_height)
        gw = int(sampling_ratio) if sampling_ratio > 0 else math.ceil(rw / output_width)
        yi, yw = _roi_axis_taps(y0, rh / output_height, output_height, gh, h)
        xi, xw = _roi_axis_taps(x0, rw / output_width, output_width, gw, w)
        img = x[int(batch_indices[r])].astype(np.float64)
        vals = img[:, yi[:, :, None, None], xi[None, None, :, :]] * (yw[:, :, None, None] * xw[None, None])
        vals = vals.reshape(c, output_height, gh, 2, output_width, gw, 2)
        if mode == "avg":
            out[r] = vals.sum(axis=(2, 3, 5, 6)) / max(gh * gw, 1)
        else:  # max over samples of the largest weighted corner, as onnxruntime does
            out[r] = vals.max(axis=(2, 3, 5, 6))
    return out.astype(x.dtype)


@reference("MaxRoiPool")
def max_roi_pool(x, rois, *, pooled_shape, spatial_scale=1.0):
    ph, pw = (int(v) for v in pooled_shape)
    h, w = x.shape[2:]
    out = np.zeros((rois.shape[0], x.shape[1], ph, pw), x.dtype)
    for r, (b, *box) in enumerate(rois.astype(np.float64).tolist()):
        x0, y0, x1, y1 = (int(np.sign(v) * math.floor(abs(v) * spatial_scale + 0.5)) for v in box)
        bin_h, bin_w = max(y1 - y0 + 1, 1) / ph, max(x1 - x0 + 1, 1) / pw
        for i, j in itertools.product(range(ph), range(pw)):
            hs, he = (min(max(v + y0, 0), h) for v in (math.floor(i * bin_h), math.ceil((i + 1) * bin_h)))
            ws, we = (min(max(v + x0, 0), w) for v in (math.floor(j * bin_w), math.ceil((j + 1) * bin_w)))
            if he > hs and we > ws:
                out[r, :, i, j] = x[int(b), :, hs:he, ws:we].max(axis=(1, 2))
    return out

