"""Fold inference-mode BatchNormalization into the linear op before it ("fold-batchnorm"), and a
per-channel constant Mul or Add after a Conv into its weights and bias ("fold-channel-affine").

At inference a BatchNormalization is a per-channel affine map ``y = s * (z - mean) + beta`` with
``s = gamma / sqrt(var + eps)``. When ``z`` comes from a linear op whose output channel axis is the
BN's channel axis (1), the map folds into that op's weights and bias, and the BN disappears:

* ``Conv(x, W, b)``: ``W'[m] = W[m] * s[m]``, ``b' = (b - mean) * s + beta`` (any group count: W's
  first axis is always the output channel);
* ``Gemm(A, B, C)``: the columns of ``op(B)`` scale by ``s`` (rows of B when transB=1), and
  ``C' = (beta_gemm * C - mean) * s + beta`` with ``beta_gemm`` set to 1;
* ``MatMul(x, W)`` and ``Add(MatMul(x, W), bias)``: only for a rank-2 result, where the feature
  axis (last) *is* axis 1. For rank 3 and up BN normalizes axis 1 (e.g. the sequence), which is
  not the MatMul's feature axis, so the rewrite is refused.

The folded parameters are computed in float64 and stored in the weight dtype; the result differs
from the unfolded graph by rounding only. Refused, with the reason: a BN that may run in training
mode (``training_mode=1``, ``is_test=0`` before opset 7, or its running-statistics outputs
used), ``spatial=0`` (opset < 9), non-constant weights or statistics, and a linear op whose output
has other readers (folding would change what they read).
"""

from __future__ import annotations

import numpy as np

from dcopt.ir.graph import Graph, Node
from dcopt.passes.base import register_pass
from dcopt.passes.match import Match
from dcopt.passes.pattern import Alt, Const, Op, Var
from dcopt.passes.rewrite import Replacement, RewriteBuilder, RewritePass, RewriteRule

X = Var("x")
W = Const("w")
LINEAR = Alt(
    Op("Conv", X, W, Const("b"), name="linear"),
    Op("Conv", X, W, name="linear"),
    Op("Gemm", X, W, Const("b"), name="linear"),
    Op("Gemm", X, W, name="linear"),
    Op("Add", Op("MatMul", X, W, name="linear"), Const("b"), name="bias_add"),
    Op("MatMul", X, W, name="linear"),
)
BATCHNORM = Op("BatchNormalization", LINEAR, Const("gamma"), Const("beta"), Const("mean"), Const("var"), name="bn")


def training_problem(graph: Graph, bn: Node, is_used) -> str:
    """Why ``bn`` may not be treated as the inference-mode affine map; '' if it may."""
    opset = graph.opset_of(bn.domain)
    if opset >= 14 and bn.attrs.get("training_mode", 0):
        return "it runs in training mode (training_mode=1): the statistics come from the batch"
    if opset < 7 and not bn.attrs.get("is_test", 0):
        return "it runs in training mode (is_test=0)"
    if opset < 9 and not bn.attrs.get("spatial", 1):
        return "spatial=0 normalizes per element, not per channel"
    extra = [o for o in bn.outputs[1:] if o and is_used(o)]
    if extra:
        return f"its training outputs ({', '.join(extra)}) are used"
    return ""


def _scale(m: Match, bn: Node) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (s, shift) with ``BN(z) = s * z + shift``, in float64."""
    eps = float(bn.attrs.get("epsilon", 1e-5))
    gamma, beta, mean, var = (m.const(n).astype(np.float64) for n in ("gamma", "beta", "mean", "var"))
    s = gamma / np.sqrt(var + eps)
    return s, beta - mean * s


def _check(graph: Graph, m: Match):
    bn, linear = m.node("bn"), m.node("linear")
    why = training_problem(graph, bn, m.index.is_used)
    if why:
        return m.fail(f"BatchNormalization not folded: {why}", bn)
    w = m.const("w")
    channels = m.const("gamma").size
    if w.dtype.kind != "f":
        return m.fail(f"the weights are {w.dtype}; only float weights can absorb the scale", linear)
    if linear.op == "MatMul":
        out = graph.type_of(linear.outputs[0])
        if out is None or out.rank != 2 or w.ndim != 2:
            rank = "unknown" if out is None or out.rank is None else out.rank
            return m.fail(f"BatchNormalization normalizes axis 1, but the MatMul's features are its last axis "
                          f"(result rank {rank}; they coincide only for rank 2)", bn)
    features = _features(linear, w)
    if features != channels:
        return m.fail(f"BatchNormalization has {channels} channels but {linear.op} has {features} output features", bn)
    return None


def _features(linear: Node, w: np.ndarray) -> int:
    if linear.op == "Conv":
        return w.shape[0]
    if linear.op == "Gemm" and linear.attrs.get("transB", 0):
        return w.shape[0]
    return w.shape[-1]


def _fold(graph: Graph, m: Match) -> Replacement:
    bn, linear = m.node("bn"), m.node("linear")
    w = m.const("w")
    s, shift = _scale(m, bn)
    rb = RewriteBuilder(graph)
    if linear.op == "Conv":
        w_new = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
    elif linear.op == "Gemm" and linear.attrs.get("transB", 0):
        w_new = w * s[:, None]
    else:
        w_new = w * s
    bias = m.const("b").astype(np.float64) if "b" in m else np.zeros(1)
    if linear.op == "Gemm":
        bias = bias * float(linear.attrs.get("beta", 1.0))
    b_new = bias * s + shift
    weights = rb.const(w_new.astype(w.dtype), name="folded_w")
    b_name = rb.const(np.asarray(b_new, dtype=w.dtype), name="folded_b")
    x, like = m.value("x"), m.root_value
    if linear.op == "Conv":
        out = rb.op("Conv", [x, weights, b_name], like=like, attrs=dict(linear.attrs))
    elif linear.op == "Gemm":
        out = rb.op("Gemm", [x, weights, b_name], like=like, attrs={**linear.attrs, "beta": 1.0})
    else:
        product = rb.op("MatMul", [x, weights], like=like)
        out = rb.op("Add", [product, b_name], like=like)
    return rb.replace({m.root_value: out})


FOLD_BATCHNORM = RewriteRule("fold-batchnorm", BATCHNORM, _fold, _check,
                             description="BatchNormalization(Conv/Gemm/MatMul(+Add)) -> Conv/Gemm/MatMul+Add "
                                         "with rescaled weights")

register_pass(RewritePass("fold-batchnorm", FOLD_BATCHNORM,
                          description="fold inference BatchNormalization into the preceding Conv/Gemm/MatMul"),
              aliases=("fold-bn",))


# -- per-channel Mul / Add after a Conv (a "scale layer", e.g. Caffe's after BatchNorm) ----------
CONV = Alt(Op("Conv", X, W, Const("b"), name="linear"), Op("Conv", X, W, name="linear"))
CHANNEL_AFFINE = Alt(Op("Mul", CONV, Const("c"), name="affine"), Op("Add", CONV, Const("c"), name="affine"))


def _channel_vector(graph: Graph, m: Match) -> np.ndarray | None:
    """The Mul/Add constant as one value per output channel, or None if it varies elsewhere."""
    c, w = m.const("c"), m.const("w")
    out = graph.type_of(m.node("linear").outputs[0])
    rank = out.rank if out is not None and out.rank is not None else 4
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, w.shape[0]):
        return None
    return np.broadcast_to(c.reshape(-1).astype(np.float64), (w.shape[0],))


def _check_affine(graph: Graph, m: Match):
    w, c = m.const("w"), m.const("c")
    if w.dtype.kind != "f" or c.dtype != w.dtype:
        return m.fail(f"the weights are {w.dtype} and the {m.node('affine').op} constant {c.dtype}; only matching "
                      "float types fold", m.node("affine"))
    if _channel_vector(graph, m) is None:
        return m.fail(f"the {m.node('affine').op} constant {list(c.shape)} is not one value per output channel "
                      f"(axis 1 of {w.shape[0]})", m.node("affine"))
    return None


def _fold_affine(graph: Graph, m: Match) -> Replacement:
    linear, affine = m.node("linear"), m.node("affine")
    w, c = m.const("w"), _channel_vector(graph, m)
    bias = m.const("b").astype(np.float64) if "b" in m else np.zeros(w.shape[0])
    if affine.op == "Mul":
        w_new, b_new = w * c.reshape((-1,) + (1,) * (w.ndim - 1)), bias * c
    else:
        w_new, b_new = w, bias + c
    rb = RewriteBuilder(graph)
    weights = rb.const(w_new.astype(w.dtype), name="folded_w")
    b_name = rb.const(np.asarray(b_new, dtype=w.dtype), name="folded_b")
    out = rb.op("Conv", [m.value("x"), weights, b_name], like=m.root_value, attrs=dict(linear.attrs))
    return rb.replace({m.root_value: out})


FOLD_CHANNEL_AFFINE = RewriteRule("fold-channel-affine", CHANNEL_AFFINE, _fold_affine, _check_affine,
                                  description="Mul/Add(Conv, per-channel constant) -> Conv with rescaled weights / "
                                              "shifted bias")

register_pass(RewritePass("fold-channel-affine", FOLD_CHANNEL_AFFINE,
                          description="fold a per-channel constant Mul or Add after a Conv into its weights and bias"))
