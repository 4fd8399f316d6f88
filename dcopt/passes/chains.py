"""Layout and type chains ("simplify-chains"): two data-movement or cast nodes in a row become
one node, or none.

* ``Transpose(Transpose(x, p1), p2)`` -> ``Transpose(x, p1[p2])``, dropped when that is the
  identity; and ``Transpose(U(Transpose(x)))`` for one or two elementwise unary ops ``U`` ->
  ``U(Transpose(x, p1[p2]))``: the transposes meet and cancel (ops like Relu or Cast do not care
  about layout).
* ``Unsqueeze(Squeeze(x, a), a)`` and ``Squeeze(Unsqueeze(x, a), a)`` -> ``x``.
* Two shape-only ops (Reshape, Flatten, Squeeze, Unsqueeze) -> one ``Reshape`` when the final
  shape can be written without the intermediate: a constant Reshape target (a 0, "copy this
  dim", is resolved from the intermediate's static dims or refused), the static output shape,
  or a Flatten whose leading or trailing block of dims is static.
* ``Cast(Cast(x, b), c)`` -> ``Cast(x, c)`` (or ``x`` when c is x's dtype) only when the first
  cast is exact: see :func:`holds_exactly`. float32 -> float16 -> float32 is *not* an identity.

A chain whose intermediate is read elsewhere or is a graph output is left alone by the matcher
(deleting the intermediate would break its readers; the refusal names them).
"""

from __future__ import annotations

import numpy as np

from dcopt.ir import dtypes
from dcopt.ir.graph import Graph, Node
from dcopt.ir.types import TensorType
from dcopt.passes.base import register_pass
from dcopt.passes.common import known_dtype
from dcopt.passes.match import Match
from dcopt.passes.pattern import Alt, Op, Var
from dcopt.passes.rewrite import Replacement, RewriteBuilder, RewritePass, RewriteRule, RuleSet

X = Var("x")

#: Elementwise ops of one tensor input (extra inputs, like Clip's bounds, are scalars), which
#: commute with any transpose.
UNARY_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Cast", "Ceil", "Celu", "Clip", "Cos", "Cosh",
    "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN",
    "LeakyRelu", "Log", "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign",
    "Sin", "Sinh", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh", "ThresholdedRelu",
})
SHAPE_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


# -- transposes ----------------------------------------------------------------------------------


def perm_of(graph: Graph, node: Node) -> tuple[int, ...] | None:
    """A Transpose's permutation; the default (reverse the axes) needs the input's rank."""
    perm = node.attrs.get("perm")
    if perm is not None:
        return tuple(int(p) for p in perm)
    t = graph.type_of(node.inputs[0])
    return None if t is None or t.rank is None else tuple(reversed(range(t.rank)))


def compose(p1: tuple[int, ...], p2: tuple[int, ...]) -> tuple[int, ...]:
    """The one permutation doing ``Transpose(p1)`` then ``Transpose(p2)``: axis i of the result is
    axis ``p1[p2[i]]`` of the input."""
    return tuple(p1[i] for i in p2)


def _check_transposes(graph: Graph, m: Match):
    for name in ("t1", "t2"):
        if perm_of(graph, m.node(name)) is None:
            return m.fail("the Transpose has no perm and its input's rank is unknown", m.node(name))
    return None


def _transpose_chain(graph: Graph, m: Match) -> Replacement:
    """``T2(U2(U1(T1(x))))`` with zero to two unary ops between -> ``U2(U1(T(x)))``."""
    rb = RewriteBuilder(graph)
    perm = compose(perm_of(graph, m.node("t1")), perm_of(graph, m.node("t2")))
    value = m.value("x")
    shape = graph.type_of(m.root_value).shape
    if perm != tuple(range(len(perm))):
        value = rb.op("Transpose", [value], like=TensorType(graph.type_of(value).dtype, shape), perm=perm)
    for name in ("u1", "u2"):
        if name in m.named_nodes:
            u = m.node(name)
            like = TensorType(graph.type_of(u.outputs[0]).dtype, shape)
            value = rb.op(u.op, [value, *u.inputs[1:]], like=like, domain=u.domain, attrs=dict(u.attrs))
    return rb.replace({m.root_value: value})


T1 = Op("Transpose", X, name="t1")
TRANSPOSE_TRANSPOSE = Op("Transpose", T1, name="t2")
THROUGH_UNARY = Op("Transpose", Op(UNARY_OPS, Alt(Op(UNARY_OPS, T1, ..., name="u1"), T1), ..., name="u2"),
                   name="t2")


# -- squeeze / unsqueeze -------------------------------------------------------------------------


def axes_of(m: Match, node: Node) -> tuple[int, ...] | None:
    """Squeeze/Unsqueeze axes: the attribute (opset < 13) or the constant second input."""
    if "axes" in node.attrs:
        return tuple(int(a) for a in node.attrs["axes"])
    if len(node.inputs) > 1 and node.inputs[1]:
        data = m.index.constant(node.inputs[1])
        return None if data is None else tuple(int(a) for a in np.asarray(data).reshape(-1))
    return None


def _normalized(axes: tuple[int, ...], rank: int | None) -> frozenset[int] | None:
    if any(a < 0 for a in axes) and rank is None:
        return None
    return frozenset(a % rank if a < 0 else a for a in axes)


def _check_squeeze_pair(graph: Graph, m: Match):
    inner, outer = m.node("inner"), m.node("outer")
    a_in, a_out = axes_of(m, inner), axes_of(m, outer)
    if a_in is None or a_out is None:
        return m.fail("the axes are not constant (or a Squeeze without axes depends on the runtime shape)", m.root)
    # both axis lists index the tensor that has the unit dims: x for Unsqueeze(Squeeze(x)),
    # the intermediate for Squeeze(Unsqueeze(x))
    wide = graph.type_of(m.value("x") if inner.op == "Squeeze" else inner.outputs[0])
    rank = None if wide is None else wide.rank
    if rank is None and inner.op == "Unsqueeze":
        x_type = graph.type_of(m.value("x"))
        rank = None if x_type is None or x_type.rank is None else x_type.rank + len(a_in)
    n_in, n_out = _normalized(a_in, rank), _normalized(a_out, rank)
    if n_in is None or n_out is None:
        return m.fail("negative axes with an unknown rank", m.root)
    if n_in != n_out:
        return m.fail(f"{inner.op} axes {sorted(n_in)} and {outer.op} axes {sorted(n_out)} differ", m.root)
    return None


SQUEEZE_PAIR = Alt(Op("Unsqueeze", Op("Squeeze", X, ..., name="inner"), ..., name="outer"),
                   Op("Squeeze", Op("Unsqueeze", X, ..., name="inner"), ..., name="outer"))


# -- shape-only chains ---------------------------------------------------------------------------


def _static_prod(dims) -> int | None:
    return int(np.prod(dims, dtype=np.int64)) if all(isinstance(d, int) for d in dims) else None


def _copied_dim(graph: Graph, x: str, middle_shape, i: int) -> int | None:
    """What a 0 at position ``i`` of the outer Reshape target becomes when it reads ``x``: the
    intermediate's static dim, or 0 again when ``x`` has the very same dim there (a shared
    symbol such as the batch size), else None."""
    if middle_shape is None or i >= len(middle_shape) or middle_shape[i] is None:
        return None
    if isinstance(middle_shape[i], int):
        return middle_shape[i]
    x_type = graph.type_of(x)
    x_shape = None if x_type is None else x_type.shape
    return 0 if x_shape is not None and i < len(x_shape) and x_shape[i] == middle_shape[i] else None


def merged_shape(graph: Graph, m: Match) -> tuple[list[int] | None, str]:
    """The Reshape target equivalent to the chain, or (None, why not)."""
    outer = m.node("outer")
    middle = graph.type_of(m.node("inner").outputs[0])
    middle_shape = None if middle is None else middle.shape
    if outer.op == "Reshape":
        target = m.index.constant(outer.inputs[1])
        if target is not None:
            target = [int(d) for d in np.asarray(target).reshape(-1)]
            if outer.attrs.get("allowzero", 0) or 0 not in target:
                return target, ""
            resolved = [_copied_dim(graph, m.value("x"), middle_shape, i) if d == 0 else d
                        for i, d in enumerate(target)]
            if None not in resolved:
                return resolved, ""
            return None, ("the Reshape target copies a dim (0) of the intermediate that is neither static "
                          "nor the same dim of the input")
    if outer.op == "Flatten" and middle_shape is not None:
        axis = int(outer.attrs.get("axis", 1)) % (len(middle_shape) + 1)
        lead, tail = _static_prod(middle_shape[:axis]), _static_prod(middle_shape[axis:])
        if lead:
            return [lead, -1], ""
        if tail:
            return [-1, tail], ""
    out = graph.type_of(m.root_value)
    if out is not None and out.is_static:
        return list(out.shape), ""
    return None, f"the result shape {out} is not static and cannot be computed without the intermediate"


def _check_shape_chain(graph: Graph, m: Match):
    target, why = merged_shape(graph, m)
    return m.fail(why, m.root) if target is None else None


def _shape_chain(graph: Graph, m: Match) -> Replacement:
    rb = RewriteBuilder(graph)
    target, _ = merged_shape(graph, m)
    shape = rb.const(np.asarray(target, dtype=np.int64), name="shape")
    allowzero = int(m.node("outer").attrs.get("allowzero", 0)) if m.node("outer").op == "Reshape" else 0
    attrs = {"allowzero": allowzero} if allowzero else {}
    return rb.replace({m.root_value: rb.op("Reshape", [m.value("x"), shape], like=m.root_value, attrs=attrs)})


SHAPE_CHAIN = Op(SHAPE_OPS, Op(SHAPE_OPS, X, ..., name="inner"), ..., name="outer")


# -- casts -------------------------------------------------------------------------------------

_SIGNED = {"int8": 8, "int16": 16, "int32": 32, "int64": 64}
_UNSIGNED = {"uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64}
#: significand bits (with the implicit one) of the float types
_PRECISION = {"bfloat16": 8, "float16": 11, "float32": 24, "float64": 53}
#: float types whose every value (inf, NaN and -0 included) another float type holds
_FLOAT_SUBSETS = {"float16": {"float32", "float64"}, "bfloat16": {"float32", "float64"}, "float32": {"float64"}}


def holds_exactly(a: str, b: str) -> bool:
    """Whether every value of dtype ``a`` is a value of dtype ``b`` (so Cast a->b loses nothing).

    The lattice, written out: bool fits every numeric type (as 0 and 1); a signed int fits a
    signed int at least as wide; an unsigned int fits an unsigned int at least as wide and a
    signed int strictly wider; an integer fits a float whose significand has at least as many
    bits as the integer's magnitude (int8/uint8 -> bfloat16/float16, 16-bit -> float32, 32-bit ->
    float64; int64 fits no float); float16 and bfloat16 fit float32, float32 fits float64.
    No float fits an integer, and float16 and bfloat16 do not fit each other.
    """
    if a == b:
        return True
    if a == "bool":
        return b in _SIGNED or b in _UNSIGNED or b in _PRECISION
    if a in _SIGNED:
        magnitude = _SIGNED[a] - 1
        return (b in _SIGNED and _SIGNED[b] >= _SIGNED[a]) or (b in _PRECISION and _PRECISION[b] >= magnitude)
    if a in _UNSIGNED:
        magnitude = _UNSIGNED[a]
        return ((b in _UNSIGNED and _UNSIGNED[b] >= magnitude) or (b in _SIGNED and _SIGNED[b] > magnitude)
                or (b in _PRECISION and _PRECISION[b] >= magnitude))
    return b in _FLOAT_SUBSETS.get(a, ())


def _cast_target(node: Node) -> str:
    return dtypes.from_onnx(int(node.attrs["to"]))


def _check_cast_chain(graph: Graph, m: Match):
    source = known_dtype(graph, m.value("x"))
    middle = _cast_target(m.node("inner"))
    if source is None:
        return m.fail(f"the dtype of '{m.value('x')}' is not known", m.root)
    if not holds_exactly(source, middle):
        return m.fail(f"Cast {source} -> {middle} is not exact ({middle} cannot hold every {source}), so "
                      f"Cast {source} -> {middle} -> {_cast_target(m.node('outer'))} is not one cast", m.node("inner"))
    return None


def _cast_chain(graph: Graph, m: Match) -> Replacement:
    rb = RewriteBuilder(graph)
    x, outer = m.value("x"), m.node("outer")
    if known_dtype(graph, x) == _cast_target(outer):
        return rb.replace({m.root_value: x})
    return rb.replace({m.root_value: rb.op("Cast", [x], like=m.root_value, attrs=dict(outer.attrs))})


CAST_CHAIN = Op("Cast", Op("Cast", X, name="inner"), name="outer")


# -- the rule set --------------------------------------------------------------------------------

CHAIN_RULES = RuleSet([
    RewriteRule("transpose-transpose", TRANSPOSE_TRANSPOSE, _transpose_chain, _check_transposes,
                description="Transpose(Transpose(x, p1), p2) -> Transpose(x, p1[p2]), or x"),
    RewriteRule("transpose-through-unary", THROUGH_UNARY, _transpose_chain, _check_transposes,
                description="Transpose(U(Transpose(x))) -> U(Transpose(x)) with the perms composed"),
    RewriteRule("squeeze-unsqueeze", SQUEEZE_PAIR, lambda graph, m: RewriteBuilder(graph).replace(
        {m.root_value: m.value("x")}), _check_squeeze_pair, description="Unsqueeze(Squeeze(x, a), a) -> x"),
    RewriteRule("merge-reshapes", SHAPE_CHAIN, _shape_chain, _check_shape_chain,
                description="two of Reshape/Flatten/Squeeze/Unsqueeze -> one Reshape"),
    RewriteRule("cast-cast", CAST_CHAIN, _cast_chain, _check_cast_chain,
                description="Cast(Cast(x, b), c) -> Cast(x, c) when the first cast is exact"),
])

register_pass(RewritePass("simplify-chains", CHAIN_RULES,
                          description="merge Transpose, Reshape-like and Cast chains; cancel inverse pairs"),
              aliases=("chains",))
