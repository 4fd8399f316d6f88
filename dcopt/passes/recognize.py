"""Recognize decomposed ops and put the single op back ("recognize-ops").

Exporters spell normalization and activation functions out as chains of elementwise ops and
reductions; a backend then launches one kernel per step and re-reads the tensor each time. This
pass rewrites the common spellings back into one node, so a backend can emit one fused kernel:

* **LayerNormalization** (opset 17): ``(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps)``
  over trailing axes, the square as ``Pow(d, 2)`` or ``d * d``, the division as ``Div`` or a
  multiplication by ``Reciprocal``, then optionally ``* gamma`` and ``+ beta`` (constants, which
  are broadcast to the normalized shape). eps must sit inside the square root.
* **Gelu** (opset 20): the erf form ``x * 0.5 * (1 + erf(x / sqrt(2)))`` and the tanh form
  ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))``, with the factors in any of the
  orders exporters use (0.5 on x, on the bracket, or on the product).
* **Softmax**: ``exp(x - max(x)) / sum(exp(x - max(x)))`` over one axis (also without the max
  shift; the fused op is then *more* robust, never less). Before opset 13 Softmax flattens the
  trailing axes, so there only the last axis qualifies.
* **Attention**: see :mod:`dcopt.passes.recognize_attention`.

A new op that needs a newer opset than the graph declares raises ``graph.opset[""]`` only when
no other node changes meaning (:mod:`dcopt.passes.opset_upgrade`); otherwise the match is
refused and the report names the node that blocked the upgrade.
"""

from __future__ import annotations

import math

import numpy as np

from dcopt.ir.graph import Graph, Node
from dcopt.passes.base import register_pass
from dcopt.passes.match import Match, Predicate
from dcopt.passes.opset_upgrade import raise_opset, upgrade_problem
from dcopt.passes.pattern import Alt, Const, Op, Var
from dcopt.passes.recognize_attention import ATTENTION_RULES
from dcopt.passes.rewrite import Replacement, RewriteBuilder, RewritePass, RewriteRule, RuleSet

X = Var("x")
SCALAR = Predicate(lambda c: c.size == 1, "a single value")


# -- shared: reduction axes and opset upgrades --------------------------------------------------


def reduce_axes(graph: Graph, m: Match, node: Node) -> tuple[int, ...] | None:
    """Normalized axes of a Reduce* node (attribute or constant input; absent = all axes), or
    None when they cannot be known (computed axes, negative axes or no axes with unknown rank)."""
    if "axes" in node.attrs:
        axes = tuple(int(a) for a in node.attrs["axes"])
    elif len(node.inputs) > 1 and node.inputs[1]:
        data = m.index.constant(node.inputs[1])
        if data is None:
            return None
        axes = tuple(int(a) for a in np.asarray(data).reshape(-1))
    elif int(node.attrs.get("noop_with_empty_axes", 0)):
        return None  # no axes means "reduce nothing" here
    else:
        axes = ()
    t = graph.type_of(node.inputs[0])
    rank = None if t is None else t.rank
    if not axes:
        return None if rank is None else tuple(range(rank))
    if rank is None:
        return axes if all(a < 0 for a in axes) else None
    return tuple(sorted(a % rank for a in axes))


def _reduction_problem(graph: Graph, m: Match, names: tuple[str, ...]) -> tuple[tuple[int, ...] | None, str]:
    """The common axes of the named reductions, or (None, why they do not agree)."""
    found = []
    for name in names:
        node = m.node(name)
        if not int(node.attrs.get("keepdims", 1)):
            return None, f"{node.op} '{node.label}' drops the reduced axes (keepdims=0)"
        axes = reduce_axes(graph, m, node)
        if axes is None:
            return None, f"the axes of {node.op} '{node.label}' are not known"
        found.append(axes)
    if any(a != found[0] for a in found):
        return None, f"the reductions use different axes ({', '.join(map(str, found))})"
    return found[0], ""


def keeps_rank(graph: Graph, m: Match):
    """Refuse when the matched constants broadcast ``x`` to a higher rank (a (1, 1, 1, 1) "0.5"
    on a rank-3 tensor): the fused op returns x's rank."""
    ranks = [None if t is None else t.rank for t in (graph.type_of(m.value("x")), graph.type_of(m.root_value))]
    if None in ranks:
        return m.fail("the rank of the input or the result is unknown, so broadcasting cannot be ruled out", m.root)
    if ranks[0] != ranks[1]:
        return m.fail(f"the constants broadcast the rank-{ranks[0]} input to rank {ranks[1]}", m.root)
    return None


def needs_opset(target: int, check=None):
    """Wrap ``check``: also refuse when the graph's opset cannot be raised to ``target``."""

    def full_check(graph: Graph, m: Match):
        verdict = None if check is None else check(graph, m)
        if verdict is not None and verdict is not True:
            return verdict
        why = upgrade_problem(graph, target, ignore=m.nodes)
        return m.fail(why, m.root) if why else None

    return full_check


def raising_opset(target: int, rewrite):
    """Wrap ``rewrite``: raise the opset to ``target`` first (the check has approved it)."""

    def wrapped(graph: Graph, m: Match) -> Replacement:
        raise_opset(graph, target)
        return rewrite(graph, m)

    wrapped.__name__ = getattr(rewrite, "__name__", "rewrite")
    return wrapped


# -- LayerNormalization --------------------------------------------------------------------------

D = Op("Sub", X, Op("ReduceMean", X, ..., name="mean"), name="d")
STD = Op("Sqrt", Op("Add", Op("ReduceMean", Alt(Op("Pow", D, Const(value=2.0)), Op("Mul", D, D)), ..., name="var"),
                    Const("eps", check=SCALAR)), name="std")
NORMALIZED = Alt(Op("Div", D, STD), Op("Mul", D, Op("Reciprocal", STD)))
SCALED = Alt(Op("Mul", NORMALIZED, Const("gamma")), NORMALIZED)
LAYER_NORM = Alt(Op("Add", SCALED, Const("beta")), SCALED)


def _trailing(axes: tuple[int, ...], rank: int | None) -> bool:
    if rank is None:
        return sorted(axes) == list(range(-len(axes), 0))
    return list(axes) == list(range(rank - len(axes), rank))


def _normalized_shape(graph: Graph, m: Match, n_axes: int) -> tuple[int, ...] | None:
    t = graph.type_of(m.value("x"))
    dims = None if t is None or t.shape is None else tuple(t.shape[len(t.shape) - n_axes:])
    return dims if dims is not None and all(isinstance(d, int) for d in dims) else None


def _fit(array: np.ndarray, normalized: tuple[int, ...]) -> np.ndarray:
    """``array`` (gamma or beta) as an array of exactly the normalized shape."""
    shape = array.shape
    while len(shape) > len(normalized) and shape[0] == 1:
        shape = shape[1:]
    return np.broadcast_to(array.reshape(shape), normalized).copy()


def _affine_problem(graph: Graph, m: Match, n_axes: int) -> str:
    """Why the scale and bias inputs (of the normalized shape) cannot be written; '' if they can."""
    normalized = _normalized_shape(graph, m, n_axes)
    if normalized is None:
        return f"the normalized shape of '{m.value('x')}' is not static (LayerNormalization's scale needs it)"
    for name in ("gamma", "beta"):
        if name in m:
            try:
                _fit(m.const(name), normalized)
            except ValueError:
                return (f"'{name}' of shape {list(m.const(name).shape)} does not broadcast to the normalized "
                        f"shape {list(normalized)} without enlarging it")
    return ""


def _check_layer_norm(graph: Graph, m: Match):
    failure = keeps_rank(graph, m)
    if failure is not None:
        return failure
    axes, why = _reduction_problem(graph, m, ("mean", "var"))
    if axes is None:
        return m.fail(why, m.root)
    t = graph.type_of(m.value("x"))
    rank = None if t is None else t.rank
    if not _trailing(axes, rank):
        return m.fail(f"the normalized axes {list(axes)} are not the trailing axes of a rank-{rank} input", m.root)
    if m.const("eps").reshape(-1)[0] < 0:
        return m.fail("epsilon is negative", m.root)
    why = _affine_problem(graph, m, len(axes))
    return m.fail(why, m.root) if why else None


def _layer_norm(graph: Graph, m: Match) -> Replacement:
    rb = RewriteBuilder(graph)
    x = m.value("x")
    n_axes = len(reduce_axes(graph, m, m.node("mean")))
    normalized = _normalized_shape(graph, m, n_axes)
    gamma = _fit(m.const("gamma"), normalized) if "gamma" in m else np.ones(normalized)
    inputs = [x, rb.const(gamma, like=x, name="ln_scale")]
    if "beta" in m:
        inputs.append(rb.const(_fit(m.const("beta"), normalized), like=x, name="ln_bias"))
    eps = float(m.const("eps").reshape(-1)[0])
    out = rb.op("LayerNormalization", inputs, like=m.root_value, axis=-n_axes, epsilon=eps)
    return rb.replace({m.root_value: out})


# -- Gelu ----------------------------------------------------------------------------------------


def _gelu_orders(bracket) -> Alt:
    """``x * 0.5 * bracket`` in the orders exporters write it (Mul commutes within each)."""
    half = Const("half", 0.5)
    return Alt(Op("Mul", Op("Mul", X, half), bracket),
               Op("Mul", X, Op("Mul", half, bracket)),
               Op("Mul", Op("Mul", X, bracket), half))


_ERF_ARG = Alt(Op("Div", X, Const("sqrt2", math.sqrt(2))), Op("Mul", X, Const("inv_sqrt2", 1 / math.sqrt(2))))
GELU_ERF = _gelu_orders(Op("Add", Const("one", 1.0), Op("Erf", _ERF_ARG)))
_CUBE = Alt(Op("Pow", X, Const("three", 3.0)), Op("Mul", Op("Mul", X, X), X))
_TANH_ARG = Op("Mul", Const("sqrt_2_over_pi", math.sqrt(2 / math.pi)),
               Op("Add", X, Op("Mul", Const("k", 0.044715), _CUBE)))
GELU_TANH = _gelu_orders(Op("Add", Const("one", 1.0), Op("Tanh", _TANH_ARG)))


def _gelu(approximate: str):
    def rewrite(graph: Graph, m: Match) -> Replacement:
        rb = RewriteBuilder(graph)
        return rb.replace({m.root_value: rb.op("Gelu", [m.value("x")], like=m.root_value, approximate=approximate)})

    return rewrite


# -- Softmax -------------------------------------------------------------------------------------

EXP = Op("Exp", Alt(Op("Sub", X, Op("ReduceMax", X, ..., name="max")), X), name="exp")
SOFTMAX = Op("Div", EXP, Op("ReduceSum", EXP, ..., name="sum"))


def _softmax_axis(graph: Graph, m: Match) -> tuple[int | None, str]:
    names = ("sum", "max") if "max" in m.named_nodes else ("sum",)
    axes, why = _reduction_problem(graph, m, names)
    if axes is None:
        return None, why
    if len(axes) != 1:
        return None, f"the sum runs over {len(axes)} axes {list(axes)}; Softmax normalizes one"
    t = graph.type_of(m.value("x"))
    rank = None if t is None else t.rank
    axis = axes[0]
    if graph.opset_of("") < 13 and not (axis == -1 or (rank is not None and axis == rank - 1)):
        return None, f"before opset 13 Softmax flattens the axes from {axis} on; only the last axis matches"
    return axis, ""


def _check_softmax(graph: Graph, m: Match):
    axis, why = _softmax_axis(graph, m)
    return m.fail(why, m.root) if axis is None else None


def _softmax(graph: Graph, m: Match) -> Replacement:
    rb = RewriteBuilder(graph)
    axis, _ = _softmax_axis(graph, m)
    return rb.replace({m.root_value: rb.op("Softmax", [m.value("x")], like=m.root_value, axis=axis)})


# -- the pass ------------------------------------------------------------------------------------

RECOGNIZE_RULES = RuleSet([
    RewriteRule("layer-norm", LAYER_NORM, raising_opset(17, _layer_norm), needs_opset(17, _check_layer_norm),
                description="decomposed layer normalization -> LayerNormalization"),
    RewriteRule("gelu-erf", GELU_ERF, raising_opset(20, _gelu("none")), needs_opset(20, keeps_rank),
                description="x * 0.5 * (1 + erf(x / sqrt 2)) -> Gelu"),
    RewriteRule("gelu-tanh", GELU_TANH, raising_opset(20, _gelu("tanh")), needs_opset(20, keeps_rank),
                description="0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) -> Gelu(approximate=tanh)"),
    RewriteRule("softmax", SOFTMAX, _softmax, _check_softmax,
                description="exp(x - max) / sum(exp(x - max)) -> Softmax"),
]) + ATTENTION_RULES

register_pass(RewritePass("recognize-ops", RECOGNIZE_RULES,
                          description="rewrite decomposed LayerNorm, Gelu, Softmax and attention into single ops"),
              aliases=("recognize",))
