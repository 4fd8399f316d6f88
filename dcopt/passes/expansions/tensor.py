"""Data-movement ops -> copy maps whose memlets carry the index mapping.

Every map here iterates over the *output*'s index space (innermost param on the last,
contiguous dim) and has the tasklet ``out = a`` (or a select between inputs or a fill value);
the op's meaning is entirely in the in-memlet subsets:

* Transpose: ``y[i0, i1, i2] = x[i2, i0, i1]`` (params permuted);
* Reshape, Flatten, Squeeze, Unsqueeze: row-major index arithmetic. Dims are grouped into
  runs with equal products (``[N, 64, 7, 7] -> [N, 3136]`` pairs ``N`` with ``N`` and
  ``64, 7, 7`` with ``3136``), so a symbolic batch dim maps through untouched and only the
  regrouped static dims need ``//`` and ``%``;
* Expand, Tile: broadcasting subsets and ``i % d``;
* Slice: ``start + step*i``; Split: one map per output, ``i + offset`` along the axis;
* Pad: the (cropped) source index per mode -- constant reads a clamped index and the tasklet
  selects the fill value outside the data, edge clamps, reflect folds ``i % 2(n-1)``, wrap is
  ``i % n``;
* Concat: every input is read at an index clamped into its own extent along the axis and the
  tasklet selects by position, because one node writes each container (see
  :mod:`dcopt.ir.loops`); no bounds checks or fill values are needed for that;
* DepthToSpace, SpaceToDepth: the reshape-transpose-reshape composed into one subset;
* ReverseSequence: an indirect subset, ``t + [t < L] * (L - 1 - 2t)`` with ``L`` the loaded
  sequence length (clamped to the time extent) and ``[t < L]`` as ``min(max(L - t, 0), 1)``;
* Trilu, EyeLike, Range, ConstantOfShape: maps whose tasklet computes the value from the
  params (a mask, a diagonal, ``start + i*delta``, a fill).

Parameters these ops take as inputs (shapes, pads, starts, repeats, split sizes, k) must be
constants (``LoopBuilder.constant``: initializers, or graph inputs specialized to their values):
the index mapping is fixed when the loops are built. A rule refuses, naming the input, when one
is computed at run time.
"""

from __future__ import annotations

import math

import numpy as np

from dcopt.ir import dtypes as dt
from dcopt.ops.tensor import norm_axis, range_, slice_
from dcopt.passes.common import pad_spec
from dcopt.passes.expand import LoopBuilder, Refused, affine, expansion, fmt, index, params_of


def _copy(b: LoopBuilder, what: str, x: str, y: str, subset):
    """Map over y's shape: ``out = a`` with ``a`` read from ``x[subset]``."""
    shape = b.shape(y)
    b.map(what, shape, "out = a", [("a", x, index(subset))], [("out", y, index(params_of(len(shape))))])
    return b.nodes


def _ints(b: LoopBuilder, i: int, what: str) -> list[int] | None:
    """A parameter input's values as ints (None when the input is omitted)."""
    name = b.input(i, optional=True)
    if not name:
        return None
    value = b.constant(name)
    if value is None:
        raise Refused(f"{what} ('{name}', input {i}) are computed at run time")
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _is_empty(shape) -> bool:
    return any(d == 0 for d in shape)


def nothing_moves(out_shape, rank: int) -> list[str]:
    """An in subset of ``rank`` dims for a map over the empty ``out_shape``: every dim names the
    param of an empty output dim, so the read is an empty grid (never a scalar index that an
    empty container could not hold)."""
    empty = next(f"i{k}" for k, d in enumerate(out_shape) if d == 0)
    return [f"min({empty}, 0)"] * rank


def value_literal(value, dtype: str) -> str:
    """``value`` converted to ``dtype`` as numpy does (``astype``), written as a tasklet literal
    that stores back to exactly that value."""
    cast = np.asarray(value).reshape(-1)[0].astype(dt.to_numpy(dtype))
    if dtype == "bool":
        return "1" if cast else "0"
    if np.issubdtype(cast.dtype, np.integer):
        value = int(cast)
        return f"as_uint64({value - 2 ** 64})" if value >= 2 ** 63 else str(value)  # beyond int64 literals
    return fmt(float(cast))


@expansion("Transpose")
def transpose(graph, node):
    b = LoopBuilder(graph, node)
    x = b.input(0)
    rank = len(b.shape(x))
    perm = [int(a) % max(rank, 1) for a in (b.attr("perm") or reversed(range(rank)))]
    p = params_of(rank)
    return _copy(b, "transpose", x, b.output(), [p[perm.index(axis)] for axis in range(rank)])


def reshape_subset(in_shape, out_shape) -> list[str]:
    """Input subset (over the output's params) of a row-major reshape; see the module doc."""
    if 0 in in_shape or 0 in out_shape:
        return nothing_moves(out_shape, len(in_shape))
    ins = [(k, d) for k, d in enumerate(in_shape) if d != 1]
    outs = [(f"i{k}", d) for k, d in enumerate(out_shape) if d != 1]
    subset = ["0"] * len(in_shape)
    i = j = 0
    while i < len(ins) or j < len(outs):
        if i == len(ins) or j == len(outs):
            raise Refused(f"cannot reshape {list(in_shape)} to {list(out_shape)}")
        group_in, group_out = [ins[i]], [outs[j]]
        i, j = i + 1, j + 1
        if isinstance(group_in[0][1], str) or isinstance(group_out[0][1], str):
            if group_in[0][1] != group_out[0][1]:
                raise Refused(f"symbolic dims of {list(in_shape)} -> {list(out_shape)} do not line up")
            subset[group_in[0][0]] = group_out[0][0]
            continue
        size_in, size_out = group_in[0][1], group_out[0][1]
        while size_in != size_out:
            side, pos, items = (ins, i, group_in) if size_in < size_out else (outs, j, group_out)
            if pos == len(side) or isinstance(side[pos][1], str):
                raise Refused(f"cannot regroup {list(in_shape)} -> {list(out_shape)} with symbolic dims")
            items.append(side[pos])
            if side is ins:
                i, size_in = i + 1, size_in * side[pos][1]
            else:
                j, size_out = j + 1, size_out * side[pos][1]
        strides_out = [math.prod(d for _, d in group_out[k + 1:]) for k in range(len(group_out))]
        flat = affine([(s, p) for (p, _), s in zip(group_out, strides_out)])
        flat = f"({flat})" if len(group_out) > 1 else flat
        for k, (axis, dim) in enumerate(group_in):
            stride = math.prod(d for _, d in group_in[k + 1:])
            expr = flat if stride == 1 else f"{flat} // {stride}"
            subset[axis] = expr if k == 0 else f"{expr} % {dim}"
    return subset


@expansion("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def reshape(graph, node):
    """The output's shape (shape inference already applied ``0`` entries, ``allowzero`` and
    the axes) decides the mapping; the parameter input's values are not needed."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    return _copy(b, "reshape", x, y, reshape_subset(b.shape(x), b.shape(y)))


@expansion("Expand")
def expand(graph, node):
    b = LoopBuilder(graph, node)
    b.elementwise("a", {"a": b.input(0)}, b.output(), what="expand")
    return b.nodes


@expansion("Tile")
def tile(graph, node):
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    repeats = _ints(b, 1, "repeats")
    shape = b.shape(x)
    if _is_empty(b.shape(y)):
        return _copy(b, "tile", x, y, nothing_moves(b.shape(y), len(shape)))
    subset = [p if r == 1 else f"{p} % {b.static_dims(x, [k])[0]}"
              for k, (p, r) in enumerate(zip(params_of(len(shape)), repeats))]
    return _copy(b, "tile", x, y, subset)


@expansion("Slice")
def slice_op(graph, node):
    """Start and step per axis come from the reference's own clamping, applied to an arange."""
    b = LoopBuilder(graph, node)
    x = b.input(0)
    shape = b.shape(x)
    if b.opset >= 10:
        starts, ends, axes, steps = (_ints(b, i, name) for i, name in
                                     enumerate(("starts", "ends", "axes", "steps"), start=1))
    else:
        starts, ends, axes, steps = b.attr("starts"), b.attr("ends"), b.attr("axes"), None
    axes = [norm_axis(a, len(shape)) for a in (axes or range(len(starts)))]
    steps = steps or [1] * len(starts)
    subset = params_of(len(shape))
    for axis, start, end, step in zip(axes, starts, ends, steps):
        dim = shape[axis]
        if isinstance(dim, str):
            if (start, step) != (0, 1) or end < 2 ** 31 - 1:
                raise Refused(f"slicing symbolic axis {axis}")
            continue
        chosen = slice_(np.arange(dim), [start], [end], [0], [step])
        subset[axis] = affine([(step, subset[axis])], int(chosen[0]) if len(chosen) else 0)
    return _copy(b, "slice", x, b.output(), subset)


@expansion("Split")
def split(graph, node):
    """One map per wired output, reading ``x`` at ``i + offset`` along the axis: a split along
    the outermost axis is a contiguous copy per output."""
    b = LoopBuilder(graph, node)
    x = b.input(0)
    shape = b.shape(x)
    axis = norm_axis(b.attr("axis", 0), len(shape))
    dim = b.static_dims(x, [axis])[0]
    sizes = _ints(b, 1, "split sizes") if b.opset >= 13 else b.attr("split")
    if sizes is None:
        parts = b.attr("num_outputs") or len(node.outputs)
        chunk = -(-dim // parts)
        sizes = [chunk] * (parts - 1) + [dim - chunk * (parts - 1)]
    sizes = [int(s) for s in sizes]
    if sum(sizes) != dim or len(sizes) != len(node.outputs) or min(sizes, default=0) < 0:
        raise Refused(f"split sizes {sizes} do not divide axis {axis} of size {dim} into {len(node.outputs)} parts")
    offsets = np.cumsum([0] + sizes[:-1]).tolist()
    for k in b.wired_outputs():
        subset = params_of(len(shape))
        subset[axis] = affine([(1, subset[axis])], offsets[k])
        _copy(b, f"split{k}", x, node.outputs[k], subset)
    return b.nodes


# ------------------------------------------------------------------------------ Pad

def _pad_params(b: LoopBuilder):
    """(pads per axis as (begin, end), fill value, mode), read by :func:`pad_spec`. The fill is
    a number, or the name of the run-time input holding it (it sizes nothing, so it need not be
    constant); an empty run-time fill input means zero."""
    try:
        spec = pad_spec(b.graph, b.node)
    except ValueError as e:
        raise Refused(str(e)) from None
    value = spec.value
    if isinstance(value, str) and not math.prod(b.static_dims(value, range(len(b.shape(value))))):
        value = 0
    return spec.widths, value, spec.mode


def _source_index(mode: str, o: str, begin: int, first: int, size: int) -> str:
    """Index into x for output index ``o`` along one padded axis: the data kept after cropping
    is ``x[first : first + size]`` and starts at output index ``begin``."""
    i = affine([(1, o)], -begin)
    if mode == "constant" or mode == "edge":
        inner = f"min(max({i}, 0), {size - 1})"
    elif mode == "wrap":
        inner = f"({i}) % {size}"
    elif size == 1:  # reflect of a single element repeats it
        inner = "0"
    else:  # reflect: the periodic extension with period 2(n-1), folded (the outer min changes no
        # value; it lets interval arithmetic see the index stays below n)
        period = 2 * (size - 1)
        inner = f"min(({i}) % {period}, {period} - ({i}) % {period}, {size - 1})"
    return inner if first == 0 else f"{inner} + {first}"


@expansion("Pad")
def pad(graph, node):
    """Negative pads crop first (as the reference does); each padded axis then reads the kept
    data at :func:`_source_index`. Constant mode selects the fill value where any padded axis
    is outside the data, so the read itself never leaves the container."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    shape, out_shape = b.shape(x), b.shape(y)
    widths, value, mode = _pad_params(b)
    if mode not in ("constant", "edge", "reflect", "wrap"):
        raise Refused(f"mode {mode!r} is not an ONNX pad mode")
    p = params_of(len(shape))
    subset, inside = [], []
    for axis, (begin, end) in enumerate(widths):
        if (begin, end) == (0, 0):
            subset.append(p[axis])
            continue
        dim = b.static_dims(x, [axis])[0]
        first, size = max(-begin, 0), dim - max(-begin, 0) - max(-end, 0)
        if size <= 0 and not _is_empty(out_shape):
            if mode != "constant":
                raise Refused(f"{mode} padding of an empty axis")
            fill, reads = fill_value(b, value, y)
            b.map("pad", out_shape, f"out = {fill}", reads, [("out", y, index(p))])
            return b.nodes
        size = max(size, 1)
        if max(begin, 0) == 0 and max(end, 0) == 0:  # a crop only
            subset.append(affine([(1, p[axis])], first))
            continue
        subset.append(_source_index(mode, p[axis], max(begin, 0), first, size))
        if max(begin, 0):
            inside.append(f"{p[axis]} >= {begin}")
        if max(end, 0):
            inside.append(f"{p[axis]} < {max(begin, 0) + size}")
    if _is_empty(out_shape):
        subset = nothing_moves(out_shape, len(shape))
    code, reads = "out = a", [("a", x, index(subset))]
    if mode == "constant" and inside:
        fill, extra = fill_value(b, value, y)
        code, reads = f"out = a if {' and '.join(inside)} else {fill}", reads + extra
    b.map("pad", out_shape, code, reads, [("out", y, index(p))])
    return b.nodes


def fill_value(b: LoopBuilder, value, y: str) -> tuple[str, list]:
    """(tasklet text, reads) of a fill value: a literal, or the connector ``v`` reading the
    first element of the run-time input named ``value``."""
    if not isinstance(value, str):
        return value_literal(value, b.dtype(y)), []
    return "v", [("v", value, index(["0"] * len(b.shape(value))))]


# ------------------------------------------------------------------------------ Concat

@expansion("Concat")
def concat(graph, node):
    """Input k is read at its own position clamped into its extent along the axis (always in
    bounds) and the tasklet picks the input whose range holds the output index."""
    b = LoopBuilder(graph, node)
    y = b.output()
    shape = b.shape(y)
    axis = norm_axis(b.attr("axis"), len(shape))
    p = params_of(len(shape))
    reads, ends, offset = [], [], 0
    for name in (n for n in node.inputs if n):
        size = b.static_dims(name, [axis])[0]
        offset += size
        if size == 0:
            continue
        pos = affine([(1, p[axis])], -(offset - size))
        pos = pos if offset - size == 0 else f"max({pos}, 0)"
        pos = pos if offset == shape[axis] else f"min({pos}, {size - 1})"
        subset = p[:axis] + [pos] + p[axis + 1:]
        reads.append((f"a{len(reads)}", name, index(subset)))
        ends.append(offset)
    if not reads:
        b.map("concat", shape, "out = 0", [], [("out", y, index(p))])
        return b.nodes
    code = f"a{len(reads) - 1}"
    for k in reversed(range(len(reads) - 1)):
        code = f"a{k} if {p[axis]} < {ends[k]} else ({code})"
    b.map("concat", shape, f"out = {code}", reads, [("out", y, index(p))])
    return b.nodes


# ------------------------------------------------------------------------------ block moves

@expansion("DepthToSpace")
def depth_to_space(graph, node):
    """``y[n, c, h*bs + i, w*bs + j]`` = ``x[n, (i*bs + j)*C + c, h, w]`` (DCR) or
    ``x[n, c*bs*bs + i*bs + j, h, w]`` (CRD), with ``C`` the output's channels."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    bs = int(b.attr("blocksize"))
    channels = b.static_dims(y, [1])[0]
    i, j = f"i2 % {bs}", f"i3 % {bs}"
    if b.attr("mode", "DCR") == "DCR":
        c = f"({i})*{bs * channels} + ({j})*{channels} + i1"
    else:
        c = f"{bs * bs}*i1 + ({i})*{bs} + {j}"
    return _copy(b, "depth_to_space", x, y, ["i0", c, f"i2 // {bs}", f"i3 // {bs}"])


@expansion("SpaceToDepth")
def space_to_depth(graph, node):
    """The inverse of DepthToSpace: output channel ``C`` splits into the block offset and the
    input channel (DCR: offset-major, CRD: channel-major)."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    bs = int(b.attr("blocksize"))
    channels = b.static_dims(x, [1])[0]
    if b.attr("mode", "DCR") == "DCR":
        c, block = f"i1 % {channels}", f"i1 // {channels}"
    else:
        c, block = f"i1 // {bs * bs}", f"i1 % {bs * bs}"
    block = f"({block})"
    return _copy(b, "space_to_depth", x, y,
                 ["i0", c, f"{bs}*i2 + {block} // {bs}", f"{bs}*i3 + {block} % {bs}"])


@expansion("ReverseSequence")
def reverse_sequence(graph, node):
    b = LoopBuilder(graph, node)
    x, lens, y = b.input(0), b.input(1), b.output()
    shape = b.shape(x)
    batch_axis, time_axis = int(b.attr("batch_axis", 1)), int(b.attr("time_axis", 0))
    steps = b.static_dims(x, [time_axis])[0]
    p = params_of(len(shape))
    t, length = p[time_axis], f"min(L, {steps})"
    subset = list(p)
    subset[time_axis] = f"{t} + min(max({length} - {t}, 0), 1) * ({length} - 1 - 2*{t})"
    b.map("reverse_sequence", b.shape(y), "out = a", [("L", lens, p[batch_axis]), ("a", x, index(subset))],
          [("out", y, index(p))])
    return b.nodes


# ------------------------------------------------------------------------------ generated values

@expansion("Trilu")
def trilu(graph, node):
    """Keeps ``x[..., r, c]`` where ``c - r >= k`` (upper) or ``<= k`` (lower). ``k`` sizes
    nothing, so a run-time ``k`` is read as a value (a constant one is inlined)."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    rank = len(b.shape(x))
    inputs = {"a": x}
    k_name = b.input(1, optional=True)
    k = b.constant(k_name) if k_name else np.zeros(1, np.int64)
    if k is None:
        k, inputs["k"] = "k", k_name
    else:
        k = int(np.asarray(k).reshape(-1)[0])
    row, col = params_of(rank)[-2:]
    keep = f"{col} - {row} >= {k}" if b.attr("upper", 1) else f"{col} - {row} <= {k}"
    b.elementwise(f"a if {keep} else 0", inputs, y, what="trilu")
    return b.nodes


@expansion("EyeLike")
def eye_like(graph, node):
    """Ones on the k-th diagonal; ``x`` is read only when its shape is symbolic (to bind the
    sizes at run time)."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    shape = b.shape(y)
    k = int(b.attr("k", 0))
    reads = [("a", x, "i0, i1")] if any(isinstance(d, str) for d in shape) else []
    b.map("eye", shape, f"out = 1 if i1 - i0 == {k} else 0", reads, [("out", y, "i0, i1")])
    return b.nodes


@expansion("Range")
def range_op(graph, node):
    """``start + i*delta`` computed as the reference does (float64 for floats, int64 for ints)
    and converted on store."""
    b = LoopBuilder(graph, node)
    values = []
    for i, what in enumerate(("start", "limit", "delta")):
        value = b.constant(b.input(i))
        if value is None:
            raise Refused(f"{what} ('{b.input(i)}') is computed at run time")
        values.append(np.asarray(value))
    y = b.output()
    count = len(range_(*values))
    if b.shape(y) != (count,):
        raise Refused(f"the output's shape {list(b.shape(y))} is not the {count} values of the range")
    if values[0].dtype.kind in "iu":
        start, delta = (str(int(v.reshape(-1)[0])) for v in (values[0], values[2]))
    else:
        start, delta = (fmt(float(v.reshape(-1)[0])) for v in (values[0], values[2]))
    b.map("range", (count,), f"out = {start} + i0 * {delta}", [], [("out", y, "i0")])
    return b.nodes


@expansion("ConstantOfShape")
def constant_of_shape(graph, node):
    b = LoopBuilder(graph, node)
    y = b.output()
    if b.constant(b.input(0)) is None:
        raise Refused(f"the shape ('{b.input(0)}') is computed at run time")
    value = b.attr("value")
    fill = value_literal(np.zeros(1) if value is None else value, b.dtype(y))
    shape = b.shape(y)
    b.map("fill", shape, f"out = {fill}", [], [("out", y, index(params_of(len(shape))))])
    return b.nodes
