"""Models for the cpu backend tests, and the one comparison every test uses."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from dcopt.frontends.onnx_import import import_model
from dcopt.ir.executor import run_graph
from tests.conftest import make_model

#: fp32 tolerance of the issue. GEMM reassociation (blocked BLAS sums vs numpy's) stays inside
#: it at the sizes tested here (K <= 1024); no test needs a looser bound.
RTOL, ATOL = 1e-4, 1e-5


def assert_matches_reference(model, sess, feeds):
    """Compiled outputs vs the reference executor (ground truth), output by output."""
    graph = import_model(model)
    ref = run_graph(graph, feeds)
    got = sess.run(None, feeds)
    assert len(got) == len(graph.outputs)
    for name, value in zip(graph.outputs, got):
        np.testing.assert_allclose(value, ref[name], rtol=RTOL, atol=ATOL, err_msg=name)


def _w(rng, *shape, scale=None):
    scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.fixture(scope="session")
def mlp():
    """x[N,64] -> 3 x (MatMul + Add + Relu) -> Softmax."""
    rng = np.random.default_rng(0)
    nodes, inits, cur = [], {}, "x"
    for i, (k, n) in enumerate([(64, 128), (128, 128), (128, 10)]):
        inits[f"w{i}"], inits[f"b{i}"] = _w(rng, k, n), _w(rng, n, scale=0.1)
        nodes += [helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        cur = f"r{i}"
    nodes.append(helper.make_node("Softmax", [cur], ["y"], axis=-1))
    return make_model(nodes, [("x", TensorProto.FLOAT, ["N", 64])], [("y", TensorProto.FLOAT, ["N", 10])], inits)


@pytest.fixture(scope="session")
def transformer_block():
    """One pre-LN transformer encoder block: LayerNorm, 4-head attention (Reshape/Transpose,
    scaled QK^T + mask, Softmax, V), residual, LayerNorm, GELU MLP (Erf form), residual."""
    rng = np.random.default_rng(1)
    d, h, s, f = 32, 4, 8, 64
    dh = d // h
    inits = {"ln1_g": rng.uniform(0.5, 1.5, d).astype(np.float32), "ln1_b": _w(rng, d, scale=0.1),
             "ln2_g": rng.uniform(0.5, 1.5, d).astype(np.float32), "ln2_b": _w(rng, d, scale=0.1),
             "wq": _w(rng, d, d), "wk": _w(rng, d, d), "wv": _w(rng, d, d), "wo": _w(rng, d, d),
             "bq": _w(rng, d, scale=0.1), "w1": _w(rng, d, f), "b1": _w(rng, f, scale=0.1), "w2": _w(rng, f, d),
             "heads": np.array([1, s, h, dh], np.int64), "merge": np.array([1, s, d], np.int64),
             "scale": np.array(1.0 / np.sqrt(dh), np.float32), "sqrt2": np.array(np.sqrt(2.0), np.float32),
             "one": np.array(1.0, np.float32), "half": np.array(0.5, np.float32)}
    N = helper.make_node
    nodes = [
        N("LayerNormalization", ["x", "ln1_g", "ln1_b"], ["ln1"], axis=-1, epsilon=1e-5),
        N("MatMul", ["ln1", "wq"], ["q0"]), N("Add", ["q0", "bq"], ["q1"]),
        N("MatMul", ["ln1", "wk"], ["k0"]), N("MatMul", ["ln1", "wv"], ["v0"]),
        N("Reshape", ["q1", "heads"], ["q2"]), N("Transpose", ["q2"], ["q"], perm=[0, 2, 1, 3]),
        N("Reshape", ["k0", "heads"], ["k2"]), N("Transpose", ["k2"], ["kt"], perm=[0, 2, 3, 1]),
        N("Reshape", ["v0", "heads"], ["v2"]), N("Transpose", ["v2"], ["v"], perm=[0, 2, 1, 3]),
        N("MatMul", ["q", "kt"], ["sc0"]), N("Mul", ["sc0", "scale"], ["sc1"]), N("Add", ["sc1", "mask"], ["sc2"]),
        N("Softmax", ["sc2"], ["p"], axis=-1), N("MatMul", ["p", "v"], ["ctx0"]),
        N("Transpose", ["ctx0"], ["ctx1"], perm=[0, 2, 1, 3]), N("Reshape", ["ctx1", "merge"], ["ctx"]),
        N("MatMul", ["ctx", "wo"], ["att"]), N("Add", ["x", "att"], ["res1"]),
        N("LayerNormalization", ["res1", "ln2_g", "ln2_b"], ["ln2"], axis=-1, epsilon=1e-5),
        N("MatMul", ["ln2", "w1"], ["f0"]), N("Add", ["f0", "b1"], ["f1"]),
        N("Div", ["f1", "sqrt2"], ["g0"]), N("Erf", ["g0"], ["g1"]), N("Add", ["g1", "one"], ["g2"]),
        N("Mul", ["f1", "g2"], ["g3"]), N("Mul", ["g3", "half"], ["g4"]),
        N("MatMul", ["g4", "w2"], ["f2"]), N("Add", ["res1", "f2"], ["y"]),
    ]
    return make_model(nodes, [("x", TensorProto.FLOAT, [1, s, d]), ("mask", TensorProto.FLOAT, [1, 1, 1, s])],
                      [("y", TensorProto.FLOAT, [1, s, d])], inits)
