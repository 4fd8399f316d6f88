"""Algebraic simplification ("simplify-algebra"): arithmetic identities as rewrite rules.

``remove-noops`` already drops x*1, 1*x, x+0, 0+x, x-0 and x/1, so they are not repeated here.
Every rule below either computes bit-for-bit the same values or states its tolerance:

exact
    ``--x -> x``, ``not not b -> b``, ``x + (-y) -> x - y``, ``x - (-y) -> x + y``,
    ``x * -1 -> -x``, ``1 / x -> Reciprocal(x)``, ``Pow(x, 1) -> x``, ``Pow(x, -1) -> 1/x``,
    ``x / 2^k -> x * 2^-k`` (a power of two and its reciprocal are both exact, so both sides
    round the same real number), integer ``x * 0 -> 0``, and integer constant chains (two's
    complement arithmetic is associative, wrap-around included).
within one rounding
    ``Pow(x, 2) -> x * x`` (powf is correctly rounded for a square in practice, x*x always is);
    ``y * Reciprocal(x) -> y / x`` (one rounding instead of two: the result is *more* accurate;
    this also covers "Sqrt then Reciprocal": ``y * (1/sqrt(v)) -> y / sqrt(v)``);
    ``Pow(x, 0.5) -> Sqrt(x)``, except that C's pow gives ``+inf`` for ``-inf`` and ``+0`` for
    ``-0`` where sqrt gives NaN and ``-0``.
reassociation (option ``reassociate``, on by default)
    float constant chains ``(x*c1)*c2 -> x*(c1*c2)`` and ``(x+c1)+c2 -> x+(c1+c2)`` (with Div
    and Sub): each element may differ by a rounding of the largest intermediate, i.e. about
    2^-24 relative to ``max(|x*c1|, |x*c1*c2|)`` in float32 for products, and about 2^-24 of
    ``max(|x|, |c1|, |c2|)`` absolute for sums (cancellation makes sums the riskier half).
    A folded constant that overflows or underflows to zero is refused.

Refused with a reason, because no rounding argument can save them: float ``x * 0`` (NaN and
inf times 0 are NaN), ``x / c -> x * (1/c)`` for a ``c`` that is not a power of two (x/3 and
x*(1/3) round differently), integer division chains (truncation does not reassociate), and
every rule whose constant would broadcast ``x`` to a larger shape.
"""

from __future__ import annotations

import numpy as np

from dcopt.ir.graph import Graph
from dcopt.passes.base import register_pass
from dcopt.passes.common import broadcast_keeps_shape
from dcopt.passes.match import Match, Predicate
from dcopt.passes.pattern import Alt, Const, Op, Var
from dcopt.passes.rewrite import Replacement, RewriteBuilder, RewritePass, RewriteRule, RuleSet

X, Y = Var("x"), Var("y")
ALL_ZERO = Predicate(lambda c: c.size > 0 and not np.any(c), "all zero")
SCALAR = Predicate(lambda c: c.size == 1, "a single value")


# -- shared checks and rewrites -----------------------------------------------------------------


def _is_float(array: np.ndarray) -> bool:
    return array.dtype.kind in "fc" or array.dtype.name == "bfloat16"


def _keeps_shape(graph: Graph, m: Match, const: str):
    """Refuse when broadcasting ``x`` with the constant would give a bigger result than ``x``."""
    x, c = m.value("x"), m.const(const)
    t = graph.type_of(x)
    if not broadcast_keeps_shape(None if t is None else t.shape, tuple(c.shape)):
        return m.fail(f"the constant of shape {list(c.shape)} would broadcast '{x}' ({t}) to a larger shape",
                      m.root)
    return None


def _float_only(const: str, why: str):
    def check(graph: Graph, m: Match):
        if not _is_float(m.const(const)):
            return m.fail(f"{why} (dtype {m.const(const).dtype})", m.root)
        return _keeps_shape(graph, m, const)

    return check


def _forward(capture: str):
    """Replace the matched value by the captured one (the nodes in between are deleted)."""

    def rewrite(graph: Graph, m: Match) -> Replacement:
        return RewriteBuilder(graph).replace({m.root_value: m.value(capture)})

    rewrite.__name__ = f"forward_{capture}"
    return rewrite


def _emit(op: str, *captures: str):
    """Replace the matched value by ``op(captures...)``, typed like the matched value."""

    def rewrite(graph: Graph, m: Match) -> Replacement:
        rb = RewriteBuilder(graph)
        return rb.replace({m.root_value: rb.op(op, [m.value(c) for c in captures], like=m.root_value)})

    rewrite.__name__ = f"emit_{op}"
    return rewrite


# -- x * 0 ---------------------------------------------------------------------------------------


def _check_mul_zero(graph: Graph, m: Match):
    zero = m.const("zero")
    if _is_float(zero):
        return m.fail("x * 0 is not 0 when x is inf or NaN (IEEE 754), so it is kept", m.root)
    t = graph.type_of(m.root_value)
    if t is None or not t.is_static:
        return m.fail(f"the result shape {t} is not static, so the zeros cannot be written as a constant", m.root)
    return None


def _zeros_like_root(graph: Graph, m: Match) -> Replacement:
    rb = RewriteBuilder(graph)
    t = graph.type_of(m.root_value)
    shape = rb.const(np.asarray(t.shape, dtype=np.int64), name="zeros_shape")
    out = rb.op("ConstantOfShape", [shape], like=m.root_value, value=np.zeros(1, m.const("zero").dtype))
    return rb.replace({m.root_value: out})


# -- constant chains -----------------------------------------------------------------------------


def _chain_pattern(up: str, down: str) -> Alt:
    """``(x up/down c1) up/down c2``; ``up`` is the commutative op (Mul/Add), ``down`` its inverse."""
    inner = Alt(Op(up, X, Const("c1"), name="inner"), Op(down, X, Const("c1"), name="inner"))
    return Alt(Op(up, inner, Const("c2"), name="outer"), Op(down, inner, Const("c2"), name="outer"))


def _fold_chain(m: Match, up: str) -> np.ndarray:
    """The single constant equivalent to the chain: c1 and c2 combined with their signs."""
    c1, c2 = m.const("c1"), m.const("c2")
    signs = [m.node("inner").op == up, m.node("outer").op == up]
    wide = np.float64 if _is_float(c1) else c1.dtype
    a, b = c1.astype(wide), c2.astype(wide)
    with np.errstate(all="ignore"):
        if up == "Add":
            total = (a if signs[0] else -a) + (b if signs[1] else -b)
        elif not any(signs):  # (x / c1) / c2 stays a division: x / (c1 * c2)
            total = a * b
        else:
            total = (a if signs[0] else 1 / a) * (b if signs[1] else 1 / b)
        return total.astype(c1.dtype)


def _chain_check(up: str, reassociate: bool):
    def check(graph: Graph, m: Match):
        c1, c2 = m.const("c1"), m.const("c2")
        if not _is_float(c1):
            if up == "Mul" and {m.node("inner").op, m.node("outer").op} != {"Mul"}:
                return m.fail("integer division truncates, so it does not reassociate", m.root)
            return None
        if not reassociate:
            return m.fail("reassociating float constants changes rounding and reassociate=False", m.root)
        total = _fold_chain(m, up)
        if not np.all(np.isfinite(total)):
            return m.fail(f"the folded constant overflows {c1.dtype}", m.root)
        if up == "Mul" and np.any(total == 0) and np.all(c1 != 0) and np.all(c2 != 0):
            return m.fail(f"the folded constant underflows to 0 in {c1.dtype}", m.root)
        return None

    return check


def _chain_rewrite(up: str, down: str):
    def rewrite(graph: Graph, m: Match) -> Replacement:
        rb = RewriteBuilder(graph)
        keep_division = up == "Mul" and m.node("inner").op == m.node("outer").op == down
        total = rb.const(_fold_chain(m, up), name="folded")
        return rb.replace({m.root_value: rb.op(down if keep_division else up, [m.value("x"), total],
                                               like=m.root_value)})

    return rewrite


# -- x / c -> x * (1/c) --------------------------------------------------------------------------


def _is_power_of_two(c: np.ndarray) -> bool:
    wide = c.astype(np.float64)
    mantissa, _ = np.frexp(wide)
    inverse = (1 / wide).astype(c.dtype)
    return bool(np.all(np.isfinite(wide)) and np.all(np.abs(mantissa) == 0.5)
                and np.all(np.isfinite(inverse)) and np.all(inverse.astype(np.float64) * wide == 1))


def _check_div_exact(graph: Graph, m: Match):
    c = m.const("c")
    if not _is_float(c):
        return m.fail(f"integer division (dtype {c.dtype}) has no reciprocal", m.root)
    if not _is_power_of_two(c):
        return m.fail(f"x / c and x * (1/c) round differently unless c is a power of two (c = "
                      f"{c.reshape(-1)[0] if c.size == 1 else 'array'})", m.root)
    return None


def _div_to_mul(graph: Graph, m: Match) -> Replacement:
    rb = RewriteBuilder(graph)
    c = m.const("c")
    inverse = rb.const((1 / c.astype(np.float64)).astype(c.dtype), name="reciprocal")
    return rb.replace({m.root_value: rb.op("Mul", [m.value("x"), inverse], like=m.root_value)})


# -- Pow with a constant exponent ----------------------------------------------------------------

#: exponent -> (rule name, replacement op or None to forward x, float only)
POW_RULES = {
    1.0: ("pow-one", None, False),
    2.0: ("pow-two", "Mul", False),
    0.5: ("pow-half", "Sqrt", True),
    -1.0: ("pow-minus-one", "Reciprocal", True),
}


def _pow_rule(exponent: float, name: str, op: str | None, float_only: bool) -> RewriteRule:
    pattern = Op("Pow", X, Const("p", exponent, check=SCALAR))
    if op is None:
        rewrite = _forward("x")
    elif op == "Mul":
        rewrite = _emit("Mul", "x", "x")
    else:
        rewrite = _emit(op, "x")
    check = _float_only("p", f"Pow(x, {exponent:g}) -> {op} needs a float") if float_only else (
        lambda graph, m: _keeps_shape(graph, m, "p"))
    return RewriteRule(name, pattern, rewrite, check, description=f"Pow(x, {exponent:g}) -> {op or 'x'}")


# -- the rule set --------------------------------------------------------------------------------


def algebra_rules(reassociate: bool = True) -> RuleSet:
    """Every rule of the pass, in the order they are tried at one node."""
    return RuleSet([
        RewriteRule("mul-by-zero", Op("Mul", X, Const("zero", check=ALL_ZERO)), _zeros_like_root, _check_mul_zero,
                    description="integer x * 0 -> zeros (refused for floats: NaN * 0 is NaN)"),
        RewriteRule("double-negation", Alt(Op("Neg", Op("Neg", X)), Op("Not", Op("Not", X))), _forward("x"),
                    description="-(-x) -> x, not(not(b)) -> b"),
        RewriteRule("add-neg", Op("Add", X, Op("Neg", Y)), _emit("Sub", "x", "y"), description="x + (-y) -> x - y"),
        RewriteRule("sub-neg", Op("Sub", X, Op("Neg", Y)), _emit("Add", "x", "y"), description="x - (-y) -> x + y"),
        RewriteRule("mul-minus-one", Op("Mul", X, Const("c", -1.0)), _emit("Neg", "x"),
                    lambda graph, m: _keeps_shape(graph, m, "c"), description="x * -1 -> -x"),
        RewriteRule("fold-mul-chain", _chain_pattern("Mul", "Div"), _chain_rewrite("Mul", "Div"),
                    _chain_check("Mul", reassociate), description="(x * c1) * c2 -> x * (c1 * c2), with Div"),
        RewriteRule("fold-add-chain", _chain_pattern("Add", "Sub"), _chain_rewrite("Add", "Sub"),
                    _chain_check("Add", reassociate), description="(x + c1) + c2 -> x + (c1 + c2), with Sub"),
        RewriteRule("div-by-power-of-two", Op("Div", X, Const("c")), _div_to_mul, _check_div_exact,
                    description="x / 2^k -> x * 2^-k (exact)"),
        *[_pow_rule(e, *spec) for e, spec in POW_RULES.items()],
        RewriteRule("div-one", Op("Div", Const("one", 1.0), X), _emit("Reciprocal", "x"),
                    _float_only("one", "1 / x on integers is not Reciprocal"), description="1 / x -> Reciprocal(x)"),
        RewriteRule("mul-reciprocal", Op("Mul", Y, Op("Reciprocal", X)), _emit("Div", "y", "x"),
                    description="y * Reciprocal(x) -> y / x (one rounding instead of two)"),
    ])


def simplify_algebra(reassociate: bool = True, max_iterations: int = 10) -> RewritePass:
    return RewritePass("simplify-algebra", algebra_rules(reassociate), max_iterations=max_iterations,
                       description="arithmetic identities: double negation, constant chains, exact "
                                   "reciprocals, Pow with small exponents")


register_pass(simplify_algebra, name="simplify-algebra", aliases=("algebra",))
