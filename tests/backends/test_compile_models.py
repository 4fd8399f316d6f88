"""Compiled models match the reference executor (the issue's correctness bar)."""

from __future__ import annotations

import numpy as np

from dcopt.backends.cpu import directconv
import onnx
import pytest

import dcopt.compiled as dc
from dcopt.examples import TINY_RESNET
from dcopt.testing import light_zoo_path, random_feeds, run_onnxruntime, with_random_weights
from tests.backends.conftest import RTOL, ATOL, assert_matches_reference


@pytest.mark.parametrize("batch", [1, 2])
def test_tiny_resnet(batch):
    model = onnx.load(str(TINY_RESNET))
    sess = dc.compile(model, dims={"N": batch})
    x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    assert_matches_reference(model, sess, {"image": x})
    assert sess.manifest["steps"]["conv"] == 4
    assert "fallback" not in sess.manifest["steps"]  # every op of the model has a compiled step


def test_mlp(mlp):
    sess = dc.compile(mlp)
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    assert_matches_reference(mlp, sess, {"x": x})
    # bias + relu go into the generated dense kernels: one step per layer, then the softmax kernel.
    kernels = {"matvec": 3} if directconv.supported() else {"kernel": 3, "matmul": 3}
    assert sess.manifest["steps"] == {**kernels, "kernel": kernels.get("kernel", 0) + 1}


def test_transformer_block(transformer_block):
    sess = dc.compile(transformer_block)
    rng = np.random.default_rng(0)
    mask = np.where(rng.random((1, 1, 1, 8)) < 0.25, -1e4, 0).astype(np.float32)
    feeds = {"x": rng.standard_normal((1, 8, 32)).astype(np.float32), "mask": mask}
    assert_matches_reference(transformer_block, sess, feeds)
    assert "fallback" not in sess.manifest["steps"]


def test_recompiles_for_new_batch(mlp):
    sess = dc.compile(mlp)
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    assert_matches_reference(mlp, sess, {"x": x})
    assert sess.bindings == {"N": 3}


@pytest.mark.slow
def test_light_zoo_squeezenet_matches_onnxruntime():
    model = with_random_weights(onnx.load(str(light_zoo_path("squeezenet"))))
    feeds = random_feeds(model)
    expected = run_onnxruntime(model, feeds, threads=2)
    got = dc.compile(model).run(None, feeds)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


def _dense_block() -> onnx.ModelProto:
    """DenseNet-like: conv outputs concatenated onto a growing feature map (concat of concat),
    one branch also read after the concat, and a pool branch -- the in-place concat cases."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, feat, ch = [], [], "x", 8
    for i in range(3):
        w = rng.standard_normal((4, ch, 3, 3)).astype(np.float32) * 0.2
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Relu", [feat], [f"a{i}"]),
                  helper.make_node("Conv", [f"a{i}", f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Concat", [feat, f"c{i}"], [f"f{i}"], axis=1)]
        feat, ch = f"f{i}", ch + 4
    nodes += [helper.make_node("MaxPool", ["c1"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
              helper.make_node("Concat", ["p", feat], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 12, 12])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_concat_inputs_written_in_place():
    """DenseNet-like chain of concats: the memory plan (plan-memory, concat=True) places every conv
    output and inner concat inside the last concat's buffer, so no concat copies them."""
    model = _dense_block()
    sess = dc.compile(model)
    x = np.random.default_rng(1).standard_normal((1, 8, 12, 12)).astype(np.float32)
    assert_matches_reference(model, sess, {"x": x})
    parts = sess._model.program.memory["parts"]

    def root(name):
        while name in parts:
            name = parts[name][0]
        return name

    assert {root(n) for n in parts} == {"y"}  # the chain resolves to the last concat
    # every conv output and inner concat is written in place (c1 also feeds the pool); the
    # graph input x is not
    assert set(parts) == {"c0", "c1", "c2", "f0", "f1", "f2", "p"}
    offsets = sess._model.program.memory["offsets"]
    for name, (owner, offset) in parts.items():
        assert offsets[name][0] == offsets[owner][0] + offset


def test_sibling_pointwise_convs_run_as_one_gemm():
    """An Inception module: three 1x1 convs (bias + ReLU epilogues) on one input, a 3x3 after two
    of them, all concatenated. The two reduce convs share one GEMM whose outputs are views; the
    branch that goes straight into the Concat stays alone and writes into the Concat's buffer."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []
    for i, m in enumerate((16, 8, 8)):
        inits += [numpy_helper.from_array(rng.standard_normal((m, 16, 1, 1)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(m).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", ["x", f"w{i}", f"b{i}"], [f"c{i}"]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
    for i, m in ((1, 8), (2, 8)):
        inits.append(numpy_helper.from_array(rng.standard_normal((3, m, 3, 3)).astype(np.float32), f"w{i}3"))
        nodes.append(helper.make_node("Conv", [f"r{i}", f"w{i}3"], [f"c{i}3"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Concat", ["r0", "c13", "c23"], ["y"], axis=1))
    graph = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 14, 14])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 22, 14, 14])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = dc.compile(model)
    x = np.random.default_rng(1).standard_normal((1, 16, 14, 14)).astype(np.float32)
    assert_matches_reference(model, sess, {"x": x})
    program = sess._model.program
    convs = [s for s in program.steps if s.kind == "conv"]
    assert len(convs) == 4  # the two reduce convs as one, the concat branch, the two 3x3
    assert [s.kind for s in program.steps if s.label.endswith("/split")] == ["view"]  # reduce outputs are views
    parts = program.memory["parts"]
    assert {n for n in parts if parts[n][0] == "y"} == {"r0", "c13", "c23"}  # no Concat copy
