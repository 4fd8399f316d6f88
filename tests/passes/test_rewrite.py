"""Rewrite rules end to end: fusions checked numerically, near misses, output names, explain mode,
fixed points, and the pass wrapper inside the pass manager."""

import math

import numpy as np
import pytest

from dcopt.errors import PassError
from dcopt.ir.executor import run_graph
from dcopt.ir.graph import Graph
from dcopt.ir.verify import verify
from dcopt.passes.manager import PassManager
from dcopt.passes.pattern import Alt, Const, Op, Var
from dcopt.passes.rewrite import (RewriteBuilder, RewritePass, RewriteRule, RuleSet, apply_rules, fuse_to)
from tests.passes.conftest import graph_from_text

X = Var("x")
ERF_GELU = Op("Mul",
              Alt(Op("Mul", X, Const("half", 0.5)), name="scaled_x"),
              Op("Add", 1.0, Op("Erf", Alt(Op("Div", X, math.sqrt(2)), Op("Mul", X, 1 / math.sqrt(2))))))
GELU = RewriteRule("gelu-erf", ERF_GELU, fuse_to("Gelu", "x", approximate="none"),
                   description="x*0.5*(1+erf(x/sqrt(2))) -> Gelu")
HARD_SWISH = RewriteRule(
    "hard-swish",
    Op("Mul", X, Op("HardSigmoid", X, attrs={"alpha": 1 / 6, "beta": 0.5})),
    fuse_to("HardSwish", "x"))


def parse(body: str, inputs="float[N, 4] x", outputs="float[N, 4] y", inits="", opset=20) -> Graph:
    return graph_from_text(f"agraph ({inputs}) => ({outputs}) <{inits}> {{ {body} }}", opset=opset)


def rewrite_and_compare(graph: Graph, rules, **kwargs):
    """Apply ``rules``; check the graph verifies and computes what it did before."""
    feeds = {name: np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32) for name in graph.inputs}
    before = run_graph(graph, feeds)
    report = apply_rules(graph, rules, **kwargs)
    verify(graph)
    after = run_graph(graph, feeds)
    assert list(after) == list(before)  # same output names, same order
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-5, atol=1e-6)
    return report


GELU_INITS = "float half = {0.5}, float bad = {0.6}, float one = {1.0}, float s = {1.4142135}, float r = {0.70710677}"


def test_gelu_fusion_matches_variants_and_refuses_near_miss():
    graph = parse("""
        d = Div(x, s);    e = Erf(d);    a = Add(one, e);    h = Mul(half, x);   y1 = Mul(h, a);
        d2 = Mul(r, x);   e2 = Erf(d2);  a2 = Add(e2, one);  h2 = Mul(x, half);  y = Mul(a2, h2);
        d3 = Div(x, s);   e3 = Erf(d3);  a3 = Add(one, e3);  h3 = Mul(x, bad);   z = Mul(h3, a3)
    """.replace(";", "\n"), outputs="float[N, 4] y, float[N, 4] y1, float[N, 4] z", inits=GELU_INITS)
    report = rewrite_and_compare(graph, GELU, explain=True)
    assert report.counts() == {"gelu-erf": 2} and report.converged
    assert graph.op_histogram()["Gelu"] == 2 and graph.op_histogram()["Erf"] == 1  # the near miss stays
    assert graph.producer("y").op == "Gelu" and graph.producer("y1").op == "Gelu"  # output names kept
    assert "bad" in graph.containers and "r" not in graph.containers  # orphaned constants dropped
    refusal = next(r for r in report.refusals if r.root == graph.producer("z").label)
    assert "constant 'half' ('bad'): expected 0.5, got 0.6" in refusal.reason
    text = report.format()
    assert "applied gelu-erf at" in text and "refused gelu-erf at" in text and "got 0.6" in text


def test_hard_swish_with_attribute_constraint_and_near_miss():
    graph = parse("h = HardSigmoid<alpha=0.16666667, beta=0.5>(x)\n y = Mul(x, h)\n"
                  "g = HardSigmoid<alpha=0.2>(x)\n z = Mul(g, x)", outputs="float[N, 4] y, float[N, 4] z")
    report = rewrite_and_compare(graph, HARD_SWISH, explain=True)
    assert report.counts() == {"hard-swish": 1} and graph.producer("y").op == "HardSwish"
    assert graph.producer("z").op == "Mul"
    assert any("attribute alpha: expected 0.1666" in r.reason and "got 0.2" in r.reason for r in report.refusals)


MUL_ONE = RewriteRule("mul-one", Op("Mul", X, Const(value=1.0)),
                      lambda graph, m: RewriteBuilder(graph).replace({m.root_value: m.value("x")}))


def test_replaced_graph_output_keeps_its_name_through_an_identity():
    graph = parse("y = Mul(x, one)", inits="float one = {1.0}")
    rewrite_and_compare(graph, MUL_ONE)
    assert graph.outputs == ["y"] and [(n.op, n.inputs) for n in graph.nodes] == [("Identity", ("x",))]


def test_readers_are_rewired_without_identity():
    graph = parse("m = Mul(x, one)\n y = Relu(m)", inits="float one = {1.0}")
    rewrite_and_compare(graph, MUL_ONE)
    assert [(n.op, n.inputs) for n in graph.nodes] == [("Relu", ("x",))] and "m" not in graph.containers


def test_fixed_point_needs_several_sweeps_and_max_iterations_stops_early():
    relu_relu = RewriteRule("relu-relu", Op("Relu", Op("Relu", X)), fuse_to("Relu", "x"))
    rules = MUL_ONE + relu_relu
    body, inits = "r = Relu(x)\n m = Mul(r, one)\n y = Relu(m)", "float one = {1.0}"
    graph = parse(body, inits=inits)
    report = rewrite_and_compare(graph, rules)
    assert report.counts() == {"mul-one": 1, "relu-relu": 1} and report.converged and report.iterations == 3
    assert [n.op for n in graph.nodes] == ["Relu"]
    stopped = parse(body, inits=inits)
    report = apply_rules(stopped, rules, max_iterations=1)
    assert not report.converged and "stopped at max_iterations" in report.format()


def test_values_read_inside_subgraphs_are_protected():
    """A subgraph reads outer values by name, invisibly to node inputs: an intermediate it reads
    blocks the match, and a replaced root it reads keeps its name."""
    graph = parse("""
        r1 = Relu(x)
        r2 = Relu(r1)
        y = Neg(r2)
        z = If(c) <then_branch = g1 () => (float[N, 4] o) { o = Identity(r2) },
                   else_branch = g2 () => (float[N, 4] o2) { o2 = Identity(r1) }>
    """, inputs="float[N, 4] x, bool c", outputs="float[N, 4] y, float[N, 4] z")
    report = apply_rules(graph, RewriteRule("relu-relu", Op("Relu", Op("Relu", X)), fuse_to("Relu", "x")), explain=True)
    assert not report.modified and "intermediate 'r1' is read inside a subgraph" in report.refusals[0].reason
    shared = RewriteRule("relu-relu", Op("Relu", Op("Relu", X, shared=True)), fuse_to("Relu", "x"))
    assert apply_rules(graph, shared).modified
    verify(graph)
    assert graph.producer("r2").inputs == ("x",) and graph.producer("r1").op == "Relu"
    for flag in (True, False):
        out = run_graph(graph, {"x": -np.ones((2, 4), np.float32) * (1 if flag else -1), "c": np.array(flag)})
        np.testing.assert_array_equal(out["z"], np.zeros((2, 4)) if flag else np.ones((2, 4)))


def test_rule_sets_combine_with_plus_and_first_rule_wins():
    first = RewriteRule("to-tanh", Op("Relu", X), fuse_to("Tanh", "x"))
    second = RewriteRule("to-sigmoid", Op("Relu", X), fuse_to("Sigmoid", "x"))
    rules = first + second + GELU
    assert isinstance(rules, RuleSet) and [r.name for r in rules] == ["to-tanh", "to-sigmoid", "gelu-erf"]
    graph = parse("y = Relu(x)")
    apply_rules(graph, rules, max_iterations=1)
    assert graph.producer("y").op == "Tanh"
    with pytest.raises(ValueError, match="repeated: \\['to-tanh'\\]"):
        rules + first


def test_check_refusal_is_explained_and_blocks_the_rewrite():
    def small_eps(graph, m):
        if abs(float(m.const("eps"))) > 1e-3:
            return m.fail(f"epsilon {float(m.const('eps'))} is too large to drop", m.root)
        return None

    drop_eps = RewriteRule("drop-eps", Op("Add", X, Const("eps")),
                           lambda graph, m: RewriteBuilder(graph).replace({m.root_value: m.value("x")}), check=small_eps)
    graph = parse("a = Add(x, eps)\n y = Relu(a)", inits="float eps = {0.5}")
    report = apply_rules(graph, drop_eps, explain=True)
    assert not report.modified
    assert report.refusals[0].rule == "drop-eps" and "epsilon 0.5 is too large to drop" in report.refusals[0].reason


def test_declining_rewrite_leaves_the_graph_as_it_was():
    def decline(graph, m):
        RewriteBuilder(graph).op("Tanh", [m.value("x")], like=m.root_value)
        return None

    graph = parse("y = Relu(x)")
    containers, nodes = dict(graph.containers), list(graph.nodes)
    report = apply_rules(graph, RewriteRule("never", Op("Relu", X), decline), explain=True)
    assert not report.modified and graph.containers == containers and graph.nodes == nodes
    assert "declined" in report.refusals[0].reason


def test_producers_left_dead_are_removed():
    def zeros(graph, m):
        rb = RewriteBuilder(graph)
        shape = graph.type_of(m.root_value).shape
        return rb.replace({m.root_value: rb.const(np.zeros(shape), like=m.root_value)})

    rule = RewriteRule("mul-zero", Op("Mul", Var("t"), Const(value=0.0)), zeros)
    graph = parse("e = Exp(x)\n t = Sin(e)\n y = Mul(t, zero)", inputs="float[3, 4] x", outputs="float[3, 4] y",
                  inits="float zero = {0.0}")
    rewrite_and_compare(graph, rule)
    assert [n.op for n in graph.nodes] == ["Identity"] and "e" not in graph.containers
    assert graph.containers[graph.nodes[0].inputs[0]].data.dtype == np.float32


def test_rewrite_errors_name_the_rule():
    def broken(graph, m):
        raise RuntimeError("boom")

    with pytest.raises(PassError, match="rule 'broken' failed at 'y': RuntimeError: boom"):
        apply_rules(parse("y = Relu(x)"), RewriteRule("broken", Op("Relu", X), broken))


def test_rewrite_pass_runs_in_the_pass_manager_with_checks():
    graph = parse("d = Div(x, s)\n e = Erf(d)\n a = Add(one, e)\n h = Mul(half, x)\n y = Mul(a, h)\n"
                  "q = Mul(x, bad)\n z = Mul(q, x)", outputs="float[N, 4] y, float[N, 4] z", inits=GELU_INITS)
    fuse = RewritePass("fuse-gelu", GELU + HARD_SWISH)
    pm = PassManager([fuse], verify=True, check_equivalence=True)
    result = pm(graph)
    record = result.report.records[0]
    assert result.modified and record.stats == {"applied": 1, "gelu-erf": 1}
    assert any("gelu-erf:" in why for _, why in record.refusals)
    again = fuse(result.graph)  # the contract check (modified=False means unchanged) runs here too
    assert not again.modified and again.stats["applied"] == 0
