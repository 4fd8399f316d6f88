"""fold-channel-affine: a per-channel constant Mul and Add after a Conv (a Caffe-style scale
layer, e.g. Inception-v2's after every BatchNorm) fold into the conv's weights and bias, checked
numerically; constants that vary along other axes, and conv outputs read elsewhere, are kept."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from dcopt.frontends.onnx_import import import_model
from dcopt.passes.fold_batchnorm import FOLD_CHANNEL_AFFINE
from tests.conftest import make_model
from tests.passes.rule_checks import apply_and_check, refusal

F = TensorProto.FLOAT
RNG = np.random.default_rng(3)


def conv_scale_shift(scale_shape=(1, 8, 1, 1), shift_shape=(8, 1, 1), bias=True, extra_reader=False):
    inits = {"w": (RNG.standard_normal((8, 4, 3, 3)) * 0.3).astype(np.float32),
             "s": RNG.uniform(0.5, 2, scale_shape).astype(np.float32),
             "t": RNG.standard_normal(shift_shape).astype(np.float32)}
    conv_inputs = ["x", "w"]
    if bias:
        inits["cb"] = RNG.standard_normal(8).astype(np.float32)
        conv_inputs.append("cb")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "s"], ["m"], name="scale"),
             helper.make_node("Add", ["t", "m"], ["a"], name="shift"),
             helper.make_node("Relu", ["a"], ["y"])]
    outputs = [("y", F, [1, 8, 6, 6])]
    if extra_reader:
        outputs.append(("c", F, [1, 8, 6, 6]))
    return import_model(make_model(nodes, [("x", F, [1, 4, 6, 6])], outputs, inits))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("scale_shape", [(1, 8, 1, 1), (8, 1, 1), (1, 1, 1, 1), (1,)])
def test_scale_and_shift_fold_into_the_conv(bias, scale_shape):
    graph = conv_scale_shift(scale_shape=scale_shape, bias=bias)
    report = apply_and_check(graph, [FOLD_CHANNEL_AFFINE])
    assert report.counts()["fold-channel-affine"] == 2
    assert [n.op for n in graph.nodes] == ["Conv", "Relu"]


def test_constant_varying_along_space_is_refused():
    graph = conv_scale_shift(scale_shape=(1, 8, 6, 1))
    report = apply_and_check(graph, [FOLD_CHANNEL_AFFINE])
    assert "not one value per output channel" in refusal(report, "fold-channel-affine")
    assert "Mul" in [n.op for n in graph.nodes]


def test_conv_output_read_elsewhere_is_kept():
    graph = conv_scale_shift(extra_reader=True)
    apply_and_check(graph, [FOLD_CHANNEL_AFFINE])
    assert [n.op for n in graph.nodes].count("Conv") == 1 and "Mul" in [n.op for n in graph.nodes]
