"""Shared fixtures: small hand-built graphs and models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dcopt.examples import TINY_RESNET


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Every compile in the suite caches under a temporary directory, never the user's
    ``~/.cache/dcopt`` (tests that need their own cache still set DCOPT_CACHE_DIR themselves)."""
    patch = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("dcopt-cache")
    patch.setenv("DCOPT_CACHE_DIR", str(root))
    patch.setenv("XDG_CACHE_HOME", str(root / "xdg"))
    patch.setenv("DCOPT_HOME", str(root / "home"))  # recorded runs (dcopt runs)
    yield root
    patch.undo()


@pytest.fixture
def tiny_resnet_path():
    return TINY_RESNET


def make_model(nodes, inputs, outputs, initializers=(), opset=17, name="test"):
    """Build a checked ONNX model from helper-made parts (inputs/outputs: (name, elem, shape))."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(initializers).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.fixture
def mlp_model():
    """x[N,4] -> MatMul -> Add -> Relu -> MatMul -> y[N,3]."""
    rng = np.random.default_rng(0)
    return make_model(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
         helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
         helper.make_node("Relu", ["hb"], ["a"], name="relu"),
         helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")],
        [("x", TensorProto.FLOAT, ["N", 4])],
        [("y", TensorProto.FLOAT, ["N", 3])],
        {"w1": rng.standard_normal((4, 8)).astype(np.float32),
         "b1": rng.standard_normal(8).astype(np.float32),
         "w2": rng.standard_normal((8, 3)).astype(np.float32)},
    )
