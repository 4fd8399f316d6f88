"""Shape rules of the transformer-block ops (mirrors :mod:`dcopt.ops.attention`).

ONNX Attention takes 4-D (batch, heads, seq, head_size) or 3-D (batch, seq, heads * head_size)
inputs; the cache outputs are always 4-D and hold past plus new keys/values.
"""

from __future__ import annotations

from dcopt.ops.shapes import dims
from dcopt.ops.shapes.registry import onnx_dtype, shape_rule


def _heads(shape, heads):
    """(batch, heads, seq, head_size) of a 3-D or 4-D attention operand."""
    if len(shape) == 4:
        return tuple(shape)
    return (shape[0], heads, shape[1], dims.div(shape[2], heads))


@shape_rule("Attention")
def attention(ctx):
    rank3 = ctx.rank(0) == 3
    q_heads, kv_heads = ctx.attrs.get("q_num_heads"), ctx.attrs.get("kv_num_heads")
    b, hq, sq, _ = _heads(ctx.shape(0), q_heads)
    _, hkv, skv, dk = _heads(ctx.shape(1), kv_heads)
    dv = _heads(ctx.shape(2), kv_heads)[3]
    total = dims.add(ctx.shape(4)[2], skv) if ctx.has(4) else skv
    dtype = ctx.dtype(0)
    y = (b, sq, dims.mul(hq, dv)) if rank3 else (b, hq, sq, dv)
    return [ctx.tensor(dtype, y), ctx.tensor(dtype, (b, hkv, total, dk)), ctx.tensor(dtype, (b, hkv, total, dv)),
            ctx.tensor(dtype, (b, hq, sq, total))]


@shape_rule("FlexAttention", domain="ai.onnx.preview")
def flex_attention(ctx):
    q, k, v = ctx.shape(0), ctx.shape(1), ctx.shape(2)
    precision = ctx.attrs.get("softmax_precision")
    score_dtype = onnx_dtype(precision) if precision is not None else \
        ("float64" if ctx.dtype(0) == "float64" else "float32")
    scores = ctx.tensor(score_dtype, (q[0], q[1], q[2], k[2]))
    for name in ("score_mod", "prob_mod"):
        body = ctx.attrs.get(name)
        if body is not None:
            ctx.infer_body(body, [scores])
    return ctx.tensor(ctx.dtype(2), (q[0], q[1], q[2], v[3]))


@shape_rule("LinearAttention")
def linear_attention(ctx):
    q, k, v = ctx.shape(0), ctx.shape(1), ctx.shape(2)
    q_heads, kv_heads = int(ctx.attrs["q_num_heads"]), int(ctx.attrs["kv_num_heads"])
    dk, dv = dims.div(k[2], kv_heads), dims.div(v[2], kv_heads)
    state_dtype = ctx.dtype(3) if ctx.has(3) else ctx.dtype(0)
    return [ctx.tensor(ctx.dtype(0), (q[0], q[1], dims.mul(q_heads, dv))),
            ctx.tensor(state_dtype, (k[0], kv_heads, dk, dv))]


@shape_rule("RotaryEmbedding")
def rotary_embedding(ctx):
    return ctx.tensor(ctx.dtype(0), ctx.shape(0))


@shape_rule("SwiGLU")
def swiglu(ctx):
    return ctx.tensor(ctx.dtype(0), ctx.broadcast(0, 1))
