"""collapse-dims: a kernel's innermost loops over contiguous data become one loop over Reshape
views, and only then (dcopt/passes/collapse_dims.py). Every case also runs three ways
(reference, lowered IR, compiled) at fp32 rtol 1e-4."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from dcopt import driver
from dcopt.frontends.onnx_import import import_model
from dcopt.ir.loops import loop_spec
from dcopt.passes.kernels import is_kernel
from dcopt.testing import run_three_ways


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def _model(nodes, shape, out_shape=None, inits=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape or shape))
    graph = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _kernel_params(model) -> list[tuple[tuple[str, ...], tuple]]:
    lowered = driver.lower(import_model(model), bindings={}).graph
    return [(loop_spec(m).params, tuple((b.text, e.text) for b, e in loop_spec(m).ranges))
            for node in lowered.nodes if is_kernel(node) for m in node.attrs["body"].nodes]


def _edge_image(shape, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 100
    flat = x.reshape(-1)
    flat[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 3e38]
    return x


def test_batchnorm_relu_over_small_images_runs_one_loop_per_channel(cache):
    c = 8
    inits = [(n, np.random.default_rng(i).random(c).astype(np.float32) + 0.5) for i, n in enumerate("sbmv")]
    inits.append(("k", np.random.default_rng(9).random((c, 1, 1)).astype(np.float32)))
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["t"]),
             helper.make_node("Mul", ["t", "k"], ["u"]), helper.make_node("Relu", ["u"], ["y"])]
    model = _model(nodes, (1, c, 7, 7), inits=inits)
    # per-channel operands keep the channel loop; the 7x7 image is one loop of 49
    assert _kernel_params(model) == [(("i1", "i2"), (("0", "8"), ("0", "49")))]
    run_three_ways(model, {"x": _edge_image((1, c, 7, 7))}, cache_dir=cache)


def test_plain_elementwise_kernel_becomes_one_flat_loop(cache):
    model = _model([helper.make_node("Sigmoid", ["x"], ["t"]), helper.make_node("Neg", ["t"], ["y"])], (2, 3, 5, 7))
    assert _kernel_params(model) == [(("i0",), (("0", str(2 * 3 * 5 * 7)),))]
    run_three_ways(model, {"x": _edge_image((2, 3, 5, 7))}, cache_dir=cache)


def test_windows_and_transposes_are_not_collapsed(cache):
    pool = _model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])], (1, 2, 6, 5))
    assert all(len(params) >= 4 for params, _ in _kernel_params(pool))  # i1, i2, i3 and the window
    run_three_ways(pool, {"x": _edge_image((1, 2, 6, 5))}, cache_dir=cache)
    transpose = _model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 1, 3, 2]),
                        helper.make_node("Relu", ["t"], ["y"])], (1, 2, 6, 5), (1, 2, 5, 6))
    for params, ranges in _kernel_params(transpose):
        assert len(params) >= 2 and ranges[-1] != ("0", "30")
    run_three_ways(transpose, {"x": _edge_image((1, 2, 6, 5))}, cache_dir=cache)


def test_empty_images_are_left_alone(cache):
    model = _model([helper.make_node("Relu", ["x"], ["y"])], (1, 3, 0, 4))
    run_three_ways(model, {"x": np.zeros((1, 3, 0, 4), np.float32)}, cache_dir=cache)


def test_pass_reports_what_it_joined():
    from dcopt.passes.base import get_pass
    from dcopt.passes.collapse_dims import collapse_dims

    model = _model([helper.make_node("Relu", ["x"], ["y"])], (1, 4, 3, 3))
    graph = driver.lower(import_model(model), bindings={}).graph  # already collapsed: nothing left
    assert collapse_dims(graph) == {"kernels": 0, "levels": 0}
    assert get_pass("collapse-dims").name == "collapse-dims"


@pytest.mark.parametrize("op, attrs, hw", [("GlobalAveragePool", {}, (7, 7)), ("GlobalAveragePool", {}, (56, 56)),
                                           ("ReduceMean", {"axes": [2, 3], "keepdims": 1}, (14, 14)),
                                           ("GlobalMaxPool", {}, (5, 9))])
def test_pooling_over_the_image_sums_one_flat_loop_per_channel(cache, op, attrs, hw):
    """A reduction over h, w (sum into a register) plus its epilogue over the channel alone (the
    divide): the epilogue map is carried over and the sum runs one loop of h * w (rows of 56 were
    summed in scalar code: a 16-lane loop interleaved 4 ways needs 64 iterations)."""
    c = 6  # opset 17: ReduceMean's axes are an attribute
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, *hw])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 1, 1])
    model = helper.make_model(helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    params = _kernel_params(model)
    lowered = driver.lower(import_model(model), bindings={}).graph
    # the sum's register local stays inside the kernel: every node output is a container
    assert all(o in lowered.containers for n in lowered.nodes for o in n.outputs if o)
    flat = ("0", str(hw[0] * hw[1]))
    assert any(len(p) == 2 and r[-1] == flat for p, r in params), params
    assert not any(len(p) == 3 for p, _ in params), params
    run_three_ways(model, {"x": _edge_image((1, c, *hw))}, cache_dir=cache)
