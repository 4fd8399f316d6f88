"""Recognize scaled-dot-product attention (part of "recognize-ops").

The decomposed form every exporter writes::

    MatMul(Softmax(MatMul(Q [* a], K^T [* b]) [* c | / c] [+ mask], axis=-1) [guarded], V)

where ``[guarded]`` is PyTorch SDPA's ``Where(IsNaN(p), 0, p)`` and the scale factors are scalar
constants (SDPA scales Q and K^T by sqrt(scale) each, eager code scales the scores). It becomes
one node, so a backend can emit one fused kernel that never writes the scores to memory.

Which op: **dcopt's own ``Attention``** (domain ``dcopt``, reference in
:mod:`dcopt.ops.dcopt_attention`; attributes ``scale``, ``has_mask``, ``zero_nan_probs``)
unless the graph *already* declares opset >= 23, Q, K, V are rank 4 and a mask has static
(q_len, kv_len) trailing dims (then ONNX's ``Attention``, which onnxruntime can run). We do not
raise the opset to 23 for this: between 17 and 23 nearly every op got a new version, so the
upgrade check would refuse real models, and the dcopt op keeps the decomposed graph's exact semantics (any rank, numpy broadcasting, NaN for
fully masked rows without the guard) where ONNX's op zeroes fully masked rows.

K is passed in (..., kv_len, head_size) layout. ``K^T`` usually comes from a Transpose (of the
head-split key, often with perm (0, 2, 3, 1)); the rule composes that perm with the swap of the
last two axes, so no Transpose is needed when the composition is the identity. Otherwise a
Transpose is emitted, which ``simplify-chains`` can merge with its neighbours.
"""

from __future__ import annotations

import numpy as np

import dcopt.ops.dcopt_attention  # noqa: F401  (registers the reference of the op this rule writes)
from dcopt.ir.graph import Graph
from dcopt.ir.types import TensorType
from dcopt.passes.chains import compose, perm_of
from dcopt.passes.match import Match, Predicate
from dcopt.passes.pattern import Alt, Const, Op, Var
from dcopt.passes.rewrite import Replacement, RewriteBuilder, RewriteRule, RuleSet

ATTENTION_DOMAIN = "dcopt"
SCALAR = Predicate(lambda c: c.size == 1 and np.isfinite(c).all(), "a finite single value")

Q, KT, V = Var("q"), Var("kt"), Var("v")
SCORES = Op("MatMul", Alt(Op("Mul", Q, Const("q_scale", check=SCALAR)), Q),
            Alt(Op("Mul", KT, Const("k_scale", check=SCALAR)), KT), name="qk")
SCALED = Alt(Op("Mul", SCORES, Const("scale", check=SCALAR)), Op("Div", SCORES, Const("divisor", check=SCALAR)), SCORES)
PROBS = Op("Softmax", Alt(Op("Add", SCALED, Var("mask")), SCALED), name="softmax")
GUARDED = Alt(Op("Where", Op("IsNaN", PROBS), Const("zero", 0.0), PROBS, name="guard"), PROBS)
ATTENTION = Op("MatMul", GUARDED, V, name="out")


def _rank(graph: Graph, name: str) -> int | None:
    t = graph.type_of(name)
    return None if t is None else t.rank


def _scale(m: Match) -> float:
    scale = 1.0
    for name in ("q_scale", "k_scale", "scale"):
        if name in m:
            scale *= float(m.const(name).reshape(-1)[0])
    if "divisor" in m:
        scale /= float(m.const("divisor").reshape(-1)[0])
    return scale


def _key_source(graph: Graph, m: Match) -> tuple[str, tuple[int, ...] | None] | None:
    """K in (..., kv_len, head_size) layout as (value, perm to apply to it or None), or None when
    neither K^T's producer nor its rank tells how to undo the transpose."""
    kt = m.value("kt")
    producer = m.index.producer(kt)
    perm = None if producer is None or producer.op != "Transpose" else perm_of(graph, producer)
    if perm is not None:
        source = producer.inputs[0]
    else:
        rank = _rank(graph, kt)
        if rank is None:
            return None
        source, perm = kt, tuple(range(rank))
    composed = compose(perm, tuple(range(len(perm) - 2)) + (len(perm) - 1, len(perm) - 2))
    return source, None if composed == tuple(range(len(perm))) else composed


#: each scalar constant of the pattern and the value it scales (its rank bounds the constant's)
_SCALED_BY = {"q_scale": "q", "k_scale": "kt", "scale": None, "divisor": None, "zero": None}


def _check(graph: Graph, m: Match):
    scores = m.node("qk").outputs[0]
    for const, target in _SCALED_BY.items():
        if const in m and m.const(const).ndim > (_rank(graph, m.value(target) if target else scores) or 0):
            return m.fail(f"the constant '{m.value(const)}' of shape {list(m.const(const).shape)} broadcasts "
                          "to a higher rank", m.root)
    softmax = m.node("softmax")
    rank = _rank(graph, softmax.outputs[0])
    axis = int(softmax.attrs.get("axis", -1 if graph.opset_of("") >= 13 else 1))
    if not (axis == -1 or (rank is not None and axis == rank - 1)):
        return m.fail(f"Softmax normalizes axis {axis}, not the key axis (the last)", softmax)
    if _key_source(graph, m) is None:
        return m.fail(f"the rank of K^T ('{m.value('kt')}') is unknown, so K cannot be recovered", m.node("qk"))
    if "mask" in m:
        mask_type, scores_type = graph.type_of(m.value("mask")), graph.type_of(scores)
        if mask_type is not None and scores_type is not None and mask_type.dtype != scores_type.dtype:
            return m.fail(f"the mask is {mask_type.dtype} but the scores are {scores_type.dtype}", softmax)
    return None


def _use_onnx_op(graph: Graph, m: Match) -> bool:
    """ONNX Attention-23 when the opset already allows it, Q/K/V are rank 4, and a mask (if any)
    spells out the (q_len, kv_len) dims: onnxruntime does not broadcast those two."""
    if graph.opset_of("") < 23 or [_rank(graph, m.value(n)) for n in ("q", "kt", "v")] != [4, 4, 4]:
        return False
    if "mask" not in m:
        return True
    mask, scores = graph.type_of(m.value("mask")), graph.type_of(m.node("qk").outputs[0])
    if mask is None or scores is None or mask.rank is None or scores.rank is None or not 2 <= mask.rank <= 4:
        return False
    return all(isinstance(a, int) and a == b for a, b in zip(mask.shape[-2:], scores.shape[-2:]))


def _attention(graph: Graph, m: Match) -> Replacement:
    rb = RewriteBuilder(graph)
    key, perm = _key_source(graph, m)
    if perm is not None:
        t = graph.type_of(key)
        shape = None if t is None or t.shape is None else tuple(t.shape[p] for p in perm)
        key = rb.op("Transpose", [key], like=TensorType(graph.type_of(m.value("kt")).dtype, shape), perm=perm)
    inputs = [m.value("q"), key, m.value("v")] + ([m.value("mask")] if "mask" in m else [])
    scale = _scale(m)
    if _use_onnx_op(graph, m):
        out = rb.op("Attention", inputs, like=m.root_value, scale=scale)
    else:
        graph.opset.setdefault(ATTENTION_DOMAIN, 1)
        out = rb.op("Attention", inputs, like=m.root_value, domain=ATTENTION_DOMAIN, scale=scale,
                    has_mask=int("mask" in m), zero_nan_probs=int("guard" in m.named_nodes))
    return rb.replace({m.root_value: out})


ATTENTION_RULES = RuleSet([
    RewriteRule("attention", ATTENTION, _attention, _check,
                description="MatMul(Softmax(Q K^T * scale + mask), V) -> one Attention node"),
])
