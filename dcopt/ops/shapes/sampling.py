"""Shape rules of the resampling ops (mirrors :mod:`dcopt.ops.sampling`).

Resize's output size follows the reference's arithmetic exactly: ``sizes`` when given (adjusted by
``keep_aspect_ratio_policy``), else ``int(scale * dim)`` per resized axis, in float64 from the
scale's stored value.
"""

from __future__ import annotations

import numpy as np

from dcopt.ops.shapes.registry import shape_rule


def _resized(ctx, shape, axes, scales, sizes, scales_given: bool, sizes_given: bool):
    """The output shape given the constant ``scales``/``sizes`` (None when unknown)."""
    rank = len(shape)
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    out = list(shape)
    if sizes_given and sizes is None:
        return [None if i in axes else d for i, d in enumerate(shape)]
    if sizes is not None and np.size(sizes):
        targets = [int(s) for s in np.ravel(sizes)]
        policy = ctx.attrs.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            if not all(isinstance(shape[a], int) for a in axes):
                return [None if i in axes else d for i, d in enumerate(shape)]
            factor = (min if policy == "not_larger" else max)(s / shape[a] for s, a in zip(targets, axes))
            targets = [int(factor * shape[a] + 0.5) for a in axes]
        for a, s in zip(axes, targets):
            out[a] = s
        return out
    if scales is None:
        return [None if i in axes else d for i, d in enumerate(shape)] if scales_given else list(shape)
    for a, f in zip(axes, np.ravel(scales)):
        f = float(f)
        out[a] = int(f * shape[a]) if isinstance(shape[a], int) else (shape[a] if f == 1.0 else None)
    return out


def _constant_or_empty(ctx, i):
    """(value, wired): an empty tensor counts as absent, as in the reference."""
    if not ctx.has(i):
        return None, False
    known = ctx.dims_value(i)
    if known is not None and len(known) == 0:
        return None, False
    return ctx.value(i), True


@shape_rule("Resize", shape_inputs=lambda opset: (2, 3) if opset >= 11 else (1,))
def resize(ctx):
    shape = ctx.shape(0)
    if ctx.opset < 11:
        scales, has_scales = _constant_or_empty(ctx, 1)
        sizes, has_sizes = None, False
    else:
        scales, has_scales = _constant_or_empty(ctx, 2)
        sizes, has_sizes = _constant_or_empty(ctx, 3)
    return ctx.tensor(ctx.dtype(0), _resized(ctx, shape, ctx.attrs.get("axes"), scales, sizes, has_scales, has_sizes))


@shape_rule("Upsample", shape_inputs=lambda opset: (1,) if opset >= 9 else ())
def upsample(ctx):
    shape = ctx.shape(0)
    if ctx.has(1):
        scales, given = ctx.value(1), True
    elif ctx.attrs.get("scales") is not None:
        scales, given = np.asarray(ctx.attrs["scales"], np.float32), True
    else:
        scales, given = np.asarray([1.0, 1.0, ctx.attrs["height_scale"], ctx.attrs["width_scale"]], np.float32), True
    return ctx.tensor(ctx.dtype(0), _resized(ctx, shape, None, scales, None, given, False))


@shape_rule("GridSample")
def grid_sample(ctx):
    x, grid = ctx.shape(0), ctx.shape(1)
    return ctx.tensor(ctx.dtype(0), (*x[:2], *grid[1:-1]))


@shape_rule("AffineGrid", shape_inputs=(1,))
def affine_grid(ctx):
    size = ctx.dims_value(1)
    if size is None:
        return ctx.tensor(ctx.dtype(0), None)
    spatial = tuple(size[2:])
    return ctx.tensor(ctx.dtype(0), (ctx.shape(0)[0], *spatial, len(spatial)))


@shape_rule("RoiAlign")
def roi_align(ctx):
    return ctx.tensor(ctx.dtype(0), (ctx.shape(1)[0], ctx.shape(0)[1], int(ctx.attrs.get("output_height", 1)),
                                     int(ctx.attrs.get("output_width", 1))))


@shape_rule("MaxRoiPool")
def max_roi_pool(ctx):
    ph, pw = (int(v) for v in ctx.attrs["pooled_shape"])
    return ctx.tensor(ctx.dtype(0), (ctx.shape(1)[0], ctx.shape(0)[1], ph, pw))
