"""simplify-chains: merged and cancelled chains checked numerically; near misses refused; the
dtype lattice checked against every value of the small types."""

import warnings

import ml_dtypes
import numpy as np
import pytest

from dcopt.passes import get_pass
from dcopt.passes.chains import CHAIN_RULES, compose, holds_exactly
from tests.passes.conftest import graph_from_text
from tests.passes.rule_checks import apply_and_check, refusal


def parse(body, inputs="float[N, 4, 6] x", outputs="float[N, 4, 6] y", inits="", opset=17):
    return graph_from_text(f"agraph ({inputs}) => ({outputs}) <{inits}> {{ {body} }}", opset=opset)


def test_compose_matches_numpy():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    p1, p2 = (0, 2, 3, 1), (0, 3, 1, 2)
    np.testing.assert_array_equal(x.transpose(p1).transpose(p2), x.transpose(compose(p1, p2)))


POSITIVE = [
    # (rule, body, outputs, inits, ops left afterwards)
    ("transpose-transpose", "a = Transpose<perm=[0, 2, 1]>(x)\n b = Transpose<perm=[0, 2, 1]>(a)\n y = Relu(b)",
     "float[N, 4, 6] y", "", {"Relu": 1}),
    ("transpose-transpose", "a = Transpose<perm=[1, 0, 2]>(x)\n y = Transpose<perm=[0, 2, 1]>(a)",
     "float[4, 6, N] y", "", {"Transpose": 1}),
    ("transpose-through-unary", "a = Transpose<perm=[0, 2, 1]>(x)\n b = Relu(a)\n c = Cast<to=10>(b)\n"
     " y = Transpose<perm=[0, 2, 1]>(c)", "float16[N, 4, 6] y", "", {"Relu": 1, "Cast": 1}),
    ("transpose-through-unary", "a = Transpose<perm=[2, 0, 1]>(x)\n b = Clip(a, lo, hi)\n"
     " y = Transpose<perm=[0, 2, 1]>(b)", "float[6, 4, N] y", "float lo = {-0.5}, float hi = {0.5}",
     {"Transpose": 1, "Clip": 1}),
    ("squeeze-unsqueeze", "a = Unsqueeze(x, ax)\n b = Squeeze(a, ax)\n y = Relu(b)", "float[N, 4, 6] y",
     "int64[1] ax = {-2}", {"Relu": 1}),
    ("squeeze-unsqueeze", "a = Unsqueeze(x, ax)\n b = Relu(a)\n c = Squeeze(b, ax)\n d = Unsqueeze(c, ax)\n"
     " y = Squeeze(d, ax)", "float[N, 4, 6] y", "int64[1] ax = {1}",
     {"Relu": 1, "Unsqueeze": 1, "Squeeze": 1, "Identity": 1}),
    ("merge-reshapes", "a = Reshape(x, s1)\n y = Reshape(a, s2)", "float[N, 6, 4] y",
     "int64[2] s1 = {0, 24}, int64[3] s2 = {0, 6, 4}", {"Reshape": 1}),
    ("merge-reshapes", "a = Reshape(x, s)\n y = Flatten<axis=1>(a)", "float[N, 24] y", "int64[4] s = {0, 2, 2, 6}",
     {"Reshape": 1}),
    ("merge-reshapes", "a = Unsqueeze(x, ax)\n y = Reshape(a, s)", "float[4, 1, 6] y",
     "int64[1] ax = {0}, int64[3] s = {4, 1, 6}", {"Reshape": 1}),
    ("cast-cast", "a = Cast<to=6>(x)\n y = Cast<to=5>(a)", "int16[N, 4, 6] y", "", {"Cast": 1}),
    ("cast-cast", "a = Cast<to=1>(x)\n y = Cast<to=10>(a)", "float16[N, 4, 6] y", "", {"Identity": 1}),
    ("cast-cast", "a = Cast<to=1>(x)\n y = Cast<to=7>(a)", "int64[N, 4, 6] y", "", {"Cast": 1}),
]
INPUTS = {"cast-cast": ["int8[N, 4, 6] x", "float16[N, 4, 6] x", "bool[N, 4, 6] x"]}


@pytest.mark.parametrize("case", range(len(POSITIVE)), ids=[f"{p[0]}-{i}" for i, p in enumerate(POSITIVE)])
def test_rule_fires_and_preserves_values(case):
    rule, body, outputs, inits, ops = POSITIVE[case]
    inputs = "float[N, 4, 6] x"
    if rule == "cast-cast":
        inputs = INPUTS[rule][[i for i, p in enumerate(POSITIVE) if p[0] == rule].index(case)]
    if "Unsqueeze(x, ax)\n y = Reshape" in body:
        inputs = "float[4, 6] x"
    graph = parse(body, inputs=inputs, outputs=outputs, inits=inits)
    report = apply_and_check(graph, CHAIN_RULES)
    assert report.counts().get(rule, 0) >= 1, report.format()
    assert graph.op_histogram() == ops, str(graph)


def test_composed_transpose_feeds_a_shared_consumer_correctly():
    # the inner Transpose has a second reader: it stays, the outer pair still merges
    graph = parse("a = Transpose<perm=[0, 2, 1]>(x)\n b = Transpose<perm=[2, 1, 0]>(a)\n y = Relu(b)\n z = Neg(a)",
                  outputs="float[4, N, 6] y, float[N, 6, 4] z")
    report = apply_and_check(graph, CHAIN_RULES)
    assert "also read by" in refusal(report, "transpose-transpose")
    assert not report.modified


NEAR_MISSES = [
    # (rule, body, inputs, outputs, inits, reason)
    ("merge-reshapes", "a = Reshape(x, s1)\n y = Reshape(a, s2)", "float[N, 4, 6] x",
     "float[N, 6, 4] y, float[N, 24] a",
     "int64[2] s1 = {0, 24}, int64[3] s2 = {0, 6, 4}", "intermediate 'a' is a graph output"),
    ("merge-reshapes", "a = Reshape(x, s1)\n y = Reshape(a, s2)", "float[N, 4, 6] x", "float[M, 2, 6] y",
     "int64[2] s1 = {-1, 12}, int64[3] s2 = {0, 2, 6}", "copies a dim (0) of the intermediate"),
    ("merge-reshapes", "a = Unsqueeze(x, ax)\n y = Flatten<axis=2>(a)", "float[N, M, 6] x", "float[N, K] y",
     "int64[1] ax = {0}", "not static"),
    ("cast-cast", "a = Cast<to=10>(x)\n y = Cast<to=1>(a)", "float[N, 4, 6] x", "float[N, 4, 6] y", "",
     "Cast float32 -> float16 is not exact"),
    ("cast-cast", "a = Cast<to=6>(x)\n y = Cast<to=7>(a)", "float[N, 4, 6] x", "int64[N, 4, 6] y", "",
     "Cast float32 -> int32 is not exact"),
    ("squeeze-unsqueeze", "a = Unsqueeze(x, a1)\n y = Squeeze(a, a2)", "float[N, 4, 1] x", "float[N, 1, 4] y",
     "int64[1] a1 = {1}, int64[1] a2 = {3}", "axes [1] and Squeeze axes [3] differ"),
    ("transpose-through-unary", "a = Transpose<perm=[0, 2, 1]>(x)\n b = Softmax(a)\n y = Transpose<perm=[0, 2, 1]>(b)",
     "float[N, 4, 6] x", "float[N, 4, 6] y", "", "got Softmax"),
]


@pytest.mark.parametrize("rule, body, inputs, outputs, inits, reason", NEAR_MISSES,
                         ids=[f"{n[0]}-{i}" for i, n in enumerate(NEAR_MISSES)])
def test_near_miss_is_refused_with_its_reason(rule, body, inputs, outputs, inits, reason):
    graph = parse(body, inputs=inputs, outputs=outputs, inits=inits)
    x = np.random.default_rng(0).standard_normal([int(d) if d.isdigit() else 3 for d in inputs[6:inputs.index("]")]
                                                 .split(", ")]).astype(np.float32) * 100
    report = apply_and_check(graph, CHAIN_RULES, {"x": x})
    assert rule not in report.counts(), report.format()
    assert reason in refusal(report, rule), report.format()


# -- the dtype lattice, checked on every value of the small types -----------------------------

SMALL = {"bool": np.array([False, True]),
         "int8": np.arange(-128, 128, dtype=np.int8), "uint8": np.arange(256, dtype=np.uint8),
         "int16": np.arange(-2**15, 2**15, dtype=np.int16), "uint16": np.arange(2**16, dtype=np.uint16),
         "float16": np.arange(2**16, dtype=np.uint16).view(np.float16),
         "bfloat16": np.arange(2**16, dtype=np.uint16).view(ml_dtypes.bfloat16)}
TARGETS = list(SMALL) + ["int32", "uint32", "int64", "float32", "float64"]


def _exact(values: np.ndarray, target: str) -> bool:
    """Whether casting every value to ``target`` keeps it (the same number, NaN staying NaN)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        converted = values.astype(ml_dtypes.bfloat16 if target == "bfloat16" else target)
        a, b = values.astype(np.float64), converted.astype(np.float64)
    return bool(((a == b) | (np.isnan(a) & np.isnan(b))).all())


@pytest.mark.parametrize("source", list(SMALL))
def test_holds_exactly_agrees_with_round_trips(source):
    for target in TARGETS:
        assert holds_exactly(source, target) == _exact(SMALL[source], target), (source, target)


def test_pass_is_registered():
    assert get_pass("chains").name == "simplify-chains"
