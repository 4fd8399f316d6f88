"""Reference semantics of dcopt's own ``Attention`` op (domain ``dcopt``), the node that
``recognize-ops`` writes for the decomposed scaled-dot-product attention that exporters emit::

    Attention(q, k, v[, mask]; scale, has_mask, zero_nan_probs)
        = softmax(q @ swapaxes(k, -1, -2) * scale [+ mask], axis=-1) @ v

It is deliberately the decomposed graph, not ONNX's Attention-23: any rank >= 2 with numpy
matmul broadcasting over the leading (batch, head) dims, K in the usual (..., kv_len, head_size)
layout, an additive mask that broadcasts against the scores, no head splitting, no causal flag.
``zero_nan_probs=1`` replaces NaN probabilities by 0 (the ``Where(IsNaN(p), 0, p)`` guard that
PyTorch's SDPA export puts after the softmax, so rows whose logits are all -inf yield zeros).
"""

from __future__ import annotations

import numpy as np

from dcopt.ops.reduce import softmax
from dcopt.ops.registry import reference


@reference("Attention", domain="dcopt")
def dcopt_attention(q, k, v, mask=None, *, scale=1.0, has_mask=0, zero_nan_probs=0):
    if bool(has_mask) != (mask is not None):
        raise ValueError(f"has_mask={has_mask} but the mask input is {'absent' if mask is None else 'present'}")
    with np.errstate(all="ignore"):
        scores = np.matmul(q, np.swapaxes(k, -1, -2)).astype(q.dtype, copy=False) * q.dtype.type(scale)
        if mask is not None:
            scores = scores + mask
        probs = softmax(scores, axis=-1)
        if zero_nan_probs:
            probs = np.where(np.isnan(probs), 0, probs).astype(probs.dtype)
        return np.matmul(probs, v).astype(q.dtype, copy=False)
