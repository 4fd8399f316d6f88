"""Sampling at data-dependent positions (GridSample, RoiAlign, MaxRoiPool, DeformConv) -> tap maps
feeding gather maps.

A tasklet computes values, not the indices a memlet reads at; only a loaded value (a connector)
can index. So each op is two stages, as its reference is (:mod:`dcopt.ops.sampling`): a *tap map*
per spatial axis computes, per sampling point and tap, the integer source index (clamped in
range) and the float64 weight into two transients -- the reference's float arithmetic written
out as a tasklet -- and a *gather map* reads the data through indirect subsets naming those
indices and sums ``data * prod(weights)`` in the order the reference combines them: GridSample
with every tap combination unrolled in one tasklet per output, RoiAlign (samples x corners) and
DeformConv with wcr over tap params innermost (max for RoiAlign's max mode). MaxRoiPool's
windows are integer ranges, so it compares positions with them instead (see its docstring).
"""

from __future__ import annotations

import itertools
import math

from dcopt.passes.expand import LoopBuilder, Refused, expansion, fmt, index, params_of
from dcopt.passes.expansions.pooling import FLOATS

#: taps per axis of each GridSample interpolation
GRID_TAPS = {"nearest": 1, "linear": 2, "cubic": 4}


def cubic_weight(distance: str, a: float = -0.75) -> list[str]:
    """Tasklet lines setting ``w`` to the cubic convolution kernel at ``distance`` (the reference's
    :func:`dcopt.ops.sampling._cubic_kernel`)."""
    return [f"u = abs({distance})",
            f"near = (({fmt(a + 2)} * u - {fmt(a + 3)}) * u * u) + 1",
            f"far = (({fmt(a)} * u - {fmt(5 * a)}) * u + {fmt(8 * a)}) * u - {fmt(4 * a)}",
            "w = near if u <= 1 else (far if u < 2 else 0.0)"]


def reflect(value: str, lo: float, hi: float) -> str:
    """Expression of the reference's ``_reflect``: fold ``value`` into [lo, hi] by mirroring."""
    span = hi - lo
    if span <= 0:
        return fmt(lo)
    t = f"(({value} - {fmt(lo)}) % {fmt(2 * span)})"
    return f"({fmt(lo)} + ({fmt(2 * span)} - {t} if {t} > {fmt(span)} else {t}))"


def clamped_index(value: str, size: int) -> str:
    """``value`` (float) clipped to [0, size - 1] as an int64 -- 0 for NaN, so a NaN position reads
    in bounds (the reference raises there)."""
    return f"as_int64(min(max({value}, 0.0), {fmt(size - 1.0)})) if {value} == {value} else 0"


def in_batch(b: LoopBuilder, x: str) -> str:
    """The loaded batch index ``r`` clamped to x's batch (a bad roi batch reads a wrong image, not
    past the buffer; the reference raises there)."""
    return f"min(max(r, 0), {b.shape(x)[0]} - 1)"


def _grid_tap_lines(size: int, mode: str, padding: str, align: bool) -> list[str]:
    """Tasklet: ``g`` (a grid coordinate) and tap param ``t`` -> ``k`` (source index), ``w`` (weight)."""
    lo, hi = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
    c = f"(g + 1) / 2 * {fmt(size - 1.0)}" if align else f"((g + 1) * {size} - 1) / 2"
    lines = [f"c = {c}"]
    if mode == "nearest":
        lines.append("c = rint(c)")
    if padding == "border":
        lines.append(f"c = min(max(c, 0.0), {fmt(size - 1.0)}) if c < {fmt(lo)} or c > {fmt(hi)} else c")
    elif padding == "reflection":
        lines.append(f"c = {reflect('c', lo, hi)}")
    if mode == "nearest":
        lines += ["x = c", "w = 1.0"]
    elif mode == "linear":
        lines += ["f = floor(c)", "x = f + t", "w = f + 1 - c if t == 0 else c - f"]
    else:
        lines += ["x = floor(c) + (t - 1)", *cubic_weight("x - c")]
    if padding == "zeros":
        lines.append(f"w = w if 0 <= x < {size} else 0.0")
    elif padding == "reflection":
        lines.append(f"x = floor({reflect('x', lo, hi)})")
    lines.append(f"k = {clamped_index('x', size)}")
    return lines


@expansion("GridSample")
def grid_sample(graph, node):
    b = LoopBuilder(graph, node)
    x, grid, y = b.input(0), b.input(1), b.output()
    b.require_dtype(x, grid, allowed=FLOATS)
    shape = b.shape(x)
    nd = len(shape) - 2
    spatial = b.static_dims(x, range(2, nd + 2))
    points = b.shape(grid)[1:-1]
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(b.attr("mode", "linear"), b.attr("mode", "linear"))
    padding = b.attr("padding_mode", "zeros")
    if mode not in GRID_TAPS or padding not in ("zeros", "border", "reflection"):
        raise Refused(f"mode {mode!r} with padding {padding!r}")
    taps = GRID_TAPS[mode]
    n = shape[0]
    p = params_of(1 + len(points) + 1)
    at = index(p[:-1])
    indices, weights = [], []
    for d, size in enumerate(spatial):
        k = b.transient((n, *points, taps), "int64", f"index{d}")
        w = b.transient((n, *points, taps), "float64", f"weight{d}")
        code = "\n".join([f"t = {p[-1]}", "g = as_float64(v)",
                          *_grid_tap_lines(size, mode, padding, bool(b.attr("align_corners", 0)))])
        b.map(f"taps{d}", (n, *points, taps), code, [("v", grid, f"{at}, {nd - 1 - d}")],
              [("k", k, index(p)), ("w", w, index(p))])
        indices.append(k)
        weights.append(w)
    sample(b, x, y, indices, weights, (n, shape[1], *points))
    return b.nodes


def sample(b: LoopBuilder, x: str, y: str, indices, weights, out_shape) -> None:
    """y[n, c, pts...] = sum over tap combinations of x[n, c, k_0, ..., k_d] * prod(w_d), where
    ``indices[d]``/``weights[d]`` are (n, pts..., taps) transients: one map over the output with
    every combination unrolled in the tasklet, added left to right in the reference's order
    (``itertools.product`` of the taps), in its working dtype (float32 for float32, else float64),
    each weight product in float64 first."""
    dtype = b.dtype(x)
    work = dtype if dtype in ("float32", "float64") else "float64"
    rank = len(out_shape)
    p = params_of(rank)
    point = [p[0], *p[2:]]
    reads, terms = [], []
    for d, (k, w) in enumerate(zip(indices, weights)):
        for t in range(b.shape(k)[-1]):
            reads += [(f"k{d}_{t}", k, index([*point, t])), (f"w{d}_{t}", w, index([*point, t]))]
    for c, combo in enumerate(itertools.product(*(range(b.shape(k)[-1]) for k in indices))):
        reads.append((f"a{c}", x, index([p[0], p[1], *(f"k{d}_{t}" for d, t in enumerate(combo))])))
        weight = " * ".join(f"w{d}_{t}" for d, t in enumerate(combo))
        weight = f"as_float32({weight})" if work == "float32" else f"({weight})"
        value = f"a{c}" if work == dtype else f"as_{work}(a{c})"
        terms.append(f"{value} * {weight}")
    total = y if work == dtype else b.transient(out_shape, work, "sum")
    b.map("gather", out_shape, f"out = {' + '.join(terms)}", reads, [("out", total, index(p))], [work])
    if total != y:
        b.elementwise("a", {"a": total}, y, what="cast")


def _roi_tap_lines(size: int, pooled: int, grid: int, scale: float, half: bool) -> list[str]:
    """Tasklet of RoiAlign's sampling taps along one axis (the reference's ``_roi_axis_taps``):
    roi ends ``v0``, ``v1``; params ``ph`` (bin), ``g`` (sample in the bin), ``t`` (corner)."""
    lines = [f"s0 = as_float64(v0) * {fmt(scale)}" + (" - 0.5" if half else ""),
             f"s1 = as_float64(v1) * {fmt(scale)}" + (" - 0.5" if half else ""),
             "extent = s1 - s0" if half else "extent = max(s1 - s0, 1.0)",
             f"step = extent / {pooled}",
             f"pos = s0 + (ph * step + (g + 0.5) * step / {grid})",
             f"valid = pos >= -1.0 and pos <= {size}",
             "pos = max(pos, 0.0)",
             f"edge = pos >= {size - 1}",
             "frac = 0.0 if edge else pos - floor(pos)",
             f"k = {size - 1} if edge or pos != pos else as_int64(pos) + t",
             "w = (1.0 - frac if t == 0 else frac) if valid else 0.0"]
    return lines


@expansion("RoiAlign")
def roi_align(graph, node):
    """Per roi, bin and sample: bilinear taps along y and x (tap maps over (R, bins, samples, 2)),
    then a gather map over (R, C, bins, samples and corners) summing (avg, then a map dividing by
    the sample count) or taking the max of the weighted corners (max), in float64 as the reference.
    The adaptive sample count (sampling_ratio 0) depends on each roi's size, so it is refused."""
    b = LoopBuilder(graph, node)
    x, rois, batch, y = b.input(0), b.input(1), b.input(2), b.output()
    b.require_dtype(x, rois, allowed=FLOATS)
    ratio = int(b.attr("sampling_ratio", 0))
    if ratio <= 0:
        raise Refused("sampling_ratio 0: the number of samples per bin depends on each roi's size")
    mode = b.attr("mode", "avg")
    if mode not in ("avg", "max"):
        raise Refused(f"mode {mode!r}")
    half = b.attr("coordinate_transformation_mode", "output_half_pixel") == "half_pixel"
    scale = float(b.attr("spatial_scale", 1.0))
    height, width = b.static_dims(x, [2, 3])
    pooled = [int(b.attr("output_height", 1)), int(b.attr("output_width", 1))]
    count, channels = b.shape(rois)[0], b.shape(x)[1]
    if list(b.shape(y)) != [count, channels, *pooled]:
        raise Refused(f"output {list(b.shape(y))} is not [{count}, {channels}, {pooled[0]}, {pooled[1]}]")
    taps = []
    for axis, (size, bins, first) in enumerate(zip((height, width), pooled, (1, 0))):
        space = (count, bins, ratio, 2)
        k, w = (b.transient(space, t, f"{what}{axis}") for t, what in (("int64", "index"), ("float64", "weight")))
        code = "\n".join(["ph = i1", "g = i2", "t = i3", *_roi_tap_lines(size, bins, ratio, scale, half)])
        b.map(f"taps{axis}", space, code, [("v0", rois, f"i0, {first}"), ("v1", rois, f"i0, {first + 2}")],
              [("k", k, "i0, i1, i2, i3"), ("w", w, "i0, i1, i2, i3")])
        taps.append((k, w))
    (ky, wy), (kx, wx) = taps
    work = "float64"
    total = y if b.dtype(x) == work and mode == "max" else b.transient(b.shape(y), work, mode)
    reads = [("ky", ky, "i0, i2, i4, i5"), ("wy", wy, "i0, i2, i4, i5"), ("kx", kx, "i0, i3, i6, i7"),
             ("wx", wx, "i0, i3, i6, i7"), ("r", batch, "i0"), ("a", x, f"{in_batch(b, x)}, i1, ky, kx")]
    b.map("gather", (count, channels, *pooled, ratio, 2, ratio, 2), "out = as_float64(a) * (wy * wx)", reads,
          [("out", total, "i0, i1, i2, i3", "sum" if mode == "avg" else "max")], [work])
    if total != y:
        b.elementwise(f"a / {ratio * ratio}" if mode == "avg" else "a", {"a": total}, y, what="finish")
    return b.nodes


@expansion("DeformConv")
def deform_conv(graph, node):
    """Bilinear sampling at the offset tap positions (tap maps per axis over (N, offset groups,
    taps, out..., 2), a gather map into columns (N, C, taps, out...)), then the grouped product with
    the weights (times the mask) as a map reducing over (channel, tap) innermost -- all in float64
    as the reference computes -- and a map adding the bias and casting."""
    b = LoopBuilder(graph, node)
    x, w, offset, y = b.input(0), b.input(1), b.input(2), b.output()
    bias, mask = b.input(3, optional=True), b.input(4, optional=True)
    b.require_dtype(x, w, offset, bias, mask, allowed=FLOATS)
    shape = b.shape(x)
    nd = len(shape) - 2
    spatial = b.static_dims(x, range(2, nd + 2))
    outputs, per_group, *kernel = b.static_dims(w, range(nd + 2))
    n, channels = shape[0], b.static_dims(x, [1])[0]
    out = b.static_dims(offset, range(2, nd + 2))
    groups, offset_groups = int(b.attr("group", 1)), int(b.attr("offset_group", 1))
    strides = [int(s) for s in (b.attr("strides") or [1] * nd)]
    dilations = [int(d) for d in (b.attr("dilations") or [1] * nd)]
    begin = [int(q) for q in (b.attr("pads") or [0] * (2 * nd))][:nd]
    taps = math.prod(kernel)
    if channels % offset_groups or channels != per_group * groups or list(b.shape(y)) != [n, outputs, *out]:
        raise Refused(f"shapes x {list(shape)}, w {list(b.shape(w))}, y {list(b.shape(y))} do not agree")
    in_group = channels // offset_groups
    p = params_of(3 + nd + 1)
    o = p[3:3 + nd]
    indices, weights = [], []
    for d in range(nd):
        tap = f"(i2 // {math.prod(kernel[d + 1:])}) % {kernel[d]}"
        space = (n, offset_groups, taps, *out, 2)
        k, wt = (b.transient(space, t, f"{what}{d}") for t, what in (("int64", "index"), ("float64", "weight")))
        code = [f"t = {p[-1]}", f"c = ({o[d]} * {strides[d]} - {begin[d]} + {tap} * {dilations[d]}) + as_float64(v)",
                "f = floor(c)", "x = f + t", "w = f + 1 - c if t == 0 else c - f",
                f"w = w if 0 <= x < {spatial[d]} else 0.0", f"k = {clamped_index('x', spatial[d])}"]
        b.map(f"taps{d}", space, "\n".join(code), [("v", offset, index(["i0", f"(i1*{taps} + i2)*{nd} + {d}", *o]))],
              [("k", k, index(p)), ("w", wt, index(p))])
        indices.append(k)
        weights.append(wt)
    cols = b.transient((n, channels, taps, *out), "float64", "columns")
    q = params_of(3 + 2 * nd)
    at = ["i0", f"i1 // {in_group}", "i2", *q[3:3 + nd]]
    reads = []
    for d in range(nd):
        tap = index([*at, q[3 + nd + d]])
        reads += [(f"k{d}", indices[d], tap), (f"w{d}", weights[d], tap)]
    reads.append(("a", x, index(["i0", "i1", *(f"k{d}" for d in range(nd))])))
    product = " * ".join(f"w{d}" for d in range(nd))
    b.map("sample", (n, channels, taps, *out, *[2] * nd), f"out = as_float64(a) * ({product})", reads,
          [("out", cols, index(q[:3 + nd]), "sum")])
    r = params_of(2 + nd + 2)
    ci, kk = r[-2], r[-1]
    channel = f"i1 // {outputs // groups}*{per_group} + {ci}" if groups > 1 else ci
    kernel_at = [f"({kk} // {math.prod(kernel[d + 1:])}) % {kernel[d]}" for d in range(nd)]
    reads = [("f", w, index(["i1", ci, *kernel_at])), ("c", cols, index(["i0", channel, kk, *r[2:2 + nd]]))]
    term = "as_float64(f) * c"
    if mask:
        reads.append(("m", mask, index(["i0", f"({channel}) // {in_group}*{taps} + {kk}", *r[2:2 + nd]])))
        term = "as_float64(f) * (c * as_float64(m))"
    total = b.transient(b.shape(y), "float64", "sum")
    b.map("product", (n, outputs, *out, per_group, taps), f"out = {term}", reads,
          [("out", total, index(r[:2 + nd]), "sum")])
    if bias:
        s = index(params_of(2 + nd))
        b.map("bias", b.shape(y), "out = a + as_float64(c)", [("a", total, s), ("c", bias, "i1")], [("out", y, s)])
    else:
        b.elementwise("a", {"a": total}, y, what="cast")
    return b.nodes


@expansion("MaxRoiPool")
def max_roi_pool(graph, node):
    """Each bin's window [start, end) per axis comes from the roi (bin maps over (R, bins) in the
    reference's float64 rounding); the max over it is separable: a map over (R, C, H, bins_x, W)
    takes each row's max over the window's columns, a map over (R, C, bins_y, bins_x, H) the max of
    those over the window's rows (taps outside the window read -inf), and a last map writes 0 for
    empty windows. A window can be as large as the input, so the maps range over whole rows and
    columns: O(R*C*H*W*(bins_x + bins_y*bins_x / W)) work, where the reference's is O(R*C*H*W)."""
    b = LoopBuilder(graph, node)
    x, rois, y = b.input(0), b.input(1), b.output()
    b.require_dtype(x, rois, allowed=FLOATS)
    height, width = b.static_dims(x, [2, 3])
    pooled = [int(v) for v in b.attr("pooled_shape")]
    scale = float(b.attr("spatial_scale", 1.0))
    count, channels = b.shape(rois)[0], b.shape(x)[1]
    if list(b.shape(y)) != [count, channels, *pooled]:
        raise Refused(f"output {list(b.shape(y))} is not [{count}, {channels}, {pooled[0]}, {pooled[1]}]")
    batch = b.transient((count,), "int64", "batch")
    b.map("batch", (count,), "out = as_int64(v)", [("v", rois, "i0, 0")], [("out", batch, "i0")])
    bounds = []
    for axis, (size, bins, first) in enumerate(zip((height, width), pooled, (2, 1))):
        start, end = (b.transient((count, bins), "int64", f"{what}{axis}") for what in ("start", "end"))
        rounded = [f"e{j} = sign(as_float64(v{j})) * floor(abs(as_float64(v{j})) * {fmt(scale)} + 0.5)"
                   for j in (0, 1)]
        code = [*rounded, f"step = max(e1 - e0 + 1.0, 1.0) / {bins}",
                f"s = as_int64(min(max(floor(i1 * step) + e0, 0.0), {fmt(float(size))}))",
                f"e = as_int64(min(max(ceil((i1 + 1) * step) + e0, 0.0), {fmt(float(size))}))"]
        ends = [("v0", rois, f"i0, {first}"), ("v1", rois, f"i0, {first + 2}")]
        b.map(f"bins{axis}", (count, bins), "\n".join(code), ends, [("s", start, "i0, i1"), ("e", end, "i0, i1")])
        bounds.append((start, end))
    (hs, he), (ws, we) = bounds
    dtype = b.dtype(x)
    rows = b.transient((count, channels, height, pooled[1]), dtype, "rows")
    b.map("row_max", (count, channels, height, pooled[1], width), "out = a if s <= i4 < e else -inf",
          [("s", ws, "i0, i3"), ("e", we, "i0, i3"), ("r", batch, "i0"), ("a", x, f"{in_batch(b, x)}, i1, i2, i4")],
          [("out", rows, "i0, i1, i2, i3", "max")])
    window = b.transient(b.shape(y), dtype, "max")
    b.map("max", (count, channels, *pooled, height), "out = a if s <= i4 < e else -inf",
          [("s", hs, "i0, i2"), ("e", he, "i0, i2"), ("a", rows, "i0, i1, i4, i3")],
          [("out", window, "i0, i1, i2, i3", "max")])
    b.map("finish", b.shape(y), "out = m if hs < he and ws < we else 0",
          [("m", window, "i0, i1, i2, i3"), ("hs", hs, "i0, i2"), ("he", he, "i0, i2"), ("ws", ws, "i0, i3"),
           ("we", we, "i0, i3")], [("out", y, "i0, i1, i2, i3")])
    return b.nodes
