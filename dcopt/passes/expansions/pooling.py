"""Pooling -> window maps with write-conflict resolution.

Pooling is a map over (N, C, output positions, kernel taps) reading the input at
``stride*o + dilation*k - pad_begin`` per spatial axis. Reads that fall in the padding yield the
memlet's ``outside`` value (-inf for max, 0 for sums), which also covers ``ceil_mode`` windows
hanging over the end. AveragePool divides by the window size when every window is complete;
otherwise a small count map over output positions and taps counts the taps that lie inside
(the input, or input plus pads with ``count_include_pad``) and a last map divides.
"""

from __future__ import annotations

import math

from dcopt.passes.expand import LoopBuilder, Refused, affine, expansion, index, params_of
from dcopt.passes.expansions.nn import FLOATS, _window


def _window_reads(nd: int, strides, dilations, begin) -> list[str]:
    """Input index per spatial axis over params (n, c, o_0..o_nd-1, k_0..k_nd-1)."""
    p = params_of(2 + 2 * nd)
    return [affine([(strides[d], p[2 + d]), (dilations[d], p[2 + nd + d])], -begin[d]) for d in range(nd)]


def _pool_map(b: LoopBuilder, what, x, out, geometry, code, wcr, outside):
    spatial, kernel, strides, dilations, out_spatial, begin, _ = geometry
    nd, shape = len(kernel), b.shape(x)
    p = params_of(2 + 2 * nd)
    read = index(p[:2] + _window_reads(nd, strides, dilations, begin))
    return b.map(what, (*shape[:2], *out_spatial, *kernel), f"out = {code}", [("a", x, read, outside)],
                 [("out", out, index(p[:2 + nd]), wcr)])


@expansion("MaxPool")
def max_pool(graph, node):
    b = LoopBuilder(graph, node)
    if b.output(1):
        raise Refused("the Indices output is wired")
    x = b.input(0)
    b.require_dtype(x, allowed=FLOATS)
    _pool_map(b, "max", x, b.output(), _window(b, x, b.attr("kernel_shape")), "a", "max", -math.inf)
    return b.nodes


@expansion("AveragePool")
def average_pool(graph, node):
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=("float32", "float64"))
    geometry = _window(b, x, b.attr("kernel_shape"))
    spatial, kernel, strides, dilations, out, begin, end = geometry
    include = bool(b.attr("count_include_pad", 0))
    lows = [-bg if include else 0 for bg in begin]
    highs = [s + (e if include else 0) for s, e in zip(spatial, end)]
    first = [-bg for bg in begin]
    last = [(o - 1) * s + (k - 1) * d - bg for o, s, k, d, bg in zip(out, strides, kernel, dilations, begin)]
    if all(lo <= f and la < hi for lo, f, la, hi in zip(lows, first, last, highs)):  # every window complete
        _pool_map(b, "mean", x, y, geometry, f"a / {math.prod(kernel)}", "sum", 0.0)
        return b.nodes
    nd, dtype = len(kernel), b.dtype(x)
    total = b.transient(b.shape(y), dtype, "sum")
    count = b.transient((1, 1, *out), dtype, "count")
    _pool_map(b, "sum", x, total, geometry, "a", "sum", 0.0)
    positions = [f"{lo} <= {e} < {hi}" for lo, e, hi in zip(lows, _window_reads(nd, strides, dilations, begin), highs)]
    space = (1, 1, *out, *kernel)  # same param names as the window map, N and C of extent 1
    b.map("count", space, f"out = 1.0 if {' and '.join(positions)} else 0.0", [],
          [("out", count, index(["0", "0", *params_of(2 + 2 * nd)[2:2 + nd]]), "sum")], [dtype])
    b.elementwise("a / c", {"a": total, "c": count}, y, what="divide")
    return b.nodes
