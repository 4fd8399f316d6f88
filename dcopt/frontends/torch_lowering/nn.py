"""Neural-network layers: layer/batch normalization, convolution, pooling, upsampling, padding."""

from __future__ import annotations

import re

import numpy as np
from dcopt.frontends.torch_context import LoweringError
from dcopt.frontends.torch_lowering import lower
from dcopt.frontends.torch_lowering._helpers import _ints_list
from dcopt.frontends.torch_lowering.reductions import _reduce_named


# ---------------------------------------------------------------------------------------------
# Normalization


@lower("aten.native_layer_norm.default")
def native_layer_norm(ctx, x, normalized_shape, weight, bias, eps):
    """LayerNormalization computes torch's (output, mean, rstd) triple directly."""
    return _layer_norm(ctx, x, normalized_shape, weight, bias, eps, outputs=3)


@lower("aten.layer_norm.default")
def layer_norm(ctx, x, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return _layer_norm(ctx, x, normalized_shape, weight, bias, eps, outputs=1)


def _layer_norm(ctx, x, normalized_shape, weight, bias, eps, outputs):
    dt = ctx.dtype(x)
    shape = [ctx.static_int(d, "normalized_shape") for d in normalized_shape]
    scale = ctx.tensor(weight, dt) if weight is not None else ctx.const(np.ones(shape), dt)
    shift = ctx.tensor(bias, dt) if bias is not None else None
    return ctx.emit("LayerNormalization", [ctx.tensor(x), scale, shift], outputs=outputs,
                    axis=-len(shape), epsilon=float(eps))


def _batch_norm(ctx, x, weight, bias, running_mean, running_var, training, eps) -> str:
    if training or running_mean is None or running_var is None:
        raise LoweringError("batch norm with batch statistics (training mode) is not supported; "
                            "call model.eval() before exporting")
    dt = ctx.dtype(x)
    channels = ctx.static_int(ctx.shape(running_mean)[0], "channel count")
    scale = ctx.tensor(weight, dt) if weight is not None else ctx.const(np.ones(channels), dt)
    shift = ctx.tensor(bias, dt) if bias is not None else ctx.const(np.zeros(channels), dt)
    return ctx.emit("BatchNormalization", [ctx.tensor(x), scale, shift, ctx.tensor(running_mean, dt),
                                           ctx.tensor(running_var, dt)], epsilon=float(eps))


@lower("aten._native_batch_norm_legit_no_training.default")
def batch_norm_no_training(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
    return _batch_norm(ctx, x, weight, bias, running_mean, running_var, False, eps), None, None


@lower("aten._native_batch_norm_legit.default", "aten.native_batch_norm.default")
def native_batch_norm(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
    return _batch_norm(ctx, x, weight, bias, running_mean, running_var, training, eps), None, None


@lower("aten._native_batch_norm_legit.no_stats")
def batch_norm_batch_stats(ctx, x, weight, bias, training, momentum, eps):
    """Batch norm with the input's own statistics and no running buffers (BiT's weight
    standardization: ``F.batch_norm(w, None, None, training=True)``): per channel (dim 1),
    mean and biased variance over every other dim. Returns (out, mean, rstd) like ATen."""
    dt = ctx.dtype(x)
    rank = ctx.rank(x)
    axes = [0] + list(range(2, rank))
    xs = ctx.tensor(x)
    mean = _reduce_named(ctx, "ReduceMean", xs, rank, axes, True)
    centered = ctx.emit("Sub", [xs, mean])
    var = _reduce_named(ctx, "ReduceMean", ctx.emit("Mul", [centered, centered]), rank, axes, True)
    rstd = ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.emit("Add", [var, ctx.const(float(eps), dt)])])])
    out = ctx.emit("Mul", [centered, rstd])
    channel_shape = ctx.const([-1] + [1] * (rank - 2), "int64")
    if weight is not None:
        out = ctx.emit("Mul", [out, ctx.emit("Reshape", [ctx.tensor(weight, dt), channel_shape])])
    if bias is not None:
        out = ctx.emit("Add", [out, ctx.emit("Reshape", [ctx.tensor(bias, dt), channel_shape])])
    flat = ctx.const([-1], "int64")
    return out, ctx.emit("Reshape", [mean, flat]), ctx.emit("Reshape", [rstd, flat])


@lower("aten.native_group_norm.default")
def native_group_norm(ctx, x, weight, bias, n, c, hxw, group, eps):
    """GroupNorm as a LayerNormalization over [N, G, C/G * spatial] (one normalization per
    group), then the per-channel affine; returns (out, mean, rstd) with mean/rstd [N, G]."""
    dt = ctx.dtype(x)
    rank = ctx.rank(x)
    group = ctx.static_int(group, "group count")
    grouped = ctx.emit("Reshape", [ctx.tensor(x), ctx.ints([n, group, -1])])
    one = ctx.const(np.ones(1), dt)
    normed, mean, rstd = ctx.emit("LayerNormalization", [grouped, one], outputs=3, axis=-1, epsilon=float(eps))
    out = ctx.emit("Reshape", [normed, ctx.emit("Shape", [ctx.tensor(x)], dtype="int64", shape=(rank,))])
    channel_shape = ctx.const([-1] + [1] * (rank - 2), "int64")
    if weight is not None:
        out = ctx.emit("Mul", [out, ctx.emit("Reshape", [ctx.tensor(weight, dt), channel_shape])])
    if bias is not None:
        out = ctx.emit("Add", [out, ctx.emit("Reshape", [ctx.tensor(bias, dt), channel_shape])])
    stats_shape = ctx.ints([n, group])
    return out, ctx.emit("Reshape", [mean, stats_shape]), ctx.emit("Reshape", [rstd, stats_shape])


@lower("aten.batch_norm.default")
def batch_norm(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled=True):
    return _batch_norm(ctx, x, weight, bias, running_mean, running_var, training, eps)


# ---------------------------------------------------------------------------------------------
# Convolution and pooling


@lower("aten.convolution.default")
def convolution(ctx, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    n = ctx.rank(weight) - 2
    attrs = dict(strides=tuple(_ints_list(stride, n)), dilations=tuple(_ints_list(dilation, n)),
                 pads=tuple(_ints_list(padding, n)) * 2, group=int(groups))
    inputs = [ctx.tensor(x), ctx.tensor(weight), None if bias is None else ctx.tensor(bias)]
    if transposed:
        return ctx.emit("ConvTranspose", inputs, output_padding=tuple(_ints_list(output_padding, n)), **attrs)
    return ctx.emit("Conv", inputs, **attrs)


@lower("aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default")
def conv_nd(ctx, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if isinstance(padding, str):
        if padding != "valid":
            raise LoweringError(f"padding='{padding}' is not supported; give explicit padding")
        padding = 0
    return convolution(ctx, x, weight, bias, stride, padding, dilation, False, [0], groups)


def _spatial_dims(ctx) -> int:
    """1, 2 or 3, from the op's name (max_pool2d..., avg_pool1d...)."""
    return int(re.search(r"(\d)d", str(ctx.node.target)).group(1))


def _pool_attrs(kernel_size, stride, padding, n) -> dict:
    kernel = _ints_list(kernel_size, n)
    return dict(kernel_shape=tuple(kernel), strides=tuple(_ints_list(stride, n) if stride else kernel),
                pads=tuple(_ints_list(padding, n)) * 2)


@lower("aten.max_pool2d_with_indices.default", "aten.max_pool3d_with_indices.default",
       "aten.max_pool1d.default", "aten.max_pool2d.default", "aten.max_pool3d.default")
def max_pool(ctx, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """MaxPool; the *_with_indices forms return (values, None): torch's per-plane indices differ
    from ONNX's flattened ones, and only max_unpool/backward read them."""
    n = _spatial_dims(ctx)
    out = ctx.emit("MaxPool", [ctx.tensor(x)], dilations=tuple(_ints_list(dilation, n)), ceil_mode=int(ceil_mode),
                   **_pool_attrs(kernel_size, stride, padding, n))
    return (out, None) if "with_indices" in str(ctx.node.target) else out


@lower("aten.avg_pool1d.default", "aten.avg_pool2d.default", "aten.avg_pool3d.default")
def avg_pool(ctx, x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
             divisor_override=None):
    if divisor_override is not None:
        raise LoweringError("avg_pool with divisor_override is not supported")
    n = _spatial_dims(ctx)
    return ctx.emit("AveragePool", [ctx.tensor(x)], ceil_mode=int(ceil_mode),
                    count_include_pad=int(count_include_pad), **_pool_attrs(kernel_size, stride, padding, n))


@lower("aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default",
       "aten.adaptive_avg_pool1d.default", "aten._adaptive_avg_pool3d.default", "aten.adaptive_avg_pool3d.default")
def adaptive_avg_pool(ctx, x, output_size):
    """Global pooling for output 1; an even AveragePool when the input divides the output."""
    n = _spatial_dims(ctx)
    out = _ints_list(output_size, n)
    if all(o == 1 for o in out):
        return ctx.emit("GlobalAveragePool", [ctx.tensor(x)])
    spatial = [ctx.static_int(d, "pooled spatial size") for d in ctx.shape(x)[2:]]
    if any(s % o for s, o in zip(spatial, out)):
        raise LoweringError(f"adaptive pooling from {spatial} to {out} has uneven windows")
    kernel = tuple(s // o for s, o in zip(spatial, out))
    return ctx.emit("AveragePool", [ctx.tensor(x)], kernel_shape=kernel, strides=kernel)


@lower("aten.upsample_nearest2d.vec", "aten.upsample_nearest2d.default",
       "aten.upsample_bilinear2d.vec", "aten.upsample_bilinear2d.default")
def upsample(ctx, x, output_size=None, *rest, **_):
    """Resize to the traced output size: nearest = asymmetric/floor, bilinear = half-pixel or
    align-corners, matching torch."""
    bilinear = "bilinear" in str(ctx.node.target)
    align = bool(rest[0]) if bilinear and rest and isinstance(rest[0], bool) else False
    sizes = ctx.shape_tensor(ctx.out_val().shape)
    if bilinear:
        attrs = dict(mode="linear", coordinate_transformation_mode="align_corners" if align else "pytorch_half_pixel")
    else:
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    return ctx.emit("Resize", [ctx.tensor(x), None, None, sizes], **attrs)


@lower("aten.constant_pad_nd.default")
def constant_pad_nd(ctx, x, pad, value=0):
    """torch lists (begin, end) pairs from the last dim backwards; ONNX all begins, then all ends."""
    rank = ctx.rank(x)
    begins, ends = [0] * rank, [0] * rank
    for i in range(len(pad) // 2):
        begins[rank - 1 - i], ends[rank - 1 - i] = pad[2 * i], pad[2 * i + 1]
    return ctx.emit("Pad", [ctx.tensor(x), ctx.ints(begins + ends), ctx.const(value, ctx.dtype(x))], mode="constant")
