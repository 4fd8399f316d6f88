"""Shape rules of reductions, scans, the softmax family and the losses (mirrors :mod:`dcopt.ops.reduce`).

The Reduce ops name their axes as an attribute (ReduceSum before opset 13, the others before 18)
or as input 1; an empty or absent ``axes`` reduces everything unless ``noop_with_empty_axes``.
"""

from __future__ import annotations

from dcopt.ops.shapes.registry import shape_rule

REDUCTIONS = ("ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
              "ReduceProd", "ReduceMean", "ReduceMax", "ReduceMin")


def axes_is_input(op: str, opset: int) -> bool:
    return opset >= (13 if op == "ReduceSum" else 18)


def _reduce_shape_inputs(op):
    return lambda opset: (1,) if axes_is_input(op, opset) else ()


def reduced_shape(shape, axes, keepdims: bool):
    kept = set(range(len(shape))) - set(axes)
    if keepdims:
        return tuple(d if i in kept else 1 for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i in kept)


def _reduce(ctx):
    shape = ctx.shape(0)
    rank = len(shape)
    keepdims = bool(ctx.attrs.get("keepdims", 1))
    noop = bool(ctx.attrs.get("noop_with_empty_axes", 0))
    dtype = ctx.dtype(0)
    if axes_is_input(ctx.op, ctx.opset):
        if not ctx.has(1):
            axes = []
        else:
            axes = ctx.ints(1)
            if axes is None:
                count = ctx.dims_value(1)
                if count is not None and len(count) == 0:
                    axes = []
                elif keepdims:  # each dim stays or becomes 1: only 1s are certain
                    return ctx.tensor(dtype, [1 if d == 1 else None for d in shape])
                else:
                    return ctx.tensor(dtype, None)  # repeated axes would reduce the rank less
    else:
        axes = list(ctx.attrs.get("axes") or [])
    if not axes:
        return ctx.tensor(dtype, shape if noop else reduced_shape(shape, range(rank), keepdims))
    axes = {int(a) % max(rank, 1) for a in axes}
    return ctx.tensor(dtype, reduced_shape(shape, axes, keepdims))


for _op in REDUCTIONS:
    shape_rule(_op, shape_inputs=_reduce_shape_inputs(_op))(_reduce)


@shape_rule("ArgMax", "ArgMin")
def arg_reduce(ctx):
    shape = ctx.shape(0)
    axis = int(ctx.attrs.get("axis", 0)) % max(len(shape), 1)
    return ctx.tensor("int64", reduced_shape(shape, {axis}, bool(ctx.attrs.get("keepdims", 1))))


@shape_rule("CumSum", "CumProd", "Softmax", "LogSoftmax", "Hardmax")
def same_shape(ctx):
    return ctx.tensor(ctx.dtype(0), ctx.shape(0))


def _loss_shape(ctx):
    return ctx.shape(1) if ctx.attrs.get("reduction", "mean") == "none" else ()


@shape_rule("NegativeLogLikelihoodLoss")
def negative_log_likelihood_loss(ctx):
    return ctx.tensor(ctx.dtype(0), _loss_shape(ctx))


@shape_rule("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy_loss(ctx):
    return [ctx.tensor(ctx.dtype(0), _loss_shape(ctx)), ctx.tensor(ctx.dtype(0), ctx.shape(0))]
