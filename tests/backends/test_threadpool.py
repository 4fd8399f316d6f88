"""The native thread pool (:mod:`dcopt.backends.cpu.threadpool`) and the task splitting of
:mod:`dcopt.backends.cpu.parallel`: every task runs exactly once, with any thread count,
under many back-to-back steps (a race would lose or repeat a task), and after the workers
stopped (the caller then runs everything)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dcopt.backends.cpu import parallel, threadpool

pytestmark = pytest.mark.skipif(parallel.sgemm_function() is None, reason="needs numpy's 64-bit OpenBLAS")


@pytest.fixture(autouse=True)
def _one_thread_after():
    yield
    parallel.set_threads(1)


def _gemm_step(m, n, k, threads, seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    parallel.set_threads(threads)
    tasks = [[t] for t in parallel.gemm_tasks(m, n, k, a.ctypes.data, k, b.ctypes.data, n, c.ctypes.data, n, 0.0,
                                              threads)]
    return parallel.bind_gemms(tasks, (a, b, c)), a @ b, c


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (17, 33, 9), (200, 40, 64), (8, 300, 20)])
def test_gemm_tasks_cover_the_product(threads, m, n, k):
    step, want, c = _gemm_step(m, n, k, threads)
    step()
    np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4)


def test_many_back_to_back_steps():
    steps = [_gemm_step(48, 64, 32, 2, seed) for seed in range(3)]
    for i in range(3000):  # workers go from spinning to sleeping and back between bursts
        step, want, c = steps[i % 3]
        c[:] = np.nan
        step()
        if i % 500 == 0:
            import time

            time.sleep(0.005)
        assert not np.isnan(c).any(), f"step {i} lost a task"
    for step, want, c in steps:
        np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4)


def test_stopped_pool_still_runs_everything_on_the_caller():
    pool = threadpool.NativePool(3)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((64, 16)).astype(np.float32), rng.standard_normal((16, 24)).astype(np.float32)
    c = np.zeros((64, 24), np.float32)
    tasks = [[t] for t in parallel.gemm_tasks(64, 24, 16, a.ctypes.data, 16, b.ctypes.data, 24, c.ctypes.data, 24,
                                              0.0, 4)]
    step = pool.bind(threadpool.GEMM, parallel.sgemm_function(), parallel.table(tasks, threadpool.FIELDS[threadpool.GEMM]))
    pool.close()
    pool.close()  # idempotent
    step()
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)


def test_bind_checks_the_table_shape():
    with pytest.raises(ValueError, match=r"\[tasks, calls, 11\]"):
        threadpool.pool(1).bind(threadpool.GEMM, parallel.sgemm_function(), np.zeros((2, 3), np.int64))


def test_gemv_pieces_and_padding_rows():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 70)).astype(np.float32), rng.standard_normal((70, 45)).astype(np.float32)
    y = np.full((1, 45), np.nan, np.float32)
    parallel.set_threads(3)
    parallel.bind_gemv(70, 45, w.ctypes.data, x.ctypes.data, y.ctypes.data, (x, w, y))()
    np.testing.assert_allclose(y, x @ w, rtol=1e-4, atol=1e-4)
    # a task list with an empty row (M = 0) pads shorter tasks: it must be a no-op
    c = np.zeros((16, 8), np.float32)
    a, b = np.ones((16, 4), np.float32), np.ones((4, 8), np.float32)
    one = parallel.alpha_bits(1.0)
    parallel.bind_gemms([[[16, 8, 4, a.ctypes.data, 4, b.ctypes.data, 8, 0, c.ctypes.data, 8, one]], []], (a, b, c))()
    np.testing.assert_array_equal(c, 4.0)


@pytest.mark.parametrize("n, parts, align", [(0, 2, 1), (1, 2, 16), (17, 2, 16), (100, 3, 1), (64, 5, 16)])
def test_split_covers_the_range(n, parts, align):
    pieces = parallel.split(n, parts, align)
    assert [i for lo, hi in pieces for i in range(lo, hi)] == list(range(n))
    assert len(pieces) <= parts and all(lo % align == 0 for lo, _ in pieces)


@pytest.mark.parametrize("groups, rows, parts", list(itertools.product([1, 2, 3, 5], [1, 7, 14], [1, 2, 3])))
def test_grid_tasks_cover_every_cell_once(groups, rows, parts):
    cells = [(g, r) for task in parallel.grid_tasks(groups, rows, parts) for g0, g1, r0, r1 in task
             for g in range(g0, g1) for r in range(r0, r1)]
    assert sorted(cells) == [(g, r) for g in range(groups) for r in range(rows)]
    assert len(parallel.grid_tasks(groups, rows, parts)) == min(parts, groups * rows)


def test_batched_matmul_with_broadcast_batch():
    from dcopt.backends.cpu.gemm import bind_matmul

    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    b = rng.standard_normal((1, 3, 7, 4)).astype(np.float32)
    out = np.zeros((2, 3, 5, 4), np.float32)
    for threads in (1, 2, 8):
        parallel.set_threads(threads)
        out[:] = 0
        bind_matmul(a, b, out, "batched")()
        np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-4, atol=1e-5)


def test_sessions_keep_their_own_thread_count(tmp_path, mlp):
    """A session compiled for 2 threads keeps binding (new sizes included) for 2 after another
    session set 1, and both keep matching the reference."""
    import dcopt
    from tests.backends.conftest import assert_matches_reference

    two = dcopt.compile(mlp, threads=2, cache_dir=tmp_path)
    one = dcopt.compile(mlp, threads=1, cache_dir=tmp_path)
    assert (two.threads, one.threads) == (2, 1)
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)  # new batch size: a new variant
    assert_matches_reference(mlp, two, {"x": x})
    assert two._model.threads == 2
    assert_matches_reference(mlp, one, {"x": x[:1]})
    assert parallel.set_threads(None) == parallel.available_cores()


@pytest.mark.parametrize("shape_a, shape_b", [((4, 40, 24), (4, 24, 33)), ((1, 24), (24, 33)), ((70, 24), (24, 33)),
                                              ((2, 1, 8, 16), (1, 3, 16, 9))])
def test_scaled_matmul_runs_as_pool_tasks_with_alpha_in_sgemm(shape_a, shape_b):
    """Attention's ``alpha * Q @ K^T`` is sgemm tasks with alpha in every row, not numpy's matmul
    on OpenBLAS's own (spinning) threads followed by a scaling pass."""
    from dcopt.backends.cpu import gemm

    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(shape_a).astype(np.float32), rng.standard_normal(shape_b).astype(np.float32)
    want = np.matmul(a, b) * np.float32(0.125)
    out = np.full(want.shape, np.nan, np.float32)
    parallel.set_threads(2)
    try:
        step = gemm.bind_matmul(a, b, out, "2d" if a.ndim == 2 else "batched", alpha=0.125)
        assert hasattr(step, "buffers") or parallel.sgemm_function() is None  # a pool step
        step()
    finally:
        parallel.set_threads(None)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
