"""numba kernels as pool tasks: C callbacks that take one row of a task table.

The pool (:mod:`threadpool`) calls C functions. A numba kernel becomes one through a ``cfunc``
wrapper ``task(row)``: ``row`` points at int64 fields ``[lo, hi, ...]`` -- the slice of rows or
channels this task covers, then the buffer addresses and sizes the wrapper rebuilds its arrays
from (:func:`f32` turns an address into a typed pointer for ``numba.carray``). Why: the
serial kernels after a split GEMM or conv read half their operand from the other core's cache
(GPT-2's 128x768 bias add: 48 us instead of 9 us), and a serial depthwise conv or pooling step
left a core idle; as tasks they run on both cores, each on the rows it produced.

Library tasks (parts of the ``blas`` conv routine) are compiled on first use and cached by numba
next to this file, like the library kernels they wrap. Generated kernels get their task wrappers
rendered into the model's kernel module (:func:`map_codegen.render_task`) and stored with it.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import carray, types
from numba.extending import intrinsic

from dcopt.backends.cpu import library, parallel, threadpool
from dcopt.backends.cpu.mathlib import FASTMATH

#: numba signature of every task: ``void(int64*)``.
TASK_SIGNATURE = types.void(types.CPointer(types.int64))
TASK_OPTIONS = dict(nopython=True, fastmath=FASTMATH, error_model="numpy", boundscheck=False)


def _pointer_intrinsic(dtype):
    @intrinsic
    def as_pointer(typingctx, address):
        sig = types.CPointer(dtype)(types.int64)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return sig, codegen

    return as_pointer


#: ``POINTERS[dtype](address)``: a typed pointer for ``carray``, for every dtype a generated
#: kernel's arrays have (half types travel as uint16 bits).
POINTERS = {name: _pointer_intrinsic(getattr(types, numba_name)) for name, numba_name in (
    ("float32", "float32"), ("float64", "float64"), ("bool", "boolean"), ("int8", "int8"), ("int16", "int16"),
    ("int32", "int32"), ("int64", "int64"), ("uint8", "uint8"), ("uint16", "uint16"), ("uint32", "uint32"),
    ("uint64", "uint64"))}
#: ``f32(address)``: a ``float32*`` for ``carray`` (``b8`` likewise for bool buffers).
f32, b8, f64 = POINTERS["float32"], POINTERS["bool"], POINTERS["float64"]


def _depthwise(row):
    # lo, hi (channels), x, w, out, h, w, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, bias [C], clamp [lo, hi]
    r = carray(row, (19,))
    lo, hi = r[0], r[1]
    x = carray(f32(r[2] + 4 * lo * r[5] * r[6]), (hi - lo, r[5], r[6]))
    w = carray(f32(r[3] + 4 * lo * r[9] * r[10]), (hi - lo, r[9], r[10]))
    out = carray(f32(r[4] + 4 * lo * r[7] * r[8]), (hi - lo, r[7], r[8]))
    bias = carray(f32(r[17] + 4 * lo), (hi - lo,))
    bounds = carray(f32(r[18]), (2,))
    library.depthwise2d(x, w, out, r[11], r[12], r[13], r[14], r[15], r[16], bias, bounds[0], bounds[1])


def _pad(row):
    # lo, hi (channels), x, xp, h, w, plane, ph, pw, wp
    r = carray(row, (10,))
    lo, hi = r[0], r[1]
    x = carray(f32(r[2] + 4 * lo * r[4] * r[5]), (hi - lo, r[4], r[5]))
    xp = carray(f32(r[3] + 4 * lo * r[6]), (hi - lo, r[6]))
    library.pad_planes(x, xp, r[7], r[8], r[9])


_LIBRARY = {"depthwise": _depthwise, "pad": _pad}


@functools.lru_cache(maxsize=None)
def library_task(name: str):
    """The compiled ``cfunc`` of library task ``name`` (numba-cached beside this module, keyed by
    the backend's code: :mod:`numba_cache`)."""
    from dcopt.backends.cpu.numba_cache import cached_cfunc

    return cached_cfunc(_LIBRARY[name], TASK_SIGNATURE, TASK_OPTIONS)


def bind_rows(task, head: list[int], tail: list[int], n: int, keep, align: int = 1):
    """A closure running ``task`` over ``range(n)`` split across the pool: row
    ``[lo, hi, *head, *tail]`` per piece (``head``/``tail``: the task's other fields)."""
    pieces = parallel.split(n, parallel.threads(), align)
    rows = [[[lo, hi, *head, *tail]] for lo, hi in pieces]
    return bind_table(task, rows, keep)


def bind_table(task, rows: list[list[list[int]]], keep):
    """A closure running the task rows ``rows`` ([tasks][calls][fields]) on the pool."""
    return parallel.bind_tasks(threadpool.ROWS, task.address, rows, (keep, task))


def scalar_cell(value: float) -> np.ndarray:
    """A float64 a task reads through its address (rows hold only int64 fields)."""
    return np.array([value], np.float64)
