"""NCHW -> NHWC layout transformation (opt-in) and transpose cancellation."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from dcopt.frontends.onnx_import import import_model
from dcopt.ir.cost import graph_cost
from dcopt.ir.executor import run_graph
from dcopt.ir.groups import groups
from dcopt.ir.verify import verify
from dcopt.passes.equivalence import compare_outputs
from dcopt.passes.fuse import Fuse
from dcopt.passes.layout import Layout
from tests.conftest import make_model
from tests.passes.zoo_models import canonical_graph, image_feeds

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _check(graph, passes):
    feeds = image_feeds(graph)
    expected = run_graph(graph, feeds)
    results = [p(graph) for p in passes]
    verify(graph)
    problems = compare_outputs(expected, run_graph(graph, feeds), rtol=1e-4, atol=1e-5)
    assert not problems, [p.describe() for p in problems]
    return results


def _ops(graph):
    return graph.op_histogram()


def test_tiny_resnet_runs_channels_last_between_two_transposes(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    (result,) = _check(graph, [Layout(prefer="nhwc")])
    ops = _ops(graph)
    assert ops["dcopt.ConvNHWC"] == 4 and ops["dcopt.BatchNormalizationNHWC"] == 4 and ops["Transpose"] == 2
    assert "Conv" not in ops and ops["dcopt.GlobalAveragePoolNHWC"] == 1
    assert result.stats["regions_converted"] == 1 and result.stats["transposes_inserted"] == 2
    # the image goes in, the pooled [N, 1, 1, 32] vector comes back: cheap boundaries
    assert result.stats["boundary_bytes"] == 2 * 4 * (3 * 32 * 32 + 32)
    _check(graph, [Fuse()])  # channels-last convs are anchors too
    assert sorted(len(g.attrs["body"].nodes) for g in groups(graph)) == [3, 3, 3, 4]


def test_default_prefers_nchw_and_changes_nothing(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    result = Layout()(graph)
    assert not result.modified and "Transpose" not in _ops(graph)
    with pytest.raises(ValueError, match="prefer"):
        Layout(prefer="nwhc")


def test_region_is_skipped_when_transposes_cost_more_than_allowed(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    result = Layout(prefer="nhwc", max_overhead=0.0)(graph)
    assert not result.modified and result.stats["regions_skipped"] == 1
    assert "boundary transposes would move" in result.refusals[0][1]


def _nhwc_input_model():
    """An exporter's NHWC model: Transpose to NCHW, two conv branches with per-channel biases,
    a channel Concat, a pool, a flatten."""
    nodes = [helper.make_node("Transpose", ["img"], ["x"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]),
             helper.make_node("Conv", ["x", "w2"], ["c2"]),
             helper.make_node("Mul", ["c2", "s2"], ["m2"]),
             helper.make_node("Concat", ["r1", "m2"], ["cat"], axis=1),
             helper.make_node("MaxPool", ["cat"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["y"])]
    return make_model(nodes, [("img", F, [2, 8, 8, 3])], [("y", F, [2, 16 * 4 * 4])],
                      {"w1": _w(8, 3, 3, 3), "b1": _w(8, 1, 1), "w2": _w(8, 3, 1, 1), "s2": np.float32(0.5)})


def test_inverse_transposes_cancel_and_constants_and_concat_axes_follow_the_layout():
    graph = import_model(_nhwc_input_model())
    (result,) = _check(graph, [Layout(prefer="nhwc")])
    ops = _ops(graph)
    assert result.stats["transposes_cancelled"] == 1
    # the cancelled input transpose saves its read and write (2 x 1536 bytes); the pooled value
    # goes back to NCHW for Flatten (2 x 2048 bytes)
    assert result.stats["boundary_bytes"] == 2 * 2048 - 2 * 1536
    assert ops["Transpose"] == 1 and graph.nodes[0].op == "ConvNHWC"  # the input transposes cancelled
    concat = next(n for n in graph.nodes if n.op == "Concat")
    assert concat.attrs["axis"] == 3
    bias = next(n for n in graph.nodes if n.op == "Add").inputs[1]
    assert graph.containers[bias].data.shape == (1, 1, 1, 8)
    assert graph_cost(graph).transient_bytes < graph_cost(import_model(_nhwc_input_model())).transient_bytes


@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet", "resnet50"])
def test_light_zoo_cnns_run_channels_last(name):
    graph = canonical_graph(name)
    before = graph_cost(graph).transient_bytes
    (result, fused) = _check(graph, [Layout(prefer="nhwc"), Fuse()])
    after_layout = result.stats["boundary_bytes"]
    print(f"{name}: {result.stats['regions_converted']} region(s), boundary transposes move "
          f"{after_layout / 1e6:.2f} MB = {after_layout / before:.2%} of the {before / 1e6:.1f} MB moved "
          "between kernels")
    assert _ops(graph).get("Conv", 0) == 0 and _ops(graph)["Transpose"] == 2
    assert after_layout < 0.03 * before and fused.stats["groups_conv"] > 20
