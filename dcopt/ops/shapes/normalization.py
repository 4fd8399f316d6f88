"""Shape rules of the normalization ops (mirrors :mod:`dcopt.ops.normalization`): the output has
the input's type; LayerNormalization's statistics keep the normalized axes as 1s, in the
``stash_type`` dtype; BatchNormalization in training mode also returns the running statistics."""

from __future__ import annotations

from dcopt.ops.shapes.registry import onnx_dtype, shape_rule


@shape_rule("RMSNormalization", "GroupNormalization", "InstanceNormalization", "LpNormalization",
            "MeanVarianceNormalization", "LRN")
def same_as_input(ctx):
    return ctx.tensor(ctx.dtype(0), ctx.shape(0))


@shape_rule("LayerNormalization")
def layer_normalization(ctx):
    shape = ctx.shape(0)
    axis = int(ctx.attrs.get("axis", -1)) % max(len(shape), 1)
    stats = ctx.tensor(onnx_dtype(ctx.attrs.get("stash_type", 1)) or "float32",
                       [d if i < axis else 1 for i, d in enumerate(shape)])
    return [ctx.tensor(ctx.dtype(0), shape), stats, stats]


@shape_rule("BatchNormalization")
def batch_normalization(ctx):
    y = ctx.tensor(ctx.dtype(0), ctx.shape(0))
    if ctx.n_outputs == 1:
        return y
    return [y, ctx.type(3), ctx.type(4)]
