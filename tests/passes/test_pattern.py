"""The pattern language: captures, commutativity, constraints, Alt/Optional, and why a match fails."""

import math

import numpy as np
import pytest

from dcopt.ir.graph import Graph, Node
from dcopt.ir.types import TensorType
from dcopt.passes.match import GraphIndex, Match, MatchFailure, Predicate
from dcopt.passes.pattern import Alt, Const, Op, Optional, Var
from tests.passes.conftest import graph_from_text

F = "float[N, 4] x"


def g(body: str, inputs: str = F, outputs: str = "float[N, 4] y", inits: str = "", opset: int = 20) -> Graph:
    return graph_from_text(f"agraph ({inputs}) => ({outputs}) <{inits}> {{ {body} }}", opset=opset)


def failed(result) -> str:
    assert isinstance(result, MatchFailure), f"expected a failure, got {result!r}"
    return str(result)


def test_captures_values_nodes_and_constants():
    graph = g("h = Mul(x, c)\n y = Add(h, x)", inits="float c = {3.0}")
    m = Op("Add", Op("Mul", "x", Const("c"), name="mul"), "x", name="add").match(graph, "y")
    assert isinstance(m, Match)
    assert m.value("x") == "x" and m.value("c") == "c" and m.value("add") == "y"
    assert m.node("mul").op == "Mul" and m.root is m.node("add") and m.root_value == "y"
    assert float(m.const("c")) == 3.0
    assert [n.op for n in m.nodes] == ["Add", "Mul"]
    with pytest.raises(KeyError, match="no capture named 'z'"):
        m.value("z")


def test_wrong_op_names_node_expected_and_actual():
    graph = g("y = Sub(x, x)")
    why = failed(Op("Add", Var(), Var()).match(graph, "y"))
    assert "expected op Add, got Sub" in why and "Sub" in why


@pytest.mark.parametrize("body", ["y = Add(x, c)", "y = Add(c, x)"])
def test_commutative_ops_match_both_operand_orders(body):
    graph = g(body, inits="float c = {1.0}")
    m = Op("Add", Var("x"), Const("c", 1.0)).match(graph, "y")
    assert m and m.value("x") == "x" and m.value("c") == "c"


def test_non_commutative_op_keeps_operand_order():
    graph = g("y = Sub(c, x)", inits="float c = {1.0}")
    why = failed(Op("Sub", Var("x"), Const("c")).match(graph, "y"))
    assert "expected a constant for 'c' ('x'), but it is computed" in why
    assert Op("Sub", Const("c"), Var("x")).match(graph, "y")


def test_repeated_capture_must_be_the_same_container():
    same = g("s = Sigmoid(x)\n y = Mul(x, s)")
    other = g("s = Sigmoid(z)\n y = Mul(x, s)", inputs=F + ", float[N, 4] z")
    pattern = Op("Mul", "x", Op("Sigmoid", "x"))
    assert pattern.match(same, "y")
    why = failed(pattern.match(other, "y"))
    assert "'x' must be one value" in why and "'z'" in why


def test_attribute_constraints_exact_predicate_and_schema_default():
    graph = g("h = HardSigmoid<alpha=0.2>(x)\n y = Gelu(h)")
    assert Op("Gelu", Var(), attrs={"approximate": "none"}).match(graph, "y")  # schema default
    assert Op("HardSigmoid", Var(), attrs={"alpha": 0.2, "beta": 0.5}).match(graph, "h")  # float32-rounded
    why = failed(Op("HardSigmoid", Var(), attrs={"alpha": 1 / 6}).match(graph, "h"))
    assert "attribute alpha: expected 0.1666" in why and "got 0.2" in why
    why = failed(Op("HardSigmoid", Var(), attrs={"alpha": Predicate(lambda a: a > 0.5, "alpha > 0.5")}).match(graph, "h"))
    assert "fails alpha > 0.5" in why


def test_type_constraints_dtype_rank_shape():
    graph = g("y = Relu(x)")
    assert Op("Relu", Var(dtype="float32", rank=2, shape=("N", None))).match(graph, "y")
    assert "dtype of 'x': expected float16, got float32" in failed(Op("Relu", Var(dtype="float16")).match(graph, "y"))
    assert "rank of 'y': expected 3, got 2" in failed(Op("Relu", Var(), rank=3).match(graph, "y"))
    assert "expected [None, 5], got [N, 4]" in failed(Op("Relu", Var(shape=(None, 5))).match(graph, "y"))


def test_const_value_and_check_failures_say_expected_and_actual():
    graph = g("y = Add(x, eps)", inits="float[4] eps = {1e-5, 1e-5, 1e-5, 1e-5}")
    assert Op("Add", "x", Const("eps", 1e-5)).match(graph, "y")  # a scalar matches every element
    why = failed(Op("Add", "x", Const("eps", 1e-6)).match(graph, "y"))
    assert "constant 'eps': expected 1e-06, got [1.e-05, 1.e-05, 1.e-05, 1.e-05]" in why
    why = failed(Op("Add", "x", Const("eps", check=lambda v: v.size == 1)).match(graph, "y"))
    assert "fails <lambda at test_pattern.py:" in why
    assert "'eps' must not be a constant" in failed(Op("Add", Var(const=False), Var(const=False)).match(graph, "y"))
    assert Op("Add", Var("v", const=False), Var("k", const=True)).match(graph, "y").value("k") == "eps"


def test_constant_node_output_counts_as_constant():
    graph = Graph("g", {"": 20})
    graph.add_input("x", TensorType("float32", (2,)))
    for name in ("c", "y"):
        graph.add_container(name, TensorType("float32", (2,) if name == "y" else ()))
    graph.add_node(Node("Constant", (), ("c",), {"value": np.array(2.0, np.float32)}, "k"))
    graph.add_node(Node("Mul", ("x", "c"), ("y",), name="m"))
    graph.outputs.append("y")
    m = Op("Mul", "x", Const("c", 2.0)).match(graph, "y")
    assert m and float(m.const("c")) == 2.0


def test_alt_takes_first_alternative_that_matches():
    scaled = Alt(Op("Div", "x", Const(value=math.sqrt(2)), name="div"), Op("Mul", "x", Const(value=1 / math.sqrt(2))))
    by_div = g("y = Div(x, s)", inits="float s = {1.4142135}")
    by_mul = g("y = Mul(s, x)", inits="float s = {0.70710677}")
    assert "div" in scaled.match(by_div, "y")
    m = scaled.match(by_mul, "y")
    assert m and "div" not in m and m.value("x") == "x"


def test_optional_matches_with_and_without_the_node():
    pattern = Op("Relu", Optional(Op("Cast", "x", name="cast")))
    with_cast = g("c = Cast<to=1>(x)\n y = Relu(c)")
    without = g("y = Relu(x)")
    m = pattern.match(with_cast, "y")
    assert m and "cast" in m and m.value("x") == "x"
    m = pattern.match(without, "y")
    assert m and "cast" not in m and m.value("x") == "x"
    with pytest.raises(ValueError, match="or_else"):
        Optional(Op("Add", "a", "b"))


def test_intermediate_with_outside_reader_is_refused_unless_shared():
    graph = g("h = Mul(x, x)\n y = Relu(h)\n z = Neg(h)", outputs="float[N, 4] y, float[N, 4] z")
    why = failed(Op("Relu", Op("Mul", "x", "x")).match(graph, "y"))
    assert "intermediate 'h' is also read by" in why and "(Neg) outside the match" in why
    assert Op("Relu", Op("Mul", "x", "x", shared=True)).match(graph, "y")


def test_intermediate_graph_output_is_refused():
    graph = g("h = Mul(x, x)\n y = Relu(h)", outputs="float[N, 4] y, float[N, 4] h")
    assert "intermediate 'h' is a graph output" in failed(Op("Relu", Op("Mul", "x", "x")).match(graph, "y"))


def test_deepest_failure_wins_over_shallow_ones():
    """Of all the branches tried (both operand orders at two levels), the report names the one
    that got furthest: the wrong constant deep inside, not 'expected op Mul, got Add' at the top."""
    graph = g("d = Div(x, s)\n e = Erf(d)\n a = Add(one, e)\n h = Mul(x, half)\n y = Mul(a, h)",
              inits="float s = {1.4142135}, float one = {1.0}, float half = {0.6}")
    x = Var("x")
    gelu = Op("Mul", Op("Mul", x, Const("half", 0.5)), Op("Add", 1.0, Op("Erf", Op("Div", x, math.sqrt(2)))))
    result = gelu.match(graph, "y")
    assert "constant 'half': expected 0.5, got 0.6" in failed(result)
    assert result.node.op == "Mul" and result.depth >= 2


def test_open_inputs_and_output_index():
    graph = g("v, i = TopK(x, k)\n y = Cast<to=1>(i)", inits="int64[1] k = {2}", outputs="float[N, 2] y")
    assert Op("Cast", Op("TopK", "x", ..., output=1)).match(graph, "y")
    assert "is output 1 of the node, not 0" in failed(Op("Cast", Op("TopK", "x", ...)).match(graph, "y"))
    assert "expected 1 inputs, got 2" in failed(Op("Cast", Op("TopK", "x", output=1)).match(graph, "y"))


def test_index_is_reusable_and_root_ops_filter():
    graph = g("y = Relu(x)")
    index = GraphIndex(graph)
    assert Op("Relu", "x").match(index, "y") and index.producer("y").op == "Relu"
    assert Alt(Op("Relu", "x"), Op(("Tanh", "Sigmoid"), "x")).root_ops() == {"Relu", "Tanh", "Sigmoid"}
    assert Alt(Op("Relu", "x"), Var()).root_ops() is None
