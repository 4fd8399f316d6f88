"""ONNX import and export: round trips through onnx.checker and onnxruntime."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dcopt.frontends.onnx_export import export_model
from dcopt.frontends.onnx_import import import_model
from dcopt.ir.executor import run_graph
from dcopt.testing import run_onnxruntime
from tests.conftest import make_model


def test_import_keeps_symbolic_dims_and_kinds(mlp_model):
    g = import_model(mlp_model)
    assert g.inputs == ["x"] and g.outputs == ["y"]
    assert set(g.parameters) == {"w1", "b1", "w2"}
    assert g.containers["h"].type.shape == ("N", 8)
    assert g.containers["y"].type.shape == ("N", 3)


def test_export_round_trip_matches_onnxruntime(mlp_model):
    g = import_model(mlp_model)
    exported = export_model(g)
    onnx.checker.check_model(exported, full_check=True)
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    expected = run_onnxruntime(mlp_model, {"x": x})[0]
    np.testing.assert_allclose(run_onnxruntime(exported, {"x": x})[0], expected, rtol=1e-6)
    np.testing.assert_allclose(run_graph(g, {"x": x})["y"], expected, rtol=1e-4, atol=1e-5)


def test_old_ir_version_initializers_listed_as_inputs_become_parameters():
    w = np.ones((2, 2), np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                       [("x", TensorProto.FLOAT, [1, 2]), ("w", TensorProto.FLOAT, [2, 2])],
                       [("y", TensorProto.FLOAT, [1, 2])], {"w": w}, opset=9)
    model.ir_version = 3
    g = import_model(model)
    assert g.inputs == ["x"] and "w" in g.parameters
    exported = export_model(g)
    assert [i.name for i in exported.graph.input] == ["x"]
    assert exported.ir_version >= 4


def test_local_functions_are_inlined():
    fn = helper.make_function("my.fns", "Double", ["a"], ["b"], [helper.make_node("Add", ["a", "a"], ["b"])],
                              [helper.make_opsetid("", 17)])
    model = make_model([helper.make_node("Double", ["x"], ["y"], domain="my.fns")],
                       [("x", TensorProto.FLOAT, [3])], [("y", TensorProto.FLOAT, [3])])
    model.opset_import.append(helper.make_opsetid("my.fns", 1))
    model.functions.append(fn)
    g = import_model(model)
    assert [n.op for n in g.nodes] == ["Add"]
    np.testing.assert_array_equal(run_graph(g, {"x": np.arange(3, dtype=np.float32)})["y"], [0, 2, 4])


def test_metadata_survives_export(mlp_model):
    mlp_model.metadata_props.append(onnx.StringStringEntryProto(key="dcopt.patches", value="a;b"))
    g = import_model(mlp_model)
    assert g.metadata["dcopt.patches"] == "a;b"
    assert {p.key: p.value for p in export_model(g).metadata_props}["dcopt.patches"] == "a;b"


def test_subgraph_attributes_import_and_export():
    then_g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    model = make_model([helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
                       [("c", TensorProto.BOOL, []), ("x", TensorProto.FLOAT, [2])],
                       [("y", TensorProto.FLOAT, [2])])
    g = import_model(model)
    assert len(g.nodes[0].attrs["then_branch"].nodes) == 1
    onnx.checker.check_model(export_model(g))


@pytest.mark.parametrize("opset", [7, 9, 11, 13, 17, 21])
def test_import_at_many_opsets(opset):
    model = make_model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"])],
                       [("x", TensorProto.FLOAT, [2, 3])], [("y", TensorProto.FLOAT, [2, 3])], opset=opset)
    model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    g = import_model(model)
    assert g.opset_of("") == opset
    x = np.array([[-1, 2, 3], [4, -5, 6]], np.float32)
    np.testing.assert_array_equal(run_graph(g, {"x": x})["y"], np.maximum(x, 0) + x)
