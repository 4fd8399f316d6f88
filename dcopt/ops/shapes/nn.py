"""Shape rules of convolution, pooling and matrix products (mirrors :mod:`dcopt.ops.nn`).

Window geometry is :func:`dcopt.ops.nn._geometry`, the reference's own, applied one spatial axis
at a time so that static axes are exact even when another axis is symbolic. A symbolic axis gets
an expression where one is exact (stride 1: ``H + pads - extent + 1``; SAME with stride 1: ``H``)
and an unknown dim otherwise.
"""

from __future__ import annotations

import math
import re

from dcopt.ops.nn import _geometry
from dcopt.ops.shapes import dims
from dcopt.ops.shapes.registry import ShapeInferenceError, shape_rule


def _ints(value, n: int, fill: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if value else (fill,) * n


def window_out(in_shape, kernel, strides, dilations, auto_pad="NOTSET", pads=None, ceil_mode=False) -> list:
    """Output spatial dims of a sliding window over ``in_shape`` (dims may be symbolic)."""
    nd = len(in_shape)
    pads = _ints(pads, 2 * nd, 0)
    out = []
    for a, i in enumerate(in_shape):
        if isinstance(i, int):
            (o,), _, _ = _geometry([i], [kernel[a]], [strides[a]], [dilations[a]], auto_pad,
                                   [pads[a], pads[nd + a]], ceil_mode)
            out.append(o)
            continue
        ext = (kernel[a] - 1) * dilations[a] + 1
        if strides[a] != 1:
            out.append(None)
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(i)
        elif auto_pad == "VALID":
            out.append(dims.add(i, 1 - ext))
        else:
            o = dims.add(i, pads[a] + pads[nd + a] - ext + 1)
            if ceil_mode and pads[nd + a] - ext >= 0:  # the last window would start in the end padding
                o = dims.add(o, -1)
            out.append(o)
    return out


def _window_attrs(ctx, kernel):
    nd = len(kernel)
    return _ints(ctx.attrs.get("strides"), nd, 1), _ints(ctx.attrs.get("dilations"), nd, 1)


def _kernel_from_weight(ctx, w: int):
    kernel = ctx.attrs.get("kernel_shape")
    spatial = ctx.shape(w)[2:]
    if kernel:
        return tuple(int(k) for k in kernel)
    if not all(isinstance(k, int) for k in spatial):
        return None
    return tuple(spatial)


def conv_shape(ctx, x: int, w: int):
    shape = ctx.shape(x)
    m = ctx.shape(w)[0]
    kernel = _kernel_from_weight(ctx, w)
    if kernel is None:
        return (shape[0], m) + (None,) * (len(shape) - 2)
    strides, dilations = _window_attrs(ctx, kernel)
    out = window_out(shape[2:], kernel, strides, dilations, ctx.attrs.get("auto_pad", "NOTSET"), ctx.attrs.get("pads"))
    return (shape[0], m, *out)


@shape_rule("Conv")
def conv(ctx):
    return ctx.tensor(ctx.dtype(0), conv_shape(ctx, 0, 1))


@shape_rule("ConvInteger")
def conv_integer(ctx):
    return ctx.tensor("int32", conv_shape(ctx, 0, 1))


@shape_rule("QLinearConv")
def qlinear_conv(ctx):
    return ctx.tensor(ctx.dtype(7) if ctx.has(7) else ctx.dtype(0), conv_shape(ctx, 0, 3))


@shape_rule("ConvTranspose")
def conv_transpose(ctx):
    x, w = ctx.shape(0), ctx.shape(1)
    nd = len(x) - 2
    channels = dims.mul(w[1], int(ctx.attrs.get("group", 1)))
    kernel = tuple(w[2:])
    strides, dilations = _window_attrs(ctx, kernel)
    output_padding = _ints(ctx.attrs.get("output_padding"), nd, 0)
    output_shape = ctx.attrs.get("output_shape")
    auto_pad = ctx.attrs.get("auto_pad", "NOTSET")
    if output_shape is not None:
        out = [int(v) for v in list(output_shape)[-nd:]]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [dims.mul(i, s) for i, s in zip(x[2:], strides)]
    else:
        pads = _ints(ctx.attrs.get("pads"), 2 * nd, 0)
        out = []
        for a, (i, s, k, d, p) in enumerate(zip(x[2:], strides, kernel, dilations, output_padding)):
            full = dims.add(dims.mul(dims.add(i, -1), s), dims.add(dims.mul(dims.add(k, -1), d), 1 + p))
            out.append(dims.add(full, -pads[a] - pads[nd + a]))
    return ctx.tensor(ctx.dtype(0), (x[0], channels, *out))


@shape_rule("Col2Im", shape_inputs=(1, 2))
def col2im(ctx):
    x = ctx.shape(0)
    image, block = ctx.ints(1), ctx.ints(2)
    if image is None:
        known = ctx.dims_value(1)
        return ctx.tensor(ctx.dtype(0), None if known is None else (x[0], None, *known))
    channels = dims.div(x[1], math.prod(block)) if block is not None else None
    return ctx.tensor(ctx.dtype(0), (x[0], channels, *image))


@shape_rule("DeformConv")
def deform_conv(ctx):
    return ctx.tensor(ctx.dtype(0), (ctx.shape(0)[0], ctx.shape(1)[0], *ctx.shape(2)[2:]))


@shape_rule("CausalConvWithState")
def causal_conv_with_state(ctx):
    x, w = ctx.shape(0), ctx.shape(1)
    state = dims.add(w[2], -1)
    return [ctx.tensor(ctx.dtype(0), (x[0], w[0], x[2])), ctx.tensor(ctx.dtype(0), (x[0], x[1], state))]


# ----------------------------------------------------------------------------- pooling

def pool_shape(ctx):
    x = ctx.shape(0)
    kernel = tuple(int(k) for k in ctx.attrs["kernel_shape"])
    strides, dilations = _window_attrs(ctx, kernel)
    out = window_out(x[2:], kernel, strides, dilations, ctx.attrs.get("auto_pad", "NOTSET"), ctx.attrs.get("pads"),
                     bool(ctx.attrs.get("ceil_mode", 0)))
    return (*x[:2], *out)


@shape_rule("MaxPool")
def max_pool(ctx):
    shape = pool_shape(ctx)
    return [ctx.tensor(ctx.dtype(0), shape), ctx.tensor("int64", shape)]


@shape_rule("AveragePool", "LpPool")
def average_pool(ctx):
    return ctx.tensor(ctx.dtype(0), pool_shape(ctx))


@shape_rule("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def global_pool(ctx):
    x = ctx.shape(0)
    return ctx.tensor(ctx.dtype(0), (*x[:2], *(1,) * (len(x) - 2)))


@shape_rule("MaxUnpool", shape_inputs=(2,))
def max_unpool(ctx):
    x = ctx.shape(0)
    if ctx.has(2):
        known = ctx.dims_value(2)
        return ctx.tensor(ctx.dtype(0), known)
    nd = len(x) - 2
    kernel = [int(k) for k in ctx.attrs["kernel_shape"]]
    strides, pads = _ints(ctx.attrs.get("strides"), nd, 1), _ints(ctx.attrs.get("pads"), 2 * nd, 0)
    out = [dims.add(dims.mul(dims.add(i, -1), s), k - pads[a] - pads[nd + a])
           for a, (i, s, k) in enumerate(zip(x[2:], strides, kernel))]
    return ctx.tensor(ctx.dtype(0), (*x[:2], *out))


# ----------------------------------------------------------------------------- matrix products

def matmul_shape(a: tuple, b: tuple) -> tuple:
    """np.matmul's result shape: 1-D operands gain (then lose) a unit dim; batch dims broadcast."""
    if not a or not b:
        raise ShapeInferenceError("MatMul operands must have rank >= 1")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if dims.equal(a2[-1], b2[-2]) is False:
        raise ShapeInferenceError(f"MatMul inner dims differ: {list(a)} @ {list(b)}")
    try:
        batch = dims.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError as exc:
        raise ShapeInferenceError(f"MatMul batch dims do not broadcast: {list(a)} @ {list(b)}: {exc}") from None
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


@shape_rule("MatMul")
def matmul(ctx):
    return ctx.tensor(ctx.dtype(0), matmul_shape(ctx.shape(0), ctx.shape(1)))


@shape_rule("MatMulInteger")
def matmul_integer(ctx):
    return ctx.tensor("int32", matmul_shape(ctx.shape(0), ctx.shape(1)))


@shape_rule("QLinearMatMul")
def qlinear_matmul(ctx):
    return ctx.tensor(ctx.dtype(7), matmul_shape(ctx.shape(0), ctx.shape(3)))


@shape_rule("Gemm")
def gemm(ctx):
    a, b = ctx.shape(0), ctx.shape(1)
    rows = a[1] if ctx.attrs.get("transA", 0) else a[0]
    cols = b[0] if ctx.attrs.get("transB", 0) else b[1]
    return ctx.tensor(ctx.dtype(0), (rows, cols))


_TERM = re.compile(r"\.\.\.|[A-Za-z]")


def _einsum_terms(equation: str):
    equation = equation.replace(" ", "")
    lhs, _, rhs = equation.partition("->")
    inputs = [_TERM.findall(t) for t in lhs.split(",")]
    if "->" in equation:
        output = _TERM.findall(rhs)
    else:  # implicit: the ellipsis, then every letter used once, alphabetically
        letters = [c for term in inputs for c in term if c != "..."]
        output = (["..."] if any("..." in t for t in inputs) else []) + sorted(c for c in set(letters)
                                                                                if letters.count(c) == 1)
    return inputs, output


@shape_rule("Einsum")
def einsum(ctx):
    inputs, output = _einsum_terms(ctx.attrs["equation"])
    sizes: dict = {}
    ellipses = []
    for k, term in enumerate(inputs):
        shape = ctx.shape(k)
        n_ell = len(shape) - (len(term) - term.count("..."))
        axis = 0
        for label in term:
            if label == "...":
                ellipses.append(shape[axis:axis + n_ell])
                axis += n_ell
                continue
            d = shape[axis]
            axis += 1
            if label not in sizes or sizes[label] == 1:
                sizes[label] = d
            elif d != 1 and dims.equal(sizes[label], d) is False:
                raise ShapeInferenceError(f"Einsum label {label!r} has sizes {sizes[label]} and {d}")
    ellipsis = dims.broadcast_shapes(*ellipses) if ellipses else ()
    shape = []
    for label in output:
        shape.extend(ellipsis if label == "..." else [sizes[label]])
    return ctx.tensor(ctx.dtype(0), shape)


@shape_rule("Dropout")
def dropout(ctx):
    shape = ctx.shape(0)
    mask = "bool" if ctx.opset >= 10 else ctx.dtype(0)
    return [ctx.tensor(ctx.dtype(0), shape), ctx.tensor(mask, shape)]
