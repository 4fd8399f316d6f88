"""Softmax, reductions (sum/mean/max/argmax/any/var...), scans and top-k."""

from __future__ import annotations

from typing import Any

import numpy as np
from dcopt.frontends.torch_lowering import lower
from dcopt.frontends.torch_lowering._helpers import _axis, _truth


# ---------------------------------------------------------------------------------------------
# Softmax, reductions, scans


@lower("aten._softmax.default", "aten._log_softmax.default", "aten.softmax.int", "aten.log_softmax.int")
def softmax(ctx, x, dim, half_to_float_or_dtype=None):
    op = "LogSoftmax" if "log_softmax" in str(ctx.node.target) else "Softmax"
    return ctx.emit(op, [ctx.tensor(x, ctx.out_dtype())], axis=_axis(dim, ctx.rank(x)))


def _reduce(ctx, op: str, x: Any, dims: Any, keepdim: bool, dtype: str | None = None) -> str:
    """One ONNX Reduce* over an FX argument (cast to ``dtype`` first when given)."""
    xs = ctx.tensor(x, dtype) if dtype else ctx.tensor(x)
    return _reduce_named(ctx, op, xs, ctx.rank(x), dims, keepdim)


def _reduce_named(ctx, op: str, name: str, rank: int, dims: Any, keepdim: bool) -> str:
    """One ONNX Reduce* over a container; ``dims`` None/empty reduces everything. Axes are an
    input for ReduceSum (opset 13+) and for the others from opset 18, an attribute before."""
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    axes = [_axis(d, rank) for d in dims]
    if not axes or rank == 0:
        return ctx.emit(op, [name], keepdims=int(keepdim))
    if op == "ReduceSum" or ctx.opset >= 18:
        return ctx.emit(op, [name, ctx.const(axes, "int64")], keepdims=int(keepdim))
    return ctx.emit(op, [name], axes=tuple(axes), keepdims=int(keepdim))


def _reduction(onnx_op: str, *, cast_first: bool):
    """sum/mean/prod (which take a dtype and widen ints) and amax/amin (which keep the dtype)."""

    def lowering(ctx, x, dim=None, keepdim=False, *, dtype=None, **_):
        return _reduce(ctx, onnx_op, x, dim, keepdim, ctx.out_dtype() if cast_first else None)

    lowering.__name__ = onnx_op.lower()
    return lowering


lower("aten.sum.dim_IntList", "aten.sum.default")(_reduction("ReduceSum", cast_first=True))
lower("aten.mean.dim", "aten.mean.default")(_reduction("ReduceMean", cast_first=True))
lower("aten.prod.dim_int", "aten.prod.default")(_reduction("ReduceProd", cast_first=True))
lower("aten.amax.default", "aten.max.default")(_reduction("ReduceMax", cast_first=False))
lower("aten.amin.default", "aten.min.default")(_reduction("ReduceMin", cast_first=False))


@lower("aten.max.dim", "aten.min.dim")
def max_min_dim(ctx, x, dim, keepdim=False):
    """(values, indices) along one dim."""
    is_max = ".max." in str(ctx.node.target)
    values = _reduce(ctx, "ReduceMax" if is_max else "ReduceMin", x, [dim], keepdim)
    indices = ctx.emit("ArgMax" if is_max else "ArgMin", [ctx.tensor(x)], dtype="int64",
                       axis=_axis(dim, ctx.rank(x)), keepdims=int(keepdim))
    return values, indices


@lower("aten.argmax.default", "aten.argmin.default")
def argmax(ctx, x, dim=None, keepdim=False):
    op = "ArgMax" if "argmax" in str(ctx.node.target) else "ArgMin"
    xs = ctx.tensor(x)
    if dim is None:  # over the flattened tensor
        xs = ctx.emit("Reshape", [xs, ctx.const([-1], "int64")])
        out = ctx.emit(op, [xs], dtype="int64", axis=0, keepdims=0)
        if keepdim:
            return ctx.emit("Reshape", [out, ctx.const([1] * ctx.rank(x), "int64")])
        return out
    return ctx.emit(op, [xs], dtype="int64", axis=_axis(dim, ctx.rank(x)), keepdims=int(keepdim))


@lower("aten.any.dim", "aten.any.dims", "aten.any.default", "aten.all.dim", "aten.all.dims", "aten.all.default")
def any_all(ctx, x, dim=None, keepdim=False):
    """any = max and all = min over (x != 0) as int32 (Reduce* take no bools before opset 20)."""
    op = "ReduceMax" if ".any." in str(ctx.node.target) else "ReduceMin"
    as_int = ctx.cast(_truth(ctx, x), "int32")
    return ctx.cast(_reduce_named(ctx, op, as_int, ctx.rank(x), dim, keepdim), "bool")


@lower("aten.var.correction", "aten.var.dim", "aten.std.correction", "aten.std.dim")
def var_std(ctx, x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """sum((x - mean)^2) / (N - correction); N must be static. ``var.dim`` passes ``unbiased``."""
    dt = ctx.out_dtype()
    if correction is None:
        correction = 1 if unbiased in (None, True) else 0
    rank = ctx.rank(x)
    dims = [dim] if isinstance(dim, int) else list(dim or range(rank))
    shape = ctx.shape(x)
    count = int(np.prod([ctx.static_int(shape[d], "reduced dim") for d in dims]))
    xs = ctx.tensor(x, dt)
    centered = ctx.emit("Sub", [xs, _reduce_named(ctx, "ReduceMean", xs, rank, dims, True)])
    total = _reduce_named(ctx, "ReduceSum", ctx.emit("Mul", [centered, centered]), rank, dims, keepdim)
    out = ctx.emit("Div", [total, ctx.const(max(count - correction, 0), dt)])
    return ctx.emit("Sqrt", [out]) if ".std." in str(ctx.node.target) else out


@lower("aten.linalg_vector_norm.default")
def linalg_vector_norm(ctx, x, ord=2, dim=None, keepdim=False, *, dtype=None):  # noqa: A002
    """``torch.linalg.vector_norm`` (``Tensor.norm``, ``F.normalize``, weight norm): 2 and 1 are
    ReduceL2/ReduceL1, +-inf the max/min of |x|, 0 the count of non-zeros, any other p
    ``sum(|x|^p)^(1/p)``."""
    dt = ctx.out_dtype()
    rank = ctx.rank(x)
    xs = ctx.tensor(x, dt)
    p = float(ord)
    if p == 2:
        return _reduce_named(ctx, "ReduceL2", xs, rank, dim, keepdim)
    if p == 1:
        return _reduce_named(ctx, "ReduceL1", xs, rank, dim, keepdim)
    magnitude = ctx.emit("Abs", [xs])
    if p in (float("inf"), float("-inf")):
        return _reduce_named(ctx, "ReduceMax" if p > 0 else "ReduceMin", magnitude, rank, dim, keepdim)
    if p == 0:
        nonzero = ctx.cast(ctx.emit("Not", [ctx.emit("Equal", [xs, ctx.const(0, dt)], dtype="bool")]), dt)
        return _reduce_named(ctx, "ReduceSum", nonzero, rank, dim, keepdim)
    powered = ctx.emit("Pow", [magnitude, ctx.const(p, dt)])
    return ctx.emit("Pow", [_reduce_named(ctx, "ReduceSum", powered, rank, dim, keepdim), ctx.const(1.0 / p, dt)])


@lower("aten.cumsum.default")
def cumsum(ctx, x, dim, *, dtype=None):
    return ctx.emit("CumSum", [ctx.tensor(x, ctx.out_dtype()), ctx.const(_axis(dim, ctx.rank(x)), "int64")])


@lower("aten.topk.default")
def topk(ctx, x, k, dim=-1, largest=True, sorted=True):  # noqa: A002
    values, indices = ctx.emit("TopK", [ctx.tensor(x), ctx.ints([k])], outputs=2,
                               axis=_axis(dim, ctx.rank(x)), largest=int(largest), sorted=int(sorted))
    return values, indices
