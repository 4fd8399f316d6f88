"""Indexing expansions (dcopt/passes/expansions/indexing.py) run three ways -- the reference
executor, the lowered IR on it, and the compiled kernels -- exactly (gathers and scatters are
copies; indices are integers) with no op left to a fallback step: negative and duplicate indices,
every reduction, every axis, NaN where the reference gives it a place."""

import functools

import numpy as np
import pytest
from onnx import TensorProto, helper

from dcopt.frontends.onnx_import import import_model
from dcopt.passes.expand import expand
from dcopt.passes.expansions.indexing import TOPK_MAX_COMPARISONS
from tests.conftest import make_model
from tests.passes import one_op_model
from tests.passes.one_op_model import sample

DTYPES = ["float64", "float16", "int8", "uint64", "bool"]
I64 = np.int64

#: every run also checks the loop nodes the op expands to (bounds, ranks, single writes)
run_one_op = functools.partial(one_op_model.run_one_op, verify_loops=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


# ------------------------------------------------------------------------------ gathers

@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_every_dtype(cache, dtype):
    run_one_op(cache, "Gather", {"x": sample((4, 3), dtype), "i": np.array([[3, -1], [0, -4]], I64)})


@pytest.mark.parametrize("shape,indices,axis", [
    ((5, 4, 3), np.array([0, -1, 2, 2], I64), 1),     # repeated and negative indices
    ((5, 4, 3), np.array(-2, I64), -1),                # scalar indices drop the axis
    ((5, 4), np.array([[1], [4]], np.int32), 0),       # int32 indices, rank grows
    ((5, 4), np.zeros((0, 2), I64), 1),                # empty indices
    ((1, 4), np.array([0, 0, -1], I64), 0),
])
def test_gather_axes_and_shapes(cache, shape, indices, axis):
    run_one_op(cache, "Gather", {"x": sample(shape), "i": indices}, axis=axis)


@pytest.mark.parametrize("axis,dtype", [(0, "float32"), (1, "int64"), (-1, "bool")])
def test_gather_elements(cache, axis, dtype):
    data = sample((3, 4), dtype)
    size = data.shape[axis]
    indices = np.random.default_rng(1).integers(-size, size, (2, 4) if axis == 0 else (3, 2))
    run_one_op(cache, "GatherElements", {"x": data, "i": indices.astype(I64)}, axis=axis)


@pytest.mark.parametrize("data,indices,batch_dims", [
    ((2, 2), [[0, 0], [1, 1]], 0),
    ((2, 2), [[1], [0]], 0),
    ((2, 2, 2), [[0, 1], [1, 0]], 0),
    ((2, 2, 2), [[[0, 1]], [[1, 0]]], 0),
    ((2, 2, 2), [[1], [0]], 1),
    ((2, 3, 4), [[[-1, 2]], [[0, -3]]], 1),            # negative coordinates
    ((2, 2, 4), [[[1], [-1]], [[0], [2]]], 2),
])
def test_gather_nd(cache, data, indices, batch_dims):
    run_one_op(cache, "GatherND", {"x": sample(data, "int32"), "i": np.array(indices, I64)}, batch_dims=batch_dims)


# ------------------------------------------------------------------------------ scatters

@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("axis,dtype", [(0, "float32"), (-1, "int32"), (1, "float16")])
def test_scatter_elements_with_duplicates(cache, reduction, axis, dtype):
    data, updates = sample((3, 4), dtype, 1), sample((2, 3), dtype, 2)
    indices = np.array([[0, -1, 2], [0, 3, -1]], I64) if axis else np.array([[0, -1, 2], [0, 1, -1]], I64)
    run_one_op(cache, "ScatterElements", {"x": data, "i": indices, "u": updates}, opset=18,
               axis=axis, reduction=reduction)


def test_scatter_reductions_propagate_nan(cache):
    data = np.array([1.0, np.nan, 3.0, -0.0], np.float32)
    updates = np.array([np.nan, 5.0, 2.0, -np.inf], np.float32)
    indices = np.array([0, 1, 2, 2], I64)
    for reduction in ("max", "min", "add", "mul"):
        run_one_op(cache, "ScatterElements", {"x": data, "i": indices, "u": updates}, reduction=reduction)


def test_scatter_deprecated_alias(cache):
    run_one_op(cache, "Scatter", {"x": sample((3, 3)), "i": np.array([[1, 0, 2], [0, 2, 1]], I64),
                                  "u": sample((2, 3), seed=3)}, opset=10, axis=0)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("data,indices,updates,dtype", [
    ((8,), [[4], [3], [1], [-1]], (4,), "float32"),
    ((4, 4, 4), [[0], [2], [0]], (3, 4, 4), "int64"),          # duplicate slices
    ((4, 4), [[0, 1], [-1, -2], [0, 1]], (3,), "float32"),     # full coordinates, duplicates
])
def test_scatter_nd(cache, reduction, data, indices, updates, dtype):
    run_one_op(cache, "ScatterND", {"x": sample(data, dtype, 1), "i": np.array(indices, I64),
                                    "u": sample(updates, dtype, 2)}, reduction=reduction)


# ------------------------------------------------------------------------------ OneHot

@pytest.mark.parametrize("axis,index_dtype", [(-1, "int64"), (0, "int32"), (1, "float32")])
def test_one_hot(cache, axis, index_dtype):
    indices = np.array([[0, -1, 7], [3, -5, 2.7 if index_dtype == "float32" else 2]], index_dtype)
    values = np.array([-2.0, 4.5], np.float32)
    run_one_op(cache, "OneHot", {"i": indices, "v": values}, {"depth": np.array(5, I64)},
               order=["i", "depth", "v"], out_dtypes=["float32"], axis=axis)


def test_one_hot_values_dtype_and_float_depth(cache):
    run_one_op(cache, "OneHot", {"i": np.array([1, 0, -3], I64), "v": np.array([0, 9], np.int8)},
               {"depth": np.array(3.0, np.float32)}, order=["i", "depth", "v"], out_dtypes=["int8"])


# ------------------------------------------------------------------------------ ArgMax / ArgMin

@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims,last,dtype", [(0, 1, 0, "float32"), (1, 0, 0, "int8"), (-1, 1, 1, "uint64"),
                                                      (0, 0, 1, "float16")])
def test_arg_extremes_with_ties(cache, op, axis, keepdims, last, dtype):
    x = sample((4, 5), dtype) // 8  # few distinct values: ties
    run_one_op(cache, op, {"x": x}, out_dtypes=[I64], axis=axis, keepdims=keepdims, select_last_index=last)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_extremes_find_nan_as_the_reference(cache, op, last):
    x = np.array([[1.0, np.nan, 3.0, np.nan], [np.inf, -np.inf, 0.0, -0.0], [2.0, 2.0, -1.0, -1.0]], np.float32)
    (y,) = run_one_op(cache, op, {"x": x}, out_dtypes=[I64], axis=1, select_last_index=last)
    assert y[0, 0] == (3 if last else 1)


# ------------------------------------------------------------------------------ CumSum / CumProd

@pytest.mark.parametrize("op", ["CumSum", "CumProd"])
@pytest.mark.parametrize("exclusive,reverse,axis,dtype", [(0, 0, 0, "float32"), (1, 0, -1, "int32"),
                                                          (0, 1, -1, "float64"), (1, 1, 0, "uint32")])
@pytest.mark.parametrize("length", [5, 47])  # one map; scans in blocks of 7
def test_cumulative(cache, op, exclusive, reverse, axis, dtype, length):
    """Values whose sums and products are exact in any order (kernels may reassociate floats):
    small integers to add, signed powers of two to multiply (integers wrap in any order alike)."""
    shape = (3, length) if axis else (length, 3)
    rng = np.random.default_rng(length)
    if op == "CumSum":
        x = rng.integers(-20, 20, shape)
    else:
        x = rng.choice([1, -1, 2, 0.5] if dtype.startswith("float") else [1, -1, 2], shape)
    x = (np.abs(x) if dtype[0] == "u" else x).astype(dtype)
    run_one_op(cache, op, {"x": x}, {"axis": np.array(axis, I64)}, opset=26 if op == "CumProd" else 18,
               exclusive=exclusive, reverse=reverse)


def test_cumsum_wraps_integers_and_keeps_nan_and_infinities(cache):
    x = np.array([2 ** 62, 2 ** 62, 2 ** 62, -5], np.int64)
    (y,) = run_one_op(cache, "CumSum", {"x": x}, {"axis": np.array(0, np.int32)})
    assert y.tolist() == np.cumsum(x).tolist()
    x = np.array([[1.0, np.inf, -np.inf, 2.0], [np.nan, 1.0, 2.0, 3.0]], np.float32)
    run_one_op(cache, "CumSum", {"x": x}, {"axis": np.array(1, np.int32)}, reverse=1)


# ------------------------------------------------------------------------------ TopK

@pytest.mark.parametrize("largest", [1, 0])
@pytest.mark.parametrize("axis,k,dtype", [(-1, 3, "float32"), (0, 2, "int64"), (1, 0, "uint8"), (-1, 6, "float16")])
def test_top_k_with_ties(cache, largest, axis, k, dtype):
    x = sample((4, 6), dtype) // (1 if dtype.startswith("float") else 16)
    run_one_op(cache, "TopK", {"x": x}, {"k": np.array([k], I64)}, out_dtypes=[dtype, I64], n_out=2,
               axis=axis, largest=largest)


@pytest.mark.parametrize("largest", [1, 0])
def test_top_k_orders_nan_and_signed_zeros_as_the_reference(cache, largest):
    x = np.array([[0.0, np.nan, -0.0, 1.0, np.nan, -np.inf, np.inf]], np.float32)
    run_one_op(cache, "TopK", {"x": x}, {"k": np.array([5], I64)}, out_dtypes=["float32", I64], n_out=2,
               largest=largest)


def test_top_k_attribute_before_opset_10(cache):
    run_one_op(cache, "TopK", {"x": sample((3, 4))}, out_dtypes=["float32", I64], n_out=2, opset=9, k=2)


def test_top_k_refuses_rows_too_long_to_rank():
    n = int(TOPK_MAX_COMPARISONS ** 0.5) + 1
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"])
    model = make_model([node], [("x", TensorProto.FLOAT, [1, n])],
                       [("v", TensorProto.FLOAT, None), ("i", TensorProto.INT64, None)], {"k": np.array([1], I64)})
    result = expand(import_model(model))
    assert len(result.refusals) == 1 and "comparisons" in result.refusals[0][1]
