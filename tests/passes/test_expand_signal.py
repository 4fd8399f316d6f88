"""Signal-processing expansions (dcopt/passes/expansions/signal.py) run three ways: the reference
executor, the lowered IR on it, and the compiled kernels, with no op left to a fallback step.

The maps sum the direct transform in float64 while the reference calls numpy's FFT in the
input's precision, so float32 results agree to float32 rounding of the largest magnitude
(atol scaled to it), not elementwise on bins that are zero up to rounding.
"""

import numpy as np
import pytest
from onnx import TensorProto, helper

from dcopt.testing import run_three_ways
from tests.conftest import make_model
from tests.passes.one_op_model import assert_loops_verify, elem


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def run(cache, op, inputs: dict, params: dict, *, opset=20, atol=1e-4, pipeline="O3", **attrs):
    """``op`` on graph inputs then initializers (in that order; None omits an optional input)."""
    values = {**inputs, **params}
    order = [n if values[n] is not None else "" for n in values]
    while order and order[-1] == "":
        order.pop()
    inputs = {k: v for k, v in inputs.items() if v is not None}
    params = {k: v for k, v in params.items() if v is not None}
    node = helper.make_node(op, order, ["y"], **attrs)
    out_type = elem(next(iter(inputs.values())).dtype) if inputs else TensorProto.FLOAT
    model = make_model([node], [(k, elem(v.dtype), list(v.shape)) for k, v in inputs.items()],
                       [("y", attrs.get("output_datatype", out_type), None)], params,
                       opset=opset)
    _, _, got, manifest = run_three_ways(model, inputs, rtol=1e-4, atol=atol, cache_dir=cache, pipeline=pipeline)
    assert "fallback" not in manifest["steps"], manifest.get("not_native")
    assert_loops_verify(model)
    return got["y"], manifest


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_windows(cache, op, periodic):
    """O0: with a constant size the whole op would fold to a constant before expansion."""
    y, manifest = run(cache, op, {}, {"n": np.array(9, np.int32)}, opset=17, pipeline="O0", periodic=periodic,
                      output_datatype=TensorProto.DOUBLE, atol=1e-12)
    assert manifest["steps"] == {"kernel": 1} and y.shape == (9,)


def signal(shape, complex_=False, seed=0):
    x = np.random.default_rng(seed).standard_normal((*shape, 2 if complex_ else 1)).astype(np.float32)
    return x


@pytest.mark.parametrize("axis,inverse,onesided,length,complex_", [
    (1, 0, 0, None, False), (2, 0, 1, None, False), (1, 1, 0, 6, True), (-2, 0, 0, 13, True),
    (1, 1, 1, None, True), (2, 1, 1, 9, True), (1, 0, 1, 7, False)])
def test_dft(cache, axis, inverse, onesided, length, complex_):
    x = signal((2, 8, 5), complex_)
    params = {"length": None if length is None else np.array(length, np.int64), "axis": np.array(axis, np.int64)}
    y, _ = run(cache, "DFT", {"x": x}, params, inverse=inverse, onesided=onesided)
    n = length or (2 * (x.shape[axis] - 1) if inverse and onesided else x.shape[axis])
    assert y.shape[axis] == (n // 2 + 1 if onesided and not inverse else n)


def test_dft_opset19_axis_attribute(cache):
    run(cache, "DFT", {"x": signal((3, 6), True)}, {}, opset=19, axis=1)


@pytest.mark.parametrize("window,complex_", [(True, False), (False, True)])
def test_stft(cache, window, complex_):
    x = signal((2, 40), complex_)
    params = {"step": np.array(6, np.int64), "window": np.hanning(10).astype(np.float32) if window else None,
              "length": None if window else np.array(10, np.int64)}
    y, _ = run(cache, "STFT", {"x": x}, params, opset=17, onesided=0 if complex_ else 1)
    assert y.shape == (2, 6, 10 if complex_ else 6, 2)


@pytest.mark.parametrize("low,high", [(0.0, 4096.0), (100.0, 3000.0)])
def test_mel_weight_matrix(cache, low, high):
    """The edge frequencies stay run-time inputs; bin counts and rate are constants."""
    inputs = {"low": np.array(low, np.float32), "high": np.array(high, np.float32)}
    params = {"bins": np.array(8, np.int32), "dft": np.array(32, np.int32), "rate": np.array(8192, np.int32)}
    order = {"bins": params["bins"], "dft": params["dft"], "rate": params["rate"], **inputs}
    node = helper.make_node("MelWeightMatrix", list(order), ["y"])
    model = make_model([node], [(k, TensorProto.FLOAT, []) for k in inputs], [("y", TensorProto.FLOAT, None)], params,
                       opset=17)
    _, _, got, manifest = run_three_ways(model, inputs, rtol=1e-6, atol=0.0, cache_dir=cache)
    assert "fallback" not in manifest["steps"] and got["y"].shape == (17, 8) and got["y"].max() == 1.0
