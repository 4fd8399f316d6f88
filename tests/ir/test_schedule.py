"""Schedule properties (dcopt.* attributes): validated helpers, and invisible to semantics --
the reference executor ignores them, the ONNX exporter drops them, JSON keeps them."""

import numpy as np
import onnx
import pytest

from dcopt.frontends.onnx_export import export_model
from dcopt.frontends.onnx_import import import_model
from dcopt.ir import serialize
from dcopt.ir.executor import run_graph
from dcopt.ir.graph import Node
from dcopt.ir.groups import make_group
from dcopt.ir.schedule import (IMPL, TILE, VECTOR, Schedule, ScheduleError, is_schedule_attr, schedule_of,
                               schedule_problems, semantic_attrs, strip_schedule, strip_schedules, with_schedule)
from dcopt.testing import run_onnxruntime

CONV = Node("Conv", ("x", "w"), ("y",), {"pads": (1, 1, 1, 1)}, name="c")


def scheduled(graph, **props):
    """Every Conv/Gemm of ``graph`` with ``props`` (impl chosen per op)."""
    impls = {"Conv": "im2col", "Gemm": "generated"}
    graph.nodes = [with_schedule(n, impl=impls[n.op], **props) if n.op in impls else n for n in graph.nodes]
    return graph


def walk(graph):
    for node in graph.nodes:
        yield node
        for body in node.subgraphs:
            yield from walk(body)


def test_helpers_round_trip():
    node = with_schedule(CONV, impl="direct", tile=[8, 16], vector=16)
    assert dict(node.attrs) == {"pads": (1, 1, 1, 1), IMPL: "direct", TILE: (8, 16), VECTOR: 16}
    assert schedule_of(node) == Schedule("direct", (8, 16), 16)
    assert schedule_of(CONV) == Schedule() and Schedule().empty and Schedule("direct").attrs() == {IMPL: "direct"}
    assert schedule_of(with_schedule(node, tile=None)) == Schedule("direct", None, 16)
    assert strip_schedule(node).attrs == CONV.attrs and strip_schedule(CONV) is CONV
    assert semantic_attrs(node.attrs) == {"pads": (1, 1, 1, 1)}
    assert is_schedule_attr("dcopt.impl") and not is_schedule_attr("pads")


@pytest.mark.parametrize("op,props,message", [
    ("Conv", {"impl": "generated"}, "not an implementation of Conv (allowed: library, loops, im2col, direct, pointwise, depthwise, blas)"),
    ("Relu", {"impl": "library"}, "Relu has no implementation choices"),
    ("Conv", {"tile": (8, 0)}, "positive ints"),
    ("Conv", {"vector": 12}, "power of two"),
    ("Conv", {"unroll": 4}, "unknown schedule property 'dcopt.unroll'"),
])
def test_bad_values_are_refused(op, props, message):
    with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        with_schedule(CONV.replace(op=op), **props)


def test_malformed_attribute_is_reported(tiny_resnet_path):
    bad = CONV.replace(attrs={**CONV.attrs, "dcopt.impl": "winograd"})
    with pytest.raises(ScheduleError, match="winograd"):
        schedule_of(bad)
    graph = import_model(tiny_resnet_path)
    graph.nodes = [bad.replace(inputs=n.inputs, outputs=n.outputs) if n.op == "Conv" else n for n in graph.nodes]
    assert len(schedule_problems(graph)) == 4 and "winograd" in schedule_problems(graph)[0]


def test_executor_ignores_and_json_keeps(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    x = {"image": np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    want = run_graph(graph, x)["probs"]
    scheduled(graph, tile=(64, 256, 4096), vector=16)
    np.testing.assert_array_equal(run_graph(graph, x)["probs"], want)
    back = serialize.loads(serialize.dumps(graph))
    assert [dict(n.attrs) for n in back.nodes] == [dict(n.attrs) for n in graph.nodes]
    assert sum(IMPL in n.attrs for n in back.nodes) == 5 and schedule_problems(back) == []


def test_onnx_export_drops_them_and_runs(tiny_resnet_path):
    graph = scheduled(import_model(tiny_resnet_path), vector=16)
    make_group(graph, [n for n in graph.nodes if n.name in ("stem/conv", "stem/bn", "stem/relu")], name="stem",
               kind="conv")
    assert any(IMPL in n.attrs for n in walk(graph.nodes[0].attrs["body"]))
    model = export_model(graph)  # runs onnx.checker
    onnx.checker.check_model(model, full_check=True)
    names = [a.name for n in model.graph.node for a in n.attribute]
    names += [a.name for f in model.functions for n in f.node for a in n.attribute]
    assert names and not [n for n in names if n.startswith("dcopt.")]
    x = {"image": np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    np.testing.assert_allclose(run_onnxruntime(model, x)[0], run_graph(graph, x)["probs"], rtol=1e-4, atol=1e-5)


def test_strip_schedules_reaches_group_bodies(tiny_resnet_path):
    graph = scheduled(import_model(tiny_resnet_path), vector=16)
    make_group(graph, [n for n in graph.nodes if n.name in ("stem/conv", "stem/bn")], name="g", kind="conv")
    assert strip_schedules(graph) == 5
    assert not [n for n in walk(graph) if any(is_schedule_attr(k) for k in n.attrs)]
    assert strip_schedules(graph) == 0
