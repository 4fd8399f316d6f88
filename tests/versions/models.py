"""Tiny ONNX models and their "fine-tuned" versions for the versioning tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SHAPES = {"w1": (32, 64), "b1": (64,), "w2": (64, 16), "steps": (2,)}


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in SHAPES.items() if k != "steps"}
    out["steps"] = np.array([3, -7], np.int64)
    return out


def mlp(params: dict[str, np.ndarray], act: str = "Relu", int_as_varint: bool = True) -> bytes:
    """x[N,32] -> MatMul w1 -> Add b1 -> act -> MatMul w2 -> y; ``steps`` is an int64 parameter
    kept in int64_data (a packed-varint field, not raw_data) to cover that encoding."""
    inits = [numpy_helper.from_array(params[k], k) for k in ("w1", "b1", "w2")]
    steps = params["steps"]
    inits.append(helper.make_tensor("steps", TensorProto.INT64, steps.shape, steps.tolist(), raw=not int_as_varint))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
         helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
         helper.make_node(act, ["hb"], ["a"], name="act"),
         helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2"),
         helper.make_node("Shape", ["steps"], ["n"], name="shape")],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16]),
         helper.make_tensor_value_info("n", TensorProto.INT64, [1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def low_rank_update(params: dict, name: str = "w1", rank: int = 2, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    w = params[name]
    a = (rng.standard_normal((w.shape[0], rank)) * 0.05).astype(np.float32)
    b = (rng.standard_normal((rank, w.shape[1])) * 0.05).astype(np.float32)
    return {**params, name: (w + a @ b).astype(np.float32)}


def sparse_update(params: dict, name: str = "w2", count: int = 5) -> dict:
    w = params[name].copy()
    w.reshape(-1)[:count] += 0.5
    return {**params, name: w}


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def load_params(data: bytes) -> dict:
    model = onnx.ModelProto()
    model.ParseFromString(data)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
