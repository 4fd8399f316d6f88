"""Dense layers as generated kernels (:mod:`dcopt.backends.cpu.matvec` at batch 1, the direct
conv kernel's GEMM form above it): MatMul + Add +
Relu and Gemm (transB, alpha, beta, bias) collapse into one step each and match the reference,
for widths that leave partial column blocks and partial vectors, on 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from dcopt.backends.cpu import directconv, parallel
from tests.backends.conftest import assert_matches_reference
from tests.conftest import make_model

pytestmark = pytest.mark.skipif(not directconv.supported(), reason="generated kernels need AVX-512")


@pytest.fixture(autouse=True)
def _one_thread_after():
    yield
    parallel.set_threads(1)


def _steps(sess):
    return [s.kind for s in sess._current.program.steps if s.kind != "view"]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("k, n", [(1, 1), (37, 300), (256, 128), (129, 1000)])
def test_matmul_add_relu_is_one_step(threads, k, n, tmp_path):
    import dcopt

    rng = np.random.default_rng(k + n)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["b", "m"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    model = make_model(nodes, [("x", TensorProto.FLOAT, [1, k])], [("y", TensorProto.FLOAT, [1, n])],
                       {"w": rng.standard_normal((k, n)).astype(np.float32), "b": rng.standard_normal(n).astype(np.float32)})
    sess = dcopt.compile(model, threads=threads, cache_dir=tmp_path)
    assert _steps(sess) == ["matvec"]
    assert_matches_reference(model, sess, {"x": rng.standard_normal((1, k)).astype(np.float32)})


@pytest.mark.parametrize("threads", [1, 2])
def test_gemm_with_transb_alpha_beta(threads, tmp_path):
    import dcopt

    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Tanh", ["g"], ["y"])]
    model = make_model(nodes, [("x", TensorProto.FLOAT, [1, 70])], [("y", TensorProto.FLOAT, [1, 150])],
                       {"w": rng.standard_normal((150, 70)).astype(np.float32),
                        "c": rng.standard_normal(150).astype(np.float32)})
    sess = dcopt.compile(model, threads=threads, cache_dir=tmp_path)
    assert _steps(sess) == ["matvec", "kernel"]  # Tanh is not fused into the kernel
    assert_matches_reference(model, sess, {"x": rng.standard_normal((1, 70)).astype(np.float32)})


def test_shared_bias_reader_is_not_absorbed(tmp_path):
    """The product also feeds another node: the Add stays a separate elementwise step."""
    import dcopt

    rng = np.random.default_rng(6)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"]),
             helper.make_node("Mul", ["m", "m"], ["z"])]
    model = make_model(nodes, [("x", TensorProto.FLOAT, [1, 16])],
                       [("y", TensorProto.FLOAT, [1, 20]), ("z", TensorProto.FLOAT, [1, 20])],
                       {"w": rng.standard_normal((16, 20)).astype(np.float32), "b": rng.standard_normal(20).astype(np.float32)})
    sess = dcopt.compile(model, cache_dir=tmp_path)
    assert _steps(sess)[0] == "matvec" and "kernel" in _steps(sess)
    assert_matches_reference(model, sess, {"x": rng.standard_normal((1, 16)).astype(np.float32)})


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows, k, n", [((2, 5), 3, 17), ((1, 37), 64, 100), ((128,), 256, 256)])
def test_matmul_rows_as_generated_gemm(threads, rows, k, n, tmp_path):
    """More than one row: the conv kernel's row-major GEMM form, bias and ReLU fused."""
    import dcopt

    rng = np.random.default_rng(k + n)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    model = make_model(nodes, [("x", TensorProto.FLOAT, [*rows, k])], [("y", TensorProto.FLOAT, [*rows, n])],
                       {"w": rng.standard_normal((k, n)).astype(np.float32), "b": rng.standard_normal(n).astype(np.float32)})
    sess = dcopt.compile(model, threads=threads, cache_dir=tmp_path)
    assert _steps(sess) == ["gemm"]
    assert_matches_reference(model, sess, {"x": rng.standard_normal((*rows, k)).astype(np.float32)})
