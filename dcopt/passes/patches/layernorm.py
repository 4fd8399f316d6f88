"""LayerNorm patches: ``fuse_layernorm`` (exact) and ``layernorm_to_rmsnorm`` (idea).

Exporters below opset 17 write LayerNorm as nine primitive ops::

    mean = ReduceMean(x, axes);  d = x - mean;  var = ReduceMean(d ** 2, axes)   # or d * d
    y = d / Sqrt(var + eps) * gamma + beta                                       # or d * Reciprocal(...)

``fuse_layernorm`` applies the ``recognize-ops`` pass's ``layer-norm`` rule
(:mod:`dcopt.passes.recognize`), which turns that into ``LayerNormalization`` (opset 17); lower
opsets are raised with onnx's version converter when allowed, as for ``fuse_gelu``.

``layernorm_to_rmsnorm`` drops the mean-centering: ``y = x / sqrt(mean(x^2) + eps) * gamma
(+ beta)``. It rewrites both fused ``LayerNormalization`` nodes and the decomposed form (the same
pattern the pass uses). ONNX's ``RMSNormalization`` exists only from opset 23, which few runtimes
and models have, so by default (``form=auto``) the result is built from primitive ops (Mul,
ReduceMean, Add, Sqrt, Div, Mul) at the model's own opset, and uses ``RMSNormalization`` only
when the model is already at opset 23+. ``form=fused`` insists on the op and refuses below opset
23; the opset is not raised for an idea patch. ``keep_bias=false`` drops ``beta`` as well
(RMSNorm proper has none).
"""

from __future__ import annotations

import numpy as np

from dcopt.ir.graph import Graph
from dcopt.passes.match import Match
from dcopt.passes.pattern import Op, Var
from dcopt.passes.patches.edit import apply_at_opset, float_value, recognize_rules
from dcopt.passes.patches.registry import Param, patch
from dcopt.passes.recognize import LAYER_NORM, reduce_axes
from dcopt.passes.rewrite import RewriteBuilder, RewriteRule, RuleSet

__all__ = ["fuse_layernorm", "layernorm_to_rmsnorm"]

LAYERNORM_OPSET = 17
RMSNORM_OPSET = 23
FUSED = Op("LayerNormalization", Var("x"), Var("gamma"), ..., name="ln")


@patch("fuse_layernorm", kind="exact", params=[
    Param("bump_opset", bool, True, "raise the model to opset 17 (where LayerNormalization exists) when it is lower"),
])
def fuse_layernorm(graph, *, bump_opset):
    """Fuse decomposed LayerNorm (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add) into LayerNormalization.

    One node instead of nine, and two passes over the activations instead of about seven.
    """
    return apply_at_opset(graph, recognize_rules("layer-norm"), min_opset=LAYERNORM_OPSET, bump=bump_opset,
                          what="LayerNormalization")


def _layout(graph: Graph, m: Match) -> tuple[int, tuple[int, ...]] | str:
    """(axis, normalized shape) of a decomposed LayerNorm, or why it is not one."""
    x = graph.type_of(m.value("x"))
    if x is None or x.shape is None:
        return f"the rank of '{m.value('x')}' is unknown"
    rank = len(x.shape)
    axes = [reduce_axes(graph, m, m.node(k)) for k in ("mean", "var")]
    if axes[0] is None or axes[0] != axes[1]:
        return f"the two ReduceMeans reduce different or unknown axes ({axes[0]} and {axes[1]})"
    if any(not m.node(k).attrs.get("keepdims", 1) for k in ("mean", "var")):
        return "a ReduceMean drops the reduced axes (keepdims=0)"
    if list(axes[0]) != list(range(rank - len(axes[0]), rank)):
        return f"the normalized axes {list(axes[0])} are not the trailing axes of a rank-{rank} input"
    normalized = x.shape[rank - len(axes[0]):]
    if not all(isinstance(d, int) for d in normalized):
        return f"the normalized dims {list(normalized)} are not static"
    return -len(axes[0]), tuple(normalized)


def _affine(m: Match, key: str, normalized: tuple[int, ...]) -> np.ndarray | str:
    """``gamma``/``beta`` with exactly the normalized shape (ones for an absent gamma), or why not."""
    if key not in m:
        return np.ones(normalized, np.float32)
    data = m.const(key)
    while data.ndim > len(normalized) and data.shape[0] == 1:
        data = data.reshape(data.shape[1:])
    try:
        return np.ascontiguousarray(np.broadcast_to(data, normalized))
    except ValueError:
        return f"{key} of shape {list(m.const(key).shape)} is not per-feature over the normalized shape {list(normalized)}"


def _decomposed_check(graph: Graph, m: Match):
    if not float_value(graph, m.value("x")):
        return m.fail(f"'{m.value('x')}' is not known to be floating point", m.root)
    layout = _layout(graph, m)
    if isinstance(layout, str):
        return m.fail(layout, m.node("mean"))
    for key in ("gamma", "beta"):
        affine = _affine(m, key, layout[1])
        if isinstance(affine, str):
            return m.fail(affine, m.root)
    return None


# -- layernorm_to_rmsnorm -------------------------------------------------------------------------


def _rms(form: str, keep_bias: bool):
    """A rewrite building RMSNorm from the match's x, gamma, beta, axis and epsilon."""

    def rewrite(graph: Graph, m: Match):
        rb = RewriteBuilder(graph)
        if "ln" in m:
            ln = m.node("ln")
            axis, eps = int(ln.attrs.get("axis", -1)), float(ln.attrs.get("epsilon", 1e-5))
            gamma, beta = m.value("gamma"), ln.inputs[2] if len(ln.inputs) > 2 and ln.inputs[2] else None
        else:
            axis, normalized = _layout(graph, m)
            eps = float(m.const("eps").reshape(-1)[0])
            gamma = rb.const(_affine(m, "gamma", normalized), like=m.value("x"), name=f"{m.root.name}/rms_gamma")
            beta = rb.const(_affine(m, "beta", normalized), like=m.value("x"), name=f"{m.root.name}/rms_beta") \
                if "beta" in m and keep_bias else None
        x, rank = m.value("x"), len(graph.type_of(m.value("x")).shape)
        if form == "fused" or (form == "auto" and graph.opset_of("") >= RMSNORM_OPSET):
            y = rb.op("RMSNormalization", [x, gamma], like=m.root_value, name=f"{m.root.name}/rms", axis=axis,
                      epsilon=eps)
        else:
            y = _primitive_rms(graph, rb, x, gamma, axis, rank, eps, m.root_value, m.root.name)
        if keep_bias and beta is not None:
            y = rb.op("Add", [y, beta], like=m.root_value, name=f"{m.root.name}/rms_bias")
        return rb.replace({m.root_value: y})

    return rewrite


def _primitive_rms(graph: Graph, rb: RewriteBuilder, x: str, gamma: str, axis: int, rank: int, eps: float,
                   like: str, site: str) -> str:
    """x / sqrt(mean(x*x over the trailing axes) + eps) * gamma, at the graph's opset."""
    axes = list(range(axis % rank, rank))
    t = graph.type_of(x)
    stat = t.with_shape(tuple(1 if i in axes else d for i, d in enumerate(t.shape)))  # keepdims=1
    square = rb.op("Mul", [x, x], like=x, name=f"{site}/rms_square")
    if graph.opset_of("") >= 18:  # ReduceMean takes its axes as an input from opset 18
        mean = rb.op("ReduceMean", [square, rb.const(np.array(axes, np.int64), name="rms_axes")], like=stat,
                     name=f"{site}/rms_mean", keepdims=1)
    else:
        mean = rb.op("ReduceMean", [square], like=stat, name=f"{site}/rms_mean", axes=tuple(axes), keepdims=1)
    shifted = rb.op("Add", [mean, rb.const(np.float32(eps), like=x, name="rms_eps")], like=stat, name=f"{site}/rms_eps")
    std = rb.op("Sqrt", [shifted], like=stat, name=f"{site}/rms_sqrt")
    return rb.op("Mul", [rb.op("Div", [x, std], like=x, name=f"{site}/rms_div"), gamma], like=like,
                 name=f"{site}/rms_scale")


def _rms_check(form: str):
    def check(graph: Graph, m: Match):
        if form == "fused" and graph.opset_of("") < RMSNORM_OPSET:
            return m.fail(f"form=fused needs RMSNormalization (opset {RMSNORM_OPSET}); the model is opset "
                          f"{graph.opset_of('')} (use form=primitive or auto)", m.root)
        if "ln" in m:
            t = graph.type_of(m.value("x"))
            if t is None or t.shape is None:
                return m.fail(f"the rank of '{m.value('x')}' is unknown", m.root)
            return None if float_value(graph, m.value("x")) else m.fail("input is not floating point", m.root)
        return _decomposed_check(graph, m)

    return check


@patch("layernorm_to_rmsnorm", kind="idea", params=[
    Param("form", str, "auto", "auto: RMSNormalization at opset >= 23, else primitive ops; primitive; fused",
          choices=("auto", "primitive", "fused")),
    Param("keep_bias", bool, True, "keep LayerNorm's additive beta after the RMSNorm"),
])
def layernorm_to_rmsnorm(graph, *, form, keep_bias):
    """Replace LayerNorm (fused or decomposed) by RMSNorm: no mean-centering, same scale (and bias).

    RMSNorm saves the mean pass and is what recent LLMs use; whether a model trained with
    LayerNorm still works after the swap is the experiment this patch makes a one-liner.
    """
    rewrite, check = _rms(form, keep_bias), _rms_check(form)
    return RuleSet([RewriteRule("fused-layernorm-to-rms", FUSED, rewrite, check, "LayerNormalization -> RMSNorm"),
                    RewriteRule("layernorm-to-rms", LAYER_NORM, rewrite, check, "decomposed LayerNorm -> RMSNorm")])
