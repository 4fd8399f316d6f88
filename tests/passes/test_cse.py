"""cse: duplicate nodes and parameters merge; near-duplicates, random ops and outputs do not."""

import numpy as np

from dcopt.passes import get_pass
from dcopt.passes.equivalence import assert_equivalent


def cse(graph):
    before = graph.copy()
    result = get_pass("cse")(graph)
    if not any(n.op.startswith("Random") for n in before.nodes):
        assert_equivalent(before, graph)
    return result


def ops(graph):
    return [n.op for n in graph.nodes]


def test_duplicate_chains_merge_in_one_run(parse):
    g = parse("""agraph (float[N, 4] x) => (float[N, 4] y) {
        a1 = Relu(x)
        b1 = Neg(a1)
        a2 = Relu(x)
        b2 = Neg(a2)
        y = Add(b1, b2)
    }""")
    result = cse(g)
    assert ops(g) == ["Relu", "Neg", "Add"] and g.nodes[-1].inputs == ("b1", "b1")
    assert result.stats["nodes_merged"] == 2 and "a2" not in g.containers


def test_commutative_operands_in_either_order_merge(parse):
    g = parse("""agraph (float[2] x, float[2] z) => (float[2] y) {
        a = Mul(x, z)
        b = Mul(z, x)
        y = Sub(a, b)
    }""")
    cse(g)
    assert ops(g) == ["Mul", "Sub"]


def test_non_commutative_operands_in_either_order_stay(parse):
    g = parse("""agraph (float[2] x, float[2] z) => (float[2] y) {
        a = Sub(x, z)
        b = Sub(z, x)
        y = Add(a, b)
    }""")
    assert not cse(g).modified


def test_nodes_differing_in_one_attribute_stay(parse):
    g = parse("""agraph (float[2, 3] x) => (float[2, 3] y) {
        a = Softmax<axis = 0>(x)
        b = Softmax<axis = 1>(x)
        c = LeakyRelu<alpha = 0.1>(x)
        d = LeakyRelu<alpha = 0.2>(x)
        s = Add(a, b)
        t = Add(c, d)
        y = Add(s, t)
    }""")
    assert not cse(g).modified and len(g.nodes) == 7


def test_random_ops_are_never_merged(parse):
    g = parse("""agraph (float[2] x) => (float[2] y) {
        r1 = RandomNormal<shape = [2]>()
        r2 = RandomNormal<shape = [2]>()
        s = Add(r1, r2)
        y = Add(x, s)
    }""")
    assert not cse(g).modified and ops(g).count("RandomNormal") == 2


def test_training_dropouts_are_never_merged(parse):
    g = parse("""agraph (float[2] x, bool t) => (float[2] y) {
        d1 = Dropout(x, , t)
        d2 = Dropout(x, , t)
        y = Add(d1, d2)
    }""")
    assert not get_pass("cse")(g).modified


def test_identical_parameters_merge_and_let_their_readers_merge(parse):
    g = parse("""agraph (float[2] x) => (float[2] y) <float[2] w1 = {1.0, 2.0}, float[2] w2 = {1.0, 2.0}> {
        a = Mul(x, w1)
        b = Mul(x, w2)
        y = Add(a, b)
    }""")
    result = cse(g)
    assert result.stats == {"nodes_merged": 1, "parameters_merged": 1}
    assert ops(g) == ["Mul", "Add"] and "w2" not in g.containers


def test_parameters_equal_in_value_but_not_in_bits_stay(parse):
    # -0.0 == 0.0 numerically, but merging is only safe for identical bits, dtype and shape
    g = parse("""agraph (float[2] x) => (float[1, 2] y)
        <float[2] a = {0.0, 1.0}, float[2] b = {-0.0, 1.0}, double[2] c = {0.0, 1.0}, float[1, 2] d = {0.0, 1.0}> {
        s = Add(x, a)
        t = Add(s, b)
        u = Cast<to = 1>(c)
        v = Add(t, u)
        y = Add(v, d)
    }""")
    result = get_pass("cse")(g)
    assert result.stats["parameters_merged"] == 0 and not result.modified


def test_nan_parameters_with_the_same_bits_merge(parse):
    g = parse("agraph (float[2] x) => (float[2] y) <float[2] a = {1.0, 2.0}, float[2] b = {1.0, 2.0}> "
              "{ s = Add(x, a)\n y = Add(s, b) }")
    g.containers["a"].data = np.array([np.nan, 1.0], np.float32)
    g.containers["b"].data = np.array([np.nan, 1.0], np.float32)
    assert get_pass("cse")(g).stats["parameters_merged"] == 1


def test_duplicate_producing_a_graph_output_is_kept_with_a_reason(parse):
    g = parse("""agraph (float[2] x) => (float[2] a, float[2] b) {
        a = Neg(x)
        b = Neg(x)
    }""")
    result = cse(g)
    assert ops(g) == ["Neg", "Neg"] and "graph output" in result.refusals[0][1]


def test_duplicate_read_inside_a_subgraph_is_kept(parse):
    g = parse("""agraph (bool c, float[2] x) => (float[2] y) {
        v1 = Neg(x)
        v2 = Neg(x)
        y = If(c) <then_branch = g1 () => (float[2] a) { a = Identity(v2) },
                   else_branch = g2 () => (float[2] b) { b = Identity(v1) }>
    }""")
    result = get_pass("cse")(g)
    assert ops(g) == ["Neg", "Neg", "If"] and "subgraph" in result.refusals[0][1]


def test_duplicate_with_an_output_the_first_leaves_unset_is_kept(parse):
    g = parse("""agraph (float[N, 4] x) => (float[N, 4] y, bool[N, 4] m) {
        a = Dropout(x)
        b, mm = Dropout(x)
        s = Add(a, b)
        y = Relu(s)
        m = Not(mm)
    }""")
    result = cse(g)
    assert ops(g).count("Dropout") == 2 and "leaves unset" in result.refusals[0][1]
