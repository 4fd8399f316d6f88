"""ConvTranspose and Col2Im -> gather maps over the output with wcr sum.

Both scatter-add input positions into the output along window taps (the adjoint of a sliding
window): output position ``o`` receives input position ``i`` through tap ``k`` when
``o + pad_begin == s*i + d*k`` (per spatial axis; stride ``s``, dilation ``d``). Written as a
scatter it would need atomics or a serial loop; written as a *gather* each output element sums
the (input, tap) pairs that reach it, so the map iterates over the output's index space and
reduces over taps (and input channels) innermost, in a register.

Only taps with ``d*k == q (mod s)`` (``q = o + pad_begin``) reach ``o``. With ``g = gcd(d, s)``
they exist when ``g`` divides ``q`` and are ``k = k0(q) + j*(s/g)``, ``k0(q) = (q/g) * inv(d/g)
mod (s/g)`` -- so a tap param ``j`` over ``ceil(K / (s/g))`` values visits exactly the
contributing taps (stride 2, kernel 4: two per axis, none wasted), and ``i = (q - d*k) / s`` is
exact. The tasklet masks taps past the kernel, input positions past the edges and (g > 1)
unreachable phases with a select, reading clamped indices, so infinities and NaNs in masked
elements never leak into a sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dcopt.ops.nn import _geometry, _ints, conv_transpose_geometry
from dcopt.passes.expand import LoopBuilder, Refused, expansion, index, params_of
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


@expansion("ConvTranspose")
def conv_transpose(graph, node):
    """y[n, m, o] = sum over channels of m's group and reaching taps of x[n, c, i] * w[c, m, k]:
    params (n, m, o..., j..., c) with the input channel innermost."""
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
    if list(b.shape(y)[2:]) != list(out) or channels % groups:
        raise Refused(f"output {list(b.shape(y))} does not match the geometry {out} ({groups} groups)")
    in_group = channels // groups
    p = params_of(2 + 2 * nd + 1)
    n, m, o, j, c = p[0], p[1], p[2:2 + nd], p[2 + nd:2 + 2 * nd], p[-1]
    axes = [axis_taps(o[a], j[a], strides[a], dilations[a], kernel[a], begin[a], spatial[a]) for a in range(nd)]
    channel = c if groups == 1 else f"{m} // {per_group}*{in_group} + {c}"
    reads = [("a", x, index([n, channel, *(t.clamped_source(s) for t, s in zip(axes, spatial))])),
             ("f", w, index([channel, m if groups == 1 else f"{m} % {per_group}",
                             *(t.clamped_tap(k) for t, k in zip(axes, kernel))]))]
    dtype = b.dtype(y)
    work = work_dtype(dtype)
    total = y if work == dtype and not bias else b.transient(b.shape(y), work, "sum")
    term = "a * f" if work == dtype else f"as_{work}(a) * as_{work}(f)"
    space = (b.shape(y)[0], b.shape(y)[1], *out, *(t.extent for t in axes), in_group)
    b.map("gather", space, f"out = {_select(term, [cond for t in axes for cond in t.conditions])}", reads,
          [("out", total, index(p[:2 + nd]), "sum")], [work])
    if total != y:
        q = index(params_of(2 + nd))
        finish = [("a", total, q)] + ([("c", bias, "i1")] if bias else [])
        b.map("bias" if bias else "cast", b.shape(y), "out = a + c" if bias else "out = a", finish, [("out", y, q)])
    return b.nodes


@expansion("Col2Im")
def col2im(graph, node):
    """y[n, c, o] = sum over reaching taps of x[n, c*K + tap, block]: params (n, c, o..., j...)."""
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
    pads = _ints(b.attr("pads"), 2 * nd, 0)
    blocks, begin, _ = _geometry(image, kernel, strides, dilations, "NOTSET", pads)
    n, ck, length = b.shape(x)
    taps = math.prod(kernel)
    if not isinstance(ck, int) or ck % taps or length != math.prod(blocks) or list(b.shape(y)[2:]) != image:
        raise Refused(f"input {list(b.shape(x))} does not hold {taps}-tap columns of {blocks} blocks")
    p = params_of(2 + 2 * nd)
    o, j = p[2:2 + nd], p[2 + nd:]
    axes = [axis_taps(o[a], j[a], strides[a], dilations[a], kernel[a], begin[a], blocks[a]) for a in range(nd)]
    tap = " + ".join(f"{t.clamped_tap(k)}*{math.prod(kernel[a + 1:])}" for a, (t, k) in enumerate(zip(axes, kernel)))
    src = " + ".join(f"{t.clamped_source(s)}*{math.prod(blocks[a + 1:])}" for a, (t, s) in enumerate(zip(axes, blocks)))
    reads = [("a", x, index([p[0], f"{p[1]}*{taps} + {tap}", src]))]
    conditions = [cond for t in axes for cond in t.conditions]
    b.map("gather", (n, ck // taps, *image, *(t.extent for t in axes)), f"out = {_select('a', conditions)}", reads,
          [("out", y, index(p[:2 + nd]), "sum")])
    return b.nodes
