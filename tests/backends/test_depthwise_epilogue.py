"""Depthwise convs run as the ``depthwise`` routine, which adds the bias and applies the clamp
(ReLU, ReLU6, Clip) as it stores: MobileNet's conv -> bias -> ReLU6 is one step, not a conv and
a map. Every kernel path (3x3 stride 1 and 2, 5x5 stride 1, generic 5x5 stride 2 and 7x7,
row-wise stride 3) through
dcopt.compile against onnxruntime, with large magnitudes, NaN and +-Inf in the input."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import dcopt
from dcopt.testing import run_onnxruntime

F = TensorProto.FLOAT


def _model(k, stride, pads, after):
    rng = np.random.default_rng(k * 10 + stride)
    c = 24
    inits = [numpy_helper.from_array((rng.standard_normal((c, 1, k, k)) / k).astype(np.float32), "w"),
             numpy_helper.from_array((rng.standard_normal(c) * 10).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=c, kernel_shape=[k, k], strides=[stride] * 2,
                              pads=list(pads))]
    if after == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    elif after == "none":
        nodes[0].output[0] = "y"
    else:
        lo, hi = after
        inits += [numpy_helper.from_array(np.asarray(lo, np.float32), "lo"),
                  numpy_helper.from_array(np.asarray(hi, np.float32), "hi")]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    graph = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", F, [1, c, 17, 19])],
                              [helper.make_tensor_value_info("y", F, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("k,stride,pads", [(3, 1, (1, 1, 1, 1)), (3, 2, (0, 0, 1, 1)), (5, 1, (2, 2, 2, 2)),
                                           (5, 1, (1, 2, 3, 0)), (5, 2, (2, 2, 2, 2)), (7, 1, (3, 3, 3, 3)),
                                           (3, 3, (1, 1, 1, 1))],
                         ids=["3x3s1", "3x3s2-asymmetric", "5x5s1", "5x5s1-asymmetric", "5x5s2-generic",
                              "7x7-generic", "3x3s3-rows"])
@pytest.mark.parametrize("after", [(0.0, 6.0), (-20.0, 15.0), "relu", "none"], ids=["relu6", "clip", "relu", "bias-only"])
def test_depthwise_conv_takes_its_bias_and_clamp(k, stride, pads, after, tmp_path):
    model = _model(k, stride, pads, after)
    x = (np.random.default_rng(1).standard_normal((1, 24, 17, 19)) * 100).astype(np.float32)
    x[0, 0, 3, 4], x[0, 1, 5, 5], x[0, 2, 8, 8] = np.nan, np.inf, -np.inf
    session = dcopt.compile(model, cache_dir=tmp_path)
    steps = session._current.program.steps
    (conv,) = [s for s in steps if s.kind == "conv"]
    assert conv.params["impl"] == "depthwise" and conv.params["bias"]
    assert not [s.label for s in steps if s.kind == "kernel"]  # bias and clamp went into the conv
    (want,) = run_onnxruntime(model, {"x": x})
    (got,) = session.run(None, {"x": x})
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-5 * float(np.abs(want[finite]).max()))
