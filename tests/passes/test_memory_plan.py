"""Level 4 memory planning and transient elimination.

Besides the verifier (:func:`check_plan`), every plan of the random graphs below is *executed*:
values live at their planned offsets in one byte arena, so a plan that lets a live value be
overwritten changes the outputs.
"""

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from dcopt.errors import DcoptError
from dcopt.frontends.onnx_import import import_model
from dcopt.ir.executor import run_graph
from dcopt.ir.graph import Graph, Kind, Node
from dcopt.ir.types import TensorType
from dcopt.ops import registry
from dcopt.passes import get_pass
from dcopt.passes.eliminate_transients import EliminateTransients
from dcopt.passes.fuse import Fuse
from dcopt.passes.memory_plan import Layout, PlanMemory, check_plan, plan_memory
from tests.conftest import make_model
from tests.passes.zoo_models import CNNS, canonical_graph, image_feeds

F = TensorProto.FLOAT


def _graph(nodes, inputs, outputs, inits=()):
    return import_model(make_model([helper.make_node(*n[:3], **n[3] if len(n) > 3 else {}) for n in nodes],
                                   inputs, outputs, inits))


def run_in_arena(graph: Graph, plan, feeds):
    """Run ``graph`` keeping every planned value at its offset in one byte arena."""
    arena = np.zeros(plan.arena_size, np.uint8)
    env = {**{n: c.data for n, c in graph.containers.items() if c.data is not None}, **feeds}

    def load(name):
        if name not in plan.offsets:
            return env[name]
        t = graph.type_of(name)
        offset, nbytes = plan.offsets[name]
        return arena[offset:offset + nbytes].view(t.dtype).reshape(t.shape).copy()

    def subgraph(body, sub_feeds):
        return [run_graph(body, sub_feeds, check_inputs=False)[o] for o in body.outputs]

    for node in graph.nodes:
        args = [load(i) if i else None for i in node.inputs]
        results = registry.call(registry.lookup(node.op, node.domain), args, dict(node.attrs),
                                graph.opset_of(node.domain), subgraph, len(node.outputs))
        for name, value in zip(node.outputs, results):
            if name in plan.offsets:
                offset, nbytes = plan.offsets[name]
                data = np.ascontiguousarray(value, graph.type_of(name).dtype)
                arena[offset:offset + nbytes] = data.view(np.uint8).reshape(-1)
            elif name:
                env[name] = value
    return {o: load(o) for o in graph.outputs}


def random_graph(rng: np.random.Generator, n_nodes: int) -> Graph:
    """A random DAG of elementwise, broadcast, view, reduction and opaque ops over small shapes."""
    g = Graph("random")
    g.add_input("x", TensorType("float32", (4, 8)))
    values = {"x": (4, 8)}
    for k in range(n_nodes):
        name = f"v{k}"
        choice = rng.integers(7)
        src = str(rng.choice(sorted(values)))
        shape = values[src]
        if choice == 0:
            op, inputs, attrs, out = str(rng.choice(["Relu", "Neg", "Sigmoid"])), [src], {}, shape
        elif choice == 1:
            same = sorted(v for v in values if values[v] == shape)
            op, inputs, attrs, out = "Add", [src, str(rng.choice(same))], {}, shape
        elif choice == 2:
            target = {(4, 8): (8, 4), (8, 4): (32,), (32,): (4, 8), (4, 1): (1, 4), (1, 4): (4,), (4,): (4, 1)}[shape]
            shape_name = f"s{k}"
            g.add_parameter(shape_name, np.asarray(target, np.int64))
            op, inputs, attrs, out = "Reshape", [src, shape_name], {}, target
        elif choice == 3 and len(shape) == 2:
            op, inputs, attrs, out = "Transpose", [src], {"perm": (1, 0)}, shape[::-1]
        elif choice == 4 and shape == (4, 8):
            op, inputs, attrs, out = "ReduceSum", [src], {"axes": (1,), "keepdims": 1}, (4, 1)
        elif choice == 5 and shape == (4, 8) and any(s == (4, 1) for s in values.values()):
            small = str(rng.choice(sorted(v for v in values if values[v] == (4, 1))))
            op, inputs, attrs, out = "Mul", [src, small], {}, shape
        else:
            op, inputs, attrs, out = "Identity", [src], {}, shape
        g.add_container(name, TensorType("float32", out))
        g.add_node(Node(op, tuple(inputs), (name,), attrs, name=f"n{k}"))
        values[name] = out
    produced = [f"v{k}" for k in range(n_nodes)]
    g.outputs = sorted({produced[-1], *rng.choice(produced, size=2)})
    return g


@pytest.mark.parametrize("seed", range(30))
def test_random_graphs_plans_are_valid_and_execute_correctly(seed):
    rng = np.random.default_rng(seed)
    graph = random_graph(rng, int(rng.integers(5, 40)))
    if seed % 3 == 0:
        Fuse()(graph)  # plans over fused graphs too (in-place into elementwise groups)
    feeds = {"x": rng.standard_normal((4, 8)).astype(np.float32)}
    expected = run_graph(graph, feeds)
    plan = plan_memory(graph)
    check_plan(graph, plan)
    assert plan.arena_size <= plan.total_bytes + (plan.alignment + plan.separation) * len(plan.offsets)
    got = run_in_arena(graph, plan, feeds)
    for name in graph.outputs:
        np.testing.assert_array_equal(got[name], expected[name])


def test_verifier_catches_overlapping_live_values():
    rng = np.random.default_rng(0)
    caught = 0
    for seed in range(20):
        graph = random_graph(np.random.default_rng(seed), 20)
        plan = plan_memory(graph, inplace=False)
        life, views = plan.lifetimes, set(plan.aliases) | set(plan.aliases.values())
        pairs = [(a, b) for a in plan.offsets for b in plan.offsets
                 if a < b and not {a, b} & views and plan.offsets[a][0] != plan.offsets[b][0]
                 and life[a][0] <= life[b][1] and life[b][0] <= life[a][1]]
        if not pairs:
            continue
        a, b = pairs[rng.integers(len(pairs))]
        plan.offsets[b] = (plan.offsets[a][0], plan.offsets[b][1])
        plan.arena_size = max(plan.arena_size, sum(plan.offsets[b]))
        with pytest.raises(DcoptError, match="share bytes while both are live"):
            check_plan(graph, plan)
        caught += 1
    assert caught >= 10


def test_chain_of_elementwise_ops_runs_in_place_in_one_buffer():
    graph = _graph([("Relu", ["x"], ["a"]), ("Neg", ["a"], ["b"]), ("Sigmoid", ["b"], ["c"]), ("Exp", ["c"], ["y"])],
                   [("x", F, [16, 16])], [("y", F, [16, 16])])
    plan = plan_memory(graph)
    assert plan.inplace == [("a", "b"), ("b", "c")]
    assert {plan.offsets[n] for n in "abc"} == {(0, 1024)} and plan.arena_size == 1024
    assert (plan.total_bytes, plan.live_peak) == (3072, 2048)  # no reuse; every value its own buffer
    check_plan(graph, plan)
    no_inplace = plan_memory(graph, inplace=False)
    # a and c share; b sits beside, one cache line (the separation) after them
    assert not no_inplace.inplace and no_inplace.arena_size == 2048 + 64 and no_inplace.offsets["b"] == (1088, 1024)
    packed = plan_memory(graph, inplace=False, separation=0)
    assert packed.arena_size == 2048 and packed.offsets["b"] == (1024, 1024)


@pytest.mark.parametrize("seed", range(6))
def test_buffers_live_together_are_never_laid_end_to_end(seed):
    """A kernel reading one buffer and writing the next one in the arena fails LLVM's run-time
    overlap check and runs its scalar loop; the plan keeps ``separation`` bytes between them."""
    graph = random_graph(np.random.default_rng(seed), 30)
    plan = plan_memory(graph, inplace=False)
    assert plan.separation == 64
    roots = {}
    for name, (offset, size) in plan.offsets.items():
        if name not in plan.aliases and name not in plan.parts:
            roots[name] = (offset, offset + size)
    life = plan.lifetimes
    for a, (start_a, end_a) in roots.items():
        for b, (start_b, end_b) in roots.items():
            if a != b and start_a != start_b and life[a][0] <= life[b][1] and life[b][0] <= life[a][1]:
                assert start_b >= end_a + 64 or end_b + 64 <= start_a, (a, b, roots[a], roots[b])
    with pytest.raises(DcoptError, match="separation"):
        plan_memory(graph, separation=-1)


def test_in_place_is_refused_when_the_input_is_read_later_or_is_a_graph_input():
    graph = _graph([("Relu", ["x"], ["a"]), ("Neg", ["a"], ["b"]), ("Add", ["a", "b"], ["c"]), ("Exp", ["c"], ["y"])],
                   [("x", F, [8, 8])], [("y", F, [8, 8])])
    plan = plan_memory(graph)
    assert ("a", "b") not in plan.inplace and ("a", "c") in plan.inplace  # a is still read by Add
    assert all(src != "x" for src, _ in plan.inplace)
    check_plan(graph, plan)


def test_views_share_their_source_bytes_and_views_of_inputs_take_no_arena():
    graph = _graph([("Reshape", ["x", "shape"], ["r"]), ("Relu", ["r"], ["a"]), ("Reshape", ["a", "back"], ["b"]),
                    ("Transpose", ["b"], ["y"])],
                   [("x", F, [4, 8])], [("y", F, [8, 4])],
                   {"shape": np.array([32]), "back": np.array([4, 8])})
    plan = plan_memory(graph)
    assert plan.aliases == {"r": "x", "b": "a"}
    assert "r" not in plan.offsets and plan.offsets["a"] == plan.offsets["b"]
    check_plan(graph, plan)


def test_symbolic_sizes_are_planned_once_and_placed_per_size(tiny_resnet_path):
    """Without bindings the plan keeps its decisions with polynomial sizes; placing it at a size
    gives exactly the plan made for that size, and every placement passes the checker."""
    graph = import_model(tiny_resnet_path)
    unbound = plan_memory(graph)
    assert unbound.symbolic and not unbound.offsets and not unbound.unplanned
    assert any(isinstance(b, str) and "N" in b for b, _ in unbound.layout.roots.values())
    transients = [n for n in graph.containers if graph.kind(n) is Kind.TRANSIENT and graph.producer(n) is not None]
    for n in (1, 2, 5):
        bound = plan_memory(graph, {"N": n})
        assert not bound.symbolic and len(bound.offsets) == len(transients)
        placed = unbound.placed({"N": n})
        assert placed.offsets == bound.offsets and placed.arena_size == bound.arena_size
        check_plan(graph, placed, {"N": n})
    with pytest.raises(DcoptError, match="needs sizes for its symbols"):
        unbound.placed({})
    round_trip = Layout.from_dict(json.loads(json.dumps(unbound.layout.to_dict())))
    assert round_trip.place({"N": 3}) == unbound.layout.place({"N": 3})


def test_plan_memory_pass_reports_peaks_and_leaves_the_graph_alone(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    result = get_pass("plan-memory", bindings={"N": 1})(graph)
    stats = result.stats
    assert not result.modified
    # the live-set peak, plus at most one separating cache line per buffer
    assert stats["arena_bytes"] <= stats["live_peak_bytes"] + 64 * stats["transients"]
    assert stats["live_peak_bytes"] < stats["bytes_no_reuse"]
    assert stats["plan"]["arena_size"] == stats["arena_bytes"]
    Fuse()(graph)
    fused = PlanMemory(bindings={"N": 1})(graph).stats
    assert fused["bytes_no_reuse"] < stats["bytes_no_reuse"] and fused["arena_bytes"] <= stats["arena_bytes"]


def test_eliminate_transients_collapses_view_chains_with_simplify_chains_and_remove_noops():
    graph = _graph([("Relu", ["x"], ["a"]), ("Reshape", ["a", "s1"], ["r1"]), ("Flatten", ["r1"], ["r2"]),
                    ("Unsqueeze", ["r2", "ax"], ["r3"]), ("Exp", ["r3"], ["y"]),
                    ("Reshape", ["a", "s2"], ["t1"]), ("Reshape", ["t1", "s3"], ["t2"]), ("Neg", ["t2"], ["z"])],
                   [("x", F, [2, 3, 4])], [("y", F, [1, 6, 4]), ("z", F, [2, 3, 4])],
                   {"s1": np.array([6, 4]), "ax": np.array([0]), "s2": np.array([24]), "s3": np.array([2, 3, 4])})
    feeds = image_feeds(graph)
    expected = run_graph(graph, feeds)
    result = EliminateTransients()(graph)
    assert result.stats["chains_simplified"] >= 2 and result.stats["noops_removed"] == 1
    # a -> [1, 6, 4] in one step; a -> [24] -> a is gone
    assert [n.op for n in graph.nodes] == ["Relu", "Reshape", "Exp", "Neg"]
    assert result.stats["views_aliased"] == 1
    for name, value in run_graph(graph, feeds).items():
        np.testing.assert_array_equal(value, expected[name])
    assert not EliminateTransients()(graph).modified


@pytest.mark.slow
@pytest.mark.parametrize("name", CNNS)
def test_light_zoo_peak_memory_before_and_after_planning(name):
    graph = canonical_graph(name)
    Fuse()(graph)
    feeds = image_feeds(graph)
    plan = plan_memory(graph)
    check_plan(graph, plan)
    print(f"{name}: transients {len(plan.offsets)}, no reuse {plan.total_bytes / 1e6:.1f} MB, live-set peak "
          f"{plan.live_peak / 1e6:.2f} MB, arena {plan.arena_size / 1e6:.2f} MB, in place {len(plan.inplace)}")
    assert plan.arena_size <= 1.1 * plan.live_peak and plan.arena_size < plan.total_bytes / 3
    if name == "squeezenet":
        expected = run_graph(graph, feeds)
        got = run_in_arena(graph, plan, feeds)
        for out in graph.outputs:
            np.testing.assert_allclose(got[out], expected[out], rtol=1e-5, atol=1e-6)
