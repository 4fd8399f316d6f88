"""expand: every rule lowers its op to loop-level nodes that compute what the op did.

Each case imports a one-op (or few-op) ONNX graph, expands it, checks that the result verifies
(graph and loop-node checks), that no op-level node is left, and that it matches the op-level
graph on the reference executor at fp32 rtol 1e-4 / atol 1e-5.
"""

import re

import numpy as np
import onnx
import pytest

from dcopt.frontends.onnx_import import import_model
from dcopt.ir import serialize
from dcopt.ir.cost import node_cost
from dcopt.ir.executor import run_graph
from dcopt.ir.groups import make_group
from dcopt.ir.loops import find_loop_problems, format_loop_graph, is_loop_node, memlet_cost
from dcopt.ir.types import TensorType
from dcopt.ir.verify import verify
from dcopt.passes import get_pass
from dcopt.passes.equivalence import assert_equivalent, random_feeds
from dcopt.passes.expand import expand
from dcopt.testing import light_zoo_path, with_random_weights


def expanded(graph, feeds=None, fully=True, **options):
    """Expand ``graph`` in place, check it, return the PassResult."""
    before = graph.copy()
    result = expand(graph, **options)
    verify(graph)
    problems = [p for n in graph.nodes if is_loop_node(n) for p in find_loop_problems(graph, n)]
    assert problems == []
    if fully:
        assert [n.op for n in graph.nodes if not is_loop_node(n)] == [], result.refusals
    assert_equivalent(before, graph, feeds)
    return result


def one_op(op, inputs, outputs="float[N, 3, 4] y", attrs="", opset=20, params=""):
    args, outs = (", ".join(re.findall(r"\w+(?:\[[^\]]*\])?\s+(\w+)", decls)) for decls in (inputs, outputs))
    head = f"<{attrs}>" if attrs else ""
    text = f"agraph ({inputs}) => ({outputs}) {params} {{ {outs} = {op}{head}({args}) }}"
    header = f'<ir_version: 8, opset_import: ["" : {opset}]>\n'
    return import_model(onnx.parser.parse_model(header + text))


X = "float[N, 3, 4] x"
UNARY = ["Relu", "Abs", "Neg", "Identity", "Exp", "Log", "Sqrt", "Tanh", "Erf", "Sin", "Cos", "Floor", "Ceil",
         "Reciprocal", "Sigmoid", "Softsign", "Softplus", "Mish", "HardSwish", "HardSigmoid", "LeakyRelu",
         "ThresholdedRelu", "Elu", "Selu", "Celu", "Shrink", "Gelu"]


@pytest.mark.parametrize("op", UNARY)
def test_unary(op):
    expanded(one_op(op, X))


@pytest.mark.parametrize("op,attrs", [("LeakyRelu", "alpha = 0.3"), ("Elu", "alpha = 0.5"),
                                      ("Shrink", "lambd = 1.0, bias = 0.25"), ("Gelu", 'approximate = "tanh"'),
                                      ("HardSigmoid", "alpha = 0.3, beta = 0.4")])
def test_unary_attributes(op, attrs):
    expanded(one_op(op, X, attrs=attrs))


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "PRelu"])
@pytest.mark.parametrize("other", ["float[N, 3, 4] z", "float[4] z", "float[3, 1] z", "float[1, 1, 1] z"])
def test_binary_broadcasting(op, other):
    g = one_op(op, f"{X}, {other}")
    feeds = random_feeds(g)
    feeds["x"] = np.abs(feeds["x"]) + 0.5 if op == "Pow" else feeds["x"]
    expanded(g, feeds)


def test_rank0_float16_and_empty_tensors():
    g = one_op("Mul", "float[N, 3] x, float c", outputs="float[N, 3] y", params="<float c = {2.0}>")
    expanded(g)
    assert g.nodes[0].attrs["in_memlets"][1] == ("b", "c", "")
    expanded(one_op("Sigmoid", "float16[N, 3] x", outputs="float16[N, 3] y"))
    empty = one_op("Add", "float[0, 3] x, float[3] z", outputs="float[0, 3] y")
    expanded(empty)
    assert run_graph(empty, {"x": np.zeros((0, 3), np.float32), "z": np.ones(3, np.float32)})["y"].shape == (0, 3)


def test_broadcast_is_in_the_memlets():
    g = one_op("Add", "float[N, 1, 4] x, float[3, 1] z")
    expanded(g)
    (node,) = g.nodes
    assert node.attrs["in_memlets"] == (("a", "x", "i0, 0, i2"), ("b", "z", "i1, 0"))


@pytest.mark.parametrize("op", ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"])
def test_comparisons(op):
    expanded(one_op(op, f"{X}, float[4] z", outputs="bool[N, 3, 4] y"))


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(op):
    expanded(one_op(op, "bool[N, 3] x, bool[3] z", outputs="bool[N, 3] y"))


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_variadic(op):
    expanded(one_op(op, f"{X}, float[4] z, float[3, 1] w"))


def test_integer_arithmetic_and_where_and_not():
    expanded(one_op("Add", "int64[N, 3] x, int64[3] z", outputs="int64[N, 3] y"))
    expanded(one_op("Where", "bool[N, 3, 4] c, float[N, 3, 4] x, float[4] z"))
    expanded(one_op("Not", "bool[N, 3] x", outputs="bool[N, 3] y"))


@pytest.mark.parametrize("to,out", [("6", "int32"), ("9", "bool"), ("11", "double")])
def test_cast(to, out):
    g = one_op("Cast", X, outputs=f"{out}[N, 3, 4] y", attrs=f"to = {to}")
    feeds = {"x": (random_feeds(g)["x"] * 3)}
    feeds["x"][0, 0, :2] = 0.0
    expanded(g, feeds)


def test_clip_with_constant_and_runtime_bounds():
    g = one_op("Clip", f"{X}, float lo, float hi", params="<float lo = {-0.5}, float hi = {0.5}>")
    expanded(g)
    assert "min(max(a, (-0.5)), 0.5)" in g.nodes[0].attrs["code"]
    expanded(one_op("Clip", f"{X}, float lo, float hi"), {"x": np.linspace(-2, 2, 24, dtype=np.float32)
                                                          .reshape(2, 3, 4), "lo": np.float32(-1),
                                                          "hi": np.float32(1.5)})
    expanded(one_op("Clip", X, attrs="min = 0.0, max = 6.0", opset=6))


# ------------------------------------------------------------------------------ reductions, normalizations

@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare",
                                "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp"])
@pytest.mark.parametrize("axes,keep,shape", [("1", 1, "[N, 1, 4]"), ("0, 2", 0, "[3]"), ("-1", 0, "[N, 3]")])
def test_reductions(op, axes, keep, shape):
    g = one_op(op, f"{X}, int64[{len(axes.split(','))}] axes", outputs=f"float{shape} y",
               attrs=f"keepdims = {keep}", params=f"<int64[{len(axes.split(','))}] axes = {{{axes}}}>", opset=18)
    feeds = random_feeds(g)
    if op == "ReduceLogSum":
        feeds["x"] = np.abs(feeds["x"]) + 0.1
    expanded(g, feeds)


def test_reduction_attribute_axes_all_axes_and_noop():
    expanded(one_op("ReduceMean", X, outputs="float[1, 3, 1] y", attrs="axes = [0, 2]", opset=13))
    expanded(one_op("ReduceSum", X, outputs="float[1, 1, 1] y", opset=13))
    g = one_op("ReduceMax", X, outputs="float[N, 3, 4] y", attrs="noop_with_empty_axes = 1", opset=18)
    expanded(g)
    assert g.nodes[0].attrs["code"] == "out = a"


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", [(13, -1), (13, 1), (11, 1)])
def test_softmax_family(op, opset, axis):
    g = one_op(op, X, attrs=f"axis = {axis}", opset=opset)
    expanded(g, {"x": random_feeds(g)["x"] * 10})
    assert [n.attrs["out_memlets"][0][-1] for n in g.nodes[:2]] == ["max", "sum"]


@pytest.mark.parametrize("extra,outputs", [
    ("", "float[N, 3, 4] y"), (", float[4] b", "float[N, 3, 4] y"),
    (", float[4] b", "float[N, 3, 4] y, float[N, 3, 1] mean, float[N, 3, 1] inv"),
])
def test_layer_normalization(extra, outputs):
    expanded(one_op("LayerNormalization", f"{X}, float[4] s{extra}", outputs=outputs))


def test_layer_normalization_over_two_axes():
    expanded(one_op("LayerNormalization", f"{X}, float[3, 4] s, float[4] b", attrs="axis = -2, epsilon = 0.001"))


def test_batch_normalization_inference_is_one_map():
    g = one_op("BatchNormalization", "float[N, 3, 4, 5] x, float[3] s, float[3] b, float[3] m, float[3] v",
               outputs="float[N, 3, 4, 5] y", attrs="epsilon = 0.01")
    feeds = random_feeds(g)
    feeds["v"] = np.abs(feeds["v"])
    expanded(g, feeds)
    assert len(g.nodes) == 1 and [m[2] for m in g.nodes[0].attrs["in_memlets"][1:]] == ["i1"] * 4


@pytest.mark.parametrize("size", [3, 4])
def test_local_response_normalization(size):
    expanded(one_op("LRN", "float[N, 5, 3, 2] x", outputs="float[N, 5, 3, 2] y",
                    attrs=f"size = {size}, alpha = 0.01, beta = 0.5, bias = 2.0"))


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pooling(op):
    expanded(one_op(op, "float[N, 3, 5, 6] x", outputs="float[N, 3, 1, 1] y"))


# ------------------------------------------------------------------------------ library calls and windows

@pytest.mark.parametrize("attrs,w,y", [
    ("pads = [1, 1, 1, 1]", "float[4, 3, 3, 3] w", "float[N, 4, 7, 8] y"),
    ("strides = [2, 2], dilations = [2, 1]", "float[4, 3, 3, 2] w", "float[N, 4, 2, 4] y"),
    ('auto_pad = "SAME_UPPER", strides = [2, 2]', "float[4, 3, 2, 2] w", "float[N, 4, 4, 4] y"),
    ("group = 3", "float[6, 1, 3, 3] w", "float[N, 6, 5, 6] y"),
])
def test_conv_is_a_library_call(attrs, w, y):
    g = one_op("Conv", f"float[N, 3, 7, 8] x, {w}, float[{w.split('[')[1].split(',')[0]}] b", outputs=y, attrs=attrs)
    expanded(g)
    call, bias = g.nodes  # the bias is an elementwise map after the call (fuse-epilogues may absorb it)
    assert call.op == "LibraryCall" and call.attrs["kind"] == "conv" and len(call.attrs["pads"]) == 4
    assert bias.op == "Map" and bias.attrs["code"] == "out = a + c"


def test_conv_1d_without_bias():
    expanded(one_op("Conv", "float[N, 2, 9] x, float[3, 2, 3] w", outputs="float[N, 3, 7] y"))


@pytest.mark.parametrize("attrs", ["", "transA = 1, transB = 1, alpha = 0.5, beta = 2.0"])
def test_gemm(attrs):
    a, b = ("float[5, N] a", "float[4, 5] b") if "transA" in attrs else ("float[N, 5] a", "float[5, 4] b")
    expanded(one_op("Gemm", f"{a}, {b}, float[4] c", outputs="float[N, 4] y", attrs=attrs))


@pytest.mark.parametrize("a,b,y", [("float[N, 3] a", "float[3, 5] b", "float[N, 5] y"),
                                   ("float[2, 1, 3, 4] a", "float[5, 4, 6] b", "float[2, 5, 3, 6] y"),
                                   ("float[4] a", "float[N, 4, 6] b", "float[N, 6] y")])
def test_matmul(a, b, y):
    expanded(one_op("MatMul", f"{a}, {b}", outputs=y))


@pytest.mark.parametrize("attrs,y", [
    ("kernel_shape = [3, 3], strides = [2, 2]", "float[N, 2, 3, 3] y"),
    ("kernel_shape = [3, 3], pads = [1, 1, 1, 1]", "float[N, 2, 7, 8] y"),
    ("kernel_shape = [2, 3], strides = [2, 2], ceil_mode = 1", "float[N, 2, 4, 4] y"),
    ("kernel_shape = [2, 2], dilations = [2, 2], pads = [1, 0, 1, 0]", "float[N, 2, 7, 6] y"),
])
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pooling(op, attrs, y):
    if op == "AveragePool" and "dilations" in attrs:
        attrs += ", count_include_pad = 1"
    g = one_op(op, "float[N, 2, 7, 8] x", outputs=y, attrs=attrs, opset=19)
    expanded(g)
    assert g.nodes[0].attrs["out_memlets"][0][-1] in ("max", "sum")


def test_average_pool_count_include_pad_with_ceil_mode():
    """The last row of windows hangs over the padded input: its divisor is 2 taps, not 3."""
    g = one_op("AveragePool", "float[N, 2, 6, 8] x", outputs="float[N, 2, 4, 5] y", opset=19,
               attrs="kernel_shape = [3, 2], strides = [2, 2], pads = [1, 1, 1, 1], ceil_mode = 1, "
                     "count_include_pad = 1")
    expanded(g)
    assert [n.name.split("/")[-1] for n in g.nodes] == ["sum", "finish"]
    counts = g.containers[next(n for n in g.containers if n.startswith("y_counts"))].data
    assert counts[-1, 0] == 2 * 2 and counts[0, 0] == 3 * 2  # window sizes counted at expansion time


def test_attention_expands_through_its_parts(parse):
    g = parse("""agraph (float[N, 4, 8] q, float[N, 8, 4] k, float[N, 4, 8] v) => (float[N, 4, 8] y) {
        s = MatMul(q, k)
        p = Softmax<axis = -1>(s)
        y = MatMul(p, v)
    }""")
    expanded(g)
    assert [n.attrs.get("kind", n.op) for n in g.nodes] == ["gemm", "Map", "Map", "Map", "gemm"]


# ------------------------------------------------------------------------------ data movement

@pytest.mark.parametrize("op,inputs,outputs,attrs,params", [
    ("Transpose", X, "float[4, N, 3] y", "perm = [2, 0, 1]", ""),
    ("Reshape", "float[N, 6, 4] x, int64[3] s", "float[N, 4, 6] y", "", "<int64[3] s = {0, 4, 6}>"),
    ("Reshape", "float[2, 6, 4] x, int64[2] s", "float[3, 16] y", "", "<int64[2] s = {3, 16}>"),
    ("Flatten", "float[N, 3, 1, 4] x", "float[N, 12] y", "", ""),
    ("Flatten", X, "float[N, 12] y", "axis = 1", ""),
    ("Squeeze", "float[N, 1, 4] x, int64[1] a", "float[N, 4] y", "", "<int64[1] a = {1}>"),
    ("Unsqueeze", "float[N, 4] x, int64[2] a", "float[N, 1, 4, 1] y", "", "<int64[2] a = {1, 3}>"),
    ("Expand", "float[3, 1] x, int64[3] s", "float[2, 3, 4] y", "", "<int64[3] s = {2, 1, 4}>"),
    ("Tile", "float[N, 2, 3] x, int64[3] r", "float[N, 4, 9] y", "", "<int64[3] r = {1, 2, 3}>"),
    ("Pad", "float[N, 2, 3] x, int64[6] p, float v", "float[N, 4, 4] y", "",
     "<int64[6] p = {0, 1, 0, 0, 1, 1}, float v = {1.5}>"),
    ("Pad", "float[N, 2, 3] x, int64[6] p", "float[N, 4, 2] y", 'mode = "edge"', "<int64[6] p = {0, 1, 0, 0, 1, -1}>"),
    ("Slice", "float[N, 6, 5] x, int64[2] s, int64[2] e, int64[2] a, int64[2] t", "float[N, 2, 2] y", "",
     "<int64[2] s = {1, -1}, int64[2] e = {5, 0}, int64[2] a = {1, 2}, int64[2] t = {2, -2}>"),
    ("Concat", "float[N, 2, 3] x, float[N, 1, 3] z, float[N, 3, 3] w", "float[N, 6, 3] y", "axis = 1", ""),
    ("Dropout", X, "float[N, 3, 4] y", "", ""),
])
def test_data_movement(op, inputs, outputs, attrs, params):
    expanded(one_op(op, inputs, outputs=outputs, attrs=attrs, params=params, opset=18))


def test_reshape_index_arithmetic_groups_dims():
    from dcopt.passes.expansions.tensor import reshape_subset

    assert reshape_subset(("N", 64, 7, 7), ("N", 3136)) == ["i0", "i1 // 49", "i1 // 7 % 7", "i1 % 7"]
    assert reshape_subset((2, 6), (3, 4)) == ["(4*i0 + i1) // 6", "(4*i0 + i1) % 6"]
    assert reshape_subset(("N", 1, 4), ("N", 4)) == ["i0", "0", "i1"]


# ------------------------------------------------------------------------------ the pass

def test_refusals_and_unsupported_ops_are_reported(parse):
    g = parse("""agraph (float[N, 3, 4] x, int64[1] ax) => (float[N, 3, 4] y, float[N, 1, 4] s, float[K] u) {
        a = Relu(x)
        s = ReduceSum(a, ax)
        u = Unique(x)
        y = Add(a, x)
    }""", opset=18)
    result = expanded(g, fully=False)
    assert result.stats["unsupported"] == {"Unique": 1}  # sized by its data: no expansion
    assert result.refusals == [("ReduceSum_1", "ReduceSum: axes are computed at run time")]
    assert [n.op for n in g.nodes] == ["Map", "ReduceSum", "Unique", "Map"]


def test_unknown_shapes_refuse_and_leave_no_containers(parse):
    g = parse("""agraph (float[N, 3, 4] x, float[4] s) => (float[N, 3, 4] y) {
        y = LayerNormalization(x, s)
    }""")
    g.containers["s"].type = TensorType("float32", None)  # as if shape inference had failed
    names = set(g.containers)
    result = expand(g)
    assert result.refusals == [("LayerNormalization_0", "LayerNormalization: the shape of 's' is not known "
                                                        "(float32[?])")]
    assert set(g.containers) == names and not result.modified and result.stats["refused"] == 1


def test_options_select_ops_and_keep_views(parse):
    text = """agraph (float[N, 3, 4] x) => (float[N, 12] y) { a = Relu(x)\n f = Flatten(a)\n y = Sigmoid(f) }"""
    g = parse(text)
    expanded(g, ops=["Relu"], fully=False)
    assert [n.op for n in g.nodes] == ["Map", "Flatten", "Sigmoid"]
    g = parse(text)
    result = expanded(g, keep_views=True, fully=False)
    assert [n.op for n in g.nodes] == ["Map", "Flatten", "Map"] and result.stats["views"] == 1
    g = parse(text)
    expanded(g)  # without keep_views a view is a copy map like any op
    assert [n.op for n in g.nodes] == ["Map", "Map", "Map"]
    g = parse(text)
    expanded(g, exclude=["Sigmoid"], fully=False)
    assert [n.op for n in g.nodes] == ["Map", "Map", "Sigmoid"]


def test_registered_pass_and_fusion_group_bodies(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    before = graph.copy()
    make_group(graph, [n for n in graph.nodes if n.name in ("stem/conv", "stem/bn", "stem/relu")], name="stem",
               kind="conv")
    result = get_pass("expand")(graph)
    body = next(n for n in graph.nodes if n.op == "FusedGroup").attrs["body"]
    assert [n.op for n in body.nodes] == ["LibraryCall", "Map", "Map"] and result.stats["refused"] == 0
    assert_equivalent(before, graph)


def test_expanded_model_round_trips_and_prints(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    before = graph.copy()
    expanded(graph)
    back = serialize.loads(serialize.dumps(graph))
    assert [n.key for n in back.nodes] == [n.key for n in graph.nodes]
    x = {"image": np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)}
    np.testing.assert_allclose(run_graph(back, x)["probs"], run_graph(before, x)["probs"], rtol=1e-4, atol=1e-5)
    text = format_loop_graph(graph)
    assert "%stem.out = map[i0=0:N, i1=0:16, i2=0:32, i3=0:32] {out = max(a, 0)}" in text
    assert "%pool = map[i0=0:N, i1=0:32] {out = s / 256}" in text
    assert "%stem.conv = conv{dilations=(1, 1), group=1, pads=(1, 1, 1, 1), strides=(1, 1)}  X <- image[0:N, 0:3, 0:32, 0:32]" in str(graph)


def test_memlet_cost_matches_op_level_bytes(tiny_resnet_path):
    """Where one op became one loop node, bytes from its memlets equal the op-level cost model's."""
    graph = import_model(tiny_resnet_path)
    op_costs = {n.label: node_cost(graph, n, {"N": 2}) for n in graph.nodes}
    expand(graph)
    by_op: dict = {}
    for node in graph.nodes:
        by_op.setdefault(node.name.rsplit("/", 1)[0], []).append(node)
    singles = {label: nodes[0] for label, nodes in by_op.items() if len(nodes) == 1}
    assert len(singles) >= len(op_costs) // 2  # convs, batch norms, activations, adds, the dense layer
    for label, node in singles.items():
        got, want = memlet_cost(graph, node, {"N": 2}), op_costs[label]
        assert (got.bytes_read, got.bytes_written) == (want.bytes_read, want.bytes_written), label


# ------------------------------------------------------------------------------ real models

@pytest.mark.slow
def test_squeezenet_fully_expanded_matches():
    model = with_random_weights(onnx.load(light_zoo_path("squeezenet")))
    model.ir_version = max(model.ir_version, 4)  # IR 3 hides initializer shapes from shape inference
    graph = import_model(model)
    result = expanded(graph)
    assert result.stats["refused"] == 0 and result.stats["unsupported"] == {}
    assert result.stats["expanded"] == 66


def test_values_that_follow_from_sizes_stay_ops():
    """Shape of a symbolic tensor, Range(0, seq) and the position rows it gathers follow from sizes
    and weights alone: they stay ops (the runtime computes them once per size) rather than become
    kernels compiled for one run per size; what reads data expands."""
    header = '<ir_version: 8, opset_import: ["" : 17]>\n'
    text = """agraph (float[S, 4] x) => (float[S, 4] y, float[S, 4] rows) <float[16, 4] table = {%s}, int64 zero = {0},
              int64 one = {1}> {
        shp = Shape(x)
        seq = Gather(shp, zero)
        ids = Range(zero, seq, one)
        rows = Gather(table, ids)
        y = Relu(x)
    }""" % ", ".join(str(float(v)) for v in range(64))
    graph = import_model(onnx.parser.parse_model(header + text))
    result = expanded(graph, {"x": np.ones((5, 4), np.float32)}, fully=False)
    assert result.stats["from_sizes"] == 4 and result.stats["expanded"] == 1  # the Relu
    assert [n.op for n in graph.nodes if not is_loop_node(n)] == ["Shape", "Gather", "Range", "Gather"]
