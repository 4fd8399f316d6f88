"""ConvTranspose and Col2Im -> a col2im gather map over the output with wcr sum.

Both scatter-add columns into the output along window taps (the adjoint of a sliding window):
output position ``o`` receives input position (block) ``i`` through tap ``k`` when
``o + pad_begin == s*i + d*k`` (per spatial axis; stride ``s``, dilation ``d``). Written as a
scatter it would need atomics or a serial loop; written as a *gather* each output element sums
the (block, tap) pairs that reach it, so the map iterates over the output's index space and
reduces over taps innermost, in a register, in the reference's order.

Only taps with ``d*k == q (mod s)`` (``q = o + pad_begin``) reach ``o``. With ``g = gcd(d, s)``
they exist when ``g`` divides ``q`` and are ``k = k0(q) + j*(s/g)``, ``k0(q) = (q/g) * inv(d/g)
mod (s/g)`` -- so a tap param ``j`` over ``ceil(K / (s/g))`` values visits exactly the
contributing taps (stride 2, kernel 4: two per axis, none wasted), and ``i = (q - d*k) / s`` is
exact. The tasklet masks taps past the kernel, blocks past the edges and (g > 1) unreachable
phases with a select, reading clamped indices, so infinities and NaNs in masked elements never
leak into a sum.

Col2Im's input *is* the columns. ConvTranspose computes them as its reference does -- one
batched GEMM library call ``W^T @ x`` per group over the operands viewed as matrices (a new
constant for constant weights, else a copy map) -- and then gathers them; float64, which the
BLAS GEMM does not take, multiplies inside the gather instead (one map, channels innermost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dcopt.ops.nn import _geometry, _ints, conv_transpose_geometry
from dcopt.passes.expand import LoopBuilder, Refused, expansion, index, params_of
from dcopt.passes.expansions.tensor import reshape_subset
from dcopt.passes.expansions.pooling import FLOATS, INTS, work_dtype


@dataclass(frozen=True)
class AxisTaps:
    """Index texts of one spatial axis of a gather over transposed windows."""

    tap: str  # the kernel tap k reaching output o at tap param j
    source: str  # the input position i it comes from
    extent: int  # values of the tap param j
    conditions: tuple[str, ...]  # when the (tap, source) pair is real
    overshoots: bool  # the last j can name a tap past the kernel

    def clamped_tap(self, kernel: int) -> str:
        return f"min({self.tap}, {kernel - 1})" if self.overshoots else self.tap

    def clamped_source(self, size: int) -> str:
        return f"min(max({self.source}, 0), {size - 1})"


def axis_taps(o: str, j: str, stride: int, dilation: int, kernel: int, begin: int, size: int) -> AxisTaps:
    """The contributing (tap, input position) pairs of output ``o`` along one axis (module doc)."""
    g = math.gcd(dilation, stride)
    period = stride // g
    q = f"({o} + {begin})" if begin else o
    if period == 1:
        tap = j
    else:
        inverse = pow(dilation // g, -1, period)
        phase = q if g == 1 else f"{q} // {g}"
        phase = f"{phase} * {inverse}" if inverse != 1 else phase
        tap = f"({phase} % {period} + {period}*{j})"
    reach = f"{tap}*{dilation}" if dilation != 1 else tap
    source = f"({q} - {reach})" if stride == 1 else f"({q} - {reach}) // {stride}"
    conditions = [f"0 <= {source} < {size}"]
    if kernel % period:
        conditions.append(f"{tap} < {kernel}")
    if g > 1:
        conditions.append(f"{q} % {g} == 0")
    return AxisTaps(tap, source, -(-kernel // period), tuple(conditions), bool(kernel % period))


def _select(term: str, conditions) -> str:
    return f"{term} if {' and '.join(conditions)} else 0" if conditions else term


def gather_columns(b: LoopBuilder, cols: str, y: str, out_shape, geometry, column, code: str = "a") -> None:
    """The col2im gather: ``y[n, ch, o...]`` (``out_shape``) sums ``cols`` over the taps reaching
    ``o`` (wcr sum, taps innermost, in the reference's order: kernel taps row-major). ``geometry``
    is (strides, dilations, kernel, begin, blocks) per axis; ``column(ch, tap, block)`` gives the
    subset of ``cols`` holding channel ``ch``'s flat kernel tap ``tap`` at flat block ``block``."""
    strides, dilations, kernel, begin, blocks = geometry
    nd = len(kernel)
    p = params_of(2 + 2 * nd)
    o, j = p[2:2 + nd], p[2 + nd:]
    axes = [axis_taps(o[a], j[a], strides[a], dilations[a], kernel[a], begin[a], blocks[a]) for a in range(nd)]
    tap = " + ".join(f"{t.clamped_tap(k)}*{math.prod(kernel[a + 1:])}" for a, (t, k) in enumerate(zip(axes, kernel)))
    block = " + ".join(f"{t.clamped_source(s)}*{math.prod(blocks[a + 1:])}"
                       for a, (t, s) in enumerate(zip(axes, blocks)))
    conditions = [cond for t in axes for cond in t.conditions]
    b.map("gather", (*out_shape, *(t.extent for t in axes)), f"out = {_select(code, conditions)}",
          [("a", cols, column(p[1], tap, block))], [("out", y, index(p[:2 + nd]), "sum")], [b.dtype(y)])


def reshaped(b: LoopBuilder, x: str, shape, dtype: str, hint: str) -> str:
    """``x`` in row-major ``shape`` and ``dtype``: a new constant when ``x`` is one, else a copy map."""
    data = b.constant(x)
    if data is not None:
        name = b.graph.fresh_name(f"{b.output()}_{hint}")
        b.graph.add_parameter(name, np.ascontiguousarray(data.reshape(shape).astype(dtype)))
        return name
    out = b.transient(shape, dtype, hint)
    code = "out = a" if b.dtype(x) == dtype else f"out = as_{dtype}(a)"
    b.map(hint, shape, code, [("a", x, index(reshape_subset(b.shape(x), shape)))],
          [("out", out, index(params_of(len(shape))))])
    return out


@expansion("ConvTranspose")
def conv_transpose(graph, node):
    """As the reference: columns = W^T @ x per group (a GEMM library call on the operands viewed as
    matrices), then the col2im gather map over the output, then the bias. float64 (which the BLAS
    GEMM does not take) is one direct gather map: y[n, m, o] = sum over the group's channels and
    reaching taps of x[n, c, i] * w[c, m, k], params (n, m, o..., j..., c)."""
    b = LoopBuilder(graph, node)
    x, w, bias, y = b.input(0), b.input(1), b.input(2, optional=True), b.output()
    b.require_dtype(x, w, bias, allowed=FLOATS)
    shape = b.shape(x)
    nd = len(shape) - 2
    spatial = b.static_dims(x, range(2, nd + 2))
    channels, per_group, *kernel = b.static_dims(w, range(len(b.shape(w))))
    groups = int(b.attr("group", 1))
    strides = _ints(b.attr("strides"), nd, 1)
    dilations = _ints(b.attr("dilations"), nd, 1)
    try:
        _, begin, out = conv_transpose_geometry(spatial, kernel, strides, dilations, b.attr("auto_pad", "NOTSET"),
                                                b.attr("output_padding"), b.attr("output_shape"), b.attr("pads"))
    except ValueError as exc:
        raise Refused(str(exc)) from None
    if list(b.shape(y)[2:]) != list(out) or channels % groups or b.shape(x)[1] != channels:
        raise Refused(f"output {list(b.shape(y))} does not match the geometry {out} ({groups} groups)")
    dtype = b.dtype(y)
    work = work_dtype(dtype)
    total = y if work == dtype and not bias else b.transient(b.shape(y), work, "sum")
    geometry = (strides, dilations, kernel, begin, spatial)
    if work == "float32":
        in_group, taps, length = channels // groups, math.prod(kernel), math.prod(spatial)
        a = reshaped(b, w, (groups, in_group, per_group * taps), work, "weights")
        x3 = reshaped(b, x, (shape[0], groups, in_group, length), work, "input")
        cols = b.transient((shape[0], groups, per_group * taps, length), work, "columns")
        b.library("columns", "gemm", [("A", a, b.full(a)), ("B", x3, b.full(x3))], [("Y", cols, b.full(cols))],
                  transA=1)
        group = "0" if groups == 1 else f"i1 // {per_group}"
        ml = "i1" if groups == 1 else f"i1 % {per_group}"
        gather_columns(b, cols, total, b.shape(y)[:2] + tuple(out), geometry,
                       lambda ch, tap, block: index(["i0", group, f"{ml}*{taps} + {tap}", block]))
    else:
        _direct_gather(b, x, w, total, geometry, groups, per_group, out)
    if total != y:
        q = index(params_of(2 + nd))
        finish = [("a", total, q)] + ([("c", bias, "i1")] if bias else [])
        b.map("bias" if bias else "cast", b.shape(y), "out = a + c" if bias else "out = a", finish, [("out", y, q)])
    return b.nodes


def _direct_gather(b: LoopBuilder, x: str, w: str, total: str, geometry, groups: int, per_group: int, out) -> None:
    strides, dilations, kernel, begin, spatial = geometry
    nd = len(kernel)
    in_group = b.shape(x)[1] // groups
    p = params_of(2 + 2 * nd + 1)
    n, m, o, j, c = p[0], p[1], p[2:2 + nd], p[2 + nd:2 + 2 * nd], p[-1]
    axes = [axis_taps(o[a], j[a], strides[a], dilations[a], kernel[a], begin[a], spatial[a]) for a in range(nd)]
    channel = c if groups == 1 else f"{m} // {per_group}*{in_group} + {c}"
    reads = [("a", x, index([n, channel, *(t.clamped_source(s) for t, s in zip(axes, spatial))])),
             ("f", w, index([channel, m if groups == 1 else f"{m} % {per_group}",
                             *(t.clamped_tap(k) for t, k in zip(axes, kernel))]))]
    work = b.dtype(total)
    term = "a * f" if work == b.dtype(x) else f"as_{work}(a) * as_{work}(f)"
    space = (b.shape(x)[0], b.shape(total)[1], *out, *(t.extent for t in axes), in_group)
    b.map("gather", space, f"out = {_select(term, [cond for t in axes for cond in t.conditions])}", reads,
          [("out", total, index(p[:2 + nd]), "sum")], [work])


@expansion("Col2Im")
def col2im(graph, node):
    """The col2im gather straight from the input: x[n, c*K + tap, block] is channel c's column."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS + INTS)
    image, block = (b.constant(b.input(i)) for i in (1, 2))
    if image is None or block is None:
        raise Refused("image_shape and block_shape are computed at run time")
    image, kernel = [int(v) for v in image.reshape(-1)], [int(v) for v in block.reshape(-1)]
    nd = len(image)
    strides = _ints(b.attr("strides"), nd, 1)
    dilations = _ints(b.attr("dilations"), nd, 1)
    blocks, begin, _ = _geometry(image, kernel, strides, dilations, "NOTSET", _ints(b.attr("pads"), 2 * nd, 0))
    n, ck, length = b.shape(x)
    taps = math.prod(kernel)
    if not isinstance(ck, int) or ck % taps or length != math.prod(blocks) or list(b.shape(y)[2:]) != image:
        raise Refused(f"input {list(b.shape(x))} does not hold {taps}-tap columns of {blocks} blocks")
    gather_columns(b, x, y, (n, ck // taps, *image), (strides, dilations, kernel, begin, blocks),
                   lambda ch, tap, block: index(["i0", f"{ch}*{taps} + {tap}", block]))
    return b.nodes
