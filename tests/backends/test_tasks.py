"""numba kernels as pool tasks (:mod:`dcopt.backends.cpu.tasks`): each library task split over
1-3 threads gives exactly the serial kernel's result, and big generated kernels run as tasks
over their outer loop with broadcast operands handled."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from dcopt.backends.cpu import library, parallel, tasks
from tests.backends.conftest import assert_matches_reference
from tests.conftest import make_model

THREADS = [1, 2, 3]


@pytest.fixture(autouse=True)
def _one_thread_after():
    yield
    parallel.set_threads(1)


@pytest.mark.parametrize("threads", THREADS)
def test_channel_tasks_match_serial_kernels(threads):
    parallel.set_threads(threads)
    rng = np.random.default_rng(1)
    c, h, w = 7, 12, 11
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c, 3, 3)).astype(np.float32)
    want, got = np.empty((c, h, w), np.float32), np.empty((c, h, w), np.float32)
    bias, bounds = rng.standard_normal(c).astype(np.float32), np.array([-0.5, 1.5], np.float32)
    library.depthwise2d(x[0], wt, want, 1, 1, 1, 1, 1, 1, bias, bounds[0], bounds[1])
    tail = [h, w, h, w, 3, 3, 1, 1, 1, 1, 1, 1, bias.ctypes.data, bounds.ctypes.data]
    tasks.bind_table(tasks.library_task("depthwise"), [[[lo, hi, x.ctypes.data, wt.ctypes.data, got.ctypes.data,
                                                         *tail]] for lo, hi in parallel.split(c, threads)], (x, got))()
    assert want.min() == -0.5 and want.max() == 1.5
    np.testing.assert_array_equal(got, want)
    want, got = np.empty((c, 15 * 14), np.float32), np.full((c, 15 * 14), np.nan, np.float32)
    library.pad_planes(x[0], want, 2, 1, 14)
    tasks.bind_table(tasks.library_task("pad"), [[[lo, hi, x.ctypes.data, got.ctypes.data, h, w, 15 * 14, 2, 1, 14]]
                                                 for lo, hi in parallel.split(c, threads)], (x, got))()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("threads", [1, 2])
def test_big_elementwise_kernels_run_as_tasks(threads, tmp_path):
    """A [2, 16, 32, 32] chain with a per-channel operand (broadcast inside the loop) and a
    per-image one (broadcast along the outermost loop dim), fused into one kernel that runs as
    pool tasks over its outer loop."""
    import dcopt

    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Mul", ["x", "scale"], ["a"]), helper.make_node("Add", ["a", "shift"], ["b"]),
             helper.make_node("Sigmoid", ["b"], ["c"]), helper.make_node("Mul", ["c", "gate"], ["y"])]
    model = make_model(nodes, [("x", TensorProto.FLOAT, [2, 16, 32, 32]), ("gate", TensorProto.FLOAT, [1, 16, 32, 32])],
                       [("y", TensorProto.FLOAT, [2, 16, 32, 32])],
                       {"scale": rng.standard_normal((16, 1, 1)).astype(np.float32),
                        "shift": rng.standard_normal((1, 16, 1, 1)).astype(np.float32)})
    sess = dcopt.compile(model, threads=threads, cache_dir=tmp_path)
    assert [s.params.get("task") is not None for s in sess._current.program.steps if s.kind == "kernel"] == [True]
    feeds = {"x": rng.standard_normal((2, 16, 32, 32)).astype(np.float32),
             "gate": rng.standard_normal((1, 16, 32, 32)).astype(np.float32)}
    assert_matches_reference(model, sess, feeds)
