"""Shape rule of dcopt's own Attention (mirrors :mod:`dcopt.ops.dcopt_attention`): the decomposed
``softmax(q @ k^T * scale [+ mask]) @ v`` with np.matmul broadcasting over the leading dims."""

from __future__ import annotations

from dcopt.ops.shapes import dims
from dcopt.ops.shapes.nn import matmul_shape
from dcopt.ops.shapes.registry import shape_rule


@shape_rule("Attention", domain="dcopt")
def dcopt_attention(ctx):
    q, k = ctx.shape(0), ctx.shape(1)
    scores = matmul_shape(q, (*k[:-2], k[-1], k[-2]))
    if ctx.has(3):
        scores = dims.broadcast_shapes(scores, ctx.shape(3))
    return ctx.tensor(ctx.dtype(0), matmul_shape(scores, ctx.shape(2)))
