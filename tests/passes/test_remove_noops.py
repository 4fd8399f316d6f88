"""remove-noops: each rule, its near-misses that must stay, and graph-output names."""

import pytest

from dcopt.passes import get_pass
from dcopt.passes.equivalence import assert_equivalent


def noops(graph):
    before = graph.copy()
    result = get_pass("remove-noops")(graph)
    assert_equivalent(before, graph)
    return result


def ops(graph):
    return [n.op for n in graph.nodes]


def wrap(body: str, x: str = "float[N, 4] x", y: str = "float[N, 4] y", inits: str = "", opset: int = 17):
    """A graph computing ``y = Relu(t)`` after ``body`` computes ``t`` from ``x``."""
    inits = f" <{inits}>" if inits else ""
    return f"agraph ({x}) => ({y}){inits} {{\n{body}\n y = Relu(t) }}", opset


@pytest.mark.parametrize("body, inits", [
    ("t = Identity(x)", ""),
    ("a = Identity(x)\n b = Identity(a)\n t = Identity(b)", ""),
    ("t = Dropout(x)", ""),
    ("t = Cast<to = 1>(x)", ""),
    ("t = CastLike(x, like)", "float like = {0.0}"),
    ("t = Transpose<perm = [0, 1]>(x)", ""),
    ("t = Pad(x, pads)", "int64[4] pads = {0, 0, 0, 0}"),
    ("t = Slice(x, st, en)", "int64[2] st = {0, 0}, int64[2] en = {9223372036854775807, 4}"),
    ("t = Concat<axis = 1>(x)", ""),
    ("t = Sum(x)", ""),
    ("t = Add(x, z)", "float[4] z = {0.0, 0.0, 0.0, 0.0}"),
    ("t = Add(z, x)", "float z = {0.0}"),
    ("t = Sub(x, z)", "float[1, 1] z = {0.0}"),
    ("t = Mul(x, one)", "float[1] one = {1.0}"),
    ("t = Mul(one, x)", "float[4] one = {1.0, 1.0, 1.0, 1.0}"),
    ("t = Div(x, one)", "float one = {1.0}"),
])
def test_noop_is_removed(parse, body, inits):
    g = parse(*wrap(body, inits=inits))
    removable = len(g.nodes) - 1
    result = noops(g)
    assert ops(g) == ["Relu"] and g.nodes[0].inputs == ("x",)
    assert result.stats["removed"] == removable


@pytest.mark.parametrize("body, x, inits", [
    ("t = Reshape(x, s)", "float[2, 4] x", "int64[2] s = {2, 4}"),
    ("t = Flatten<axis = 1>(x)", "float[2, 4] x", ""),
    ("t = Squeeze(x)", "float[2, 4] x", ""),
    ("t = Expand(x, s)", "float[2, 4] x", "int64[2] s = {1, 4}"),
])
def test_shape_op_to_identical_static_shape_is_removed(parse, body, x, inits):
    g = parse(*wrap(body, x=x, y="float[2, 4] y", inits=inits))
    noops(g)
    assert ops(g) == ["Relu"]


N4 = "float[N, 4] x"


@pytest.mark.parametrize("body, inits, x, y, why", [
    # near-misses: each looks like a no-op and is not one
    ("t = Mul(x, one)", "float[4] one = {1.0, 1.0, 1.0, 1.0}", "float[N, 1] x", "float[N, 4] y", "changes its shape"),
    ("t = Add(x, z)", "float[2, 1, 4] z = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}", N4, "float[2, N, 4] y",
     "changes its shape"),
    ("t = Mul(x, two)", "float[1] two = {2.0}", N4, "float[N, 4] y", None),
    ("t = Sub(z, x)", "float z = {0.0}", N4, "float[N, 4] y", None),
    ("t = Div(one, x)", "float one = {1.0}", N4, "float[N, 4] y", None),
    ("t = Transpose<perm = [1, 0]>(x)", "", "float[4, 4] x", "float[4, 4] y", None),
    ("t = Pad(x, pads)", "int64[4] pads = {0, 1, 0, 0}", N4, "float[N, 5] y", None),
    ("t = Slice(x, st, en)", "int64[1] st = {1}, int64[1] en = {4}", N4, "float[M, 4] y", None),
    ("t = Slice(x, st, en, ax, stp)", "int64[1] st = {-1}, int64[1] en = {-9223372036854775807}, int64[1] ax = {1},"
     " int64[1] stp = {-1}", N4, "float[N, 4] y", None),
    ("t = Concat<axis = 1>(x, x)", "", "float[N, 2] x", "float[N, 4] y", None),
    ("t = Reshape(x, s)", "int64[2] s = {4, 2}", "float[2, 4] x", "float[4, 2] y", None),
])
def test_near_miss_is_kept(parse, body, inits, x, y, why):
    g = parse(*wrap(body, x=x, y=y, inits=inits))
    n = len(g.nodes)
    result = noops(g)
    assert len(g.nodes) == n and not result.modified
    if why:
        assert any(why in reason for _, reason in result.refusals), result.refusals


def test_cast_to_a_different_type_is_kept(parse):
    g = parse("agraph (float[2] x) => (double[2] y) { t = Cast<to = 11>(x)\n y = Neg(t) }")
    assert not noops(g).modified


def test_cast_of_value_with_unknown_dtype_is_refused(parse):
    g = parse("agraph (float[2] x) => (float[2] y) { t = Neg(x)\n u = Cast<to = 1>(t)\n y = Neg(u) }")
    g.containers["t"].type = g.containers["t"].type.with_shape(None)  # as if inference had failed
    result = get_pass("remove-noops")(g)
    assert ops(g) == ["Neg", "Cast", "Neg"] and "dtype" in result.refusals[0][1]


def test_dropout_whose_mask_is_used_is_kept(parse):
    g = parse("""agraph (float[N, 4] x) => (float[N, 4] y, bool[N, 4] m2) {
        t, m = Dropout(x)
        y = Relu(t)
        m2 = Not(m)
    }""")
    result = noops(g)
    assert ops(g) == ["Dropout", "Relu", "Not"]
    assert "mask output 'm' is used" in result.refusals[0][1]


def test_dropout_whose_unused_mask_is_named_is_removed(parse):
    g = parse("agraph (float[N, 4] x) => (float[N, 4] y) { t, m = Dropout(x)\n y = Relu(t) }")
    noops(g)
    assert ops(g) == ["Relu"] and "m" not in g.containers


def test_dropout_in_training_mode_is_kept(parse):
    g = parse("""agraph (float[N, 4] x, bool train) => (float[N, 4] y) {
        t = Dropout(x, , train)
        y = Relu(t)
    }""")
    result = get_pass("remove-noops")(g)
    assert ops(g) == ["Dropout", "Relu"] and "training mode" in result.refusals[0][1]


def test_old_opset_dropout_is_an_identity(parse):
    g = parse("agraph (float[2, 4] x) => (float[2, 4] y) { t = Dropout<ratio = 0.3>(x)\n y = Relu(t) }", opset=9)
    noops(g)
    assert ops(g) == ["Relu"]


def test_noop_producing_a_graph_output_keeps_the_output_name(parse):
    g = parse("agraph (float[N, 4] x) => (float[N, 4] y) { t = Neg(x)\n y = Identity(t) }")
    noops(g)
    assert ops(g) == ["Neg"] and g.nodes[0].outputs == ("y",) and g.outputs == ["y"]
    assert "t" not in g.containers


def test_noop_from_graph_input_to_graph_output_is_kept(parse):
    g = parse("agraph (float[N, 4] x) => (float[N, 4] y) { y = Identity(x) }")
    result = noops(g)
    assert ops(g) == ["Identity"] and "graph input" in result.refusals[0][1]


def test_noop_between_two_graph_outputs_is_kept(parse):
    g = parse("agraph (float[N, 4] x) => (float[N, 4] t, float[N, 4] y) { t = Neg(x)\n y = Identity(t) }")
    result = noops(g)
    assert ops(g) == ["Neg", "Identity"] and "also a graph output" in result.refusals[0][1]


def test_output_read_inside_a_subgraph_is_not_rewired(parse):
    g = parse("""agraph (bool c, float[2] x) => (float[2] y) {
        v = Identity(x)
        y = If(c) <then_branch = g1 () => (float[2] a) { a = Neg(v) },
                  else_branch = g2 () => (float[2] b) { b = Neg(x) }>
    }""")
    result = get_pass("remove-noops")(g)
    assert ops(g) == ["Identity", "If"] and "subgraph" in result.refusals[0][1]
