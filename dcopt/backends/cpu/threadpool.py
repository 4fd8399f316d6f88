"""The backend's thread pool: native workers that claim tasks, and a caller that never waits idle.

Why not numba's ``prange``: an OpenMP region ends at a barrier every thread must reach. Next
to another runtime's spinning pool (onnxruntime's, in the same benchmark process) one of our
threads was often descheduled, and every region waited for it: BERT took 8.4 ms interleaved
with onnxruntime against 4.3 ms when onnxruntime's pool did not spin. Here, as in
onnxruntime's own pool, tasks are claimed dynamically and the calling thread runs them too: a
worker that is not running simply claims nothing, and a step finishes as soon as its tasks are.

Everything that runs without the GIL is LLVM IR (this module's :data:`POOL_IR`, compiled once
through the kernel store): the worker loop, the dispatcher and the task runners, which call
the generated conv kernels, OpenBLAS's ``cblas_sgemm`` or ``cblas_sgemv`` through function
pointers on rows of a precomputed int64 table ``[tasks, calls, fields]``. Workers are Python
threads parked inside a ctypes call (which releases the GIL) for their whole life: they spin
on a generation counter for a short while after each step, then sleep on a futex.

Claiming is a compare-and-swap on one 64-bit ticket that holds the step's generation (high
half) and the next task index (low half), so a worker that wakes late can never claim a task
of a newer step with the descriptor of an older one.
"""

from __future__ import annotations

import atexit
import ctypes
import threading

import numpy as np

#: Task kinds (how a table row is passed to the task's function). ROWS: ``fn(&row)`` -- a numba
#: ``cfunc`` (:mod:`tasks`) that reads its own arguments from the row, whose first two fields are
#: the ``[lo, hi)`` range it covers (an empty range is padding).
CONV, GEMM, GEMV, ROWS = 0, 1, 2, 3
#: int64 fields per table row of each kind (ROWS: any width, at least the range).
FIELDS = {CONV: 9, GEMM: 11, GEMV: 6}
# Idle spin (pause instructions, ~20-40 ns each on znver5) before a worker sleeps on the futex:
# long enough to bridge the serial steps between two parallel ones, short enough not to steal a
# core from other processes for long.
SPIN_PAUSES = 4096

# State block, one cache line per field that different threads write.
_GEN, _TICKET, _DONE, _DESC, _SLEEPERS, _STOP = 0, 64, 128, 192, 256, 320
_STATE_BYTES = 384

def _load_fields(names: list[str], base: str = "%row") -> str:
    """IR loading int64 fields 0.. at ``base`` (a task row, the step descriptor) into ``%<name>``."""
    lines = []
    for i, name in enumerate(names):
        address = base if i == 0 else f"%{name}.p"
        if i:
            lines.append(f"  %{name}.p = getelementptr i64, ptr {base}, i64 {i}")
        lines.append(f"  %{name} = load i64, ptr {address}")
    return "\n".join(lines)


def _store_fields(names: list[str], base: str) -> str:
    """IR storing the int64 values ``%<name>`` to fields 0.. at ``base`` (see :func:`_load_fields`)."""
    lines = []
    for i, name in enumerate(names):
        if i:
            lines.append(f"  %{name}.to = getelementptr i64, ptr {base}, i64 {i}")
        lines.append(f"  store i64 %{name}, ptr {base if i == 0 else f'%{name}.to'}")
    return "\n".join(lines)


POOL_IR = rf"""
declare i64 @syscall(i64, ...)
declare void @llvm.x86.sse2.pause()

define internal void @run_row(i64 %kind, ptr %fn, ptr %row) {{
entry:
  switch i64 %kind, label %done [ i64 0, label %conv
                                  i64 1, label %gemm
                                  i64 2, label %gemv
                                  i64 3, label %rows ]
rows:
  %lo = load i64, ptr %row
  %hip = getelementptr i64, ptr %row, i64 1
  %hi = load i64, ptr %hip
  %rok = icmp slt i64 %lo, %hi
  br i1 %rok, label %rows.call, label %done
rows.call:
  call void %fn(ptr %row)
  br label %done
conv:
{_load_fields(["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"])}
  %cg = icmp slt i64 %c4, %c5
  %cr = icmp slt i64 %c6, %c7
  %cok = and i1 %cg, %cr
  br i1 %cok, label %conv.call, label %done
conv.call:
  call void %fn(i64 %c0, i64 %c1, i64 %c2, i64 %c3, i64 %c4, i64 %c5, i64 %c6, i64 %c7, i64 %c8)
  br label %done
gemm:
{_load_fields(["m", "n", "k", "a", "lda", "b", "ldb", "betai", "c", "ldc", "alphab"])}
  %beta = sitofp i64 %betai to float
  %alphaw = trunc i64 %alphab to i32
  %alpha = bitcast i32 %alphaw to float
  %mok = icmp sgt i64 %m, 0
  br i1 %mok, label %gemm.call, label %done
gemm.call:
  call void %fn(i32 101, i32 111, i32 111, i64 %m, i64 %n, i64 %k, float %alpha, i64 %a, i64 %lda, i64 %b, i64 %ldb,
                float %beta, i64 %c, i64 %ldc)
  br label %done
gemv:
{_load_fields(["vk", "vn", "va", "vlda", "vx", "vy"])}
  %vok = icmp sgt i64 %vn, 0
  br i1 %vok, label %gemv.call, label %done
gemv.call:
  call void %fn(i32 101, i32 112, i64 %vk, i64 %vn, float 1.0, i64 %va, i64 %vlda, i64 %vx, i64 1, float 0.0,
                i64 %vy, i64 1)
  br label %done
done:
  ret void
}}

define internal void @run_tasks(ptr %st, i32 %gen) {{
entry:
  %desc = getelementptr i8, ptr %st, i64 {_DESC}
{_load_fields(["kind", "fnw", "tablew", "ntasks", "ncalls", "fields"], "%desc")}
  %fn = inttoptr i64 %fnw to ptr
  %table = inttoptr i64 %tablew to ptr
  %ticketp = getelementptr i8, ptr %st, i64 64
  %donep = getelementptr i8, ptr %st, i64 128
  %genw = zext i32 %gen to i64
  %hi = shl i64 %genw, 32
  %rowlen = mul i64 %ncalls, %fields
  br label %claim
claim:
  %t = load atomic i64, ptr %ticketp acquire, align 8
  %tgen = and i64 %t, -4294967296
  %idx = and i64 %t, 4294967295
  %samegen = icmp eq i64 %tgen, %hi
  %left = icmp ult i64 %idx, %ntasks
  %ok = and i1 %samegen, %left
  br i1 %ok, label %try, label %exit
try:
  %t1 = add i64 %t, 1
  %cx = cmpxchg ptr %ticketp, i64 %t, i64 %t1 acq_rel acquire
  %won = extractvalue {{ i64, i1 }} %cx, 1
  br i1 %won, label %run, label %claim
run:
  %off = mul i64 %idx, %rowlen
  %base = getelementptr i64, ptr %table, i64 %off
  br label %calls
calls:
  %ci = phi i64 [0, %run], [%ci.next, %calls]
  %roff = mul i64 %ci, %fields
  %row = getelementptr i64, ptr %base, i64 %roff
  call void @run_row(i64 %kind, ptr %fn, ptr %row)
  %ci.next = add i64 %ci, 1
  %more = icmp ult i64 %ci.next, %ncalls
  br i1 %more, label %calls, label %finished
finished:
  %d = atomicrmw add ptr %donep, i64 1 acq_rel
  br label %claim
exit:
  ret void
}}

define void @dcopt_pool_worker(ptr %st, i64 %spin) {{
entry:
  %seen0 = load atomic i32, ptr %st acquire, align 4
  %stopp = getelementptr i8, ptr %st, i64 320
  %sleepp = getelementptr i8, ptr %st, i64 256
  br label %outer
outer:
  %seen = phi i32 [%seen0, %entry], [%g, %work]
  br label %wait
wait:
  %spins = phi i64 [0, %outer], [%spins.next, %spin.b], [0, %sleep]
  %g = load atomic i32, ptr %st acquire, align 4
  %changed = icmp ne i32 %g, %seen
  br i1 %changed, label %work, label %check
check:
  %stop = load atomic i64, ptr %stopp acquire, align 8
  %stopping = icmp ne i64 %stop, 0
  br i1 %stopping, label %exit, label %decide
decide:
  %spinning = icmp ult i64 %spins, %spin
  br i1 %spinning, label %spin.b, label %sleep
spin.b:
  call void @llvm.x86.sse2.pause()
  %spins.next = add i64 %spins, 1
  br label %wait
sleep:
  %s1 = atomicrmw add ptr %sleepp, i64 1 seq_cst
  %seenw = zext i32 %seen to i64
  %r = call i64 (i64, ...) @syscall(i64 202, ptr %st, i64 128, i64 %seenw, ptr null, ptr null, i64 0)
  %s2 = atomicrmw sub ptr %sleepp, i64 1 seq_cst
  br label %wait
work:
  call void @run_tasks(ptr %st, i32 %g)
  br label %outer
exit:
  ret void
}}

define void @dcopt_pool_run(ptr %st, i64 %kind, i64 %fn, i64 %table, i64 %ntasks, i64 %ncalls, i64 %fields) {{
entry:
  %desc = getelementptr i8, ptr %st, i64 {_DESC}
{_store_fields(["kind", "fn", "table", "ntasks", "ncalls", "fields"], "%desc")}
  %donep = getelementptr i8, ptr %st, i64 128
  store atomic i64 0, ptr %donep release, align 8
  %g = load atomic i32, ptr %st monotonic, align 4
  %g1 = add i32 %g, 1
  %g1w = zext i32 %g1 to i64
  %ticket = shl i64 %g1w, 32
  %ticketp = getelementptr i8, ptr %st, i64 64
  store atomic i64 %ticket, ptr %ticketp release, align 8
  store atomic i32 %g1, ptr %st release, align 4
  fence seq_cst
  %sleepp = getelementptr i8, ptr %st, i64 256
  %sleepers = load atomic i64, ptr %sleepp seq_cst, align 8
  %anyasleep = icmp sgt i64 %sleepers, 0
  br i1 %anyasleep, label %wake, label %own
wake:
  %w = call i64 (i64, ...) @syscall(i64 202, ptr %st, i64 129, i64 2147483647, ptr null, ptr null, i64 0)
  br label %own
own:
  call void @run_tasks(ptr %st, i32 %g1)
  br label %join
join:
  %d = load atomic i64, ptr %donep acquire, align 8
  %all = icmp uge i64 %d, %ntasks
  br i1 %all, label %exit, label %pause
pause:
  call void @llvm.x86.sse2.pause()
  br label %join
exit:
  ret void
}}

define void @dcopt_pool_stop(ptr %st) {{
entry:
  %stopp = getelementptr i8, ptr %st, i64 320
  store atomic i64 1, ptr %stopp seq_cst, align 8
  %g = atomicrmw add ptr %st, i32 1 seq_cst
  %w = call i64 (i64, ...) @syscall(i64 202, ptr %st, i64 129, i64 2147483647, ptr null, ptr null, i64 0)
  ret void
}}
"""

_RUN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, *[ctypes.c_int64] * 6)
_WORKER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)
_STOP = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class NativePool:
    """``threads - 1`` parked native workers plus the calling thread."""

    def __init__(self, threads: int):
        from dcopt.backends.cpu import compiler

        self.threads = max(1, int(threads))
        self.engine, _ = compiler.compile_llvm(POOL_IR, provenance={"kind": "thread pool"})
        raw = np.zeros(_STATE_BYTES + 64, np.uint8)
        start = -raw.ctypes.data % 64
        self._raw, self.state = raw, raw[start:start + _STATE_BYTES]
        self._address = self.state.ctypes.data
        self._run = _RUN(self.engine.get_function_address("dcopt_pool_run"))
        self._stop = _STOP(self.engine.get_function_address("dcopt_pool_stop"))
        worker = _WORKER(self.engine.get_function_address("dcopt_pool_worker"))
        self._workers = [threading.Thread(target=worker, args=(self._address, SPIN_PAUSES), daemon=True,
                                          name=f"dcopt-pool-{i}") for i in range(self.threads - 1)]
        for t in self._workers:
            t.start()

    def bind(self, kind: int, fn, table: np.ndarray):
        """A zero-argument closure running every task of ``table`` ([tasks, calls, FIELDS[kind]]
        int64) with C function ``fn`` (a ctypes function or an address) on the pool."""
        table = np.ascontiguousarray(table, np.int64)
        fields = FIELDS.get(kind, table.shape[-1] if table.ndim == 3 and table.shape[-1] >= 2 else 2)
        if table.ndim != 3 or table.shape[2] != fields:
            raise ValueError(f"task table of kind {kind} must be [tasks, calls, {fields}], got {table.shape}")
        address = fn if isinstance(fn, int) else ctypes.cast(fn, ctypes.c_void_p).value
        run, args = self._run, (self._address, kind, address, table.ctypes.data, table.shape[0], table.shape[1],
                                fields)

        def step() -> None:
            run(*args)

        step.buffers = (table, fn, self)  # the table, the callee and this pool outlive the closure
        return step

    def close(self) -> None:
        """Stop and join the workers (idempotent)."""
        if self._workers:
            self._stop(self._address)
            for t in self._workers:
                t.join()
            self._workers = []


_POOLS: dict[int, NativePool] = {}
_LOCK = threading.Lock()


def pool(threads: int) -> NativePool:
    """The process's pool with ``threads`` threads, started on first use. Sessions compiled for
    different thread counts keep their own pools; an idle pool's workers sleep on the futex."""
    with _LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = NativePool(threads)
        return _POOLS[threads]


@atexit.register
def _shutdown() -> None:  # workers run code the engine owns: stop them before it is freed
    with _LOCK:
        while _POOLS:
            _POOLS.popitem()[1].close()
