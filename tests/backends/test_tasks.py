"""numba kernels as pool tasks (:mod:`dcopt.backends.cpu.tasks`): each library task split over
1-3 threads gives exactly the serial kernel's result, and big fused elementwise kernels run as
generated tasks with broadcast operands handled."""

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
def test_row_tasks_match_serial_kernels(threads):
    parallel.set_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 50)).astype(np.float32)
    for log in (0, 1):
        want, got = np.empty_like(x), np.empty_like(x)
        library.softmax_rows(x, want, bool(log))
        tasks.bind_rows(tasks.library_task("softmax"), [x.ctypes.data, got.ctypes.data], [50, log], 37, (x, got))()
        np.testing.assert_array_equal(got, want)
    scale, bias = rng.standard_normal(50).astype(np.float32), rng.standard_normal(50).astype(np.float32)
    want, got, eps = np.empty_like(x), np.empty_like(x), tasks.scalar_cell(1e-5)
    library.layernorm_rows(x, scale, bias, want, 1e-5)
    tasks.bind_rows(tasks.library_task("layernorm"), [x.ctypes.data, scale.ctypes.data, bias.ctypes.data,
                                                      got.ctypes.data], [50, eps.ctypes.data], 37, (x, got, eps))()
    np.testing.assert_array_equal(got, want)
    for op in range(4):
        want, got = np.empty(37, np.float32), np.empty(37, np.float32)
        library.reduce_rows(x, want, op)
        tasks.bind_rows(tasks.library_task("reduce"), [x.ctypes.data, got.ctypes.data], [50, op], 37, (x, got))()
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("threads", THREADS)
def test_channel_tasks_match_serial_kernels(threads):
    parallel.set_threads(threads)
    rng = np.random.default_rng(1)
    c, h, w = 7, 12, 11
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    want, got = np.empty((1, c, 6, 6), np.float32), np.empty((1, c, 6, 6), np.float32)
    library.pool2d(x, want, 3, 3, 2, 2, 1, 1, 1, 1, True, False)
    tail = [h, w, 6, 6, 3, 3, 2, 2, 1, 1, 1, 1, 1, 0]
    tasks.bind_table(tasks.library_task("pool"), [[[lo, hi, x.ctypes.data, got.ctypes.data, *tail]]
                                                  for lo, hi in parallel.split(c, threads)], (x, got))()
    np.testing.assert_array_equal(got, want)
    wt = rng.standard_normal((c, 3, 3)).astype(np.float32)
    want, got = np.empty((c, h, w), np.float32), np.empty((c, h, w), np.float32)
    library.depthwise2d(x[0], wt, want, 1, 1, 1, 1, 1, 1)
    tail = [h, w, h, w, 3, 3, 1, 1, 1, 1, 1, 1]
    tasks.bind_table(tasks.library_task("depthwise"), [[[lo, hi, x.ctypes.data, wt.ctypes.data, got.ctypes.data,
                                                         *tail]] for lo, hi in parallel.split(c, threads)], (x, got))()
    np.testing.assert_array_equal(got, want)
    want, got, cell = np.empty((1, c, h * w), np.float32), np.empty((1, c, h * w), np.float32), np.array([1e-2, 0.75, 2.0])
    library.lrn(x.reshape(1, c, -1), want, 5, 1e-2, 0.75, 2.0)
    tasks.bind_rows(tasks.library_task("lrn"), [x.ctypes.data, got.ctypes.data], [1, c, h * w, 5, cell.ctypes.data], c,
                    (x, got, cell))()
    np.testing.assert_array_equal(got, want)
    want, got = np.empty((c, 15 * 14), np.float32), np.full((c, 15 * 14), np.nan, np.float32)
    library.pad_planes(x[0], want, 2, 1, 14)
    tasks.bind_table(tasks.library_task("pad"), [[[lo, hi, x.ctypes.data, got.ctypes.data, h, w, 15 * 14, 2, 1, 14]]
                                                 for lo, hi in parallel.split(c, threads)], (x, got))()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("threads", [1, 2])
def test_big_elementwise_kernels_run_as_tasks(threads, tmp_path):
    """A [2, 16, 32, 32] chain with a per-channel operand (broadcast inside the loop) and a
    per-image one (broadcast along the outermost loop dim), fused into one kernel."""
    import dcopt

    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Mul", ["x", "scale"], ["a"]), helper.make_node("Add", ["a", "shift"], ["b"]),
             helper.make_node("Sigmoid", ["b"], ["c"]), helper.make_node("Mul", ["c", "gate"], ["y"])]
    model = make_model(nodes, [("x", TensorProto.FLOAT, [2, 16, 32, 32]), ("gate", TensorProto.FLOAT, [1, 16, 32, 32])],
                       [("y", TensorProto.FLOAT, [2, 16, 32, 32])],
                       {"scale": rng.standard_normal((16, 1, 1)).astype(np.float32),
                        "shift": rng.standard_normal((1, 16, 1, 1)).astype(np.float32)})
    sess = dcopt.compile(model, threads=threads, cache_dir=tmp_path)
    assert [s.params.get("task") is not None for s in sess._current.program.steps if s.kind == "ew"] == [True]
    feeds = {"x": rng.standard_normal((2, 16, 32, 32)).astype(np.float32),
             "gate": rng.standard_normal((1, 16, 32, 32)).astype(np.float32)}
    assert_matches_reference(model, sess, feeds)
