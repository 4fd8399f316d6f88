"""The backend's one thread pool: numba's parallel region runs precomputed tables of native calls.

Why one pool: two busy pools on two cores (numba's next to OpenBLAS's) made an MLP 17x slower
(issue 4); so OpenBLAS always runs single-threaded, and the backend splits the work itself.
A step binds to a table of calls whose pointers and sizes are fixed at bind time (every buffer
lives in the planned arena), e.g. "rows 0-255 of this GEMM" and "rows 256-511", and one
``prange`` runs the table's tasks across the pool. The callees are C functions taken as
first-class ctypes function pointers -- OpenBLAS's ``cblas_sgemm`` and the generated direct
conv kernels (:mod:`directconv`) -- so these few runners are compiled once, cached by numba,
and shared by every model. Measured (znver5, 2 cores, ResNet-50's 256x256 3x3 conv at 14x14):
one task 238 GFLOP/s, two tasks 466 GFLOP/s, onnxruntime 437 in the same model.

Splitting: a GEMM is cut along M in multiples of 16 rows (N only when M is too short), so
that the epilogue after it, a ``prange`` over the same rows with the same static schedule,
finds each row in the cache of the core that wrote it.
"""

from __future__ import annotations

import contextlib
import ctypes

import numpy as np

from dcopt.backends.cpu import gemm, threadpool

#: A generated kernel: ``(x, w, out, bias, g0, g1, r0, r1, residual)`` (pointers as integers).
CONV_PROTO = ctypes.CFUNCTYPE(None, *[ctypes.c_int64] * 9)


_BLAS: dict = {}
_I64 = ctypes.c_int64


def sgemm_function():
    """OpenBLAS ``cblas_sgemm`` as a ctypes function numba can call with integer pointers
    (None when numpy's BLAS is not an OpenBLAS with 64-bit indices)."""
    return _blas("sgemm", ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, _I64, _I64, _I64,
                                           ctypes.c_float, _I64, _I64, _I64, _I64, ctypes.c_float, _I64, _I64))


def sgemv_function():
    """OpenBLAS ``cblas_sgemv`` like :func:`sgemm_function`."""
    return _blas("sgemv", ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, _I64, _I64, ctypes.c_float, _I64, _I64,
                                           _I64, _I64, ctypes.c_float, _I64, _I64))


def _blas(name: str, proto):
    if name not in _BLAS:
        address = None
        for lib in gemm._numpy_openblas_libs():  # 64-bit-index builds only: the runners pass int64
            for symbol in (f"scipy_cblas_{name}64_", f"cblas_{name}64_"):
                fn = getattr(lib, symbol, None)
                if fn is not None and address is None:
                    address = ctypes.cast(fn, ctypes.c_void_p).value
        _BLAS[name] = proto(address) if address else None
    return _BLAS[name]


_THREADS = [1]


def set_threads(threads: int | None) -> int:
    """Threads the steps bound from now on are split for (None: every core this process may
    run on); BLAS stays single-threaded, each task calling it on one core."""
    threads = available_cores() if threads is None else max(1, int(threads))
    gemm.set_blas_threads(1)
    _THREADS[0] = threads
    return threads


@contextlib.contextmanager
def binding(threads: int):
    """Bind steps for ``threads`` threads inside the block (a session's own count)."""
    saved, _THREADS[0] = _THREADS[0], threads
    try:
        yield
    finally:
        _THREADS[0] = saved


def available_cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def threads() -> int:
    return _THREADS[0]


def split(n: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges covering ``range(n)`` in at most ``parts`` near-equal pieces whose
    inner boundaries are multiples of ``align`` (empty pieces dropped)."""
    units = -(-n // align)
    parts = max(1, min(parts, units))
    cuts = [min(n, (units * i // parts) * align) for i in range(parts + 1)]
    return [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]


def alpha_bits(alpha: float) -> int:
    """A GEMM row's alpha field: the float32's bits (rows hold only int64 fields)."""
    return int(np.array(alpha, np.float32).view(np.int32))


def gemm_tasks(m: int, n: int, k: int, a: int, lda: int, b: int, ldb: int, c: int, ldc: int, beta: float,
               parts: int, alpha: float = 1.0) -> list[list[int]]:
    """One call row per task for ``C[m, n] (+)= alpha * A[m, k] @ B[k, n]`` (float32 pointers),
    cut along m -- the rows the parallel epilogue after it gives each thread, so the thread
    finds them in its own cache -- unless m has fewer than 16 rows per task."""
    bits = alpha_bits(alpha)
    if m >= 16 * parts or m >= n:
        return [[hi - lo, n, k, a + 4 * lo * lda, lda, b, ldb, beta, c + 4 * lo * ldc, ldc, bits]
                for lo, hi in split(m, parts, 16)]
    return [[m, hi - lo, k, a, lda, b + 4 * lo, ldb, beta, c + 4 * lo, ldc, bits] for lo, hi in split(n, parts, 16)]


def grid_tasks(groups: int, rows: int, parts: int) -> list[list[tuple[int, int, int, int]]]:
    """Cut the ``groups x rows`` grid of a conv, in row-major order, into ``parts`` near-equal
    runs, each as at most three ``(g0, g1, r0, r1)`` rectangles. Whole groups alone would leave
    a thread idle a third of the time on 3 groups; rows alone would make every thread read
    every group's weights."""
    tasks = []
    for lo, hi in split(groups * rows, parts):
        (g, r), (ge, re) = divmod(lo, rows), divmod(hi, rows)
        if g == ge:
            tasks.append([(g, g + 1, r, re)])
            continue
        calls = []
        if r:
            calls.append((g, g + 1, r, rows))
            g += 1
        if ge > g:
            calls.append((g, ge, 0, rows))
        if re:
            calls.append((ge, ge + 1, 0, re))
        tasks.append(calls)
    return tasks


def table(tasks: list[list[list[int]]], fields: int) -> np.ndarray:
    """[tasks, calls, fields] int64 table; shorter tasks padded with zero rows (no-ops)."""
    width = max(len(t) for t in tasks)
    out = np.zeros((len(tasks), width, fields), np.int64)
    for i, calls in enumerate(tasks):
        if calls:
            out[i, :len(calls)] = calls
    return out


def merge(items: list[list[list[list[int]]]]) -> list[list[list[int]]]:
    """Per-item task lists (e.g. one per image or conv group) -> one task per part holding
    that part of every item, in item order."""
    parts = max((len(t) for t in items), default=0)
    return [[call for tasks in items if i < len(tasks) for call in tasks[i]] for i in range(parts)]


def bind_tasks(kind: int, fn, tasks: list[list[list[int]]], keep) -> "callable":
    """A closure running ``tasks`` (lists of call rows of ``kind``) on the pool; ``keep``: the
    arrays the raw pointers point into, held as long as the closure lives."""
    fields = threadpool.FIELDS.get(kind) or max(len(call) for task in tasks for call in task)
    run = threadpool.pool(threads()).bind(kind, fn, table(tasks, fields))
    run.buffers = (run.buffers, keep)
    return run


def bind_gemms(tasks: list[list[list[int]]], keep) -> "callable":
    """A closure running ``tasks`` (lists of sgemm rows) on the pool."""
    return bind_tasks(threadpool.GEMM, sgemm_function(), tasks, keep)


def bind_gemv(k: int, n: int, a: int, x: int, y: int, keep) -> "callable":
    """``y[1, n] = x[1, k] @ A[k, n]`` (a batch-1 fully connected layer) as sgemv pieces of
    columns: OpenBLAS's sgemm with M = 1 took 0.36 ms where its sgemv took 0.08 (2048 x 1000)."""
    tasks = [[[k, hi - lo, a + 4 * lo, n, x, y + 4 * lo]] for lo, hi in split(n, threads(), 16)]
    return bind_tasks(threadpool.GEMV, sgemv_function(), tasks, keep)


def bind_convs(fn, tasks: list[list[list[int]]], keep) -> "callable":
    """Like :func:`bind_gemms` for a generated conv kernel ``fn`` (:data:`CONV_PROTO`)."""
    return bind_tasks(threadpool.CONV, fn, tasks, keep)
