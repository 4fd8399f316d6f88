"""Data-movement expansions (dcopt/passes/expansions/tensor.py) run three ways -- the reference
executor, the lowered IR on it, and the compiled kernels -- bit-exact (copies) with no op left to a
fallback step: every kernel dtype, negative axes, size-1 and empty dims, every attribute."""

import functools

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import helper

from dcopt.frontends.onnx_import import import_model
from dcopt.ir.executor import run_graph
from dcopt.ir.loops import find_loop_problems, is_loop_node
from dcopt.passes.expand import expand
from dcopt.testing import assert_close
from tests.conftest import make_model
from tests.passes import one_op_model
from tests.passes.one_op_model import elem, sample

DTYPES = ["float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "uint16",
          "uint32", "uint64", "bool"]
I64 = np.int64

#: every run also checks the loop nodes the op expands to (bounds, ranks, single writes)
run_one_op = functools.partial(one_op_model.run_one_op, verify_loops=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def lowered_alone(model, feeds):
    """Expand every op (reshape-likes as copy maps, no folding first) and compare on the reference
    executor bit-exactly: the rules that the compiled pipeline folds or keeps as views."""
    graph = import_model(model)
    ref = run_graph(graph, feeds)
    result = expand(graph)
    assert [n.op for n in graph.nodes if not is_loop_node(n)] == [], result.refusals
    assert [p for n in graph.nodes for p in find_loop_problems(graph, n)] == []
    low = run_graph(graph, feeds)
    for name in graph.outputs:
        assert_close(low[name], ref[name], 0, 0, name)


# ------------------------------------------------------------------------------ permutations

@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_every_dtype(cache, dtype):
    x = sample((2, 3, 4), dtype)
    (y,) = run_one_op(cache, "Transpose", {"x": x}, perm=[2, 0, 1])
    np.testing.assert_array_equal(y, x.transpose(2, 0, 1))


@pytest.mark.parametrize("shape,perm", [((3, 1, 5), None), ((4,), [0]), ((2, 0, 3), [1, 2, 0]),
                                        ((1, 2, 1, 3), [3, 1, 0, 2]), ((), None)])
def test_transpose_shapes(cache, shape, perm):
    attrs = {} if perm is None else {"perm": perm}
    run_one_op(cache, "Transpose", {"x": sample(shape)}, **attrs)


def test_copies_are_bit_exact_on_special_values(cache):
    """NaN (payloads too), infinities, signed zeros and subnormals come through a copy unchanged,
    also in the half types that kernels load and store through float32."""
    x = np.array([[np.nan, -0.0, np.inf], [-np.inf, 1e-45, 0.0]], np.float32)
    (y,) = run_one_op(cache, "Transpose", {"x": x})
    assert y.view(np.uint32).tolist() == x.T.view(np.uint32).tolist()
    bits = np.array([[0x7C01, 0x7E00, 0xFE01], [0x7C00, 0x8000, 0x0001]], np.uint16)
    for half in (np.float16, ml_dtypes.bfloat16):
        (y,) = run_one_op(cache, "Transpose", {"x": bits.view(half)})
        assert y.view(np.uint16).tolist() == bits.T.tolist()


@pytest.mark.parametrize("op,x,params,attrs,dtype", [
    ("Reshape", (2, 3, 4), {"s": np.array([4, 0, -1], I64)}, {}, "float32"),
    ("Reshape", (2, 3, 4), {"s": np.array([0, 12], I64)}, {}, "uint8"),
    ("Reshape", (0, 3), {"s": np.array([3, 0], I64)}, {"allowzero": 1}, "bool"),
    ("Flatten", (2, 3, 4), {}, {"axis": -1}, "int64"),
    ("Flatten", (2, 3, 4), {}, {"axis": 0}, "float16"),
    ("Squeeze", (1, 3, 1, 2), {"a": np.array([-2], I64)}, {}, "bool"),
    ("Squeeze", (1, 3, 1, 2), {}, {}, "float32"),
    ("Unsqueeze", (3, 2), {"a": np.array([-1, 0], I64)}, {}, "uint8"),
])
def test_reshapes_as_copy_maps(cache, op, x, params, attrs, dtype):
    feeds = {"x": sample(x, dtype)}
    run_one_op(cache, op, feeds, params, **attrs)
    outputs = [("y0", elem(dtype), None)]
    node = helper.make_node(op, ["x", *params], ["y0"], **attrs)
    lowered_alone(make_model([node], [("x", elem(dtype), list(x))], outputs, params, opset=18), feeds)


# ------------------------------------------------------------------------------ replication

@pytest.mark.parametrize("x,shape,dtype", [((3, 1), (2, 1, 4), "float32"), ((1,), (3,), "int64"),
                                           ((2, 3), (2, 3), "bool"), ((2, 1), (2, 0), "float16")])
def test_expand(cache, dtype, x, shape):
    run_one_op(cache, "Expand", {"x": sample(x, dtype)}, {"s": np.array(shape, I64)})


@pytest.mark.parametrize("x,repeats,dtype", [((2, 3), (2, 3), "float32"), ((1, 4), (3, 1), "uint16"),
                                             ((2, 3), (0, 2), "bool"), ((5,), (1,), "float32")])
def test_tile(cache, dtype, x, repeats):
    run_one_op(cache, "Tile", {"x": sample(x, dtype)}, {"r": np.array(repeats, I64)})


# ------------------------------------------------------------------------------ slices and splits

@pytest.mark.parametrize("starts,ends,axes,steps,dtype", [
    ([1, -1], [5, 0], [1, 2], [2, -2], "float32"),       # negative step, negative start
    ([-100], [100], [0], [1], "int32"),                    # clamped on both sides
    ([10], [-100], [-1], [-1], "float32"),                 # negative step from past the end to before the start
    ([2], [2], [1], [1], "int32"),                         # empty
    ([0, 0], [-1, 3], None, None, "float32"),              # axes and steps omitted
    ([4], [1], [-2], [-3], "int32"),
])
def test_slice(cache, starts, ends, axes, steps, dtype):
    params = {"s": np.array(starts, I64), "e": np.array(ends, I64)}
    if axes is not None:
        params["a"] = np.array(axes, I64)
    if steps is not None:
        params["t"] = np.array(steps, I64)
    run_one_op(cache, "Slice", {"x": sample((4, 6, 5), dtype)}, params)


def test_slice_attributes_before_opset_10(cache):
    run_one_op(cache, "Slice", {"x": sample((4, 6))}, opset=9, starts=[1, -3], ends=[1000, -1], axes=[0, 1])


@pytest.mark.parametrize("axis,sizes,n_out,attrs,opset,dtype", [
    (0, [2, 3], 2, {}, 18, "float32"),                 # split input
    (-1, [1, 0, 4], 3, {}, 13, "int8"),                # a zero-size part
    (1, None, 3, {}, 13, "float32"),                   # equal parts from the number of outputs
    (1, None, 2, {"num_outputs": 2}, 18, "int8"),      # uneven: the last part is smaller
    (0, None, 2, {"split": [4, 1]}, 11, "bool"),       # split attribute
])
def test_split(cache, axis, sizes, n_out, attrs, opset, dtype):
    x = sample((5, 3, 5), dtype)
    params = {} if sizes is None else {"split": np.array(sizes, I64)}
    ys = run_one_op(cache, "Split", {"x": x}, params, n_out=n_out, opset=opset, axis=axis, **attrs)
    np.testing.assert_array_equal(np.concatenate(ys, axis=axis), x)


@pytest.mark.parametrize("dtype", ["float16", "uint64", "bool", "int8"])
def test_concat_dtypes(cache, dtype):
    a, b = sample((2, 3), dtype, 1), sample((2, 1), dtype, 2)
    (y,) = run_one_op(cache, "Concat", {"a": a, "b": b}, axis=-1)
    np.testing.assert_array_equal(y, np.concatenate([a, b], axis=1))


@pytest.mark.parametrize("shapes,axis", [
    ([(1, 2, 3), (2, 2, 3), (3, 2, 3)], 0),
    ([(2, 1, 3), (2, 0, 3), (2, 2, 3)], 1),   # an empty input
    ([(4,)], 0),
    ([(2, 0), (2, 0)], 1),                    # empty result
    ([(2, 3, 1), (2, 3, 2)], -1),
])
def test_concat_axes_and_empty_inputs(cache, shapes, axis):
    run_one_op(cache, "Concat", {f"x{k}": sample(s, "int64", k) for k, s in enumerate(shapes)}, axis=axis)


def test_concat_keeps_int64_beyond_float_precision(cache):
    a = np.array([2 ** 62 + 1, -(2 ** 63)], np.int64)
    (y,) = run_one_op(cache, "Concat", {"a": a, "b": a[::-1].copy()}, axis=0)
    assert y.tolist() == [2 ** 62 + 1, -(2 ** 63), -(2 ** 63), 2 ** 62 + 1]


# ------------------------------------------------------------------------------ Pad

@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "wrap"])
@pytest.mark.parametrize("pads,axes", [
    ([1, 2, 2, 1], None),
    ([0, 3, 0, 4], None),          # wider than the data: reflect and wrap fold repeatedly
    ([-1, 1, 2, -2], None),        # crops on one side, pads on the other
    ([2, 1], [-1]),                # axes input
])
def test_pad_modes(cache, mode, pads, axes):
    params = {"p": np.array(pads, I64), "v": np.array(2.5, np.float32)}
    if axes is not None:
        params["a"] = np.array(axes, I64)
    run_one_op(cache, "Pad", {"x": sample((4, 3))}, params, mode=mode)


@pytest.mark.parametrize("dtype,value", [("int64", 2 ** 62 + 3), ("uint8", 7), ("bool", True), ("float16", 0.1),
                                         ("float32", np.nan), ("float64", -np.inf), ("uint64", 2 ** 64 - 2)])
def test_pad_value_in_every_dtype(cache, dtype, value):
    params = {"p": np.array([1, 0, 0, 2], I64), "v": np.array(value, dtype)}
    (y,) = run_one_op(cache, "Pad", {"x": sample((2, 3), dtype)}, params)
    assert_close(y[0], np.full(5, value, dtype), 0, 0, "pad value")


def test_pad_attributes_before_opset_11_and_single_element_reflect(cache):
    run_one_op(cache, "Pad", {"x": sample((2, 3))}, opset=10, pads=[0, 1, 0, 2], value=-1.5)
    run_one_op(cache, "Pad", {"x": sample((3, 1))}, {"p": np.array([0, 2, 0, 3], I64)}, mode="reflect")


def test_pad_of_an_empty_axis_is_the_fill_value(cache):
    run_one_op(cache, "Pad", {"x": sample((2, 0))}, {"p": np.array([0, 1, 0, 2], I64)})


@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_pad_value_fed_at_run_time(cache, dtype):
    """The fill value sizes nothing, so it stays an input (read by the kernel) and may change."""
    x, v = sample((2, 3), dtype), np.array(-7, dtype)
    (y,) = run_one_op(cache, "Pad", {"x": x, "v": v}, {"p": np.array([1, 0, 0, 1], I64)}, order=["x", "p", "v"])
    assert y[0].tolist() == [-7] * 4
    run_one_op(cache, "Pad", {"x": sample((2, 0), dtype), "v": v}, {"p": np.array([0, 1, 0, 1], I64)},
               order=["x", "p", "v"])


# ------------------------------------------------------------------------------ block moves

@pytest.mark.parametrize("mode,dtype", [("DCR", "float32"), ("CRD", "int16")])
def test_depth_to_space_and_back(cache, mode, dtype):
    x = sample((2, 8, 3, 2), dtype)
    (y,) = run_one_op(cache, "DepthToSpace", {"x": x}, blocksize=2, mode=mode)
    assert y.shape == (2, 2, 6, 4)
    (z,) = run_one_op(cache, "SpaceToDepth", {"x": y}, blocksize=2)
    if mode == "DCR":
        np.testing.assert_array_equal(z, x)


def test_space_to_depth_block_3(cache):
    run_one_op(cache, "SpaceToDepth", {"x": sample((1, 2, 6, 3))}, blocksize=3)


@pytest.mark.parametrize("batch_axis,time_axis", [(1, 0), (0, 1)])
def test_reverse_sequence(cache, batch_axis, time_axis):
    shape = [5, 4] if time_axis == 0 else [4, 5]
    lens = np.array([5, 1, 0, 3], I64)
    run_one_op(cache, "ReverseSequence", {"x": sample(shape + [2], "float32"), "lens": lens},
               batch_axis=batch_axis, time_axis=time_axis)


# ------------------------------------------------------------------------------ generated values

@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k,dtype", [(None, "float32"), (2, "int64"), (-1, "bool"), (-7, "float32"), (9, "uint8")])
def test_trilu(cache, upper, k, dtype):
    params = {} if k is None else {"k": np.array(k, I64)}
    run_one_op(cache, "Trilu", {"x": sample((2, 3, 5), dtype)}, params, upper=upper)


@pytest.mark.parametrize("k", [-1, 4])
def test_trilu_k_fed_at_run_time(cache, k):
    run_one_op(cache, "Trilu", {"x": sample((2, 3, 4)), "k": np.array(k, I64)}, upper=0)
    run_one_op(cache, "Trilu", {"x": sample((4, 3), "uint8"), "k": np.array(k, I64)})


@pytest.mark.parametrize("shape,k,dtype", [((3, 4), 0, None), ((4, 3), 1, onnx.TensorProto.BOOL),
                                           ((3, 3), -2, onnx.TensorProto.INT32), ((2, 5), 7, onnx.TensorProto.DOUBLE),
                                           ((0, 3), 0, None)])
def test_eye_like(cache, shape, k, dtype):
    attrs = {"k": k} if dtype is None else {"k": k, "dtype": dtype}
    out = [np.float32 if dtype is None else helper.tensor_dtype_to_np_dtype(dtype)]
    run_one_op(cache, "EyeLike", {"x": sample(shape)}, out_dtypes=out, **attrs)


@pytest.mark.parametrize("start,limit,delta", [(0, 10, 3), (10, -3, -4), (5, 5, 1), (1.5, 4.0, 0.3),
                                               (-1.0, -2.0, -0.25)])
def test_range_from_constants(start, limit, delta):
    dtype = np.float32 if isinstance(start, float) else np.int32
    params = {n: np.array(v, dtype) for n, v in zip("sld", (start, limit, delta))}
    node = helper.make_node("Range", list("sld"), ["y0"])
    lowered_alone(make_model([node], [], [("y0", elem(dtype), None)], params, opset=18), {})


@pytest.mark.parametrize("value", [None, np.array([7], np.int64), np.array([-0.5], np.float16),
                                   np.array([True]), np.array([2 ** 64 - 1], np.uint64)])
def test_constant_of_shape_from_constants(value):
    attrs = {} if value is None else {"value": onnx.numpy_helper.from_array(value)}
    dtype = np.float32 if value is None else value.dtype
    node = helper.make_node("ConstantOfShape", ["s"], ["y0"], **attrs)
    model = make_model([node], [], [("y0", elem(dtype), None)], {"s": np.array([2, 3], I64)}, opset=18)
    lowered_alone(model, {})
