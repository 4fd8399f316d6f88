"""Pooling -> window maps with write-conflict resolution.

Pooling is a map over (N, C, output positions, kernel taps) reading the input at
``stride*o + dilation*k - pad_begin`` per spatial axis (params ``n, c, o..., k...``, taps
innermost, so the renderer accumulates in a register). Reads that fall in the padding yield the
memlet's ``outside`` value (the dtype's lowest value for max, 0 for sums), which also covers
``ceil_mode`` windows hanging over the end.

* MaxPool: one max map. With the Indices output wired, one map over the output positions whose
  tasklet walks the taps in order (the reference's rule: a tap replaces the running maximum's
  index only when strictly greater, and NaN stops the search) and writes both outputs, reading
  a copy of the input padded with the lowest value (so no tap checks its bounds).
* AveragePool, LpPool, GlobalLpPool: a sum map into a transient in the reference's accumulation
  dtype, then one elementwise map dividing by (AveragePool) a constant table of per-position
  counts computed with the reference's own :func:`dcopt.ops.nn._pool_counts`, or taking the root
  (Lp). Summing first and dividing once is what the reference does, so the results agree to the
  last bit up to summation order.
* MaxUnpool: a zero map, then a scatter map over the input with an indirect out subset (the flat
  index decomposed per dim) and the zeros as its init.
"""

from __future__ import annotations

import math

import numpy as np

from dcopt.ops.nn import _pool_counts
from dcopt.passes.expand import LoopBuilder, Refused, affine, expansion, fmt, index, params_of
from dcopt.passes.expansions.nn import _window

FLOATS = ("float16", "bfloat16", "float32", "float64")
INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
#: half-width floats: the reference accumulates them in float32
HALVES = ("float16", "bfloat16")
#: an unrolled tasklet per output (MaxPool with Indices) reads every tap through its own connector
MAX_UNROLLED_TAPS = 64


def work_dtype(dtype: str) -> str:
    """The dtype the reference accumulates ``dtype`` in (``dcopt.ops.nn._acc``)."""
    return "float32" if dtype in HALVES else dtype


def lowest(dtype: str) -> float:
    """The value padding takes in a max window: -inf, or the integer type's minimum."""
    return float(np.iinfo(np.dtype(dtype)).min) if dtype in INTS else -math.inf


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
                 [("out", out, index(p[:2 + nd]), wcr)], [b.dtype(out)])


@expansion("MaxPool")
def max_pool(graph, node):
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS + INTS)
    geometry = _window(b, x, b.attr("kernel_shape"))
    if b.output(1):
        _max_pool_with_indices(b, x, y, b.output(1), geometry)
    else:
        _pool_map(b, "max", x, y, geometry, "a", "max", lowest(b.dtype(x)))
    return b.nodes


def _max_pool_with_indices(b: LoopBuilder, x: str, y: str, indices: str, geometry) -> None:
    """One map over (N, C, *out) whose tasklet runs the reference's argmax over the taps in order:
    ``r = off_k if a_k > m else r; m = max(m, a_k)``, where ``off_k`` is tap k's offset in the
    flattened input (row-major, or column-major over the spatial axes with storage_order=1), and
    the index is the window origin's flat position plus ``r`` -- padding taps included, as the
    reference computes them."""
    spatial, kernel, strides, dilations, out, begin, _ = geometry
    taps = math.prod(kernel)
    if taps > MAX_UNROLLED_TAPS:
        raise Refused(f"the Indices output of a {taps}-tap window (more than {MAX_UNROLLED_TAPS})")
    nd, (n, c) = len(kernel), b.shape(x)[:2]
    if not isinstance(c, int):
        raise Refused("the Indices output needs a static channel count")
    steps, step = [0] * nd, 1
    for a in (range(nd) if b.attr("storage_order", 0) else reversed(range(nd))):
        steps[a], step = step, step * spatial[a]
    p = params_of(2 + nd)
    low = lowest(b.dtype(x))
    # Reads stay in bounds through a copy of x padded with the lowest value where windows overhang:
    # 27 taps each checking their bounds (3-D) made a kernel numba takes ~50 s to compile.
    first = [-bg for bg in begin]
    last = [(o - 1) * s + (k - 1) * d - bg for o, s, k, d, bg in zip(out, strides, kernel, dilations, begin)]
    low_pad = [max(0, -f) for f in first]
    high_pad = [max(0, la - (sz - 1)) for la, sz in zip(last, spatial)]
    source = x
    if any(low_pad) or any(high_pad):
        padded = (n, c, *(sz + lo + hi for sz, lo, hi in zip(spatial, low_pad, high_pad)))
        source = b.transient(padded, b.dtype(x), "padded")
        q = params_of(2 + nd)
        b.map("pad", padded, "out = a", [("a", x, index(q[:2] + [affine([(1, q[2 + a])], -low_pad[a])
                                                                   for a in range(nd)]), low)],
              [("out", source, index(q))])
    reads, lines = [], []
    for k, tap in enumerate(np.ndindex(*kernel)):
        dims = [affine([(strides[a], p[2 + a])], tap[a] * dilations[a] - begin[a] + low_pad[a]) for a in range(nd)]
        reads.append((f"a{k}", source, index(p[:2] + dims)))
        offset = sum(t * d * s for t, d, s in zip(tap, dilations, steps))
        lines += ["m = a0", "r = 0"] if k == 0 else [f"r = {offset} if a{k} > m else r", f"m = max(m, a{k})"]
    origin = affine([(step * c, p[0]), (step, p[1])] + [(strides[a] * steps[a], p[2 + a]) for a in range(nd)],
                    -sum(bg * s for bg, s in zip(begin, steps)))
    lines += ["y = m", f"i = {origin} + r"]
    b.map("max_index", (n, c, *out), "\n".join(lines), reads,
          [("y", y, index(p)), ("i", indices, index(p))], [b.dtype(y), b.dtype(indices)])


def _sum_then(b: LoopBuilder, x: str, y: str, geometry, term: str, finish: str, extra=None) -> None:
    """A sum map of ``term`` over each window into a transient in the accumulation dtype, then an
    elementwise map ``finish`` (``a`` the sum, ``c`` from ``extra`` = (container, subset))."""
    spatial, kernel, strides, dilations, out, begin, _ = geometry
    shape = b.shape(y)
    total = b.transient(shape, work_dtype(b.dtype(x)), "sum")
    _pool_map(b, "sum", x, total, geometry, term, "sum", 0.0)
    p = index(params_of(len(shape)))
    reads = [("a", total, p)] + ([("c", extra[0], extra[1])] if extra else [])
    b.map("finish", shape, f"out = {finish}", reads, [("out", y, p)])


@expansion("AveragePool")
def average_pool(graph, node):
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS)
    geometry = _window(b, x, b.attr("kernel_shape"))
    spatial, kernel, strides, dilations, out, begin, end = geometry
    work = work_dtype(b.dtype(x))
    counts = _pool_counts(np.empty((1, 1, *spatial)), kernel, strides, dilations, out, begin, end,
                          bool(b.attr("count_include_pad", 0)))
    term = f"as_{work}(a)" if work != b.dtype(x) else "a"
    if counts.size and np.all(counts == counts.flat[0]):  # every window equally full: one divisor
        _sum_then(b, x, y, geometry, term, f"a / {fmt(counts.flat[0])}")
        return b.nodes
    table = b.graph.fresh_name(f"{y}_counts")
    b.graph.add_parameter(table, counts.astype(work))
    _sum_then(b, x, y, geometry, term, "a / c", (table, index(params_of(2 + len(kernel))[2:])))
    return b.nodes


def _lp_exponent(b: LoopBuilder) -> int:
    p = int(b.attr("p", 2))
    if p <= 0:
        raise Refused(f"p = {p}: the reference takes the 1/p-th root of a sum of |x|**p with p > 0")
    return p


@expansion("LpPool")
def lp_pool(graph, node):
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS)
    p = _lp_exponent(b)
    work = work_dtype(b.dtype(x))
    term = f"abs(as_{work}(a)) ** {p}" if work != b.dtype(x) else f"abs(a) ** {p}"
    _sum_then(b, x, y, _window(b, x, b.attr("kernel_shape")), term, f"a ** {fmt(1.0 / p)}")
    return b.nodes


@expansion("GlobalLpPool")
def global_lp_pool(graph, node):
    """The whole spatial extent as one window: a sum map with the spatial params reduced."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS)
    p = _lp_exponent(b)
    shape = b.shape(x)
    work = work_dtype(b.dtype(x))
    total = b.transient(b.shape(y), work, "sum")
    term = f"abs(as_{work}(a)) ** {p}" if work != b.dtype(x) else f"abs(a) ** {p}"
    keep = index(params_of(2) + ["0"] * (len(shape) - 2))
    b.map("sum", shape, f"out = {term}", [("a", x, index(params_of(len(shape))))], [("out", total, keep, "sum")])
    b.elementwise(f"a ** {fmt(1.0 / p)}", {"a": total}, y, what="root")
    return b.nodes


@expansion("MaxUnpool")
def max_unpool(graph, node):
    """``y.flat[indices] = x`` into zeros of the inferred shape, placed at the origin of the
    (larger) output_shape: the flat index is split per dim of the inferred shape."""
    b = LoopBuilder(graph, node)
    x, idx, y = b.input(0), b.input(1), b.output()
    shape, out_shape = b.shape(x), b.shape(y)
    nd = len(shape) - 2
    kernel = [int(k) for k in b.attr("kernel_shape")]
    strides = [int(s) for s in (b.attr("strides") or [1] * nd)]
    pads = [int(q) for q in (b.attr("pads") or [0] * (2 * nd))]
    spatial = b.static_dims(x, range(2, nd + 2))
    inferred = [(i - 1) * s - pads[d] - pads[nd + d] + k for d, (i, s, k) in enumerate(zip(spatial, strides, kernel))]
    lead = b.static_dims(x, [0, 1])
    if not all(isinstance(d, int) for d in out_shape) or any(o < i for o, i in zip(out_shape[2:], inferred)) \
            or list(out_shape[:2]) != lead:
        raise Refused(f"output shape {list(out_shape)} does not hold the unpooled {lead + inferred}")
    if b.shape(idx) != shape:
        raise Refused(f"indices of shape {list(b.shape(idx))} for values of shape {list(shape)}")
    total = math.prod(lead) * math.prod(inferred)
    if total == 0 or math.prod(shape) == 0:
        b.elementwise("0", {}, y, what="zeros")
        return b.nodes
    zeros = b.transient(out_shape, b.dtype(y), "zeros")
    b.elementwise("0", {}, zeros, what="zeros")
    full = lead + inferred
    flat = f"(j % {total})"  # numpy's wrap-around of negative flat indices
    dims = []
    for d in range(len(full)):
        inner = math.prod(full[d + 1:])
        text = f"{flat} // {inner}" if inner > 1 else flat
        dims.append(f"{text} % {full[d]}" if d else text)
    p = index(params_of(len(shape)))
    b.map("scatter", shape, "out = a", [("j", idx, p), ("a", x, p)], [("out", y, index(dims), None, zeros)])
    return b.nodes
