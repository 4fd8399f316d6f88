"""Reference semantics for the transformer-block ops: Attention, FlexAttention, LinearAttention,
RotaryEmbedding and SwiGLU.

These are large fused ops whose value is in the details the spec pins down: how 3-D inputs
split into heads, grouped-query head sharing (each K/V head serves a contiguous block of query
heads), the bottom-right aligned causal mask with KV-cache offsets, sliding windows, softcap,
fully-masked rows (zero output, never NaN) and the debug ``qk_matmul_output``. The arithmetic
follows the ONNX function bodies step for step (scale Q and K by sqrt(scale) in the input
dtype, softmax in ``softmax_precision``), so results agree with the ``_expanded`` test graphs.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from dcopt.ops.reduce import softmax
from dcopt.ops.registry import reference


def _split_heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    """(batch, seq, heads * size) -> (batch, heads, seq, size)."""
    b, s, hidden = x.shape
    return x.reshape(b, s, num_heads, hidden // num_heads).transpose(0, 2, 1, 3)


def _merge_heads(x: np.ndarray) -> np.ndarray:
    """(batch, heads, seq, size) -> (batch, seq, heads * size)."""
    b, h, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def _share_heads(x: np.ndarray, q_heads: int) -> np.ndarray:
    """Grouped-query attention: repeat each K/V head for its contiguous block of query heads."""
    return x if x.shape[1] == q_heads else np.repeat(x, q_heads // x.shape[1], axis=1)


def _scaled_scores(q: np.ndarray, k: np.ndarray, scale) -> np.ndarray:
    """Q @ K^T * scale, with Q and K each pre-scaled by sqrt(scale) in the input dtype."""
    if scale is None:
        scale = 1 / np.sqrt(q.shape[-1])
    root = q.dtype.type(np.sqrt(np.float32(scale)))
    scores = np.matmul(q * root, np.swapaxes(_share_heads(k, q.shape[1]) * root, -1, -2))
    return scores.astype(q.dtype, copy=False)  # numpy widens bfloat16 matmuls to float32


def _safe_softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis that maps an all -inf row to zeros instead of NaN."""
    peak = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - np.where(np.isneginf(peak), 0, peak).astype(x.dtype))
    total = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(total == 0, 1, total).astype(x.dtype)


def _attention_bias(mask, dtype, q_len: int, kv_len: int, offset, nonpad_kv_seqlen,
                    is_causal: int, left_window: int, right_window: int) -> np.ndarray:
    """The additive bias: the user mask plus -inf wherever causality, the sliding window or
    KV padding forbid a key. ``offset`` (scalar or per batch) is the number of cached keys
    preceding the query block, which aligns the causal frontier and window bottom-right.
    """
    bias = np.zeros((q_len, kv_len), dtype)
    if mask is not None:
        if mask.shape[-1] < kv_len:  # a short mask leaves the extra keys masked out
            pad = [(0, 0)] * (mask.ndim - 1) + [(0, kv_len - mask.shape[-1])]
            mask = np.pad(mask, pad, constant_values=False if mask.dtype == np.bool_ else -np.inf)
        if mask.dtype == np.bool_:
            mask = np.where(mask, 0, -np.inf)
        bias = bias + mask.astype(dtype)
    i = np.arange(q_len)[:, None]
    j = np.arange(kv_len)[None, :]
    # distance from query (at absolute position offset + i) back to key j; per-batch offsets
    # make it (batch, 1, q, kv) so rank-3 masks keep their (heads, q, kv) meaning
    distance = i + (np.reshape(offset, (-1, 1, 1, 1)) if np.ndim(offset) else offset) - j
    allowed = np.ones(distance.shape, bool)
    if is_causal:
        allowed &= distance >= 0
    if left_window >= 0:
        allowed &= distance <= left_window
    if right_window >= 0:
        allowed &= -distance <= right_window
    if nonpad_kv_seqlen is not None:
        allowed = allowed & (j < np.reshape(nonpad_kv_seqlen, (-1, 1, 1, 1)))
    return (bias + np.where(allowed, 0, -np.inf)).astype(dtype)


@reference("Attention")
def attention(q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *,
              scale=None, is_causal=0, q_num_heads=None, kv_num_heads=None, softmax_precision=None,
              softcap=0.0, qk_matmul_output_mode=0, left_window_size=-1, right_window_size=-1):
    rank3 = q.ndim == 3
    if rank3:
        q, k, v = _split_heads(q, q_num_heads), _split_heads(k, kv_num_heads), _split_heads(v, kv_num_heads)
    if past_key is not None:
        k, v = np.concatenate([past_key, k], axis=2), np.concatenate([past_value, v], axis=2)
    if past_key is not None:
        offset = past_key.shape[2]
    elif nonpad_kv_seqlen is not None:
        offset = np.asarray(nonpad_kv_seqlen, np.int64).reshape(-1) - q.shape[2]
    else:
        offset = 0
    bias = _attention_bias(attn_mask, q.dtype, q.shape[2], k.shape[2], offset, nonpad_kv_seqlen,
                           is_causal, left_window_size, right_window_size)
    with np.errstate(all="ignore"):
        scores = _scaled_scores(q, k, scale)
        capped = softcap * np.tanh(scores / softcap) if softcap > 0 else scores
        logits = capped + bias
        precision = logits.dtype if softmax_precision is None else helper.tensor_dtype_to_np_dtype(softmax_precision)
        probs = _safe_softmax(logits.astype(precision))
        # a query row with no attendable key (decided on the bias, not the logits) outputs zeros
        probs = np.where(np.isneginf(np.max(bias, axis=-1, keepdims=True)), 0, probs).astype(q.dtype)
        y = np.matmul(probs, _share_heads(v, q.shape[1])).astype(q.dtype, copy=False)
    debug = (scores, capped, logits, probs)[qk_matmul_output_mode].astype(q.dtype)
    return (_merge_heads(y) if rank3 else y), k, v, debug


@reference("FlexAttention", domain="ai.onnx.preview")
def flex_attention(q, k, v, *, scale=None, score_mod=None, prob_mod=None, softmax_precision=None, run_subgraph):
    """Attention whose scores and probabilities pass through optional user subgraphs."""
    if softmax_precision is not None:
        precision = helper.tensor_dtype_to_np_dtype(softmax_precision)
    else:
        precision = q.dtype if q.dtype == np.float64 else np.dtype(np.float32)
    with np.errstate(all="ignore"):
        scores = _scaled_scores(q, k, scale).astype(precision)
        if score_mod is not None:
            scores = np.asarray(run_subgraph(score_mod, [scores])[0], precision)
        probs = softmax(scores, axis=-1)
        if prob_mod is not None:
            probs = np.asarray(run_subgraph(prob_mod, [probs])[0], precision)
        return np.matmul(probs, _share_heads(v, q.shape[1]).astype(precision)).astype(v.dtype)


@reference("LinearAttention")
def linear_attention(query, key, value, past_state=None, decay=None, beta=None, *, q_num_heads, kv_num_heads,
                     update_rule="gated_delta", scale=0.0, chunk_size=64):
    """Recurrent linear attention: a (d_k, d_v) state per K/V head, updated token by token.

    ``gated`` rules decay the state by exp(decay); ``delta`` rules write beta * (v - S^T k)
    instead of v. ``chunk_size`` is only a tiling hint and does not change the result.
    """
    gating = update_rule in ("gated", "gated_delta")
    delta = update_rule in ("delta", "gated_delta")
    f32 = np.float32
    q = _split_heads(query, q_num_heads).astype(f32)
    k = _split_heads(key, kv_num_heads).astype(f32)
    v = _split_heads(value, kv_num_heads).astype(f32)
    b, _, t, d_k = k.shape
    d_v = v.shape[-1]
    if gating:  # (B, T, H_kv) per head or (B, T, H_kv * d_k) per key dim -> (B, H_kv, T, 1 or d_k)
        g = _split_heads(decay, kv_num_heads).astype(f32)
    if delta:  # (B, T, H_kv or 1) -> (B, H_kv or 1, T, 1)
        bt = _split_heads(beta, beta.shape[-1]).astype(f32)
    state = np.zeros((b, kv_num_heads, d_k, d_v), f32) if past_state is None else past_state.astype(f32)
    scale = scale if scale else 1 / np.sqrt(d_k)
    out = np.zeros((b, q_num_heads, t, d_v), f32)
    for step in range(t):
        k_t, v_t = k[:, :, step], v[:, :, step]
        if gating:
            state = state * np.exp(g[:, :, step])[..., None]
        if delta:
            v_t = bt[:, :, step] * (v_t - np.einsum("bhdm,bhd->bhm", state, k_t))
        state = state + k_t[..., :, None] * v_t[..., None, :]
        out[:, :, step] = scale * np.einsum("bhd,bhdm->bhm", q[:, :, step], _share_heads(state, q_num_heads))
    state_dtype = query.dtype if past_state is None else past_state.dtype
    return _merge_heads(out).astype(query.dtype), state.astype(state_dtype)


@reference("RotaryEmbedding")
def rotary_embedding(x, cos_cache, sin_cache, position_ids=None, *, interleaved=0, rotary_embedding_dim=0,
                     num_heads=0):
    """Rotate (the first ``rotary_embedding_dim`` of) each head's features by position angles.

    ``x`` is (batch, heads, seq, size) or (batch, seq, heads * size); the caches are indexed by
    ``position_ids`` when given, else already (batch, seq, dim / 2).
    """
    xs = x.transpose(0, 2, 1, 3) if x.ndim == 4 else x.reshape(x.shape[0], x.shape[1], num_heads, -1)
    dim = rotary_embedding_dim or xs.shape[-1]
    if position_ids is not None:
        cos_cache, sin_cache = cos_cache[position_ids], sin_cache[position_ids]
    cos, sin = cos_cache[:, :, None, :], sin_cache[:, :, None, :]  # (batch, seq, 1, dim / 2)
    rot = xs[..., :dim]
    x1, x2 = (rot[..., 0::2], rot[..., 1::2]) if interleaved else np.split(rot, 2, axis=-1)
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    rotated = np.stack([real, imag], axis=-1).reshape(rot.shape) if interleaved else np.concatenate([real, imag], -1)
    out = np.concatenate([rotated, xs[..., dim:]], axis=-1).astype(x.dtype)
    return out.transpose(0, 2, 1, 3) if x.ndim == 4 else out.reshape(x.shape)


@reference("SwiGLU")
def swiglu(a, b, *, alpha=1.0):
    """Swish(a) * b with Swish(a) = a * sigmoid(alpha * a): the gated MLP activation."""
    with np.errstate(over="ignore"):
        gate = (1 / (1 + np.exp(-alpha * a.astype(np.float32)))).astype(a.dtype)
    return (a * gate * b).astype(a.dtype)
