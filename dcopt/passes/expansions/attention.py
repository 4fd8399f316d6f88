"""Attention ops -> two GEMM library calls around a softmax written as maps.

dcopt's ``Attention`` (domain ``dcopt``: what ``recognize-ops`` writes for the decomposed
scaled-dot-product attention exporters emit)::

    scores = gemm(q, k, transB=1, alpha=scale)          one batched library call, K used transposed
    m[r]   = max_j (scores[r, j] + mask[r, j])           \\
    e[r,j] = exp(scores[r, j] + mask[r, j] - m[r])       } maps over the rows (softmax_maps): one
    s[r]   = sum_j e[r, j]                               } kernel, one pass per row, m and s in
    p[r,j] = e[r, j] / s[r]                             /  registers
    out    = gemm(p, v)

The mask is added where it is read instead of being materialized with the scores. With ``zero_nan_probs`` a row whose logits are all -inf gives zeros.
"""

from __future__ import annotations

from dcopt.passes.expand import LoopBuilder, Refused, expansion, index, params_of
from dcopt.passes.expansions.reduction import softmax_maps

FLOATS = ("float32", "float64")


@expansion("Attention", domain="dcopt")
def dcopt_attention(graph, node):
    b = LoopBuilder(graph, node)
    q, k, v = b.input(0), b.input(1), b.input(2)
    mask = b.input(3, optional=True)
    b.require_dtype(q, k, v, allowed=FLOATS)
    if mask:
        b.require_dtype(mask, allowed=FLOATS)
    y = b.output()
    qs, ks = b.shape(q), b.shape(k)
    if len(qs) < 2 or len(ks) < 2:
        raise Refused("q and k need rank >= 2")
    scores_shape = (*[max(a, c) if isinstance(a, int) and isinstance(c, int) else a
                      for a, c in zip(qs[:-2], ks[:-2])], qs[-2], ks[-2])
    dtype = b.dtype(q)
    scores = b.transient(scores_shape, dtype, "scores")
    probs = b.transient(scores_shape, dtype, "probs")
    kt = k
    if b.constant(k) is None:  # K^T as a copy map: the GEMM routines then read plain row-major operands
        kt = b.transient((*ks[:-2], ks[-1], ks[-2]), b.dtype(k), "kt")
        p = params_of(len(ks))
        b.map("kt", b.shape(kt), "out = a", [("a", k, index([*p[:-2], p[-1], p[-2]]))], [("out", kt, index(p))])
    b.library("qk", "gemm", [("A", q, b.full(q)), ("B", kt, b.full(kt))], [("Y", scores, b.full(scores))],
              alpha=float(b.attr("scale", 1.0)), transB=int(kt == k), transA=0)
    softmax_maps(b, scores, probs, (len(scores_shape) - 1,), mask=mask, zero_nan=bool(b.attr("zero_nan_probs", 0)))
    b.library("pv", "gemm", [("A", probs, b.full(probs)), ("B", v, b.full(v))], [("Y", y, b.full(y))])
    return b.nodes
