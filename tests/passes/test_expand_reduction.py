"""Reductions and the softmax family (dcopt/passes/expansions/reduction.py) run three ways: the
reference executor, the lowered IR on it, and the compiled kernels -- agreeing at fp32 rtol 1e-4
(integers exactly) on ordinary and edge inputs, with no op left to a fallback step.

Each reduction case is one model holding all ten Reduce ops over the same input, so a case
compiles one module; failures name the op in the output (``y_ReduceL2``).
"""

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)
import numpy as np
import pytest
from onnx import helper

from dcopt.testing import run_three_ways
from tests.conftest import make_model

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceL1",
              "ReduceL2", "ReduceLogSum", "ReduceLogSumExp"]
RTOL = {"bfloat16": 1e-2, "float16": 2e-3, "float32": 1e-4, "float64": 1e-9}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def elem(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def run(cache, nodes, feeds, outputs, initializers=None, opset=18, rtol=None):
    """Run a model of ``nodes`` three ways; ``outputs``: name -> (dtype, shape)."""
    first = next(iter(feeds.values()))
    rtol = rtol or RTOL.get(str(first.dtype), 1e-4)
    model = make_model(nodes, [(k, elem(v.dtype), list(v.shape)) for k, v in feeds.items()],
                       [(k, elem(d), list(s)) for k, (d, s) in outputs.items()], initializers or {}, opset=opset)
    ref, _, got, manifest = run_three_ways(model, feeds, rtol=rtol, atol=rtol * 1e-2, cache_dir=cache)
    assert "fallback" not in manifest["steps"], manifest
    return ref, got, manifest


def data(shape, dtype="float32", seed=0, edges=True):
    """Normals x100 (integers in +-100), with NaN, +inf and -inf planted in separate rows."""
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100), shape).astype(dtype)
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    if edges and x.size >= 24:
        flat = x.reshape(-1)
        flat[1], flat[-2], flat[x.size // 2] = np.nan, np.inf, -np.inf
    return x


def reduced_shape(shape, axes, keepdims, noop=False):
    if not axes and noop:
        return tuple(shape)
    axes = {a % len(shape) for a in axes} if axes else set(range(len(shape)))
    return tuple(1 if a in axes else d for a, d in enumerate(shape) if keepdims or a not in axes)


def run_reductions(cache, x, axes, keepdims, ops=REDUCE_OPS, opset=18, noop=0):
    """All ``ops`` over ``x``: axes as a constant input (opset 18, ReduceSum from 13) or as an
    attribute (older opsets)."""
    nodes, inits = [], {}
    for op in ops:
        attrs = {"keepdims": keepdims, **({"noop_with_empty_axes": noop} if opset >= 18 else {})}
        as_input = axes is not None and opset >= (13 if op == "ReduceSum" else 18)
        if as_input:
            inits["axes"] = np.array(axes, np.int64)
        elif axes is not None:
            attrs["axes"] = list(axes)
        nodes.append(helper.make_node(op, ["x", "axes"] if as_input else ["x"], [f"y_{op}"], **attrs))
    shape = reduced_shape(x.shape, axes, keepdims, noop)
    return run(cache, nodes, {"x": x}, {f"y_{op}": (x.dtype, shape) for op in ops}, inits, opset)


@pytest.mark.parametrize("axes,keepdims", [([2], 1), ([1], 0), ([0, 2], 1), ([-1, -3], 0), ([0], 1)])
def test_reductions_float32_with_edge_values(cache, axes, keepdims):
    run_reductions(cache, data((4, 6, 5)), axes, keepdims)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_reductions_accumulate_like_the_reference(cache, dtype):
    """Half types sum in float32 and round once (a float16 accumulator would be off by far more
    than rtol 2e-3 over 200 terms)."""
    x = data((3, 200), dtype, edges=False) / 100 + 1
    run_reductions(cache, x, [1], 1)
    run_reductions(cache, data((4, 6, 5), dtype), [0, 2], 0)


@pytest.mark.parametrize("dtype", ["int32", "int64", "uint32", "uint64"])
def test_reductions_integers_are_exact(cache, dtype):
    x = data((4, 6, 5), dtype)
    # unsigned: x - max wraps around, exp gives inf, and inf -> uint is implementation-defined
    ops = [op for op in REDUCE_OPS if op != "ReduceLogSumExp"] if dtype.startswith("u") else REDUCE_OPS
    run_reductions(cache, np.abs(x) if dtype.startswith("u") else x, [1], 1, ops=ops)


@pytest.mark.parametrize("dtype", ["bool", "int8", "uint8"])
def test_max_min_of_narrow_types(cache, dtype):
    run_reductions(cache, data((4, 6, 5), dtype), [0, 2], 1, ops=["ReduceMax", "ReduceMin"], opset=20)


def test_all_axes_keepdims_and_attribute_axes_of_old_opsets(cache):
    x = data((4, 6, 5))
    run_reductions(cache, x, None, 1)
    run_reductions(cache, x, [0, 2], 0, opset=13)  # axes attribute (ReduceSum takes an input from 13 on)
    run_reductions(cache, x, [1], 1, ops=[op for op in REDUCE_OPS if op != "ReduceSum"], opset=11)


def test_full_reduction_to_a_scalar(cache):
    run_reductions(cache, data((4, 6, 5)), None, 0)


def test_empty_axes_with_noop_apply_the_terms_elementwise(cache):
    x = data((4, 6, 5))
    _, got, _ = run_reductions(cache, x, [], 1, noop=1)
    np.testing.assert_allclose(got["y_ReduceSumSquare"], x * x, rtol=1e-6)


def test_reductions_over_an_empty_set_give_the_identities(cache):
    x = np.zeros((3, 0, 4), np.float32)
    _, got, _ = run_reductions(cache, x, [1], 0)
    assert got["y_ReduceSum"].shape == (3, 4) and (got["y_ReduceProd"] == 1).all()
    assert (got["y_ReduceMax"] == -np.inf).all() and (got["y_ReduceLogSumExp"] == -np.inf).all()
    run_reductions(cache, x, [0], 1)  # a kept axis of size 0: an empty output


def test_log_sum_exp_is_stable_and_passes_infinities(cache):
    x = np.array([[1000.0, 1000.0, -5.0], [-np.inf, -np.inf, -np.inf], [np.inf, 1.0, 2.0], [np.nan, 0.0, 1.0],
                  [-1e30, 3.0, -np.inf]], np.float32)
    _, got, _ = run_reductions(cache, x, [1], 0, ops=["ReduceLogSumExp"])
    np.testing.assert_allclose(got["y_ReduceLogSumExp"][:3], [1000.0 + np.log(2.0), -np.inf, np.inf], rtol=1e-6)


@pytest.mark.parametrize("axes,params,outer", [([0, 2], ("i1", "i0", "i2"), 1), ([1], ("i0", "i1", "i2"), 1)])
def test_reduction_is_one_map_with_the_contiguous_axis_innermost(axes, params, outer):
    """Last axis reduced: kept axes outside, the row innermost (a register sum). Last axis kept:
    it stays innermost and the sums are updated in place a vector at a time."""
    from dcopt import driver
    from dcopt.frontends.onnx_import import import_model

    model = make_model([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
                       [("x", elem("float32"), [4, 6, 5])],
                       [("y", elem("float32"), list(reduced_shape((4, 6, 5), axes, 1)))],
                       {"axes": np.array(axes, np.int64)}, opset=18)
    (kernel,) = driver.lower(import_model(model), bindings={}).graph.nodes
    (reduce_map,) = kernel.attrs["body"].nodes
    assert reduce_map.attrs["params"] == params and kernel.attrs["outer"] == outer


# ------------------------------------------------------------------------------ softmax family

SOFTMAX_ROWS = np.array([[1.0, 2.0, 3.0, 4.0], [1000.0, -1000.0, 0.0, 999.0], [np.inf, 1.0, 2.0, 3.0],
                         [-np.inf, -np.inf, -np.inf, -np.inf], [np.nan, 1.0, 2.0, 3.0], [5.0, 5.0, 1.0, 5.0]],
                        np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("opset,axis", [(13, -1), (13, 0), (11, 1), (11, 0)])
def test_softmax_family(cache, dtype, opset, axis):
    x = np.concatenate([SOFTMAX_ROWS, data((6, 4), seed=1, edges=False) / 10]).reshape(3, 4, 4).astype(dtype)
    nodes = [helper.make_node(op, ["x"], [f"y_{op}"], axis=axis) for op in ("Softmax", "LogSoftmax", "Hardmax")]
    _, got, _ = run(cache, nodes, {"x": x}, {f"y_{op}": (x.dtype, x.shape) for op in
                                               ("Softmax", "LogSoftmax", "Hardmax")}, opset=opset)
    if (opset, axis, dtype) == (13, -1, "float32"):  # rows of the reference semantics, spelled out
        soft = got["y_Softmax"].reshape(-1, 4)
        np.testing.assert_array_equal(soft[2], [np.nan, 0, 0, 0])
        assert np.isnan(soft[3]).all() and np.isnan(soft[4]).all()
        np.testing.assert_array_equal(got["y_Hardmax"].reshape(-1, 4)[[4, 5]], [[1, 0, 0, 0], [1, 0, 0, 0]])


def test_softmax_is_one_kernel_with_its_statistics_in_registers():
    from dcopt import driver
    from dcopt.frontends.onnx_import import import_model

    model = make_model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [("x", elem("float32"), [8, 16, 32])],
                       [("y", elem("float32"), [8, 16, 32])], opset=13)
    (kernel,) = driver.lower(import_model(model), bindings={}).graph.nodes
    assert kernel.attrs["outer"] == 2 and len(kernel.attrs["body"].nodes) == 3
    assert len(kernel.attrs["locals"]) == 2 and all("max" in n or "sum" in n for n in kernel.attrs["locals"])
