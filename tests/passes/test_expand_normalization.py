"""Normalizations (dcopt/passes/expansions/normalization.py) run three ways: the reference
executor, the lowered IR on it, and the compiled kernels -- agreeing at fp32 rtol 1e-4 on ordinary
and edge inputs (x100 magnitudes, constant rows, NaN and infinities), with no fallback step; and
the maps of a LayerNorm or a leading-axes normalization form one kernel with scalar statistics.
"""

import numpy as np
import pytest
from onnx import helper

from dcopt import driver
from dcopt.frontends.onnx_import import import_model
from dcopt.testing import run_three_ways
from tests.conftest import make_model

RTOL = {"float16": 2e-3, "float32": 1e-4, "float64": 1e-9}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def elem(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def one_op(op, feeds, outputs, attrs=None, initializers=None, opset=18, node_outputs=None):
    """A one-node model; ``outputs``: name -> (dtype, shape) (``node_outputs``: the node's, with
    unwired ones ``""``)."""
    node = helper.make_node(op, [*feeds, *(initializers or {})], node_outputs or list(outputs), **(attrs or {}))
    return make_model([node], [(k, elem(v.dtype), list(v.shape)) for k, v in feeds.items()],
                      [(k, elem(d), list(s)) for k, (d, s) in outputs.items()], initializers or {}, opset=opset)


def run(cache, model, feeds, dtype="float32", rtol=None):
    rtol = rtol or RTOL[str(np.dtype(dtype))]
    ref, _, got, manifest = run_three_ways(model, feeds, rtol=rtol, atol=rtol * 1e-2, cache_dir=cache)
    assert "fallback" not in manifest["steps"], manifest
    return ref, got


def data(shape, dtype="float32", seed=0, edges=True):
    """Normals x100; with ``edges`` one constant row, and NaN, +inf, -inf in three other rows
    (each of the first four rows of the last axis)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 100
    if edges:
        rows = x.reshape(-1, shape[-1])
        rows[0] = 3.0
        rows[1, 0], rows[2, 1], rows[3, 2] = np.nan, np.inf, -np.inf
    return x.astype(dtype)


def param(shape, dtype="float32", seed=1):
    return np.random.default_rng(seed).uniform(0.5, 1.5, shape).astype(dtype)


def lowered_kernels(model):
    """The lowered graph's kernels (not the Reshape views collapse-dims puts around them)."""
    from dcopt.passes.kernels import is_kernel

    return [n for n in driver.lower(import_model(model), bindings={}).graph.nodes if is_kernel(n)]


# ------------------------------------------------------------------------------ LayerNorm, RMSNorm

@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("axis,bias,stats", [(-1, True, True), (1, False, False), (0, True, True)])
def test_layer_normalization(cache, dtype, axis, bias, stats):
    x = data((4, 3, 8), dtype)
    pshape = x.shape[axis % 3:]
    inits = {"s": param(pshape, dtype), **({"b": param(pshape, dtype, seed=2)} if bias else {})}
    outs = {"y": (dtype, x.shape)}
    if stats:
        stat = tuple(d if k < axis % 3 else 1 for k, d in enumerate(x.shape))
        outs.update(mean=("float32", stat), inv=("float32", stat))
    model = one_op("LayerNormalization", {"x": x}, outs, {"axis": axis, "epsilon": 1e-3}, inits, opset=17)
    run(cache, model, {"x": x}, dtype, rtol=2e-3 if dtype == "float16" else 1e-4)  # statistics in float32


def test_layer_normalization_stash_type_double(cache):
    x = data((4, 16), edges=False) + 1e4  # a large offset: float32 statistics would lose digits
    model = one_op("LayerNormalization", {"x": x}, {"y": ("float32", x.shape)}, {"stash_type": 11}, {"s": param(16)},
                   opset=17)
    run(cache, model, {"x": x})


def test_layer_normalization_is_one_kernel_with_scalar_statistics():
    x = data((8, 16, 64), edges=False)
    model = one_op("LayerNormalization", {"x": x}, {"y": ("float32", x.shape)}, {}, {"s": param(64), "b": param(64)},
                   opset=17)
    (kernel,) = lowered_kernels(model)
    assert kernel.attrs["outer"] == 2 and len(kernel.attrs["locals"]) == 4


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_rms_normalization(cache, dtype, axis):
    x = data((4, 3, 8), dtype)
    model = one_op("RMSNormalization", {"x": x}, {"y": (dtype, x.shape)}, {"axis": axis, "epsilon": 1e-4},
                   {"s": param(x.shape[axis % 3:], dtype)}, opset=23)
    run(cache, model, {"x": x}, dtype)


# ------------------------------------------------------------------------------ per-channel statistics

@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_instance_normalization(cache, dtype):
    x = data((2, 3, 4, 5), dtype)
    model = one_op("InstanceNormalization", {"x": x}, {"y": (dtype, x.shape)}, {"epsilon": 1e-2},
                   {"s": param(3, dtype), "b": param(3, dtype, seed=2)})
    run(cache, model, {"x": x}, dtype)


@pytest.mark.parametrize("opset", [18, 21])
@pytest.mark.parametrize("groups", [1, 2, 6])
def test_group_normalization(cache, opset, groups):
    """Opset 18 (scale and bias per group) is deprecated, so onnx.checker refuses such a model:
    the opset-21 model is imported and its graph relabelled 18 with per-group parameters."""
    x = data((2, 6, 3, 4))
    inits = {"s": param(6), "b": param(6, seed=2)}
    model = one_op("GroupNormalization", {"x": x}, {"y": ("float32", x.shape)}, {"num_groups": groups, "epsilon": 1e-3},
                   inits, opset=21)
    if opset == 18:
        from dcopt.ir.types import TensorType

        model = import_model(model)
        model.opset[""] = 18
        for name in inits:
            model.containers[name].data = param(groups, seed=3 if name == "s" else 4)
            model.containers[name].type = TensorType("float32", (groups,))
    run(cache, model, {"x": x})


@pytest.mark.parametrize("axes", [None, [2, 3], [1], [0, 1, 2, 3]])
def test_mean_variance_normalization(cache, axes):
    x = data((3, 4, 2, 5), edges=False) / 10  # E[x^2] - E[x]^2 cancels: keep magnitudes moderate
    x[0, 0] = 2.0  # a constant block: std 0, divided by 1e-9
    model = one_op("MeanVarianceNormalization", {"x": x}, {"y": ("float32", x.shape)},
                   {"axes": axes} if axes is not None else {}, opset=13)
    run(cache, model, {"x": x})


def test_statistics_over_leading_axes_are_one_kernel():
    x = data((3, 4, 2, 5), edges=False)
    model = one_op("MeanVarianceNormalization", {"x": x}, {"y": ("float32", x.shape)}, opset=13)
    (kernel,) = lowered_kernels(model)
    assert kernel.attrs["outer"] == 1 and [n.attrs["params"][0] for n in kernel.attrs["body"].nodes] == ["i1"] * 3
    # the statistics' h, w loops are one loop over the image (collapse-dims)
    assert [len(n.attrs["params"]) for n in kernel.attrs["body"].nodes] == [3, 1, 3]


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_lp_normalization(cache, p, axis, dtype):
    x = data((4, 6), dtype)
    x[:, 4] = 0.0  # a zero column: 0 where the norm along axis 0 is 0
    x[2] = 0.0
    model = one_op("LpNormalization", {"x": x}, {"y": (dtype, x.shape)}, {"p": p, "axis": axis})
    run(cache, model, {"x": x}, dtype)


# ------------------------------------------------------------------------------ BatchNorm, LRN

@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_batch_normalization_inference(cache, dtype):
    x = data((2, 3, 4, 5), dtype)
    inits = {"s": param(3, dtype), "b": param(3, dtype, 2), "m": param(3, dtype, 3), "v": param(3, dtype, 4)}
    run(cache, one_op("BatchNormalization", {"x": x}, {"y": (dtype, x.shape)}, {"epsilon": 1e-3}, inits), {"x": x},
        dtype)


@pytest.mark.parametrize("outputs", [1, 3])
def test_batch_normalization_training(cache, outputs):
    x = data((2, 3, 4, 5), edges=False)
    inits = {"s": param(3), "b": param(3, seed=2), "m": param(3, seed=3), "v": param(3, seed=4)}
    outs = {"y": ("float32", x.shape), "rm": ("float32", (3,)), "rv": ("float32", (3,))}
    model = one_op("BatchNormalization", {"x": x}, dict(list(outs.items())[:outputs]),
                   {"epsilon": 1e-3, "momentum": 0.8, "training_mode": 1}, inits, opset=15,
                   node_outputs=["y", "rm", "rv"][:outputs] + [""] * (3 - outputs))
    _, got = run(cache, model, {"x": x})
    if outputs == 3:
        np.testing.assert_allclose(got["rm"], inits["m"] * 0.8 + x.mean(axis=(0, 2, 3)) * 0.2, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("size", [3, 4, 19])  # 19: wider than LRN_UNROLL, the wcr-window form
def test_local_response_normalization(cache, dtype, size):
    x = data((2, 5 if size < 19 else 21, 3, 4), dtype, edges=False)
    model = one_op("LRN", {"x": x}, {"y": (dtype, x.shape)}, {"size": size, "alpha": 0.01, "beta": 0.6, "bias": 2.0})
    run(cache, model, {"x": x}, dtype)


@pytest.mark.parametrize("beta, bias", [(0.0, 0.0), (0.75, 0.0), (0.75, 1.0), (0.5, 1.0), (1.0, 0.0), (0.6, 0.0)])
def test_local_response_normalization_at_the_ends(cache, beta, bias):
    """q ** beta as exp(beta * log(q)): q = 0 (zeros with bias 0) gives inf or NaN as pow does,
    beta = 0 gives 1 even at q = 0; NaN and infinities pass through."""
    x = np.array([[[[0.0, 1.0, -2.0, np.nan]], [[0.0, 3.0, np.inf, 1.0]], [[0.0, -np.inf, 5.0, 1e30]]]], np.float32)
    model = one_op("LRN", {"x": x}, {"y": ("float32", x.shape)}, {"size": 3, "alpha": 0.5, "beta": beta, "bias": bias})
    run(cache, model, {"x": x}, "float32")
