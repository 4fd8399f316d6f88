"""The compiled model: planned buffers, prebound steps, one fixed call sequence.

Binding happens once: every buffer is a view into one arena (planned by liveness, so
transients share memory), every step becomes a zero-argument closure over its views, and
views (Reshape/Flatten/...) are resolved to aliases up front. :meth:`CompiledModel.run` then
copies the feeds into the input buffers, calls the closures in order and copies the outputs
out -- no per-op decisions, lookups or allocations at run time.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable, Mapping

import numpy as np

from dcopt.backends.cpu import gemm, library
from dcopt.backends.cpu.program import Program, Step
from dcopt.errors import ExecutionError, InputError

ALIGN = 64


def _resolve_views(program: Program) -> dict[str, str]:
    """Map each container that is a view to the container whose memory it shares."""
    root: dict[str, str] = {}
    for s in program.steps:
        if s.kind == "view":
            src = s.inputs[0]
            root[s.outputs[0]] = root.get(src, src)
    return root


def plan_arena(program: Program) -> tuple[dict[str, int], int]:
    """Byte offsets of every transient/input/output root buffer in one arena, reusing memory
    of buffers whose last reader ran.

    A step's outputs never share memory with its own inputs, even where writing in place would
    be safe (an elementwise kernel reads index i before writing it): LLVM cannot prove two
    numba arrays do not alias, guards its vector loop with a runtime overlap check, and an
    in-place call takes the scalar path -- measured 580 us instead of 38 us for BERT's GELU."""
    root = _resolve_views(program)
    params = set(program.params)
    owners = [n for n in program.types if n not in params and n not in root]
    last: dict[str, int] = {}
    end = len(program.steps)
    for i, s in enumerate(program.steps):
        for n in s.inputs:
            if n:
                last[root.get(n, n)] = i
    for n in program.outputs + program.inputs:
        last[root.get(n, n)] = end
    nbytes = {n: -(-int(np.prod(program.types[n][0], dtype=np.int64)) * np.dtype(program.types[n][1]).itemsize
                   // ALIGN) * ALIGN or ALIGN for n in owners}
    free: list[tuple[int, int]] = []  # (offset, size), sorted by offset
    offsets: dict[str, int] = {}
    top = 0

    def place(n: str) -> None:
        nonlocal top
        need = nbytes[n]
        best = min((f for f in free if f[1] >= need), key=lambda f: f[1], default=None)
        if best is None:
            offsets[n], top = top, top + need
            return
        free.remove(best)
        offsets[n] = best[0]
        if best[1] > need:
            free.append((best[0] + need, best[1] - need))

    def release(n: str) -> None:
        free.append((offsets[n], nbytes[n]))
        free.sort()
        merged = []
        for off, size in free:
            if merged and merged[-1][0] + merged[-1][1] == off:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            else:
                merged.append((off, size))
        free[:] = merged

    for n in program.inputs:
        if n in nbytes:
            place(n)
    for i, s in enumerate(program.steps):
        dying = {root.get(n, n) for n in s.inputs if n and last.get(root.get(n, n)) == i and root.get(n, n) in offsets}
        for o in s.outputs:
            if o and o in nbytes and o not in offsets:
                place(o)
        for d in dying:
            release(d)
    return offsets, top


class CompiledModel:
    """A program bound to memory and kernels; ``run(feeds)`` executes it."""

    def __init__(self, program: Program, kernels: ModuleType):
        self.program = program
        offsets, size = plan_arena(program)
        self.arena = _aligned_zeros(size)
        self.arena_bytes = size
        # Weights as writeable C arrays: kernels are compiled for exactly that array type (a
        # read-only array, e.g. one imported from ONNX bytes, would match no compiled signature).
        bufs: dict[str, np.ndarray] = {n: a if a.flags.c_contiguous and a.flags.writeable else np.array(a, order="C")
                                       for n, a in program.params.items()}
        for n, off in offsets.items():
            shape, dtype = program.types[n]
            count = int(np.prod(shape, dtype=np.int64))
            bufs[n] = self.arena[off: off + count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)
        for s in program.steps:
            if s.kind == "view":
                bufs[s.outputs[0]] = bufs[s.inputs[0]].reshape(program.types[s.outputs[0]][0])
        self.buffers = bufs
        scratch = max([gemm.conv_scratch_elements(program.types[s.inputs[0]][0], program.types[s.inputs[1]][0],
                                                  program.types[s.outputs[0]][0], s.params)
                       for s in program.steps if s.kind == "conv"] or [0])
        self.scratch = _aligned_zeros(4 * max(scratch, 1)).view(np.float32)
        self.calls: list[Callable[[], None]] = [c for c in (self._bind(s, kernels) for s in program.steps) if c]
        self.input_buffers = [(n, bufs[n]) for n in program.inputs]
        self.output_buffers = [bufs[n] for n in program.outputs]

    def _bind(self, s: Step, kernels: ModuleType) -> Callable[[], None] | None:
        b = self.buffers
        p = s.params
        ins = [b[n] if n else None for n in s.inputs]
        outs = [b[n] if n else None for n in s.outputs]
        if s.kind == "view":
            return None
        if s.kind == "ew":
            fn = getattr(kernels, p["kernel"])
            args = [a.reshape(shape) for a, shape in zip(ins, p["shapes"][1:])]
            args += [o.reshape(p["shapes"][0]) for o in outs]
            return lambda: fn(*args)
        if s.kind == "matmul":
            return gemm.bind_matmul(ins[0], ins[1], outs[0], p["mode"])
        if s.kind == "conv":
            return gemm.bind_conv(ins[0], ins[1], outs[0], p, self.scratch)
        if s.kind in ("softmax", "layernorm", "reduce"):
            x = ins[0].reshape(p["rows"])
            if s.kind == "softmax":
                o, log, fn = outs[0].reshape(p["rows"]), bool(p["log"]), library.softmax_rows
                return lambda: fn(x, o, log)
            if s.kind == "layernorm":
                o, sc, bi, eps, fn = outs[0].reshape(p["rows"]), ins[1].reshape(-1), ins[2].reshape(-1), p["eps"], \
                    library.layernorm_rows
                return lambda: fn(x, sc, bi, o, eps)
            o, op, fn = outs[0].reshape(-1), int(p["op"]), library.reduce_rows
            return lambda: fn(x, o, op)
        if s.kind == "pool":
            args = (ins[0], outs[0], *p["kernel"], *p["strides"], *p["pads"], *p["pads_end"], bool(p["is_max"]),
                    bool(p["include_pad"]))
            fn = library.pool2d
            return lambda: fn(*args)
        if s.kind == "lrn":
            shape3 = (ins[0].shape[0], ins[0].shape[1], -1)
            x, o, fn = ins[0].reshape(shape3), outs[0].reshape(shape3), library.lrn
            args = (int(p["size"]), float(p["alpha"]), float(p["beta"]), float(p["bias"]))
            return lambda: fn(x, o, *args)
        if s.kind == "transpose":
            src, dst, copy = ins[0].transpose(p["perm"]), outs[0], np.copyto
            return lambda: copy(dst, src)
        if s.kind == "concat":
            return _bind_slices(outs[0], ins, p["axis"], into=True)
        if s.kind == "split":
            return _bind_slices(ins[0], outs, p["axis"], into=False)
        if s.kind == "gather":
            data, idx, dst, axis, take = ins[0], ins[1], outs[0], p["axis"], np.take
            return lambda: take(data, idx, axis=axis, out=dst, mode="wrap")
        if s.kind == "fallback":
            return _bind_fallback(s, ins, outs)
        raise ExecutionError(f"unknown step kind '{s.kind}'", node=s.label)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        for name, buf in self.input_buffers:
            value = feeds[name]
            if value.shape != buf.shape or value.dtype != buf.dtype:
                raise InputError(f"expected {buf.dtype}{list(buf.shape)}, got {value.dtype}{list(value.shape)}",
                                 input=name)
            np.copyto(buf, value)
        for call in self.calls:
            call()
        return [o.copy() for o in self.output_buffers]


def _aligned_zeros(nbytes: int) -> np.ndarray:
    """Zeroed bytes whose first byte is 64-byte aligned (a zmm register / cache line)."""
    raw = np.zeros(nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes]


def _bind_slices(whole: np.ndarray, parts: list[np.ndarray], axis: int, into: bool) -> Callable[[], None]:
    """Concat (``into``: copy parts into slices of ``whole``) or Split (slices out to parts)."""
    pairs, start = [], 0
    for part in parts:
        index = [slice(None)] * whole.ndim
        index[axis] = slice(start, start + part.shape[axis])
        view = whole[tuple(index)]
        pairs.append((view, part) if into else (part, view))
        start += part.shape[axis]
    copy = np.copyto
    return lambda: [copy(d, s) for d, s in pairs] and None


def _bind_fallback(s: Step, ins, outs) -> Callable[[], None]:
    """Run the reference implementation and copy its results into the planned buffers."""
    from dcopt.ir.serialize import _decode_attr
    from dcopt.ops import registry

    p = s.params
    opdef = registry.lookup(p["op"], p["domain"])
    attrs = {k: _decode_attr(v) for k, v in p.get("attrs", {}).items()}
    opset, n_out = int(p["opset"]), len(s.outputs)
    call, copy = registry.call, np.copyto
    pairs = [(i, o) for i, o in enumerate(outs) if o is not None]

    def run() -> None:
        results = call(opdef, list(ins), attrs, opset, None, n_out)
        for i, o in pairs:
            copy(o, results[i])

    return run
