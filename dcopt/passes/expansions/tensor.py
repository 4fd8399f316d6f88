"""Data-movement ops -> copy maps whose memlets carry the index mapping.

Every map here iterates over the *output*'s index space and has the tasklet ``out = a`` (or a
select between inputs); the op's meaning is entirely in the in-memlet subsets:

* Transpose: ``y[i0, i1, i2] = x[i2, i0, i1]`` (params permuted);
* Reshape, Flatten, Squeeze, Unsqueeze: row-major index arithmetic. Dims are grouped into
  runs with equal products (``[N, 64, 7, 7] -> [N, 3136]`` pairs ``N`` with ``N`` and
  ``64, 7, 7`` with ``3136``), so a symbolic batch dim maps through untouched and only the
  regrouped static dims need ``//`` and ``%``;
* Expand, Tile: broadcasting subsets and ``i % d``;
* Slice: ``start + step*i``; Pad: ``i - pad`` with the pad value as the memlet's ``outside``
  value (edge mode clamps the index with min/max);
* Concat: every input is read over the whole output with ``outside`` values and the tasklet
  selects by position along the axis, because one node writes each container (see
  :mod:`dcopt.ir.loops`); backends can split such a map per input.

Parameters these ops take as inputs (shapes, pads, starts) must be constants: the index
mapping is fixed when the loops are built.
"""

from __future__ import annotations

import math

import numpy as np

from dcopt.ops.tensor import slice_
from dcopt.passes.expand import LoopBuilder, Refused, affine, expansion, index, params_of


def _copy(b: LoopBuilder, what: str, x: str, y: str, subset, outside=None):
    """Map over y's shape: ``out = a`` with ``a`` read from ``x[subset]``."""
    shape = b.shape(y)
    b.map(what, shape, "out = a", [("a", x, index(subset), outside)], [("out", y, index(params_of(len(shape))))])
    return b.nodes


def _ints(b: LoopBuilder, i: int, what: str) -> list[int] | None:
    name = b.input(i, optional=True)
    if not name:
        return None
    value = b.constant(name)
    if value is None:
        raise Refused(f"{what} are computed at run time")
    return [int(v) for v in value.reshape(-1)]


@expansion("Transpose")
def transpose(graph, node):
    b = LoopBuilder(graph, node)
    x = b.input(0)
    rank = len(b.shape(x))
    perm = list(b.attr("perm") or reversed(range(rank)))
    p = params_of(rank)
    return _copy(b, "transpose", x, b.output(), [p[perm.index(axis)] for axis in range(rank)])


def reshape_subset(in_shape, out_shape) -> list[str]:
    """Input subset (over the output's params) of a row-major reshape; see the module doc."""
    if 0 in in_shape or 0 in out_shape:
        raise Refused("reshape of an empty tensor")
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
    x = b.input(0)
    repeats = _ints(b, 1, "repeats")
    shape = b.shape(x)
    subset = [p if r == 1 else f"{p} % {b.static_dims(x, [k])[0]}"
              for k, (p, r) in enumerate(zip(params_of(len(shape)), repeats))]
    return _copy(b, "tile", x, b.output(), subset)


@expansion("Slice")
def slice_op(graph, node):
    """Start and step per axis come from the reference's own clamping, applied to an arange."""
    b = LoopBuilder(graph, node)
    x = b.input(0)
    shape = b.shape(x)
    if b.opset >= 10:
        starts, ends, axes, steps = (_ints(b, i, "slice parameters") for i in range(1, 5))
    else:
        starts, ends, axes, steps = b.attr("starts"), b.attr("ends"), b.attr("axes"), None
    axes = [a % len(shape) for a in (axes or range(len(starts)))]
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


@expansion("Pad")
def pad(graph, node):
    b = LoopBuilder(graph, node)
    x = b.input(0)
    shape = b.shape(x)
    mode = b.attr("mode", "constant")
    if b.opset >= 11:
        pads = _ints(b, 1, "pads")
        value_name = b.input(2, optional=True)
        value = b.constant(value_name) if value_name else np.zeros(1)
        if value is None:
            raise Refused("the pad value is computed at run time")
        value = float(value.reshape(-1)[0]) if value.size else 0.0
        axes = [a % len(shape) for a in (_ints(b, 3, "axes") or range(len(shape)))]
    else:
        pads, value, axes = list(b.attr("pads")), float(b.attr("value", 0.0)), list(range(len(shape)))
    if mode not in ("constant", "edge"):
        raise Refused(f"mode {mode!r} is not expanded")
    begin = dict(zip(axes, pads[:len(axes)]))
    subset = []
    for axis, p in enumerate(params_of(len(shape))):
        expr = affine([(1, p)], -begin.get(axis, 0))
        if mode == "edge" and begin.get(axis, 0):
            expr = f"min(max({expr}, 0), {b.static_dims(x, [axis])[0] - 1})"
        subset.append(expr)
    return _copy(b, "pad", x, b.output(), subset, value if mode == "constant" else None)


@expansion("Concat")
def concat(graph, node):
    b = LoopBuilder(graph, node)
    y = b.output()
    inputs = [n for n in node.inputs if n]
    shape = b.shape(y)
    axis = int(b.attr("axis")) % len(shape)
    sizes = [b.static_dims(n, [axis])[0] for n in inputs]
    p = params_of(len(shape))
    reads, ends = [], np.cumsum(sizes).tolist()
    for k, (name, end) in enumerate(zip(inputs, ends)):
        subset = p[:axis] + [affine([(1, p[axis])], sizes[k] - end)] + p[axis + 1:]
        reads.append((f"a{k}", name, index(subset), 0.0))
    code = f"a{len(inputs) - 1}"
    for k in reversed(range(len(inputs) - 1)):
        code = f"a{k} if {p[axis]} < {ends[k]} else ({code})"
    b.map("concat", shape, f"out = {code}", reads, [("out", y, index(p))])
    return b.nodes
