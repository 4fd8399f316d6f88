"""Seed models the fuzzers mutate: small, valid, and between them using what the loader handles
(initializers, symbolic dims, attributes, constants feeding shapes, a subgraph, a local function)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from tests.conftest import make_model

F = TensorProto.FLOAT


def seeds() -> list[onnx.ModelProto]:
    rng = np.random.default_rng(0)
    mlp = make_model([helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
                      helper.make_node("Add", ["h", "b"], ["hb"], name="add"),
                      helper.make_node("Relu", ["hb"], ["y"], name="relu")],
                     [("x", F, ["N", 4])], [("y", F, ["N", 3])],
                     {"w": rng.standard_normal((4, 3)).astype(np.float32), "b": np.zeros(3, np.float32)})
    reshape = make_model([helper.make_node("Constant", [], ["s"], name="c",
                                           value=helper.make_tensor("v", TensorProto.INT64, [2], [3, 2])),
                          helper.make_node("Reshape", ["x", "s"], ["r"], name="rs"),
                          helper.make_node("Softmax", ["r"], ["y"], name="sm", axis=-1)],
                         [("x", F, [2, 3])], [("y", F, [3, 2])])
    then_g = helper.make_graph([helper.make_node("Neg", ["x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", F, [2])])
    else_g = helper.make_graph([helper.make_node("Abs", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", F, [2])])
    branch = make_model([helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_g, else_branch=else_g)],
                        [("c", TensorProto.BOOL, []), ("x", F, [2])], [("y", F, [2])])
    fn = helper.make_function("my.fns", "Double", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    local = make_model([helper.make_node("Double", ["x"], ["y"], domain="my.fns")], [("x", F, [3])],
                       [("y", F, [3])])
    local.opset_import.append(helper.make_opsetid("my.fns", 1))
    local.functions.append(fn)
    conv = make_model([helper.make_node("Conv", ["x", "k"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                       helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2])],
                      [("x", F, [1, 1, 4, 4])], [("y", F, [1, 2, 2, 2])],
                      {"k": rng.standard_normal((2, 1, 3, 3)).astype(np.float32)})
    return [mlp, reshape, branch, local, conv]
