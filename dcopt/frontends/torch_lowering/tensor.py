"""Tensor and shape ops: views and layout, indexing, splitting, identity-like ops and casts, factories."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from dcopt.frontends.torch_context import LoweringError, concrete_int
from dcopt.frontends.torch_lowering import lower
from dcopt.frontends.torch_lowering._helpers import INT64_MAX, _axis


# ---------------------------------------------------------------------------------------------
# Views and layout (all copies in the IR: values are immutable)


@lower("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.view_copy.default")
def view(ctx, x, size):
    zero = any(isinstance(s, int) and s == 0 for s in size)  # a literal 0 is a size, not 'copy dim'
    return ctx.emit("Reshape", [ctx.tensor(x), ctx.ints(size)], **({"allowzero": 1} if zero else {}))


@lower("aten.flatten.using_ints", "aten.unflatten.int")
def reshape_to_traced(ctx, x, *_):
    """Reshape to the traced output shape (symbolic dims computed from the inputs' shapes)."""
    return ctx.emit("Reshape", [ctx.tensor(x), ctx.shape_tensor(ctx.out_val().shape)])


@lower("aten.permute.default")
def permute(ctx, x, dims):
    rank = ctx.rank(x)
    return ctx.emit("Transpose", [ctx.tensor(x)], perm=tuple(_axis(d, rank) for d in dims))


@lower("aten.transpose.int")
def transpose(ctx, x, dim0, dim1):
    rank = ctx.rank(x)
    perm = list(range(rank))
    a, b = _axis(dim0, rank), _axis(dim1, rank)
    perm[a], perm[b] = perm[b], perm[a]
    return ctx.emit("Transpose", [ctx.tensor(x)], perm=tuple(perm))


@lower("aten.t.default")
def t(ctx, x):
    return ctx.tensor(x) if ctx.rank(x) < 2 else ctx.emit("Transpose", [ctx.tensor(x)], perm=(1, 0))


@lower("aten.expand.default", "aten.expand_copy.default")
def expand(ctx, x, size, *, implicit=False):
    """torch's -1 ('keep this dim') is ONNX Expand's 1 (broadcasting keeps the input's dim)."""
    sizes = [1 if isinstance(s, int) and s == -1 else s for s in size]
    return ctx.emit("Expand", [ctx.tensor(x), ctx.ints(sizes)])


@lower("aten.unsqueeze.default")
def unsqueeze(ctx, x, dim):
    return ctx.emit("Unsqueeze", [ctx.tensor(x), ctx.const([_axis(dim, ctx.rank(x) + 1)], "int64")])


@lower("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default")
def squeeze(ctx, x, dim=None):
    """torch squeezes only dims of size 1 and ignores the others (ONNX would fail on them)."""
    shape = ctx.shape(x)
    rank = len(shape)
    dims = range(rank) if dim is None else [dim] if isinstance(dim, int) else dim
    axes = [_axis(d, rank) for d in dims if rank and concrete_int(shape[d]) == 1]
    if not axes:
        return ctx.tensor(x)
    return ctx.emit("Squeeze", [ctx.tensor(x), ctx.const(axes, "int64")])


@lower("aten.cat.default", "aten.concat.default")
def cat(ctx, tensors, dim=0):
    """Concat, after dropping torch's legacy empty 1-D operands and casting to the result dtype."""
    dt = ctx.out_dtype()
    rank = len(ctx.out_val().shape)
    kept = [t for t in tensors if not (ctx.rank(t) == 1 and concrete_int(ctx.shape(t)[0]) == 0 and rank != 1)]
    return ctx.emit("Concat", [ctx.tensor(t, dt) for t in kept or tensors], axis=_axis(dim, rank))


@lower("aten.stack.default")
def stack(ctx, tensors, dim=0):
    dt = ctx.out_dtype()
    axis = _axis(dim, ctx.rank(tensors[0]) + 1)
    axes = ctx.const([axis], "int64")
    return ctx.emit("Concat", [ctx.emit("Unsqueeze", [ctx.tensor(t, dt), axes]) for t in tensors], axis=axis)


@lower("aten.slice.Tensor", "aten.slice_copy.Tensor")
def slice_(ctx, x, dim=0, start=None, end=None, step=1):
    rank = ctx.rank(x)
    axis = _axis(dim, rank)
    start = 0 if start is None else start
    end = INT64_MAX if end is None else min(end, INT64_MAX) if isinstance(end, int) else end
    size = concrete_int(ctx.shape(x)[axis])
    whole = step == 1 and isinstance(start, int) and start == 0 and isinstance(end, int) and size is not None
    if whole and end >= size:
        return ctx.tensor(x)  # a whole-dim slice, common after decompositions
    return ctx.emit("Slice", [ctx.tensor(x), ctx.ints([start]), ctx.ints([end]),
                              ctx.const([axis], "int64"), ctx.const([step], "int64")])


@lower("aten.slice_scatter.default")
def slice_scatter(ctx, x, src, dim=0, start=None, end=None, step=1):
    """``x`` with ``x[..., start:end:step, ...] = src`` along ``dim`` (what an in-place slice
    assignment becomes once functionalized): a ScatterElements whose indices are the slice's
    positions broadcast to ``src``'s shape. Sizes must be static."""
    rank = ctx.rank(x)
    axis = _axis(dim, rank)
    size = ctx.static_int(ctx.shape(x)[axis], "scattered dim")
    positions = list(range(size))[slice(start, end, step)]
    src_shape = ctx.static_shape(src, "scattered source shape")
    if len(positions) != src_shape[axis]:
        raise LoweringError(f"slice_scatter: the slice has {len(positions)} positions, the source {src_shape[axis]}")
    view = [1] * rank
    view[axis] = len(positions)
    indices = np.broadcast_to(np.array(positions, np.int64).reshape(view), src_shape)
    return ctx.emit("ScatterElements", [ctx.tensor(x), ctx.const(np.ascontiguousarray(indices), "int64"),
                                        ctx.tensor(src, ctx.dtype(x))], axis=axis)


@lower("aten.select.int", "aten.select_copy.int")
def select(ctx, x, dim, index):
    return ctx.emit("Gather", [ctx.tensor(x), ctx.scalar_int(index)], axis=_axis(dim, ctx.rank(x)))


@lower("aten.index_select.default")
def index_select(ctx, x, dim, index):
    return ctx.emit("Gather", [ctx.tensor(x), ctx.tensor(index, "int64")], axis=_axis(dim, ctx.rank(x)))


@lower("aten.embedding.default")
def embedding(ctx, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return ctx.emit("Gather", [ctx.tensor(weight), ctx.tensor(indices, "int64")], axis=0)


@lower("aten.gather.default")
def gather(ctx, x, dim, index, *, sparse_grad=False):
    return ctx.emit("GatherElements", [ctx.tensor(x), ctx.tensor(index, "int64")], axis=_axis(dim, ctx.rank(x)))


@lower("aten.index.Tensor")
def index(ctx, x, indices):
    """Advanced indexing ``x[..., i1, i2, ...]`` with integer index tensors (None = full dim).

    One index tensor is a Gather. Several broadcast together: the indexed dims are moved to the
    front, the indices stacked for one GatherND, and the result dims put where torch puts them
    (in place of the indexed dims when those are adjacent, in front otherwise)."""
    positions = [i for i, idx in enumerate(indices) if idx is not None]
    if any(ctx.dtype(indices[p]) == "bool" for p in positions):
        raise LoweringError("indexing with a boolean mask has a data-dependent shape")
    if len(positions) == 1:
        p = positions[0]
        return ctx.emit("Gather", [ctx.tensor(x), ctx.tensor(indices[p], "int64")], axis=p)
    rank = ctx.rank(x)
    rest = [d for d in range(rank) if d not in positions]
    moved = ctx.emit("Transpose", [ctx.tensor(x)], perm=tuple(positions + rest))
    idx = [ctx.tensor(indices[p], "int64") for p in positions]
    common = idx[0]
    for other in idx[1:]:
        common = ctx.emit("Add", [common, other])  # broadcasts the index shapes together
    shape = ctx.emit("Shape", [common], dtype="int64")
    last = ctx.const([-1], "int64")
    stacked = ctx.emit("Concat", [ctx.emit("Unsqueeze", [ctx.emit("Expand", [i, shape]), last]) for i in idx], axis=-1)
    out = ctx.emit("GatherND", [moved, stacked])
    adjacent = positions == list(range(positions[0], positions[-1] + 1))
    if not adjacent or positions[0] == 0:
        return out
    b = len(ctx.out_val().shape) - len(rest)  # rank of the broadcast index shape
    lead = positions[0]
    perm = list(range(b, b + lead)) + list(range(b)) + list(range(b + lead, b + len(rest)))
    return ctx.emit("Transpose", [out], perm=tuple(perm))


def _split_sizes(ctx, dim) -> str:
    """The pieces' sizes along ``dim``, read from the traced outputs (static or symbolic)."""
    return ctx.shape_tensor([v.shape[dim] for v in ctx.out_val()])


@lower("aten.split_with_sizes.default", "aten.split.Tensor", "aten.split.sizes", "aten.chunk.default",
       "aten.split_with_sizes_copy.default", "aten.split_copy.Tensor")
def split(ctx, x, _sizes_or_chunks, dim=0):
    axis = _axis(dim, ctx.rank(x))
    pieces = len(ctx.out_val())
    outs = ctx.emit("Split", [ctx.tensor(x), _split_sizes(ctx, axis)], outputs=pieces, axis=axis)
    return outs if pieces > 1 else (outs,)


@lower("aten.unbind.int", "aten.unbind_copy.int")
def unbind(ctx, x, dim=0):
    axis = _axis(dim, ctx.rank(x))
    pieces = len(ctx.out_val())
    outs = ctx.emit("Split", [ctx.tensor(x), ctx.const([1] * pieces, "int64")], outputs=pieces, axis=axis)
    axes = ctx.const([axis], "int64")
    return tuple(ctx.emit("Squeeze", [o, axes]) for o in (outs if pieces > 1 else (outs,)))


@lower("aten.repeat.default")
def repeat(ctx, x, repeats):
    xs = ctx.tensor(x)
    extra = len(repeats) - ctx.rank(x)
    if extra > 0:
        xs = ctx.emit("Unsqueeze", [xs, ctx.const(list(range(extra)), "int64")])
    return ctx.emit("Tile", [xs, ctx.ints(repeats)])


@lower("aten.flip.default")
def flip(ctx, x, dims):
    rank = ctx.rank(x)
    n = len(dims)
    return ctx.emit("Slice", [ctx.tensor(x), ctx.const([-1] * n, "int64"), ctx.const([-INT64_MAX] * n, "int64"),
                              ctx.const([_axis(d, rank) for d in dims], "int64"), ctx.const([-1] * n, "int64")])


@lower("aten.triu.default", "aten.tril.default")
def trilu(ctx, x, diagonal=0):
    upper = int(".triu." in str(ctx.node.target))
    return ctx.emit("Trilu", [ctx.tensor(x), ctx.const(diagonal, "int64")], upper=upper)


# ---------------------------------------------------------------------------------------------
# Identity-like ops and casts (the IR is functional: copies and views are the same value)


@lower("aten.clone.default", "aten.contiguous.default", "aten.alias.default", "aten.detach.default",
       "aten.lift_fresh_copy.default", "aten._to_copy.default", "aten.to.dtype", "aten.to.dtype_layout",
       "aten.to.device", "aten.to.other", "aten.type_as.default", "aten._to_dim_order_copy.default",
       "aten.alias_copy.default", "aten.detach_copy.default")
def convert(ctx, x, *_, **__):
    """A copy (or view) with the traced result dtype: a Cast when the dtype changes, else nothing."""
    return ctx.tensor(x, ctx.out_dtype())


@lower("aten.dropout.default", "aten.native_dropout.default", "aten.feature_dropout.default")
def dropout(ctx, x, p=0.0, train=False):
    if train and p:
        raise LoweringError("dropout in training mode is random; call model.eval() before exporting")
    out = ctx.tensor(x)
    return (out, None) if "native_dropout" in str(ctx.node.target) else out


@lower("aten.copy.default")
def copy(ctx, x, src, non_blocking=False):
    """Functional copy_: src broadcast to x's shape, in x's dtype."""
    return ctx.emit("Expand", [ctx.tensor(src, ctx.out_dtype()), ctx.shape_tensor(ctx.shape(x))])


# ---------------------------------------------------------------------------------------------
# Factories


def _filled(ctx, shape: str, value: Any) -> str:
    dt = ctx.out_dtype()
    return ctx.emit("ConstantOfShape", [shape], dtype=dt, value=np.asarray([value], dtype=_np(dt)))


def _np(dtype: str):
    from dcopt.ir import dtypes

    return dtypes.to_numpy(dtype)


@lower("aten.full.default", "aten.new_full.default")
def full(ctx, *args, **_):
    size, value = args[-2], args[-1]  # new_full(self, size, value) / full(size, value)
    return _filled(ctx, ctx.ints(size), value)


@lower("aten.zeros.default", "aten.ones.default", "aten.empty.memory_format", "aten.new_zeros.default",
       "aten.new_ones.default", "aten.new_empty.default", "aten.empty.default")
def zeros_ones(ctx, *args, **_):
    """zeros/ones/empty (empty reads as zeros: a functional graph overwrites it anyway)."""
    size = args[-1] if "new_" in str(ctx.node.target) else args[0]
    return _filled(ctx, ctx.ints(size), 1 if "ones" in str(ctx.node.target) else 0)


@lower("aten.full_like.default", "aten.zeros_like.default", "aten.ones_like.default", "aten.empty_like.default")
def full_like(ctx, x, fill_value=None, **_):
    target = str(ctx.node.target)
    value = fill_value if "full_like" in target else 1 if "ones_like" in target else 0
    return _filled(ctx, ctx.shape_tensor(ctx.shape(x)), value)


@lower("aten.scalar_tensor.default")
def scalar_tensor(ctx, s, **_):
    if isinstance(s, torch.fx.Node):
        return ctx.emit("Reshape", [ctx.tensor(s, ctx.out_dtype()), ctx.const([], "int64")])
    return ctx.const(s, ctx.out_dtype())


@lower("aten.arange.default", "aten.arange.start", "aten.arange.start_step")
def arange(ctx, *args, **_):
    """A constant when the bounds are static; a Range node when a bound is a dynamic size."""
    start, end, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) > 2 else 1)
    dt = ctx.out_dtype()
    bounds = [ctx.env.get(b, b) if isinstance(b, torch.fx.Node) else b for b in (start, end, step)]
    if all(isinstance(b, (int, float)) for b in bounds):
        return ctx.const(np.arange(*bounds).astype(_np(dt)), dt)
    if any(isinstance(b, float) for b in bounds):
        raise LoweringError("arange with float bounds and a dynamic size is not supported")
    return ctx.cast(ctx.emit("Range", [ctx.scalar_int(b) for b in (start, end, step)], dtype="int64"), dt)
