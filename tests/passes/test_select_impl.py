"""select-impl (level 1): per-op implementation choice from the cost model and the host, the
expansions that honour it (checked against the op-level graph), and its place in O3."""

import math

import numpy as np
import onnx
import pytest

from dcopt.frontends.onnx_export import export_model
from dcopt.frontends.onnx_import import import_model
from dcopt.ir.cost import graph_cost
from dcopt.ir.executor import run_graph
from dcopt.ir.loops import LIBRARY_CALL, is_loop_node
from dcopt.ir.types import TensorType
from dcopt.ir.schedule import IMPL, TILE, VECTOR, ScheduleError, schedule_of, with_schedule
from dcopt.passes import get_pass
from dcopt.passes.equivalence import assert_equivalent
from dcopt.passes.expand import expand
from dcopt.passes.pipelines import PIPELINES, build_pipeline
from dcopt.passes.select_impl import Host, gemm_tiles, host
from dcopt.testing import light_zoo_path, run_onnxruntime, with_random_weights
from tests.passes.test_expand import expanded, one_op

AVX2 = Host(l1=32 * 1024, l2=512 * 1024, l3=8 * 1024 * 1024, vector_bytes=32, registers=16)


def squeezenet():
    path = light_zoo_path("squeezenet")
    if not path.exists():
        pytest.skip("light-zoo squeezenet is not installed with this onnx")
    return import_model(with_random_weights(onnx.load(path)))


def select(graph, **options):
    return get_pass("select-impl", **options)(graph)


def impls(graph):
    return {n.label: schedule_of(n).impl for n in graph.nodes if n.op in ("Conv", "MatMul", "Gemm")}


# ------------------------------------------------------------------------------ choices

def test_choices_on_tiny_resnet(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    result = select(graph, machine=AVX2, target=None)  # the target-independent model
    assert result.modified and result.refusals == []
    assert result.stats == {"conv.loops": 3, "conv.im2col": 1, "matmul.library": 1}
    # 16 output channels: im2col's GEMM would move ~4x the conv's bytes for its FLOPs; 32 pays off
    assert impls(graph) == {"stem/conv": "loops", "block1a/conv": "loops", "block1b/conv": "loops",
                            "down/conv": "im2col", "head/fc": "library"}
    down = next(n for n in graph.nodes if n.label == "down/conv")
    assert schedule_of(down).tile == gemm_tiles(32, 16 * 9, 16 * 16, 4, AVX2) == (36, 144, 256)
    assert schedule_of(down).vector == 8 and TILE not in graph.nodes[0].attrs  # loops: no GEMM to tile
    again = select(graph, machine=AVX2, target=None)
    assert not again.modified and again.stats == result.stats


def test_choices_on_squeezenet():
    graph = squeezenet()
    result = select(graph, target=None)
    assert result.stats == {"conv.loops": 1, "conv.im2col": 8, "conv.library": 17} and result.refusals == []
    first = graph.nodes[0]
    assert first.op == "Conv" and schedule_of(first).impl == "loops"  # 3 input channels, 64 filters, 3x3


def test_cpu_target_names_its_routines_on_squeezenet():
    """Static sizes and constant weights: the CPU chooser answers for every conv (1x1 -> pointwise)."""
    graph = squeezenet()
    result = select(graph)
    assert result.stats == {"conv.direct": 9, "conv.pointwise": 17} and result.refusals == []
    assert schedule_of(graph.nodes[0]).impl == "direct"
    batch = one_op("Conv", "float[N, 3, 9, 9] x, float[8, 3, 3, 3] w", "float[N, 8, 7, 7] y")
    assert select(batch).stats == {"conv.im2col": 1}  # a symbolic batch: decided per image (weights: an input)
    image = one_op("Conv", "float[1, 3, H, W] x, float[8, 3, 3, 3] w", "float[1, 8, A, B] y")
    assert select(image).stats == {"conv.library": 1}  # no static image sizes: the generic default


def test_depthwise_pointwise_and_gemm_size():
    dw = one_op("Conv", "float[N, 8, 9, 9] x, float[8, 1, 3, 3] w", "float[N, 8, 7, 7] y", attrs="group = 8")
    pw = one_op("Conv", "float[N, 64, 9, 9] x, float[128, 64, 1, 1] w", "float[N, 128, 9, 9] y")
    big = one_op("MatMul", "float[N, 256] a, float[256, 256] b", "float[N, 256] y")
    generic = {"target": None}  # the target-independent model (the CPU chooser decides per image)
    assert select(dw, **generic).stats == {"conv.loops": 1} and select(pw, **generic).stats == {"conv.library": 1}
    assert select(big, **generic).stats == {"matmul.library": 1}
    big = one_op("MatMul", "float[N, 256] a, float[256, 256] b", "float[N, 256] y")
    assert select(big).stats == {"matmul.library": 1}  # b is an input: no weights to pack


def test_tile_model():
    # KC*NR*4 <= L1/2, MC*KC*4 <= L2/2 (MC a multiple of MR=6), KC*NC*4 <= L3/2 (NC a multiple of NR=16)
    assert gemm_tiles(None, None, None, 4, AVX2) == (252, 256, 4096)
    assert gemm_tiles(10, 100, 20, 4, AVX2) == (12, 100, 32)  # clamped to the problem
    assert gemm_tiles(None, None, None, 8, AVX2)[1] == 16 * 1024 // (8 * 8)  # doubles: 4 lanes, NR 8
    here = host()
    assert here.l1 > 0 and here.l2 >= here.l1 and here.lanes(4) in (4, 8, 16)


# ------------------------------------------------------------------------------ forcing and near misses

def test_forced_choices_and_user_choices(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    assert select(graph, conv="im2col", matmul="library").stats == {"conv.im2col": 4, "matmul.library": 1}
    assert select(graph, conv="loops").stats == {"conv.im2col": 4, "matmul.library": 1}  # chosen: kept
    graph = import_model(tiny_resnet_path)
    graph.nodes = [with_schedule(graph.nodes[0], impl="loops"), *graph.nodes[1:]]  # a user's per-node choice
    assert select(graph, conv="library").stats == {"conv.library": 3, "conv.loops": 1, "matmul.generated": 1}
    assert select(graph, conv="library", overwrite=True).stats == {"conv.library": 4, "matmul.generated": 1}
    with pytest.raises(ScheduleError, match="winograd"):
        get_pass("select-impl", conv="winograd")
    graph.nodes = [graph.nodes[0].replace(attrs={**graph.nodes[0].attrs, IMPL: "winograd"}), *graph.nodes[1:]]
    result = select(graph, overwrite=True)
    assert "winograd" in result.refusals[0][1] and graph.nodes[0].attrs[IMPL] == "winograd"
    result = expand(graph)
    assert result.refusals[0] == ("stem/conv", "Conv: unknown implementation dcopt.impl='winograd' "
                                                "(allowed: library, loops, im2col, direct, pointwise, depthwise, blas)")


def test_unknown_shapes_keep_the_library_default():
    graph = one_op("Conv", "float[N, 16, H, W] x, float[32, 16, 3, 3] w", "float[N, 32, A, B] y")
    result = select(graph)
    assert result.stats == {"conv.library": 1}
    (label, why), = result.refusals
    assert "keeps the 'library' default" in why and "'x' is not static beyond the batch dim" in why
    assert schedule_of(graph.nodes[0]).tile is None  # no sizes, no tiles; the vector width is still known
    forced = one_op("Conv", "float[N, 16, H, W] x, float[32, 16, 3, 3] w", "float[N, 32, A, B] y")
    assert select(forced, conv="direct").stats == {"conv.direct": 1}
    result = expand(forced)  # the choice stands, but expansion needs the sizes: it refuses and says why
    assert result.stats["refused"] == 1 and "needs static sizes along axes [2, 3]" in result.refusals[0][1]
    unranked = one_op("Conv", "float[N, 16, 8, 8] x, float[32, 16, 3, 3] w", "float[N, 32, 6, 6] y")
    unranked.containers["x"].type = TensorType("float32", None)
    assert "the shape of 'x' is not static beyond the batch dim (float32" in select(unranked).refusals[0][1]


# ------------------------------------------------------------------------------ expansion honours the choice

GEOMETRIES = [
    ("float[N, 3, 7, 8] x, float[4, 3, 3, 3] w, float[4] b", "float[N, 4, 7, 8] y", "pads = [1, 1, 1, 1]"),
    ("float[N, 3, 7, 8] x, float[4, 3, 3, 2] w, float[4] b", "float[N, 4, 2, 4] y",
     "strides = [2, 2], dilations = [2, 1]"),
    ("float[N, 3, 7, 8] x, float[4, 3, 2, 2] w", "float[N, 4, 4, 4] y", 'auto_pad = "SAME_UPPER", strides = [2, 2]'),
    ("float[N, 3, 7, 8] x, float[6, 1, 3, 3] w, float[6] b", "float[N, 6, 5, 6] y", "group = 3"),
    ("float[N, 4, 7, 8] x, float[6, 2, 3, 3] w, float[6] b", "float[N, 6, 7, 6] y",
     "group = 2, pads = [1, 0, 1, 2], dilations = [1, 2]"),
    ("float[N, 2, 9] x, float[3, 2, 3] w", "float[N, 3, 7] y", ""),
    ("float[N, 4, 5, 6, 5] x, float[4, 2, 2, 3, 1] w, float[4] b", "float[N, 4, 4, 4, 5] y", "group = 2"),
]


@pytest.mark.parametrize("impl", ["loops", "im2col"])
@pytest.mark.parametrize("inputs,y,attrs", GEOMETRIES)
def test_conv_variants_match(impl, inputs, y, attrs):
    graph = one_op("Conv", inputs, y, attrs=attrs, opset=17)
    select(graph, conv=impl)
    expanded(graph)  # verifies, checks loop nodes, compares with the op node (rtol 1e-4, atol 1e-5)
    kinds = [n.attrs.get("kind", n.op) for n in graph.nodes]
    assert kinds == (["Map"] * (1 + ("b" in inputs)) if impl == "loops" else ["Map", "Map", "gemm", "Map"])
    core = next(n for n in graph.nodes if n.op == LIBRARY_CALL or "loops" in n.name)
    assert core.attrs[VECTOR] == host().lanes(4) and (TILE in core.attrs) == (impl == "im2col")


@pytest.mark.parametrize("impl", [None, "loops", "im2col", "library"])
def test_tiny_resnet_variants_match(tiny_resnet_path, impl):
    graph = import_model(tiny_resnet_path)
    before = graph.copy()
    select(graph, conv=impl)
    result = expand(graph)
    assert result.stats["refused"] == 0 and all(is_loop_node(n) for n in graph.nodes)
    assert_equivalent(before, graph)


@pytest.mark.slow
@pytest.mark.parametrize("impl", [None, "loops", "im2col"])
def test_squeezenet_variants_match(impl):
    graph = squeezenet()
    before = graph.copy()
    select(graph, conv=impl)
    result = expand(graph)
    assert result.stats["refused"] == 0 and result.stats["unsupported"] == {}
    assert_equivalent(before, graph)


def test_cost_model_sees_the_column_buffer(tiny_resnet_path):
    """Same FLOPs whichever way; im2col moves its column buffer (and GEMM result) on top."""
    costs, cols = {}, 0
    for impl in ("library", "direct", "im2col"):
        graph = import_model(tiny_resnet_path)
        select(graph, conv=impl)
        expand(graph)
        costs[impl] = graph_cost(graph, {"N": 2})
        if impl == "im2col":
            cols = sum(2 * math.prod(graph.containers[n].type.specialize({"N": 2}).shape) * 4
                       for n in graph.containers if "_col__" in n)
    assert costs["library"].complete and costs["im2col"].complete
    assert costs["library"].total_flops == costs["direct"].total_flops == costs["im2col"].total_flops
    assert costs["direct"].total_bytes == costs["library"].total_bytes
    assert costs["im2col"].total_bytes >= costs["library"].total_bytes + cols > costs["library"].total_bytes
    assert costs["im2col"].transient_bytes > costs["library"].transient_bytes


# ------------------------------------------------------------------------------ O3

def test_o3_selects_and_still_exports_to_onnxruntime(tiny_resnet_path):
    assert PIPELINES["O3"].steps.index("select-impl") == PIPELINES["O3"].steps.index("fuse") - 1
    graph = import_model(tiny_resnet_path)
    before = graph.copy()
    build_pipeline("O3")(graph)
    chosen = [schedule_of(n).impl for g in [graph] + [n.attrs["body"] for n in graph.nodes if n.op == "FusedGroup"]
              for n in g.nodes if IMPL in n.attrs]
    # a symbolic batch: the CPU routines decide per image, the GEMM runs in chunks of rows
    assert sorted(chosen) == ["direct", "direct", "direct", "direct", "generated"]
    model = export_model(graph)
    x = {"image": np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    np.testing.assert_allclose(run_onnxruntime(model, x)[0], run_graph(before, x)["probs"], rtol=1e-4, atol=1e-5)
