"""fold-pad: an explicit constant Pad before a Conv / AveragePool / MaxPool becomes the op's own
padding. Checked numerically (reference executor before/after; the compiled path against
onnxruntime with large magnitudes, NaN and Inf), at every Pad spelling (attributes before opset
11, inputs after, the axes input of opset 18), and every refusal with its reason."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import dcopt
from dcopt.frontends.onnx_import import import_model
from dcopt.passes.fold_pad import FOLD_PAD
from tests.conftest import make_model
from tests.passes.rule_checks import apply_and_check, refusal

F = TensorProto.FLOAT
RULE = "fold-pad"
SIZE = (9, 10)


def padded(op="Conv", pads=(0, 0, 1, 0, 0, 0, 2, 1), value=None, mode="constant", opset=17, axes=None,
           cin=4, cout=6, scale=1.0, own_pads=None, **attrs):
    """x -> Pad -> op -> y with a 3x3 window (stride 2 for Conv); ``pads`` over every axis of x
    unless ``axes`` picks some (opset 18)."""
    rng = np.random.default_rng(0)
    inits, nodes = {}, []
    if opset < 11:
        pad_attrs = {"pads": list(pads), "mode": mode}
        if value is not None:
            pad_attrs["value"] = float(value)
        nodes.append(helper.make_node("Pad", ["x"], ["xp"], name="pad", **pad_attrs))
    else:
        inits["pads"] = np.asarray(pads, np.int64)
        pad_inputs = ["x", "pads", "value" if value is not None else ""]
        if value is not None:
            inits["value"] = np.asarray(value, np.float32)
        if axes is not None:
            inits["axes"] = np.asarray(axes, np.int64)
            pad_inputs.append("axes")
        nodes.append(helper.make_node("Pad", pad_inputs if pad_inputs[-1] else pad_inputs[:2], ["xp"], name="pad",
                                      mode=mode))
    if own_pads is not None:
        attrs["pads"] = list(own_pads)
    if op == "Conv":
        inits["w"] = (rng.standard_normal((cout, cin, 3, 3)) * scale).astype(np.float32)
        inits["b"] = rng.standard_normal(cout).astype(np.float32)
        nodes.append(helper.make_node("Conv", ["xp", "w", "b"], ["y"], name="window", strides=[2, 2], **attrs))
    else:
        nodes.append(helper.make_node(op, ["xp"], ["y"], name="window", kernel_shape=[3, 3], **attrs))
    return make_model(nodes, [("x", F, [1, cin, *SIZE])], [("y", F, None)], inits, opset=opset)


def window_node(graph):
    (node,) = [n for n in graph.nodes if n.op in ("Conv", "AveragePool", "MaxPool")]
    return node


@pytest.mark.parametrize("opset,axes,pads", [
    (17, None, (0, 0, 1, 0, 0, 0, 2, 1)),  # TF "SAME" style: asymmetric
    (10, None, (0, 0, 1, 2, 0, 0, 1, 2)),  # pads as attributes
    (18, (2, 3), (1, 0, 2, 1)),  # only the spatial axes named
    (18, (-1,), (3, 0)),  # one negative axis
])
def test_a_zero_pad_before_a_conv_becomes_its_padding(opset, axes, pads):
    graph = import_model(padded(opset=opset, axes=axes, pads=pads, own_pads=[1, 0, 0, 1]))
    report = apply_and_check(graph, [FOLD_PAD])
    assert report.counts().get(RULE) == 1 and [n.op for n in graph.nodes] == ["Conv"]
    full = dict(zip(axes, zip(pads[:len(axes)], pads[len(axes):]))) if axes else None
    begin = [full.get(a, (0, 0))[0] for a in (2, 3)] if axes else list(pads[2:4])
    end = [full.get(a, (0, 0))[1] for a in (2, 3)] if axes else list(pads[6:8])
    if axes and -1 in axes:
        begin, end = [0, pads[0]], [0, pads[1]]
    assert list(window_node(graph).attrs["pads"]) == [1 + begin[0], 0 + begin[1], 0 + end[0], 1 + end[1]]


@pytest.mark.parametrize("op,attrs,value", [
    ("AveragePool", {}, None),
    ("AveragePool", {"count_include_pad": 1, "own_pads": [1, 1, 1, 1]}, 0.0),
    ("MaxPool", {"strides": [2, 2]}, -np.inf),
])
def test_pools_take_the_border_their_padding_means(op, attrs, value):
    graph = import_model(padded(op, value=value, **attrs))
    report = apply_and_check(graph, [FOLD_PAD])
    assert report.counts().get(RULE) == 1 and [n.op for n in graph.nodes] == [op]
    if op == "AveragePool":
        assert window_node(graph).attrs["count_include_pad"] == 1


@pytest.mark.parametrize("op,kwargs,reason", [
    ("Conv", {"value": 1.5}, "the fill is 1.5: a Conv's padding is zero"),
    ("MaxPool", {"value": 0.0}, "a max-pool's padding is -inf"),
    ("Conv", {"mode": "reflect"}, "mode reflect is not a constant border"),
    ("Conv", {"pads": (0, 0, -1, 0, 0, 0, 1, 1)}, "negative pads"),
    ("AveragePool", {"pads": (0, 1, 1, 1, 0, 0, 1, 1)}, "pads the batch or channel axis"),
    ("Conv", {"auto_pad": "SAME_UPPER"}, "auto_pad SAME_UPPER"),
    ("AveragePool", {"ceil_mode": 1}, "ceil_mode=1"),
    ("AveragePool", {"own_pads": [1, 1, 1, 1]}, "excluded from the average"),
])
def test_other_pads_are_refused_with_the_reason(op, kwargs, reason):
    graph = import_model(padded(op, **kwargs))
    report = apply_and_check(graph, [FOLD_PAD])
    assert not report.counts().get(RULE) and [n.op for n in graph.nodes] == ["Pad", op]
    assert reason in refusal(report, RULE)


def test_a_pad_read_twice_stays():
    model = padded()
    model.graph.node.append(helper.make_node("Relu", ["xp"], ["r"], name="other"))
    model.graph.output.append(helper.make_tensor_value_info("r", F, None))
    graph = import_model(model)
    report = apply_and_check(graph, [FOLD_PAD])
    assert not report.counts().get(RULE) and sorted(n.op for n in graph.nodes) == ["Conv", "Pad", "Relu"]


def test_run_time_pads_are_refused():
    model = padded()
    model.graph.initializer.pop(0)  # "pads" becomes a graph input
    model.graph.input.append(helper.make_tensor_value_info("pads", TensorProto.INT64, [8]))
    graph = import_model(model)
    feeds = {"x": np.ones((1, 4, *SIZE), np.float32), "pads": np.asarray([0, 0, 1, 0, 0, 0, 2, 1], np.int64)}
    report = apply_and_check(graph, [FOLD_PAD], feeds)
    assert "computed at run time" in refusal(report, RULE)


@pytest.mark.parametrize("op", ["Conv", "AveragePool"])
def test_compiled_o2_matches_onnxruntime_on_edge_values(op, tmp_path):
    """Through dcopt.compile (-O2 runs the pass, O3 the kernels): large magnitudes, NaN and +-Inf
    near the folded border, fp32 rtol 1e-4."""
    model = padded(op, cin=16, cout=16, scale=1e3)
    x = np.random.default_rng(1).standard_normal((1, 16, *SIZE)).astype(np.float32) * 1e4
    x[0, 0, 0, 0], x[0, 1, -1, -1], x[0, 2, 4, 0] = np.nan, np.inf, -np.inf
    session = dcopt.compile(model, cache_dir=tmp_path)
    assert RULE in {p["name"].split("/")[-1] for p in session._built().manifest["passes"] if p["modified"]}
    ours = session.run(None, {"x": x})[0]
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(ours[~finite], ref[~finite])
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-4, atol=1e-5 * float(np.abs(ref[finite]).max()))
