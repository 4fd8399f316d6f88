"""dce: dead nodes and containers go; outputs, inputs and subgraph reads stay."""

from dcopt.passes import get_pass
from dcopt.passes.equivalence import assert_equivalent


def dce(graph):
    before = graph.copy()
    result = get_pass("dce")(graph)
    assert_equivalent(before, graph)
    return result


def test_dead_chain_and_its_parameters_are_removed(parse):
    g = parse("""agraph (float[2] x, float[2] unused) => (float[2] y) <float[2] w = {1.0, 2.0}> {
        d1 = Mul(x, w)
        d2 = Neg(d1)
        y = Relu(x)
    }""")
    result = dce(g)
    assert [n.op for n in g.nodes] == ["Relu"]
    assert result.stats == {"nodes_removed": 2, "containers_removed": 3}
    assert "unused" in g.containers and g.inputs == ["x", "unused"]  # the interface stays


def test_node_with_one_live_output_stays(parse):
    g = parse("""agraph (float[N, 4] x) => (float[N, 4] y) {
        t, m = Dropout(x)
        y = Relu(t)
    }""")
    assert not dce(g).modified and "m" in g.containers


def test_values_read_only_inside_a_subgraph_are_live(parse):
    g = parse("""agraph (bool c, float[2] x) => (float[2] y) <float[2] w = {1.0, 2.0}> {
        v = Mul(x, w)
        y = If(c) <then_branch = g1 () => (float[2] a) { a = Neg(v) },
                  else_branch = g2 () => (float[2] b) { b = Neg(x) }>
    }""")
    assert not get_pass("dce")(g).modified and len(g.nodes) == 2 and "w" in g.containers


def test_subgraph_reads_of_a_dead_node_do_not_keep_values_alive(parse):
    g = parse("""agraph (bool c, float[2] x) => (float[2] y) {
        v = Neg(x)
        dead = If(c) <then_branch = g1 () => (float[2] a) { a = Neg(v) },
                  else_branch = g2 () => (float[2] b) { b = Neg(x) }>
        y = Relu(x)
    }""")
    get_pass("dce")(g)
    assert [n.op for n in g.nodes] == ["Relu"]


def test_random_op_with_unused_output_is_removed(parse):
    g = parse("agraph (float[2] x) => (float[2] y) { r = RandomNormal<shape = [2]>()\n y = Relu(x) }")
    get_pass("dce")(g)
    assert [n.op for n in g.nodes] == ["Relu"]
