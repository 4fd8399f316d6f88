"""Map fusion next to indirect memlets (Gather/Scatter), through the compiled path.

Two bugs the PyTorch op-coverage table found once it ran compiled: fusing a producer into a
scatter dropped the scatter's *init* (the data every untouched element keeps), and fusing the
producer of a Gather's *indices* left the indirect load reading a name the tasklet defines only
later. Each case is compared with onnxruntime, fp32 rtol 1e-4.
"""

import numpy as np
from onnx import TensorProto, helper

import dcopt
from dcopt.testing import run_onnxruntime
from tests.conftest import make_model

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def _check(model, feeds):
    expected = run_onnxruntime(model, feeds)
    actual = dcopt.compile(model).run(None, feeds)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-6)


def test_scatter_whose_updates_come_from_a_fused_map_keeps_its_data():
    """Slice -> ScatterElements: the slice fuses into the scatter; the output must still start
    as a copy of the data (here: a graph input the kernel must read)."""
    nodes = [helper.make_node("Slice", ["u", "starts", "ends", "axes"], ["u1"]),
             helper.make_node("Neg", ["u1"], ["u2"]),
             helper.make_node("ScatterElements", ["x", "idx", "u2"], ["y"], axis=1)]
    inits = {"starts": np.array([0], np.int64), "ends": np.array([1], np.int64), "axes": np.array([1], np.int64),
             "idx": np.full((3, 1), 3, np.int64)}
    model = make_model(nodes, [("x", F, [3, 4]), ("u", F, [3, 2])], [("y", F, [3, 4])], inits)
    feeds = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "u": np.arange(6, dtype=np.float32).reshape(3, 2)}
    _check(model, feeds)


def test_gather_whose_indices_come_from_a_map_loads_them_from_memory():
    """Expand -> GatherElements: the expanded indices are an indirect subset of the data read,
    so the Expand must not fuse into the gather."""
    nodes = [helper.make_node("Expand", ["i", "shape"], ["ie"]),
             helper.make_node("GatherElements", ["x", "ie"], ["y"], axis=1)]
    inits = {"shape": np.array([4, 3], np.int64)}
    model = make_model(nodes, [("x", F, [4, 4]), ("i", I64, [1, 3])], [("y", F, [4, 3])], inits)
    feeds = {"x": np.arange(16, dtype=np.float32).reshape(4, 4) - 5, "i": np.array([[3, 0, -1]], np.int64)}
    _check(model, feeds)


def test_scatter_nd_after_an_elementwise_map_keeps_untouched_rows():
    nodes = [helper.make_node("Mul", ["u", "two"], ["u2"]),
             helper.make_node("ScatterND", ["x", "idx", "u2"], ["y"])]
    inits = {"two": np.array(2.0, np.float32), "idx": np.array([[2], [0]], np.int64)}
    model = make_model(nodes, [("x", F, [4, 3]), ("u", F, [2, 3])], [("y", F, [4, 3])], inits)
    feeds = {"x": np.full((4, 3), 7, np.float32), "u": np.arange(6, dtype=np.float32).reshape(2, 3)}
    _check(model, feeds)
