"""Shape rules of the shape and data-movement ops (mirrors :mod:`dcopt.ops.tensor`).

These are where values decide shapes: Reshape's target, Slice's bounds, Pad's widths, Expand's
and Tile's shapes, Range's bounds. The values arrive through ``ctx.dims_value`` as dims, so a
target computed by ``Shape`` of a symbolic tensor carries its symbols (``(N, 128, 12, 64)``) and
stays exact; an element nobody knows becomes a fresh symbol, and a target of unknown length an
unknown rank.
"""

from __future__ import annotations

import numpy as np

from dcopt.ir import dtypes
from dcopt.ops.shapes import dims
from dcopt.ops.shapes.registry import ShapeInferenceError, onnx_dtype, shape_rule

#: Slice bounds at least this large (in magnitude) reach past any real dimension (exporters write
#: INT64_MAX / INT64_MIN for "to the end").
_FAR = 1 << 62


@shape_rule("Shape")
def shape(ctx):
    rank = ctx.rank(0)
    start, end = ctx.attrs.get("start", 0), ctx.attrs.get("end")
    return ctx.tensor("int64", (len(range(rank)[slice(start, end)]),))


@shape_rule("Size")
def size(ctx):
    return ctx.tensor("int64", ())


@shape_rule("Reshape", shape_inputs=(1,))
def reshape(ctx):
    data = ctx.shape(0)
    target = ctx.dims_value(1)
    if target is None:
        return ctx.tensor(ctx.dtype(0), None)
    allowzero = bool(ctx.attrs.get("allowzero", 0))
    out = [data[i] if d == 0 and not allowzero and i < len(data) else d for i, d in enumerate(target)]
    if -1 in out:
        if out.count(-1) > 1:
            raise ShapeInferenceError(f"Reshape target {list(target)} has more than one -1")
        known = dims.prod(d for d in out if d != -1)
        out[out.index(-1)] = dims.div(dims.prod(data), known) if known != 0 else None
    total, want = dims.prod(data), dims.prod(out)
    if isinstance(total, int) and isinstance(want, int) and total != want:
        raise ShapeInferenceError(f"cannot reshape {list(data)} ({total} elements) to {list(target)}")
    return ctx.tensor(ctx.dtype(0), out)


@shape_rule("Flatten")
def flatten(ctx):
    data = ctx.shape(0)
    axis = int(ctx.attrs.get("axis", 1))
    axis = axis + len(data) if axis < 0 else axis
    return ctx.tensor(ctx.dtype(0), (dims.prod(data[:axis]), dims.prod(data[axis:])))


def _axes_from(ctx, attr_before: int):
    """Squeeze/Unsqueeze axes: the attribute before ``attr_before``, input 1 from it on."""
    if ctx.opset < attr_before:
        axes = ctx.attrs.get("axes")
        return (None if axes is None else [int(a) for a in axes]), True
    if not ctx.has(1):
        return None, True
    return ctx.ints(1), False


def _axes_inputs(opset):
    return (1,) if opset >= 13 else ()


@shape_rule("Squeeze", shape_inputs=_axes_inputs)
def squeeze(ctx):
    data = ctx.shape(0)
    axes, known = _axes_from(ctx, 13)
    if axes is None and known:  # every size-1 dim: the rank depends on which symbols are 1
        if not all(isinstance(d, int) for d in data):
            return ctx.tensor(ctx.dtype(0), None)
        return ctx.tensor(ctx.dtype(0), [d for d in data if d != 1])
    if axes is None:
        count = ctx.dims_value(1)
        return ctx.tensor(ctx.dtype(0), None if count is None else (None,) * (len(data) - len(count)))
    drop = {ctx.axis(a, len(data)) for a in axes}
    for a in drop:
        if isinstance(data[a], int) and data[a] != 1:
            raise ShapeInferenceError(f"Squeeze axis {a} has size {data[a]}, not 1")
    return ctx.tensor(ctx.dtype(0), [d for i, d in enumerate(data) if i not in drop])


@shape_rule("Unsqueeze", shape_inputs=_axes_inputs)
def unsqueeze(ctx):
    data = ctx.shape(0)
    axes, _ = _axes_from(ctx, 13)
    if axes is None:
        count = ctx.dims_value(1)
        return ctx.tensor(ctx.dtype(0), None if count is None else (None,) * (len(data) + len(count)))
    rank = len(data) + len(axes)
    new = {ctx.axis(a, rank) for a in axes}
    rest = iter(data)
    return ctx.tensor(ctx.dtype(0), [1 if i in new else next(rest) for i in range(rank)])


@shape_rule("Transpose")
def transpose(ctx):
    data = ctx.shape(0)
    perm = ctx.attrs.get("perm")
    perm = range(len(data) - 1, -1, -1) if perm is None else [int(p) for p in perm]
    return ctx.tensor(ctx.dtype(0), [data[p] for p in perm])


@shape_rule("Concat")
def concat(ctx):
    shapes = [ctx.shape(i) for i in range(len(ctx.inputs)) if ctx.has(i)]
    rank = len(shapes[0])
    axis = ctx.axis(ctx.attrs["axis"], rank)
    out = []
    for a in range(rank):
        column = [s[a] for s in shapes]
        if a == axis:
            total = 0
            for d in column:
                total = dims.add(total, d)
            out.append(total)
        else:
            known = [d for d in column if d is not None]
            if any(dims.equal(known[0], d) is False for d in known[1:]):
                raise ShapeInferenceError(f"Concat inputs differ on axis {a}: {column}")
            out.append(next((d for d in known if isinstance(d, int)), known[0] if known else None))
    return ctx.tensor(ctx.dtype(0), out)


def _split_sizes(ctx, dim, parts_hint: int):
    if ctx.opset < 13:
        split = ctx.attrs.get("split")
        if split is not None:
            return [int(s) for s in split]
    elif ctx.has(1):
        split = ctx.dims_value(1)
        return [None] * parts_hint if split is None else list(split)
    parts = int(ctx.attrs.get("num_outputs") or parts_hint)
    if not isinstance(dim, int):
        chunk = dims.div(dim, parts)
        return [chunk] * parts
    chunk = -(-dim // parts)
    return [chunk] * (parts - 1) + [dim - chunk * (parts - 1)]


@shape_rule("Split", shape_inputs=lambda opset: (1,) if opset >= 13 else ())
def split(ctx):
    data = ctx.shape(0)
    axis = ctx.axis(ctx.attrs.get("axis", 0), len(data))
    sizes = _split_sizes(ctx, data[axis], ctx.n_outputs)
    return [ctx.tensor(ctx.dtype(0), (*data[:axis], s, *data[axis + 1:])) for s in sizes]


def slice_length(dim, start, end, step) -> object:
    """Elements a Slice keeps of one axis (ONNX clamping, as the reference); None when not known."""
    if step is None or start is None or end is None or step == 0:
        return None
    if isinstance(dim, int) and isinstance(start, int) and isinstance(end, int):
        start, end = (v + dim if v < 0 else v for v in (start, end))
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        return len(range(start, end, step))
    # a symbolic dim or bound: the whole axis, or a prefix of length min(end, dim)
    reaches_end = dims.equal(end, dim) is True or isinstance(end, int) and end >= _FAR
    if step == 1 and start == 0 and reaches_end:
        return dim
    if step == 1 and start == 0 and dims.is_negative_impossible(end):
        return dims.minimum(end, dim)
    from_end = start == -1 or isinstance(start, int) and start >= _FAR
    if step == -1 and from_end and isinstance(end, int) and end <= -_FAR:
        return dim
    return None


@shape_rule("Slice", shape_inputs=lambda opset: (1, 2, 3, 4) if opset >= 10 else ())
def slice_(ctx):
    data = ctx.shape(0)
    if ctx.opset < 10:
        starts, ends = list(ctx.attrs["starts"]), list(ctx.attrs["ends"])
        axes = ctx.attrs.get("axes")
        steps = None
    else:
        starts, ends = ctx.dims_value(1), ctx.dims_value(2)
        axes = ctx.ints(3) if ctx.has(3) else None
        steps = ctx.dims_value(4) if ctx.has(4) else None
        if starts is None or ends is None:
            return ctx.tensor(ctx.dtype(0), (None,) * len(data))
        if ctx.has(3) and axes is None:  # the sliced axes are not known: any dim may change
            return ctx.tensor(ctx.dtype(0), (None,) * len(data))
    axes = range(len(starts)) if axes is None else [int(a) for a in axes]
    steps = [1] * len(starts) if steps is None else list(steps)
    out = list(data)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = ctx.axis(axis, len(data))
        out[axis] = slice_length(data[axis], start, end, step)
    return ctx.tensor(ctx.dtype(0), out)


def _broadcast_target(shape, target) -> tuple:
    """Expand's bidirectional broadcast of ``shape`` against a target whose elements may be unknown."""
    rank = max(len(shape), len(target))
    a = (1,) * (rank - len(shape)) + tuple(shape)
    b = (1,) * (rank - len(target)) + tuple(target)
    out = []
    for x, t in zip(a, b):
        if t is None:
            out.append(x if isinstance(x, int) and x != 1 else None)
        else:
            out.append(dims.broadcast(x, t))
    return tuple(out)


@shape_rule("Expand", shape_inputs=(1,))
def expand(ctx):
    target = ctx.dims_value(1)
    if target is None:
        return ctx.tensor(ctx.dtype(0), None)
    try:
        return ctx.tensor(ctx.dtype(0), _broadcast_target(ctx.shape(0), target))
    except ValueError as exc:
        raise ShapeInferenceError(f"cannot expand {list(ctx.shape(0))} to {list(target)}: {exc}") from None


@shape_rule("Tile", shape_inputs=(1,))
def tile(ctx):
    data = ctx.shape(0)
    repeats = ctx.dims_value(1)
    if repeats is None:
        return ctx.tensor(ctx.dtype(0), (None,) * len(data))
    return ctx.tensor(ctx.dtype(0), [dims.mul(d, r) for d, r in zip(data, repeats)])


@shape_rule("Pad", shape_inputs=lambda opset: (1, 3) if opset >= 11 else ())
def pad(ctx):
    data = ctx.shape(0)
    rank = len(data)
    if ctx.opset < 11:
        pads = [int(p) for p in ctx.attrs["pads"]]
        axes = list(range(rank))
    else:
        pads = ctx.dims_value(1)
        if ctx.has(3):
            axes = ctx.ints(3)
            if axes is None:
                return ctx.tensor(ctx.dtype(0), (None,) * rank)
            axes = [ctx.axis(a, rank) for a in axes]
        else:
            axes = list(range(rank))
        if pads is None:
            return ctx.tensor(ctx.dtype(0), (None,) * rank)
    out = list(data)
    for i, axis in enumerate(axes):
        out[axis] = dims.add(dims.add(data[axis], pads[i]), pads[i + len(axes)])
    return ctx.tensor(ctx.dtype(0), out)


@shape_rule("CenterCropPad", shape_inputs=(1,))
def center_crop_pad(ctx):
    data = ctx.shape(0)
    target = ctx.dims_value(1)
    axes = ctx.attrs.get("axes")
    axes = list(range(len(data))) if axes is None else [ctx.axis(a, len(data)) for a in axes]
    out = list(data)
    for k, axis in enumerate(axes):
        out[axis] = None if target is None else target[k]
    return ctx.tensor(ctx.dtype(0), out)


@shape_rule("DepthToSpace")
def depth_to_space(ctx):
    b, c, h, w = ctx.shape(0)
    bs = int(ctx.attrs["blocksize"])
    return ctx.tensor(ctx.dtype(0), (b, dims.div(c, bs * bs), dims.mul(h, bs), dims.mul(w, bs)))


@shape_rule("SpaceToDepth")
def space_to_depth(ctx):
    b, c, h, w = ctx.shape(0)
    bs = int(ctx.attrs["blocksize"])
    return ctx.tensor(ctx.dtype(0), (b, dims.mul(c, bs * bs), dims.div(h, bs), dims.div(w, bs)))


@shape_rule("ReverseSequence", "Trilu")
def same_as_input(ctx):
    return ctx.tensor(ctx.dtype(0), ctx.shape(0))


@shape_rule("Det")
def det(ctx):
    return ctx.tensor(ctx.dtype(0), ctx.shape(0)[:-2])


# -- constants and generators -----------------------------------------------------------------

_CONSTANT_FORMS = {"value_float": ("float32", ()), "value_floats": ("float32", 1), "value_int": ("int64", ()),
                   "value_ints": ("int64", 1), "value_string": ("string", ()), "value_strings": ("string", 1)}


@shape_rule("Constant")
def constant(ctx):
    for name in ("value", "sparse_value"):
        value = ctx.raw_attrs.get(name)
        if value is not None:
            value = np.asarray(value)
            return ctx.tensor(dtypes.from_numpy(value.dtype), value.shape)
    for name, (dtype, rank) in _CONSTANT_FORMS.items():
        value = ctx.raw_attrs.get(name)
        if value is not None:
            return ctx.tensor(dtype, (len(value),) if rank else ())
    raise ShapeInferenceError("Constant has no value attribute")


@shape_rule("ConstantOfShape", shape_inputs=(0,))
def constant_of_shape(ctx):
    value = ctx.attrs.get("value")
    dtype = "float32" if value is None else dtypes.from_numpy(np.asarray(value).dtype)
    return ctx.tensor(dtype, ctx.dims_value(0))


@shape_rule("Range", shape_inputs=(0, 1, 2))
def range_(ctx):
    start, limit, delta = (ctx.dims_value(i) for i in range(3))
    dtype = ctx.dtype(0)
    values = [None if v is None else v[0] for v in (start, limit, delta)]
    s, lim, d = values
    if all(isinstance(v, int) for v in values) and dtype in ("int8", "int16", "int32", "int64", "uint8", "uint16",
                                                             "uint32", "uint64"):
        return ctx.tensor(dtype, (max(-(-(lim - s) // d), 0),))
    scalars = [ctx.scalar(i) for i in range(3)]
    if all(v is not None for v in scalars) and dtype.startswith(("float", "bfloat")):
        s, lim, d = (float(np.float64(v)) for v in scalars)
        return ctx.tensor(dtype, (max(int(np.ceil((lim - s) / d)), 0),))
    if isinstance(s, int) and s <= 0 and d == 1 and lim is not None and dims.is_negative_impossible(lim):
        return ctx.tensor(dtype, (dims.add(lim, -s),))  # limit >= 0 >= start: limit - start elements
    return ctx.tensor(dtype, (None,))


@shape_rule("EyeLike")
def eye_like(ctx):
    data = ctx.shape(0)
    dtype = ctx.attrs.get("dtype")
    return ctx.tensor(ctx.dtype(0) if dtype is None else onnx_dtype(dtype), data[:2])
