"""Shape rules of the indexing ops (mirrors :mod:`dcopt.ops.indexing`). NonZero, Compress and
Unique are data-dependent: the sizes they select are fresh symbols (Unique's three per-unique
outputs share one); TopK's ``k`` and OneHot's ``depth`` are shape inputs."""

from __future__ import annotations

from dcopt.ops.shapes import dims
from dcopt.ops.shapes.registry import ShapeInferenceError, shape_rule


@shape_rule("Gather")
def gather(ctx):
    data = ctx.shape(0)
    axis = ctx.axis(ctx.attrs.get("axis", 0), len(data))
    return ctx.tensor(ctx.dtype(0), (*data[:axis], *ctx.shape(1), *data[axis + 1:]))


@shape_rule("GatherElements")
def gather_elements(ctx):
    return ctx.tensor(ctx.dtype(0), ctx.shape(1))


@shape_rule("GatherND")
def gather_nd(ctx):
    data, indices = ctx.shape(0), ctx.shape(1)
    b = int(ctx.attrs.get("batch_dims", 0))
    depth = indices[-1]
    if not isinstance(depth, int):
        return ctx.tensor(ctx.dtype(0), None)
    return ctx.tensor(ctx.dtype(0), (*data[:b], *indices[b:-1], *data[b + depth:]))


@shape_rule("ScatterElements", "Scatter", "ScatterND", "TensorScatter")
def scatter(ctx):
    return ctx.tensor(ctx.dtype(0), ctx.shape(0))


@shape_rule("OneHot", shape_inputs=(1,))
def one_hot(ctx):
    indices = ctx.shape(0)
    depth = ctx.scalar(1)  # any numeric type
    if depth is None:
        known = ctx.dims_value(1)
        depth = None if known is None else known[0]
    else:
        depth = int(depth)
    out = list(indices)
    out.insert(ctx.axis(ctx.attrs.get("axis", -1), len(indices) + 1), depth)
    return ctx.tensor(ctx.dtype(2), out)


@shape_rule("NonZero", data_dependent=True)
def non_zero(ctx):
    return ctx.tensor("int64", (ctx.rank(0), None))


@shape_rule("Compress", data_dependent=True)
def compress(ctx):
    data = ctx.shape(0)
    axis = ctx.attrs.get("axis")
    if axis is None:
        return ctx.tensor(ctx.dtype(0), (None,))
    axis = ctx.axis(axis, len(data))
    return ctx.tensor(ctx.dtype(0), (*data[:axis], None, *data[axis + 1:]))


@shape_rule("TopK", shape_inputs=lambda opset: (1,) if opset >= 10 else ())
def top_k(ctx):
    data = ctx.shape(0)
    axis = ctx.axis(ctx.attrs.get("axis", -1), len(data))
    if ctx.opset < 10:
        k = int(ctx.attrs["k"])
    else:
        k = ctx.dims_value(1)
        k = None if k is None else k[0]
    if isinstance(k, int) and isinstance(data[axis], int) and k > data[axis]:
        raise ShapeInferenceError(f"TopK k={k} exceeds the axis size {data[axis]}")
    shape = (*data[:axis], k, *data[axis + 1:])
    return [ctx.tensor(ctx.dtype(0), shape), ctx.tensor("int64", shape)]


@shape_rule("Unique", data_dependent=True)
def unique(ctx):
    data = ctx.shape(0)
    axis = ctx.attrs.get("axis")
    count = ctx.fresh(0, "unique")
    if axis is None:
        values, inverse = (count,), (dims.prod(data),)
    else:
        axis = ctx.axis(axis, len(data))
        values = (*data[:axis], count, *data[axis + 1:])
        inverse = (data[axis],)
    return [ctx.tensor(ctx.dtype(0), values), ctx.tensor("int64", (count,)), ctx.tensor("int64", inverse),
            ctx.tensor("int64", (count,))]
