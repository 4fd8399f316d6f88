"""subsample-strided-pointwise: a strided 1x1 conv becomes Slice(steps) + a stride-1 1x1 conv,
checked numerically (reference executor, and the compiled path against onnxruntime, odd sizes
and large magnitudes included); padded, larger-kernel and unit-stride convs are left alone."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import dcopt
from dcopt.frontends.onnx_import import import_model
from dcopt.passes.subsample_convs import SUBSAMPLE_STRIDED_POINTWISE
from tests.conftest import make_model
from tests.passes.rule_checks import apply_and_check, refusal

F = TensorProto.FLOAT
RULE = "subsample-strided-pointwise"


def strided_conv(cin=8, cout=16, size=(7, 9), strides=(2, 3), kernel=(1, 1), group=1, bias=True, scale=1.0,
                 opset=17, **attrs):
    rng = np.random.default_rng(0)
    spatial = len(size)
    inits = {"w": (rng.standard_normal((cout, cin // group, *kernel)) * scale).astype(np.float32)}
    inputs = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(cout).astype(np.float32)
        inputs.append("b")
    pads = attrs.pop("pads", [0] * 2 * spatial)
    if "auto_pad" in attrs:  # SAME_*: ceil(n / s) outputs
        out = [-(-n // s) for n, s in zip(size, strides)]
    else:
        attrs["pads"] = pads
        out = [(n + 2 * pads[i] - kernel[i]) // s + 1 for i, (n, s) in enumerate(zip(size, strides))]
    node = helper.make_node("Conv", inputs, ["y"], name="conv", strides=list(strides), group=group, **attrs)
    return make_model([node], [("x", F, [1, cin, *size])], [("y", F, [1, cout, *out])], inits, opset=opset)


@pytest.mark.parametrize("size,strides,group", [((7, 9), (2, 3), 1), ((8, 8), (2, 2), 2), ((11,), (3,), 1),
                                                ((5, 6), (1, 2), 1)])
def test_strided_pointwise_convs_become_a_slice_and_a_unit_stride_conv(size, strides, group):
    graph = import_model(strided_conv(size=size, strides=strides, group=group,
                                      kernel=(1,) * len(size)))
    report = apply_and_check(graph, [SUBSAMPLE_STRIDED_POINTWISE])
    assert report.counts().get(RULE) == 1
    ops = [n.op for n in graph.nodes]
    assert ops == ["Slice", "Conv"]
    conv = graph.nodes[1]
    assert list(conv.attrs["strides"]) == [1] * len(size) and graph.type_of(conv.outputs[0]).shape[2:] == tuple(
        (n - 1) // s + 1 for n, s in zip(size, strides))


@pytest.mark.parametrize("kwargs,reason", [
    ({"kernel": (3, 3)}, "not 1x1"),
    ({"strides": (1, 1)}, "strides are all 1"),
    ({"pads": [1, 1, 1, 1]}, "padded"),
    ({"auto_pad": "SAME_UPPER"}, "auto_pad SAME_UPPER"),
    ({"opset": 9}, "opset 9: Slice takes steps from opset 10"),
])
def test_other_convs_are_refused_with_the_reason(kwargs, reason):
    graph = import_model(strided_conv(**kwargs))
    report = apply_and_check(graph, [SUBSAMPLE_STRIDED_POINTWISE])
    assert not report.counts().get(RULE) and [n.op for n in graph.nodes] == ["Conv"]
    assert reason in refusal(report, RULE)


def test_compiled_o3_matches_onnxruntime_on_edge_values(tmp_path):
    """Through dcopt.compile (-O3 runs the pass): ResNet v1.5's shortcut shape, large magnitudes,
    NaN and Inf in the input, at fp32 rtol 1e-4."""
    model = strided_conv(cin=256, cout=64, size=(15, 15), strides=(2, 2), scale=1e3)
    x = np.random.default_rng(1).standard_normal((1, 256, 15, 15)).astype(np.float32) * 1e4
    x[0, 0, 0, 0], x[0, 1, 2, 2], x[0, 2, 1, 1] = np.nan, np.inf, -np.inf  # (1,1) is skipped by the stride
    session = dcopt.compile(model, cache_dir=tmp_path)
    assert "subsample-strided-pointwise" in {p["name"].split("/")[-1] for p in session._built().manifest["passes"]
                                             if p["modified"]}
    ours = session.run(None, {"x": x})[0]
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(ours), finite)
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-4, atol=1e-5 * float(np.abs(ref[finite]).max()))
