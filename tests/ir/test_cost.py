"""Cost model: hand-computed FLOPs and bytes on tiny graphs, and ballparks on zoo models."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dcopt.frontends.onnx_import import import_model
from dcopt.ir.cost import TRANSCENDENTAL, graph_cost, node_cost
from dcopt.ir.graph import Graph, Node
from dcopt.ir.types import TensorType

LIGHT_ZOO = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def build(nodes, types, inputs, outputs, params=None, dtype="float32"):
    """A graph from nodes and {container: shape}; ``inputs``/``outputs`` are names."""
    g = Graph("t")
    for name, data in (params or {}).items():
        g.add_parameter(name, np.asarray(data))
    for name in inputs:
        g.add_input(name, TensorType(dtype, types[name]))
    for node in nodes:
        g.add_node(node)
        for out in node.outputs:
            if out:
                g.add_container(out, TensorType(dtype, types.get(out)))
    g.outputs = list(outputs)
    return g


def single(op, in_shapes, out_shape, attrs=None, params=None):
    """One node reading x0, x1, ... (parameters where ``params`` has the name) writing y."""
    names = [f"x{i}" if s is not None else "" for i, s in enumerate(in_shapes)]
    params = {n: np.zeros(s, np.float32) for n, s in zip(names, in_shapes) if n in (params or ())}
    types = {n: s for n, s in zip(names, in_shapes) if n}
    types["y"] = out_shape
    node = Node(op, names, ["y"], attrs or {})
    g = build([node], types, [n for n in names if n and n not in params], ["y"], params)
    return g, node


def flops_of(op, in_shapes, out_shape, attrs=None):
    g, node = single(op, in_shapes, out_shape, attrs)
    return node_cost(g, node).flops


# -- FLOP formulas ------------------------------------------------------------------------------

def test_conv_resnet_stem():
    macs = 64 * 112 * 112 * 3 * 7 * 7
    assert macs == 118013952
    attrs = {"strides": (2, 2), "pads": (3, 3, 3, 3), "kernel_shape": (7, 7)}
    assert flops_of("Conv", [(1, 3, 224, 224), (64, 3, 7, 7)], (1, 64, 112, 112), attrs) == 2 * macs
    with_bias = flops_of("Conv", [(1, 3, 224, 224), (64, 3, 7, 7), (64,)], (1, 64, 112, 112), attrs)
    assert with_bias == 2 * macs + 64 * 112 * 112


def test_conv_groups_and_dilations():
    # 32 input channels in 4 groups: each output sums 8 channels x 3x3 taps; dilation changes nothing
    expected = 2 * (64 * 56 * 56) * 8 * 9
    for dil in (1, 2):
        attrs = {"group": 4, "dilations": (dil, dil), "pads": (dil,) * 4}
        assert flops_of("Conv", [(1, 32, 56, 56), (64, 8, 3, 3)], (1, 64, 56, 56), attrs) == expected
    depthwise = flops_of("Conv", [(2, 16, 10, 10), (16, 1, 3, 3)], (2, 16, 8, 8), {"group": 16})
    assert depthwise == 2 * (2 * 16 * 8 * 8) * 9


def test_conv_transpose():
    # each of the 1*8*5*5 inputs scatters into 4 output channels x 3x3 taps
    got = flops_of("ConvTranspose", [(1, 8, 5, 5), (8, 4, 3, 3), (4,)], (1, 4, 11, 11), {"strides": (2, 2)})
    assert got == 2 * (8 * 5 * 5) * 4 * 9 + 4 * 11 * 11


def test_matmul_batched_broadcast_and_1d():
    assert flops_of("MatMul", [(2, 8, 16, 32), (2, 8, 32, 64)], (2, 8, 16, 64)) == 2 * 2 * 8 * 16 * 64 * 32
    assert flops_of("MatMul", [(5, 1, 4, 3), (6, 3, 2)], (5, 6, 4, 2)) == 2 * 5 * 6 * 4 * 2 * 3
    assert flops_of("MatMul", [(32,), (32, 10)], (10,)) == 2 * 10 * 32
    assert flops_of("MatMul", [(7, 32), (32,)], (7,)) == 2 * 7 * 32
    assert flops_of("MatMul", [(32,), (32,)], ()) == 2 * 32


def test_gemm_with_transposes_and_bias():
    assert flops_of("Gemm", [(8, 16), (32, 16), (32,)], (8, 32), {"transB": 1}) == 2 * 8 * 32 * 16 + 8 * 32
    assert flops_of("Gemm", [(16, 8), (16, 32)], (8, 32), {"transA": 1}) == 2 * 8 * 32 * 16


def test_einsum_matches_matmul_and_handles_ellipsis():
    assert flops_of("Einsum", [(4, 5, 6), (4, 6, 7)], (4, 5, 7), {"equation": "bij,bjk->bik"}) == 2 * 4 * 5 * 6 * 7
    assert flops_of("Einsum", [(2, 3, 5, 6), (6, 7)], (2, 3, 5, 7), {"equation": "...ij,jk->...ik"}) == 2 * 2 * 3 * 5 * 6 * 7
    assert flops_of("Einsum", [(5, 6)], (5,), {"equation": "ij->i"}) == 30


def test_pooling_and_global_pooling():
    attrs = {"kernel_shape": (3, 3), "strides": (2, 2)}
    assert flops_of("MaxPool", [(1, 64, 112, 112)], (1, 64, 55, 55), attrs) == 64 * 55 * 55 * 9
    assert flops_of("GlobalAveragePool", [(1, 2048, 7, 7)], (1, 2048, 1, 1)) == 2048 * 49


def test_per_element_families():
    x = (2, 3, 4)
    n = 24
    assert flops_of("Relu", [x], x) == n
    assert flops_of("Tanh", [x], x) == n * TRANSCENDENTAL
    assert flops_of("Add", [(3, 4), (4,)], (3, 4)) == 12  # per output element, broadcast or not
    assert flops_of("Sum", [x, x, x], x) == 2 * n
    assert flops_of("Softmax", [x], x) == 5 * n
    assert flops_of("ReduceMean", [x], (2, 1, 1)) == n  # per input element
    assert flops_of("BatchNormalization", [(2, 3, 4), (3,), (3,), (3,), (3,)], x) == 4 * n
    assert flops_of("LayerNormalization", [x, (4,), (4,)], x) == 8 * n
    assert flops_of("LRN", [(1, 3, 4, 4)], (1, 3, 4, 4), {"size": 5}) == 48 * (10 + TRANSCENDENTAL + 3)
    for data_movement in ("Reshape", "Transpose", "Identity", "Gather", "Concat"):
        assert flops_of(data_movement, [x], x) == 0


def test_resize_modes():
    shapes = [(1, 3, 8, 8), None, (4,)], (1, 3, 16, 16)
    out = 3 * 16 * 16
    assert flops_of("Resize", *shapes, {"mode": "nearest"}) == 0
    assert flops_of("Resize", *shapes, {"mode": "linear"}) == out * 3 * 3  # bilinear = 3 lerps


def test_recurrent_cells():
    # seq 10, batch 2, input 16, hidden 32, bidirectional LSTM with bias
    x, w, r, b = (10, 2, 16), (2, 128, 16), (2, 128, 32), (2, 256)
    per_row = 2 * 128 * (16 + 32) + 2 * 128 + (5 * TRANSCENDENTAL + 4) * 32
    assert flops_of("LSTM", [x, w, r, b], (10, 2, 2, 32), {"hidden_size": 32}) == 2 * 10 * 2 * per_row
    rnn = flops_of("RNN", [x, (1, 32, 16), (1, 32, 32)], (10, 1, 2, 32), {"hidden_size": 32})
    assert rnn == 10 * 2 * (2 * 32 * 48 + TRANSCENDENTAL * 32)


def test_attention():
    q = (2, 4, 10, 8)  # batch 2, 4 heads, 10 queries, head size 8; 12 keys
    kv = (2, 4, 12, 8)
    scores = 2 * 4 * 10 * 12
    assert flops_of("Attention", [q, kv, kv], q) == 2 * scores * 8 * 2 + 5 * scores


def test_unmodelled_op_gets_default_and_is_flagged():
    g, node = single("Frobnicate", [(4, 4)], (4, 4))
    g.nodes[0] = node = node.replace(domain="com.example")
    cost = node_cost(g, node)
    assert (cost.flops, cost.modelled, cost.known) == (16, False, True)


# -- bytes and graph totals ---------------------------------------------------------------------

def elementwise_chain():
    """x -> Relu -> Exp -> Add(., y) -> Mul(., .)  over float32[2,3,4] (96 bytes each)."""
    nodes = [Node("Relu", ["x"], ["a"]), Node("Exp", ["a"], ["b"]), Node("Add", ["b", "y"], ["c"]),
             Node("Mul", ["c", "c"], ["z"])]
    shape = (2, 3, 4)
    return build(nodes, dict.fromkeys("xyabcz", shape), ["x", "y"], ["z"])


def test_elementwise_chain_flops_and_bytes():
    cost = graph_cost(elementwise_chain())
    n = 24
    assert cost.total_flops == n + n * TRANSCENDENTAL + n + n
    assert [(c.bytes_read, c.bytes_written) for c in cost.nodes] == [(96, 96), (96, 96), (192, 96), (96, 96)]
    assert cost.total_bytes == 96 * 9  # Mul reads c once although it uses it twice
    assert cost.input_bytes == 192 and cost.output_bytes == 96
    assert cost.transient_bytes == 3 * 96 * 2  # a, b, c: one write and one reading node each
    assert cost.unknown_nodes == 0 and cost.complete
    assert cost.nodes[0].arithmetic_intensity == pytest.approx(24 / 192)


def test_transient_bytes_count_each_reader():
    nodes = [Node("Relu", ["x"], ["a"]), Node("Neg", ["a"], ["b"]), Node("Add", ["a", "b"], ["z"])]
    cost = graph_cost(build(nodes, dict.fromkeys("xabz", (10,)), ["x"], ["z"]))
    assert cost.transient_bytes == 40 * 3 + 40 * 2  # a: 1 write + 2 readers; b: 1 + 1


def test_parameters_and_param_bytes():
    g, node = single("Conv", [(1, 3, 8, 8), (4, 3, 3, 3), (4,)], (1, 4, 6, 6), params=("x1", "x2"))
    cost = graph_cost(g)
    weight_bytes = (4 * 27 + 4) * 4
    assert cost.nodes[0].param_bytes == weight_bytes
    assert cost.nodes[0].bytes_read == 3 * 64 * 4 + weight_bytes
    assert (cost.parameter_count, cost.parameter_bytes) == (4 * 27 + 4, weight_bytes)
    assert (cost.weight_count, cost.weight_bytes) == (4 * 27 + 4, weight_bytes)
    assert cost.transient_bytes == 0  # only an input, parameters and an output


def test_constant_producing_nodes_are_weights_not_runtime_work():
    shape = np.array([4, 4], np.int64)
    nodes = [Node("ConstantOfShape", ["s"], ["w"]), Node("MatMul", ["x", "w"], ["y"])]
    g = build(nodes, {"x": (2, 4), "w": (4, 4), "y": (2, 4)}, ["x"], ["y"], {"s": shape})
    cost = graph_cost(g)
    assert cost.nodes[0].constant and not cost.nodes[1].constant
    assert cost.constant_nodes == 1
    assert cost.total_bytes == node_cost(g, g.nodes[1]).bytes_moved  # ConstantOfShape not in totals
    assert cost.nodes[1].param_bytes == 64
    assert (cost.parameter_count, cost.weight_count, cost.weight_bytes) == (2, 16, 64)
    assert set(cost.by_op) == {"MatMul"}


def test_dead_outputs_are_not_written():
    g = build([Node("Dropout", ["x"], ["y", "mask"])], {"x": (8,), "y": (8,), "mask": None}, ["x"], ["y"])
    cost = node_cost(g, g.nodes[0])
    assert cost.known and cost.bytes_written == 32


def test_symbolic_dims_and_bindings():
    nodes = [Node("Relu", ["x"], ["a"]), Node("Conv", ["a", "w"], ["y"])]
    types = {"x": ("N", 3, 8, 8), "a": ("N", 3, 8, 8), "y": ("N", 4, 6, 6)}
    g = build(nodes, types, ["x"], ["y"], {"w": np.zeros((4, 3, 3, 3), np.float32)})
    unbound = graph_cost(g)
    assert unbound.unknown_nodes == 2 and not unbound.complete
    assert unbound.total_flops == 0 and unbound.transient_bytes == 0 and unbound.input_bytes is None
    assert not unbound.nodes[0].known and unbound.nodes[0].flops is None and unbound.nodes[0].bytes_read is None
    assert unbound.by_op["Conv"].unknown == 1
    bound = graph_cost(g, {"N": 2})
    assert bound.complete
    assert bound.total_flops == 2 * 3 * 64 + 2 * (2 * 4 * 36) * 27
    assert bound.input_bytes == 2 * 3 * 64 * 4
    assert node_cost(g, g.nodes[0], {"N": 1}).flops == 192


def test_if_costs_the_dearer_branch_and_captured_reads():
    def branch(name, op):
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [16])
        return helper.make_graph([helper.make_node(op, ["x"], [f"{name}_out"])], name, [], [out])

    node = helper.make_node("If", ["c"], ["y"], then_branch=branch("t", "Exp"), else_branch=branch("e", "Relu"))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                            helper.make_tensor_value_info("x", TensorProto.FLOAT, [16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16])])
    g = import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    cost = node_cost(g, g.nodes[0])
    assert cost.flops == 16 * TRANSCENDENTAL
    assert cost.bytes_read == 1 + 64  # the condition and the captured x


def test_loop_costs_body_times_constant_trip_count():
    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Tanh", ["x"], ["t"]),
         helper.make_node("Add", ["acc_in", "t"], ["acc_out"])], "body",
        [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []), vi("acc_in", TensorProto.FLOAT, [16])],
        [vi("cond_out", TensorProto.BOOL, []), vi("acc_out", TensorProto.FLOAT, [16])])
    graph = helper.make_graph([helper.make_node("Loop", ["M", "", "a0"], ["y"], body=body)], "g",
                              [vi("x", TensorProto.FLOAT, [16]), vi("a0", TensorProto.FLOAT, [16])],
                              [vi("y", TensorProto.FLOAT, [16])],
                              initializer=[helper.make_tensor("M", TensorProto.INT64, [], [5])])
    g = import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    cost = node_cost(g, g.nodes[0])
    assert cost.flops == 5 * (16 * TRANSCENDENTAL + 16)
    assert (cost.bytes_read, cost.param_bytes) == (8 + 64 + 64, 8)  # M, a0 and the captured x


def test_to_dict_is_json():
    data = json.loads(json.dumps(graph_cost(elementwise_chain()).to_dict()))
    assert data["total_flops"] == graph_cost(elementwise_chain()).total_flops
    assert data["by_op"]["Exp"] == {"count": 1, "flops": 24 * TRANSCENDENTAL, "bytes": 192, "unknown": 0}
    assert len(data["nodes"]) == 4 and data["nodes"][0]["bytes_moved"] == 192


# -- real models --------------------------------------------------------------------------------

def light(name):
    path = os.path.join(LIGHT_ZOO, f"light_{name}.onnx")
    if not os.path.exists(path):
        pytest.skip(f"{path} not available")
    return import_model(path)


def test_resnet50_is_about_4_gmacs():
    cost = graph_cost(light("resnet50"))
    assert cost.complete
    assert 4.0e9 < cost.total_macs < 4.2e9  # commonly cited: 4.1 GMACs
    assert 4.0e9 < cost.by_op["Conv"].flops / 2 < 4.15e9
    assert cost.constant_nodes == 239  # light-zoo weights come from ConstantOfShape
    assert 25.5e6 < cost.weight_count < 25.7e6  # 25.5M weights + BatchNorm statistics
    assert 0 < cost.transient_bytes < cost.total_bytes


def test_squeezenet_is_about_0_35_gmacs():
    cost = graph_cost(light("squeezenet"))
    assert cost.complete  # the unused Dropout mask of unknown shape does not matter
    assert 0.34e9 < cost.total_macs < 0.37e9  # squeezenet 1.1
    assert 1.2e6 < cost.weight_count < 1.25e6
