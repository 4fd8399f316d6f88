"""Level 3 fusion: what fuses, what must not, numerics, export, and bytes saved on real CNNs."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dcopt.frontends.onnx_export import export_model
from dcopt.frontends.onnx_import import import_model
from dcopt.ir.cost import graph_cost
from dcopt.ir.executor import run_graph
from dcopt.ir.groups import groups, ungroup
from dcopt.ir.verify import verify
from dcopt.passes import build_pipeline, get_pass
from dcopt.passes.equivalence import compare_outputs
import dcopt.passes.memory_plan  # noqa: F401  (registers plan-memory)
from dcopt.passes.fuse import Fuse
from dcopt.testing import run_onnxruntime
from tests.conftest import make_model
from tests.passes.zoo_models import CNNS, canonical_graph, image_feeds, transformer_block

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _w(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _graph(nodes, inputs, outputs, inits=()):
    return import_model(make_model([helper.make_node(*n[:3], **n[3] if len(n) > 3 else {}) for n in nodes],
                                   inputs, outputs, inits))


def _fuse(graph, **options):
    feeds = image_feeds(graph)
    expected = run_graph(graph, feeds)
    result = Fuse(**options)(graph)
    verify(graph)
    problems = compare_outputs(expected, run_graph(graph, feeds), rtol=1e-4, atol=1e-5)
    assert not problems, [p.describe() for p in problems]
    return result, feeds, expected


def _member_ops(graph):
    return sorted((g.attrs["kind"], tuple(m.op for m in g.attrs["body"].nodes)) for g in groups(graph))


def _assert_runs_in_onnxruntime(graph, feeds, expected):
    model = export_model(graph)
    onnx.checker.check_model(model, full_check=True)
    got = run_onnxruntime(model, feeds)
    for name, value in zip(graph.outputs, got):
        np.testing.assert_allclose(value, expected[name], rtol=1e-4, atol=1e-5)


def test_tiny_resnet_fuses_conv_epilogues(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    before = graph_cost(graph, {"N": 1}).transient_bytes
    result, feeds, expected = _fuse(graph)
    assert _member_ops(graph) == [("conv", ("Conv", "BatchNormalization", "Add", "Relu")),
                                  *[("conv", ("Conv", "BatchNormalization", "Relu"))] * 3]
    after = graph_cost(graph, {"N": 1}).transient_bytes
    assert (result.stats["transient_bytes_before"], result.stats["transient_bytes_after"]) == (before, after)
    assert after < 0.4 * before
    # values computed inside a group never cross a kernel boundary: the cost model, which reads the
    # group node's own inputs/outputs, does not count them
    inner = {o for g in groups(graph) for m in g.attrs["body"].nodes for o in m.outputs} - \
        {o for g in groups(graph) for o in g.outputs}
    assert inner and not inner & {c.node for c in graph_cost(graph, {"N": 1}).nodes}
    assert not get_pass("fuse")(graph).modified  # groups are opaque to a second run
    _assert_runs_in_onnxruntime(graph, feeds, expected)
    assert len(ungroup(graph).nodes) == 17


def _layernorm(epilogue_shape=None):
    nodes = [("ReduceMean", ["x"], ["mean"], {"axes": [-1]}), ("Sub", ["x", "mean"], ["d"]),
             ("Pow", ["d", "two"], ["sq"]), ("ReduceMean", ["sq"], ["var"], {"axes": [-1]}),
             ("Add", ["var", "eps"], ["ve"]), ("Sqrt", ["ve"], ["sd"]), ("Div", ["d", "sd"], ["n"]),
             ("Mul", ["n", "gamma"], ["s"]), ("Add", ["s", "beta"], ["y"])]
    inits = {"two": np.float32(2.0), "eps": np.float32(1e-5), "gamma": _w(16), "beta": _w(16)}
    return _graph(nodes, [("x", F, [2, 8, 16])], [("y", F, [2, 8, 16])], inits)


def test_decomposed_layernorm_becomes_one_reduction_group():
    graph = _layernorm()
    result, feeds, expected = _fuse(graph)
    assert _member_ops(graph) == [("reduction", ("ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div",
                                                 "Mul", "Add"))]
    assert graph_cost(graph).transient_bytes == 0 < result.stats["transient_bytes_before"]
    _assert_runs_in_onnxruntime(graph, feeds, expected)


def test_softmax_fuses_with_its_prologue_and_epilogue():
    graph = _graph([("Mul", ["s", "scale"], ["a"]), ("Add", ["a", "mask"], ["b"]), ("Softmax", ["b"], ["p"]),
                    ("Mul", ["p", "keep"], ["y"])],
                   [("s", F, [2, 4, 8, 8])], [("y", F, [2, 4, 8, 8])],
                   {"scale": np.float32(0.125), "mask": _w(1, 1, 8, 8), "keep": np.float32(0.9)})
    _fuse(graph)
    assert _member_ops(graph) == [("reduction", ("Mul", "Add", "Softmax", "Mul"))]


def test_gemm_takes_epilogues_but_not_prologues():
    graph = _graph([("MatMul", ["x", "w1"], ["h"]), ("Add", ["h", "b1"], ["hb"]), ("Relu", ["hb"], ["a"]),
                    ("MatMul", ["a", "w2"], ["o"]), ("Add", ["o", "x"], ["r"]), ("Tanh", ["r"], ["y"])],
                   [("x", F, [4, 16])], [("y", F, [4, 16])], {"w1": _w(16, 32), "b1": _w(32), "w2": _w(32, 16)})
    result, feeds, expected = _fuse(graph)
    assert _member_ops(graph) == [("gemm", ("MatMul", "Add", "Relu")), ("gemm", ("MatMul", "Add", "Tanh"))]
    assert any("one GEMM/conv anchor" in why for _, why in result.refusals)
    _assert_runs_in_onnxruntime(graph, feeds, expected)


def test_two_anchors_never_share_a_group():
    graph = _graph([("MatMul", ["x", "w1"], ["h"]), ("MatMul", ["h", "w2"], ["y"])],
                   [("x", F, [4, 16])], [("y", F, [4, 8])], {"w1": _w(16, 32), "w2": _w(32, 8)})
    result, _, _ = _fuse(graph)
    assert not groups(graph) and not result.modified
    assert any("one GEMM/conv anchor" in why for _, why in result.refusals)


def test_intermediate_used_around_the_chain_is_not_fused_when_that_breaks_convexity():
    # a = Relu(x) is read by Add directly and through a Transpose (opaque): {Relu, Add} would
    # leave the group and come back
    graph = _graph([("Relu", ["x"], ["a"]), ("Transpose", ["a"], ["t"]), ("Add", ["a", "t"], ["b"]),
                    ("Sigmoid", ["b"], ["y"])], [("x", F, [8, 8])], [("y", F, [8, 8])])
    result, _, _ = _fuse(graph)
    assert _member_ops(graph) == [("elementwise", ("Add", "Sigmoid"))]
    assert any("convex" in why for _, why in result.refusals)


def test_reduction_does_not_take_an_epilogue_of_another_shape():
    # ReduceSum gives [4, 1]; the Add broadcasts it to [4, 16], which is neither the reduction's
    # input shape [4, 8] nor its reduced shape
    graph = _graph([("Exp", ["x"], ["e"]), ("ReduceSum", ["e", "axes"], ["r"]), ("Add", ["r", "z"], ["s"]),
                    ("Relu", ["s"], ["y"])],
                   [("x", F, [4, 8]), ("z", F, [4, 16])], [("y", F, [4, 16])], {"axes": np.array([1])})
    result, _, _ = _fuse(graph)
    assert _member_ops(graph) == [("elementwise", ("Add", "Relu")), ("reduction", ("Exp", "ReduceSum"))]
    assert any("neither the reduction's input shape" in why for _, why in result.refusals)

    # without keepdims, a row sum [8] broadcasts along the columns of x[8, 8]: not a row kernel;
    # summing over the leading axis instead broadcasts correctly and fuses
    for axis, fused in ((1, []), (0, [("reduction", ("ReduceSum", "Sub"))])):
        graph = _graph([("ReduceSum", ["x", "axes"], ["r"], {"keepdims": 0}), ("Sub", ["x", "r"], ["y"])],
                       [("x", F, [8, 8])], [("y", F, [8, 8])], {"axes": np.array([axis])})
        result, _, _ = _fuse(graph)
        assert _member_ops(graph) == fused
        assert not fused or not result.refusals
        assert fused or [why for _, why in result.refusals] == [
            "'r' of shape [8] would cross inside a group over [8, 8]: not the space or its reduced shape (keepdims=0?)"]


def test_multi_consumer_values_fuse_and_stay_outputs_when_read_outside():
    graph = _graph([("Relu", ["x"], ["a"]), ("Exp", ["a"], ["e"]), ("Neg", ["a"], ["n"]), ("Add", ["e", "n"], ["y"])],
                   [("x", F, [8, 8])], [("y", F, [8, 8])])
    _fuse(graph)
    assert _member_ops(graph) == [("elementwise", ("Relu", "Exp", "Neg", "Add"))]
    assert groups(graph)[0].outputs == ("y",)

    # 'a' is also read by a Transpose: fusing Relu into Exp saves only a's read (it must still be
    # written); fusing Exp into Add saves e's write and read, so that wins, and then Relu cannot
    # join (Relu -> Transpose -> Add would leave the group and come back)
    graph = _graph([("Relu", ["x"], ["a"]), ("Exp", ["a"], ["e"]), ("Transpose", ["a"], ["t"]),
                    ("Add", ["e", "t"], ["y"])], [("x", F, [8, 8])], [("y", F, [8, 8])])
    _fuse(graph)
    assert _member_ops(graph) == [("elementwise", ("Exp", "Add"))]

    graph = _graph([("Relu", ["x"], ["a"]), ("Exp", ["a"], ["y"])], [("x", F, [8, 8])],
                   [("a", F, [8, 8]), ("y", F, [8, 8])])
    _fuse(graph)  # 'a' is a graph output: the group still writes it
    assert groups(graph)[0].outputs == ("a", "y")


def test_broadcast_of_a_smaller_producer_is_not_recomputed_per_element():
    # Sqrt runs on [4, 1]; Div broadcasts it over [4, 8]: without a reduction around them they
    # are different iteration spaces
    graph = _graph([("Sqrt", ["v"], ["s"]), ("Div", ["x", "s"], ["d"]), ("Relu", ["d"], ["y"])],
                   [("x", F, [4, 8]), ("v", F, [4, 1])], [("y", F, [4, 8])])
    result, _, _ = _fuse(graph)
    assert _member_ops(graph) == [("elementwise", ("Div", "Relu"))]
    assert _fuse(_graph([("Sqrt", ["v"], ["s"]), ("Div", ["x", "s"], ["d"])],
                        [("x", F, [4, 8]), ("v", F, [4, 1])], [("d", F, [4, 8])]), broadcast=False)[0].modified is False


def test_classes_can_be_switched_off(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    _fuse(graph, epilogue=False)  # BatchNormalization + Relu (+ the pool's prologue) still fuse
    assert {kind for kind, _ in _member_ops(graph)} == {"elementwise", "reduction"}
    assert not any("Conv" in ops for _, ops in _member_ops(graph))
    graph = _layernorm()
    _fuse(graph, reduction=False)
    assert {kind for kind, _ in _member_ops(graph)} == {"elementwise"}
    graph = import_model(tiny_resnet_path)
    assert not _fuse(graph, elementwise=False)[0].modified


def test_min_saving_sets_the_profitability_threshold():
    graph = _graph([("Relu", ["x"], ["a"]), ("Exp", ["a"], ["y"])], [("x", F, [4, 8])], [("y", F, [4, 8])])
    assert not Fuse(min_saving=4 * 8 * 4 * 2 + 1)(graph.copy()).modified  # saves a's write and read: 256 B
    assert Fuse(min_saving=4 * 8 * 4 * 2)(graph).modified


@pytest.mark.slow
@pytest.mark.parametrize("name", CNNS)
def test_light_zoo_cnns_fuse_and_move_at_least_25_percent_fewer_bytes(name):
    graph = canonical_graph(name)
    before = graph_cost(graph).transient_bytes
    result, feeds, expected = _fuse(graph)
    after = graph_cost(graph).transient_bytes
    print(f"{name}: bytes moved between kernels {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB "
          f"({1 - after / before:.1%} less), {result.stats['groups']} groups")
    assert after <= 0.75 * before
    if name == "squeezenet":  # the smallest: check the exported fused model in onnxruntime too
        _assert_runs_in_onnxruntime(graph, feeds, expected)


def test_transformer_layer_moves_at_least_40_percent_fewer_bytes():
    graph = import_model(transformer_block(seq=32, dim=64))
    build_pipeline("canonicalize")(graph)
    before = graph_cost(graph).transient_bytes
    result, feeds, expected = _fuse(graph)
    assert graph_cost(graph).transient_bytes <= 0.6 * before  # 66% less at seq 128, dim 256 too
    ops = _member_ops(graph)
    assert ops.count(("reduction", ("ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul", "Add"))) == 2
    assert ("gemm", ("MatMul", "Add", "Div", "Erf", "Add", "Mul", "Mul")) in ops  # bias + GELU epilogue
    assert result.stats["groups_gemm"] == 7
    _assert_runs_in_onnxruntime(graph, feeds, expected)


@pytest.mark.slow
def test_o3_pipeline_on_resnet50_verifies_and_stays_equivalent():
    graph = canonical_graph("resnet50")
    result = build_pipeline("fuse,plan-memory", verify=True, check_equivalence=True,
                            rtol=1e-4, atol=1e-5)(graph)
    assert all("equivalent" in r.checks for r in result.report.records if r.modified)
    stats = result.report.records[-1].stats
    assert stats["arena_bytes"] < stats["live_peak_bytes"] * 1.01 < stats["bytes_no_reuse"]
