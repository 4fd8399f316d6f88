"""Matrix products (matmul, addmm, linear, einsum...) and scaled dot-product attention."""

from __future__ import annotations

import math

import numpy as np
from dcopt.frontends.torch_context import LoweringError, concrete_int
from dcopt.frontends.torch_lowering import lower
from dcopt.frontends.torch_lowering._helpers import _operands, _scaled


# ---------------------------------------------------------------------------------------------
# Matrix products


@lower("aten.mm.default", "aten.bmm.default", "aten.matmul.default", "aten.dot.default")
def matmul(ctx, a, b):
    return ctx.emit("MatMul", _operands(ctx, ctx.out_dtype(), a, b))


@lower("aten.addmm.default")
def addmm(ctx, bias, mat1, mat2, *, beta=1, alpha=1):
    dt = ctx.out_dtype()
    a, b, c = _operands(ctx, dt, mat1, mat2, bias)
    return ctx.emit("Gemm", [a, b, c], alpha=float(alpha), beta=float(beta))


@lower("aten.baddbmm.default")
def baddbmm(ctx, x, batch1, batch2, *, beta=1, alpha=1):
    """beta * x + alpha * (batch1 @ batch2); with beta == 0, x is ignored (even NaNs), as in torch."""
    dt = ctx.out_dtype()
    product = _scaled(ctx, ctx.emit("MatMul", _operands(ctx, dt, batch1, batch2)), alpha, dt)
    if beta == 0:
        return product
    return ctx.emit("Add", [_scaled(ctx, ctx.tensor(x, dt), beta, dt), product])


@lower("aten.linear.default")
def linear(ctx, x, weight, bias=None):
    dt = ctx.out_dtype()
    wt = ctx.emit("Transpose", [ctx.tensor(weight, dt)], perm=(1, 0))
    out = ctx.emit("MatMul", [ctx.tensor(x, dt), wt])
    return out if bias is None else ctx.emit("Add", [out, ctx.tensor(bias, dt)])


@lower("aten.einsum.default")
def einsum(ctx, equation, tensors, *, path=None):
    dt = ctx.out_dtype()
    return ctx.emit("Einsum", [ctx.tensor(t, dt) for t in tensors], equation=equation)


# ---------------------------------------------------------------------------------------------
# Attention


def _attention(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa=False) -> str:
    """softmax(q @ k^T * scale + mask) @ v, the math form of scaled_dot_product_attention."""
    if dropout_p:
        raise LoweringError(f"attention dropout (p={dropout_p}) is random; only p=0 is supported")
    dt = ctx.out_dtype(0) if isinstance(ctx.out_val(), (tuple, list)) else ctx.out_dtype()
    qs, ks, vs = _operands(ctx, dt, q, k, v)
    q_shape, k_shape = ctx.shape(q), ctx.shape(k)
    if enable_gqa and (concrete_int(q_shape[-3]) is None or concrete_int(q_shape[-3]) != concrete_int(k_shape[-3])):
        raise LoweringError("grouped-query attention (enable_gqa with fewer key heads) is not supported")
    if scale is None:
        scale = 1 / math.sqrt(ctx.static_int(q_shape[-1], "attention head size"))
    rank = ctx.rank(k)
    perm = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    scores = ctx.emit("MatMul", [qs, ctx.emit("Transpose", [ks], perm=perm)])
    scores = ctx.emit("Mul", [scores, ctx.const(scale, dt)])
    neg_inf = ctx.const(-np.inf, dt)
    if is_causal:
        ones = ctx.emit("Expand", [ctx.const(True, "bool"), ctx.shape_tensor([q_shape[-2], k_shape[-2]])])
        causal = ctx.emit("Trilu", [ones, ctx.const(0, "int64")], upper=0)
        scores = ctx.emit("Where", [causal, scores, neg_inf])
    if attn_mask is not None:
        if ctx.dtype(attn_mask) == "bool":
            scores = ctx.emit("Where", [ctx.tensor(attn_mask), scores, neg_inf])
        else:
            scores = ctx.emit("Add", [scores, ctx.tensor(attn_mask, dt)])
    probs = ctx.emit("Softmax", [scores], axis=-1)
    return ctx.emit("MatMul", [probs, vs])


@lower("aten.scaled_dot_product_attention.default")
def scaled_dot_product_attention(ctx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None,
                                 enable_gqa=False):
    return _attention(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)


@lower("aten._scaled_dot_product_flash_attention_for_cpu.default")
def sdpa_flash_cpu(ctx, q, k, v, dropout_p=0.0, is_causal=False, *, attn_mask=None, scale=None):
    """Returns (output, logsumexp); the logsumexp is only for the backward pass."""
    return _attention(ctx, q, k, v, attn_mask, dropout_p, is_causal, scale), None
