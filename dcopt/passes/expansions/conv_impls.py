"""Convolution implementations other than the library call: loops and im2col + GEMM.

The ``Conv`` rule in :mod:`dcopt.passes.expansions.nn` dispatches here when the node carries the
level-1 schedule property ``dcopt.impl`` (:mod:`dcopt.ir.schedule`, chosen by ``select-impl``):

* ``loops`` -- one map over ``(N, M, out..., C/group, kernel...)`` reading the input at
  ``stride*o + dilation*k - pad`` (padding reads yield 0) and accumulating ``x * w`` into the
  output with wcr sum. No extra memory: it moves what the op moves. Right for depthwise and
  few-channel convs, where an unfolded GEMM would be a thin, memory-bound product.
* ``im2col`` -- a copy map unfolds the input into a transient column buffer
  ``col[N, G, C/G * prod(kernel), prod(out)]``, a copy map views the weights as
  ``W[G, M/G, C/G * prod(kernel)]``, one batched GEMM library call computes
  ``W @ col -> [N, G, M/G, prod(out)]``, and an epilogue map folds that back to ``[N, M, out...]``
  (adding the bias). The column buffer is ``prod(kernel)`` times the input (per group): that
  traffic is the price of running the product as a GEMM, and what ``select-impl`` weighs.

Both variants accept every geometry the library call does (any spatial rank, strides,
dilations, explicit or automatic pads, groups); flattened indices are unpacked with ``//`` and
``%`` in the memlets, as the reshape expansions do. The node's tile and vector properties move
to the loop node that does the work (the GEMM call, or the loops map), where a code generator
looks for them; the reference executor ignores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dcopt.ir.graph import Node
from dcopt.ir.schedule import IMPL, TILE, is_schedule_attr
from dcopt.passes.expand import LoopBuilder, Refused, affine, index, params_of
from dcopt.passes.expansions.nn import FLOATS, _window


@dataclass(frozen=True)
class ConvShape:
    """Everything a variant needs about one Conv node (static except the batch dim)."""

    x: str
    w: str
    bias: str | None
    y: str
    channels: int  # C
    filters: int  # M
    group: int  # G
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    out: tuple[int, ...]  # output spatial sizes
    begin: tuple[int, ...]  # begin pads
    padded: bool  # some read may fall in the padding

    @property
    def cg(self) -> int:
        return self.channels // self.group

    @property
    def mg(self) -> int:
        return self.filters // self.group

    @property
    def taps(self) -> int:
        """The GEMM's reduction length: input channels per group times kernel taps."""
        return self.cg * math.prod(self.kernel)


def conv_shape(b: LoopBuilder) -> ConvShape:
    x, w, bias, y = b.input(0), b.input(1), b.input(2, optional=True), b.output()
    b.require_dtype(x, w, bias, allowed=FLOATS)
    rank = len(b.shape(w))
    kernel = b.static_dims(w, range(2, rank))
    spatial, kernel, strides, dilations, out, begin, end = _window(b, x, kernel)
    (channels,), (filters,) = b.static_dims(x, [1]), b.static_dims(w, [0])
    group = int(b.attr("group", 1))
    if tuple(b.shape(y)[1:]) != (filters, *out):
        raise Refused(f"output '{y}' has shape {list(b.shape(y))}, the geometry gives {[filters, *out]} after the batch dim")
    return ConvShape(x, w, bias, y, channels, filters, group, kernel, strides, dilations, tuple(out), tuple(begin),
                     any(begin) or any(end))


def _paren(expr: str) -> str:
    return expr if expr.isidentifier() or expr.isdigit() else f"({expr})"


def unflatten(param: str, extents) -> list[str]:
    """Index expressions of the row-major digits of ``param`` over ``extents`` ("0" for size 1)."""
    digits = []
    for d, extent in enumerate(extents):
        inner = math.prod(extents[d + 1:])
        expr = param if inner == 1 else f"{param} // {inner}"
        if math.prod(extents[:d]) > 1:  # outer digits exist: wrap around
            expr = f"{_paren(expr)} % {extent}"
        digits.append("0" if extent == 1 else expr)
    return digits


def _terms(*pairs) -> list[tuple[int, str]]:
    return [(coef, _paren(expr)) for coef, expr in pairs if expr != "0"]


def _input_read(s: ConvShape, batch: str, group: str, channel: str, out: list[str], taps: list[str]) -> tuple:
    """The in-memlet reading input element (batch, group*C/G + channel, window position)."""
    chan = affine(_terms((s.cg, group), (1, channel)))
    geometry = zip(s.strides, out, s.dilations, taps, s.begin)
    pos = [affine(_terms((st, o), (dl, k)), -bg) for st, o, dl, k, bg in geometry]
    return ("x", s.x, index([batch, chan, *pos])) + ((0.0,) if s.padded else ())


def _group_of(s: ConvShape, filt: str) -> tuple[str, str]:
    """(group, filter within group) expressions of a flat filter index."""
    if s.group == 1:
        return "0", filt
    return (filt, "0") if s.mg == 1 else (f"{filt} // {s.mg}", f"{filt} % {s.mg}")


def _with_bias(b: LoopBuilder, s: ConvShape, what: str, read: tuple) -> None:
    """The map writing ``y`` from ``read`` (an in-memlet over y's params), plus the bias."""
    shape = b.shape(s.y)
    p = params_of(len(shape))
    reads = [read] + ([("b", s.bias, p[1])] if s.bias else [])
    b.map(what, shape, "out = a + b" if s.bias else "out = a", reads, [("out", s.y, index(p))])


def _tagged(b: LoopBuilder, node: Node, props: dict) -> None:
    """Move the conv's tile/vector properties onto the loop node that does the work."""
    if props:
        b.nodes[b.nodes.index(node)] = node.replace(attrs={**node.attrs, **props})


def loops(b: LoopBuilder, s: ConvShape, props: dict) -> None:
    """y[n, m, o...] += x[n, group(m)*C/G + c, window(o, k)...] * w[m, c, k...] (+ bias map)."""
    nd = len(s.kernel)
    n_out = 2 + nd
    p = params_of(n_out + 1 + nd)
    group, _ = _group_of(s, p[1])
    out, chan, taps = p[2:n_out], p[n_out], p[n_out + 1:]
    acc = b.transient(b.shape(s.y), b.dtype(s.y), "acc") if s.bias else s.y
    core = b.map("loops", (*b.shape(s.y), s.cg, *s.kernel), "out = x * w",
                 [_input_read(s, p[0], group, chan, out, taps), ("w", s.w, index([p[1], chan, *taps]))],
                 [("out", acc, index(p[:n_out]), "sum")], [b.dtype(s.y)])
    _tagged(b, core, props)
    if s.bias:
        _with_bias(b, s, "bias", ("a", acc, index(p[:n_out])))


def im2col(b: LoopBuilder, s: ConvShape, props: dict) -> None:
    """col <- unfolded x; wmat <- w as [G, M/G, taps]; gemm; y <- folded gemm result (+ bias)."""
    nd, dtype = len(s.kernel), b.dtype(s.y)
    n = b.shape(s.x)[0]
    positions = math.prod(s.out)
    col = b.transient((n, s.group, s.taps, positions), dtype, "col")
    q = params_of(4)
    chan, *taps = unflatten(q[2], (s.cg, *s.kernel))
    unfold = b.map("im2col", (n, s.group, s.taps, positions), "out = x",
                   [_input_read(s, q[0], q[1], chan, unflatten(q[3], s.out), taps)], [("out", col, index(q))])
    _tagged(b, unfold, {k: v for k, v in props.items() if k != TILE})
    wmat = b.transient((s.group, s.mg, s.taps), b.dtype(s.w), "wmat")
    r = params_of(3)
    filt = affine(_terms((s.mg, r[0]), (1, r[1])))
    w_read = index([filt, *unflatten(r[2], (s.cg, *s.kernel))])
    b.map("weights", (s.group, s.mg, s.taps), "out = w", [("w", s.w, w_read)], [("out", wmat, index(r))],
          [b.dtype(s.w)])
    ycol = b.transient((n, s.group, s.mg, positions), dtype, "gemm")
    gemm = b.library("gemm", "gemm", [("A", wmat, b.full(wmat)), ("B", col, b.full(col))], [("Y", ycol, b.full(ycol))])
    _tagged(b, gemm, props)
    p = params_of(2 + nd)
    group, filt = _group_of(s, p[1])
    flat = affine([(math.prod(s.out[d + 1:]), p[2 + d]) for d in range(nd)])
    _with_bias(b, s, "col2im", ("a", ycol, index([p[0], group, filt, flat])))


VARIANTS = {"loops": loops, "im2col": im2col}


def expand_conv_variant(graph, node: Node, impl: str) -> list[Node]:
    """Loop nodes for ``node`` implemented as ``impl`` (a key of :data:`VARIANTS`)."""
    if impl not in VARIANTS:
        raise Refused(f"unknown implementation {IMPL}={impl!r} (expandable: library, {', '.join(VARIANTS)})")
    b = LoopBuilder(graph, node)
    s = conv_shape(b)
    if s.group <= 0 or s.channels % s.group or s.filters % s.group or b.shape(s.w)[1] != s.cg:
        raise Refused(f"group={s.group} does not fit C={s.channels}, M={s.filters} and '{s.w}' {list(b.shape(s.w))}")
    props = {k: v for k, v in node.attrs.items() if is_schedule_attr(k) and k != IMPL}
    VARIANTS[impl](b, s, props)
    return b.nodes
