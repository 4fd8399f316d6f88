"""simplify-algebra: each identity checked numerically, and the near misses it must refuse."""

import numpy as np
import pytest

from dcopt.passes import get_pass
from dcopt.passes.algebraic import algebra_rules
from tests.passes.conftest import graph_from_text
from tests.passes.rule_checks import apply_and_check, refusal

RULES = algebra_rules()


def parse(body, inputs="float[N, 4] x", outputs="float[N, 4] y", inits="", opset=17):
    return graph_from_text(f"agraph ({inputs}) => ({outputs}) <{inits}> {{ {body} }}", opset=opset)


POSITIVE = [
    # (rule, body, inits, ops left afterwards)
    ("double-negation", "a = Neg(x)\n y = Neg(a)", "", {"Identity": 1}),
    ("add-neg", "a = Neg(x)\n y = Add(a, x)", "", {"Sub": 1}),
    ("sub-neg", "a = Neg(x)\n y = Sub(x, a)", "", {"Add": 1}),
    ("mul-minus-one", "y = Mul(m, x)", "float m = {-1.0}", {"Neg": 1}),
    ("fold-mul-chain", "a = Mul(x, c1)\n y = Mul(c2, a)", "float c1 = {3.0}, float c2 = {0.7}", {"Mul": 1}),
    ("fold-mul-chain", "a = Div(x, c1)\n y = Mul(a, c2)", "float c1 = {3.0}, float[4] c2 = {1, 2, 3, 4}", {"Mul": 1}),
    ("fold-mul-chain", "a = Div(x, c1)\n y = Div(a, c2)", "float c1 = {3.0}, float c2 = {7.0}", {"Div": 1}),
    ("fold-add-chain", "a = Sub(x, c1)\n y = Add(c2, a)", "float c1 = {3.0}, float[4] c2 = {1, 2, 3, 4}", {"Add": 1}),
    ("fold-add-chain", "a = Add(x, c1)\n y = Sub(a, c2)", "float c1 = {3.0}, float c2 = {0.25}", {"Add": 1}),
    ("div-by-power-of-two", "y = Div(x, c)", "float[4] c = {0.25, 2, 8, -4}", {"Mul": 1}),
    ("pow-one", "a = Pow(x, p)\n y = Relu(a)", "float p = {1.0}", {"Relu": 1}),
    ("pow-two", "y = Pow(x, p)", "float p = {2.0}", {"Mul": 1}),
    ("pow-half", "a = Abs(x)\n y = Pow(a, p)", "float p = {0.5}", {"Sqrt": 1, "Abs": 1}),
    ("pow-minus-one", "y = Pow(x, p)", "float p = {-1.0}", {"Reciprocal": 1}),
    ("div-one", "y = Div(one, x)", "float one = {1.0}", {"Reciprocal": 1}),
    ("mul-reciprocal", "a = Abs(x)\n s = Sqrt(a)\n r = Reciprocal(s)\n y = Mul(x, r)", "",
     {"Div": 1, "Sqrt": 1, "Abs": 1}),
]


@pytest.mark.parametrize("rule, body, inits, ops", POSITIVE, ids=[f"{p[0]}-{i}" for i, p in enumerate(POSITIVE)])
def test_rule_fires_and_preserves_values(rule, body, inits, ops):
    graph = parse(body, inits=inits)
    report = apply_and_check(graph, RULES)
    assert report.counts().get(rule, 0) >= 1, report.format()
    assert graph.op_histogram() == ops, str(graph)


def test_integer_identities_are_exact():
    graph = parse("a = Mul(x, c1)\n b = Mul(a, c2)\n n = Neg(b)\n m = Neg(n)\n y = Sub(m, z)",
                  inputs="int32[N, 4] x, int32[N, 4] z", outputs="int32[N, 4] y",
                  inits="int32 c1 = {100000}, int32 c2 = {300000}")
    feeds = {"x": np.arange(12, dtype=np.int32).reshape(3, 4) * 7919, "z": np.ones((3, 4), np.int32)}
    report = apply_and_check(graph, RULES, feeds)  # the product wraps around: still exact
    assert report.counts() == {"fold-mul-chain": 1, "double-negation": 1}


def test_integer_times_zero_becomes_zeros_of_the_static_shape():
    graph = parse("y = Mul(x, z)", inputs="int64[2, 3] x", outputs="int64[2, 3] y", inits="int64 z = {0}")
    report = apply_and_check(graph, RULES)
    assert report.counts() == {"mul-by-zero": 1} and graph.op_histogram() == {"ConstantOfShape": 1}


# -- near misses ---------------------------------------------------------------------------------


NEAR_MISSES = [
    # (rule, body, inits, substring of the reason, inputs)
    ("mul-by-zero", "y = Mul(x, z)", "float z = {0.0}", "not 0 when x is inf or NaN", "float[N, 4] x"),
    ("mul-by-zero", "y = Mul(x, z)", "int64 z = {0}", "is not static", "int64[N, 4] x"),
    ("div-by-power-of-two", "y = Div(x, c)", "float c = {3.0}", "round differently unless c is a power of two",
     "float[N, 4] x"),
    ("div-by-power-of-two", "y = Div(x, c)", "int64 c = {2}", "integer division", "int64[N, 4] x"),
    ("fold-mul-chain", "a = Div(x, c1)\n y = Mul(a, c2)", "int64 c1 = {2}, int64 c2 = {4}",
     "integer division truncates", "int64[N, 4] x"),
    ("fold-mul-chain", "a = Mul(x, c1)\n y = Mul(a, c2)", "float c1 = {1e30}, float c2 = {1e30}",
     "overflows float32", "float[N, 4] x"),
    ("fold-mul-chain", "a = Mul(x, c1)\n y = Mul(a, c2)", "float c1 = {1e-30}, float c2 = {1e-30}",
     "underflows to 0", "float[N, 4] x"),
    ("mul-minus-one", "y = Mul(x, m)", "float[2, 1, 4] m = {-1, -1, -1, -1, -1, -1, -1, -1}",
     "would broadcast 'x'", "float[N, 4] x"),
    ("pow-half", "y = Pow(x, p)", "int64 p = {0}", "expected 0.5, got 0", "int64[N, 4] x"),
    ("div-one", "y = Div(one, x)", "int64 one = {1}", "1 / x on integers is not Reciprocal", "int64[N, 4] x"),
]


@pytest.mark.parametrize("rule, body, inits, reason, inputs", NEAR_MISSES,
                         ids=[f"{n[0]}-{i}" for i, n in enumerate(NEAR_MISSES)])
def test_near_miss_is_refused_with_its_reason(rule, body, inits, reason, inputs):
    out_dtype = inputs.split("[")[0]
    shape = "[2, N, 4]" if "2, 1, 4" in inits else "[N, 4]"
    graph = parse(body, inputs=inputs, outputs=f"{out_dtype}{shape} y", inits=inits)
    before = graph.op_histogram()
    feeds = {"x": (np.arange(12).reshape(3, 4) + 1).astype(np.float32 if out_dtype == "float" else np.int64)}
    report = apply_and_check(graph, RULES, feeds)
    assert rule not in report.counts()
    assert reason in refusal(report, rule), report.format()
    assert graph.op_histogram() == before


def test_reassociation_can_be_turned_off():
    graph = parse("a = Mul(x, c1)\n y = Mul(a, c2)", inits="float c1 = {3.0}, float c2 = {0.7}")
    report = apply_and_check(graph, algebra_rules(reassociate=False))
    assert not report.modified
    assert "reassociate=False" in refusal(report, "fold-mul-chain")


def test_pass_is_registered_with_options():
    assert get_pass("algebra").name == "simplify-algebra"
    graph = parse("a = Neg(x)\n b = Neg(a)\n y = Relu(b)")
    result = get_pass("simplify-algebra", reassociate=False)(graph)
    assert result.modified and result.stats["double-negation"] == 1
