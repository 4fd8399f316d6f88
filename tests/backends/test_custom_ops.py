"""Ops a user registers (a reference implementation, no shape rule) compile: they run as reference
steps inside generated code -- *fallback* where the model declares a static shape (checked on
every run), *dynamic* where it does not -- instead of the model being refused."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import dcopt
from dcopt.errors import DcoptError, ExecutionError
from dcopt.ops import registry

F = TensorProto.FLOAT
DOMAIN = "test.custom"


@pytest.fixture
def custom_ops():
    """Registers ``Twice`` (x * 2) and ``Head`` (the first row) in a test domain, then removes them."""
    registry.reference("Twice", domain=DOMAIN)(lambda x: x * 2)
    registry.reference("Head", domain=DOMAIN)(lambda x: x[:1])
    yield
    for op in ("Twice", "Head"):
        registry._REGISTRY.pop((DOMAIN, op), None)


def _model(op: str, declared):
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node(op, ["r"], ["t"], domain=DOMAIN),
             helper.make_node("Add", ["t", "x"], ["y"])]
    value_info = [helper.make_tensor_value_info("t", F, declared)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, [2, 3])],
                              [helper.make_tensor_value_info("y", F, None)], value_info=value_info)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])


X = np.array([[-1, 2, 3], [4, -5, 6]], np.float32)


def test_declared_static_shape_runs_as_a_fallback_step(custom_ops, tmp_path):
    sess = dcopt.compile(_model("Twice", [2, 3]), cache_dir=str(tmp_path))
    (y,) = sess.run(None, {"x": X})
    np.testing.assert_array_equal(y, np.maximum(X, 0) * 2 + X)
    assert sess.manifest["not_native"] == {"Twice (fallback)": 1}  # Relu and Add stay generated code


def test_undeclared_shape_runs_as_a_dynamic_step(custom_ops, tmp_path):
    sess = dcopt.compile(_model("Head", None), cache_dir=str(tmp_path))
    (y,) = sess.run(None, {"x": X})
    np.testing.assert_array_equal(y, np.maximum(X, 0)[:1] + X)
    assert "Head (dynamic)" in sess.manifest["not_native"]


def test_a_wrong_declared_shape_is_an_error_naming_the_step(custom_ops, tmp_path):
    sess = dcopt.compile(_model("Head", [2, 3]), cache_dir=str(tmp_path))  # Head returns [1, 3]
    with pytest.raises(ExecutionError, match=r"Head returned \[1, 3\] for 't', compiled for \[2, 3\]"):
        sess.run(None, {"x": X})


def test_an_op_without_a_reference_is_refused(tmp_path):
    with pytest.raises(DcoptError, match="op Twice of domain .test.custom. .opset 1. is not supported"):
        dcopt.compile(_model("Twice", [2, 3]), cache_dir=str(tmp_path))
