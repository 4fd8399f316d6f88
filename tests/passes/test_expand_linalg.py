"""Product expansions (dcopt/passes/expansions/linalg.py) run three ways: the reference executor,
the lowered IR on it, and the compiled kernels -- integer products bit-exact, floats at rtol 1e-4
-- with no op left to a fallback step.

Einsum: transposes, sums, diagonals, broadcast ellipses, implicit outputs, batched matmuls (a
GEMM call in float32), bfloat16/float16. MatMulInteger/QLinearMatMul: scalar, per-row and
per-column zero points and scales, saturation. ConvInteger/QLinearConv: padding (zero points
subtracted first), groups, per-channel weights, bias. Det: pivoting, singular and NaN matrices.
"""

import numpy as np
import pytest

from tests.passes.one_op_model import run_one_op

RTOL = {"float16": 2e-3, "bfloat16": 1e-2, "float32": 1e-4, "float64": 1e-9}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def normal(shape, dtype="float32", seed=0):
    import ml_dtypes  # noqa: F401  (bfloat16)

    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def ints(shape, dtype="uint8", seed=0):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max, shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("equation,shapes", [
    ("ij->ji", [(3, 4)]), ("ij->i", [(3, 4)]), ("...ii->...i", [(2, 3, 5, 5)]), ("i,i", [(5,), (5,)]),
    ("bij,bjk->bik", [(5, 2, 3), (5, 3, 4)]), ("bij,bkj->bik", [(2, 3, 4), (2, 5, 4)]),
    ("...ij,jk", [(2, 1, 3, 4), (4, 6)]), ("abc,cd,de->ae", [(2, 3, 4), (4, 5), (5, 2)])])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_einsum(cache, equation, shapes, dtype):
    inputs = {f"x{k}": normal(s, dtype, seed=k) for k, s in enumerate(shapes)}
    run_one_op(cache, "Einsum", inputs, opset=12, rtol=RTOL[dtype], equation=equation)


@pytest.mark.parametrize("dtype,equation", [("float16", "bij,bjk->bik"), ("bfloat16", "ij->i"), ("int32", "ij,jk->ik")])
def test_einsum_other_dtypes(cache, dtype, equation):
    shapes = [(5, 2, 3), (5, 3, 4)] if equation.startswith("b") else [(3, 4), (4, 2)][:equation.count(",") + 1]
    inputs = {f"x{k}": (ints(s, "int8", k).astype(dtype) if dtype == "int32" else normal(s, dtype, seed=k))
              for k, s in enumerate(shapes)}
    run_one_op(cache, "Einsum", inputs, opset=28, rtol=RTOL.get(dtype, 0), atol=0 if dtype == "int32" else 1e-3,
               equation=equation)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("zero_points", ["none", "scalar", "vector"])
def test_matmul_integer(cache, dtype, zero_points):
    a, b = ints((2, 4, 7), dtype), ints((7, 3), dtype, 1)
    inputs = {"a": a, "b": b}
    if zero_points == "scalar":
        inputs.update(za=ints((), dtype, 2), zb=ints((), dtype, 3))
    elif zero_points == "vector":  # per row of A, per column of B
        inputs.update(za=ints((4,), dtype, 2), zb=ints((3,), dtype, 3))
    run_one_op(cache, "MatMulInteger", inputs, out_dtypes=[np.int32], opset=10, rtol=0, atol=0)


@pytest.mark.parametrize("dtype,scale_dtype", [("uint8", "float32"), ("int8", "float16")])
def test_qlinear_matmul(cache, dtype, scale_dtype):
    """Saturates at both ends: large scales push the rounded values out of range."""
    a, b = ints((2, 3, 5), dtype), ints((2, 5, 4), dtype, 1)
    inputs = {"a": a, "sa": np.array([0.05], scale_dtype), "za": ints((1,), dtype, 2), "b": b,
              "sb": np.array([0.02], scale_dtype), "zb": ints((1,), dtype, 3), "sy": np.array([0.07], scale_dtype),
              "zy": ints((1,), dtype, 4)}
    (y,) = run_one_op(cache, "QLinearMatMul", inputs, out_dtypes=[np.dtype(dtype)], opset=21, rtol=0, atol=0)
    info = np.iinfo(dtype)
    assert (y == info.min).any() or (y == info.max).any()


@pytest.mark.parametrize("pads,group,per_channel", [((0, 0, 0, 0), 1, False), ((1, 2, 1, 0), 1, True),
                                                    ((1, 1, 1, 1), 2, True)])
def test_conv_integer(cache, pads, group, per_channel):
    x, w = ints((2, 4, 5, 6)), ints((4, 4 // group, 3, 2), seed=1)
    inputs = {"x": x, "w": w, "zx": ints((), seed=2), "zw": ints((4,) if per_channel else (), seed=3)}
    run_one_op(cache, "ConvInteger", inputs, out_dtypes=[np.int32], opset=10, rtol=0, atol=0, pads=list(pads),
               group=group, strides=[1, 2])


@pytest.mark.parametrize("bias", [False, True])
def test_qlinear_conv(cache, bias):
    x, w = ints((1, 2, 6, 6), "int8"), ints((3, 2, 3, 3), "int8", 1)
    inputs = {"x": x, "sx": np.array(0.1, np.float32), "zx": ints((), "int8", 2), "w": w,
              "sw": np.array([0.02, 0.05, 0.01], np.float32), "zw": np.zeros(3, np.int8),
              "sy": np.array(0.2, np.float32), "zy": ints((), "int8", 4)}
    if bias:
        inputs["b"] = np.random.default_rng(5).integers(-500, 500, 3).astype(np.int32)
    run_one_op(cache, "QLinearConv", inputs, out_dtypes=[np.int8], opset=10, rtol=0, atol=0, pads=[1, 1, 1, 1])


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_det(cache, dtype):
    x = normal((3, 2, 4, 4), dtype)
    x[0, 0] = 0  # singular
    x[0, 1, :, 0] = 0  # a zero pivot column
    x[1, 0, 2] = x[1, 0, 0]  # equal rows
    x[1, 1, 1, 1] = np.nan
    x[2, 0] = np.eye(4)[[2, 0, 3, 1]] * 3  # needs row swaps
    run_one_op(cache, "Det", {"x": x}, opset=22, rtol=RTOL[dtype] * 10, atol=1e-5 if dtype != "float16" else 1e-2)


def test_det_of_one_matrix(cache):
    (y,) = run_one_op(cache, "Det", {"x": normal((5, 5))}, opset=22)
    assert y.shape == ()


def test_einsum_batched_matmul_is_a_gemm(cache):
    from onnx import TensorProto, helper

    from dcopt.testing import run_three_ways
    from tests.conftest import make_model

    x, y = normal((4, 2, 3)), normal((4, 5, 3), seed=1)
    model = make_model([helper.make_node("Einsum", ["x", "y"], ["z"], equation="bij,bkj->bik")],
                       [("x", TensorProto.FLOAT, [4, 2, 3]), ("y", TensorProto.FLOAT, [4, 5, 3])],
                       [("z", TensorProto.FLOAT, None)], opset=12)
    _, _, _, manifest = run_three_ways(model, {"x": x, "y": y}, cache_dir=cache)
    assert manifest["steps"].get("matmul", 0) + manifest["steps"].get("gemm", 0) == 1, manifest["steps"]
