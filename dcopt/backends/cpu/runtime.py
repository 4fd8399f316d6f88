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

from dcopt.backends.cpu import gemm, parallel, tasks
from dcopt.backends.cpu.program import TASK_ELEMENTS, Program, Step, bind_time_steps, placed_memory
from dcopt.errors import ExecutionError, InputError
from dcopt.ir.dtypes import to_numpy
from dcopt.ir.tasklet import parse_index

ALIGN = 64


class CompiledModel:
    """A program bound to memory and kernels; ``run(feeds)`` executes it."""

    def __init__(self, program: Program, kernels: ModuleType, native=None, threads: int | None = None,
                 bindings: Mapping[str, int] | None = None):
        self.program = program
        self.native = native  # the MCJIT engine of the generated kernels: keeps their code alive
        self.threads = parallel.threads() if threads is None else threads
        #: sizes of the symbols a program for every size leaves free (its buffers are sized by them)
        self.bindings = dict(bindings or {})
        with parallel.binding(self.threads):
            self._bind_all(program, kernels)

    def _bind_all(self, program: Program, kernels: ModuleType) -> None:
        from dcopt.limits import check_tensor_size

        types = sized_types(program, self.bindings)
        plan = placed_memory(program.memory, self.bindings)
        size = int(plan.get("arena_size", 0))
        check_tensor_size("arena", [size], "uint8", where="memory arena")
        # Slack after the last buffer: generated kernels may read (never write) up to one vector
        # past the end of a row they stream (pointwise convs, the last row of the image).
        self.arena = _aligned_zeros(size + ALIGN)
        self.arena_bytes = size
        # Weights as writeable C arrays: kernels are compiled for exactly that array type (a
        # read-only array, e.g. one imported from ONNX bytes, would match no compiled signature).
        bufs: dict[str, np.ndarray] = {n: a if a.flags.c_contiguous and a.flags.writeable else np.array(a, order="C")
                                       for n, a in program.params.items()}
        offsets = plan.get("offsets", {})
        #: values sized at run time (dynamic steps): produced afresh by every run, kept here
        self.dynamic = {n for n, (shape, _) in types.items() if shape is None}
        self.values: dict[str, np.ndarray] = {}
        prologue = bind_time_steps(program)
        fixed = {o for s in prologue for o in s.outputs}  # computed once: never in the shared arena
        for s in program.steps:  # and views of them read their bytes, not the arena's
            if s.kind == "view" and s.inputs[0] in fixed:
                fixed.update(s.outputs)
        views = {o for s in program.steps if s.kind == "view" for o in s.outputs if o not in offsets or o in fixed}
        for n, (shape, dtype) in types.items():
            if n in bufs or n in views or n in self.dynamic:
                continue
            dtype = to_numpy(dtype)
            count = int(np.prod(shape, dtype=np.int64))
            nbytes = count * dtype.itemsize
            if dtype == object:  # strings: object arrays, never in the arena (fallback steps use them)
                bufs[n] = np.empty(shape, dtype)
            elif n in offsets and n not in fixed:
                off = int(offsets[n][0])
                bufs[n] = self.arena[off: off + nbytes].view(dtype).reshape(shape)
            else:  # graph inputs and outputs, and values the plan left out
                bufs[n] = _aligned_zeros(nbytes + ALIGN)[:nbytes].view(dtype).reshape(shape)
        for s in program.steps:  # views of what the plan does not place (graph inputs, weights)
            if s.kind == "view":
                for out, offset in zip(s.outputs, s.params.get("offsets", [0] * len(s.outputs))):
                    if out in views:
                        bufs[out] = _byte_view(bufs[s.inputs[0]], int(offset), *types[out])
        self.buffers = bufs
        scratch = max([gemm.conv_scratch_elements(self._sized(s.params["view4d"]), types[s.inputs[1]][0],
                                                  self._sized(s.params["out4d"]), s.params)
                       for s in program.steps if s.kind == "conv"] or [0])
        self.scratch = _aligned_zeros(4 * max(scratch, 1)).view(np.float32)
        once = {id(s) for s in prologue}
        calls = [self._bind(s, kernels) for s in program.steps]
        for s, call in zip(program.steps, calls):  # values that follow from weights and sizes alone:
            if id(s) in once and call is not None:  # computed now, once
                call()
        calls = [None if id(s) in once else c for s, c in zip(program.steps, calls)]
        self.calls: list[Callable[[], None]] = [c for c in calls if c]
        self.call_steps: list[Step] = [s for s, c in zip(program.steps, calls) if c]
        self.input_buffers = [(n, bufs[n]) for n in program.inputs if n not in self.dynamic]
        self.dynamic_inputs = [n for n in program.inputs if n in self.dynamic]
        self.output_names = list(program.outputs)

    def _bind(self, s: Step, kernels: ModuleType) -> Callable[[], None] | None:
        b = self.buffers
        p = s.params
        if s.kind in ("dynamic", "fallback"):
            return _bind_reference(s, b, self.values)
        ins = [b[n] if n else None for n in s.inputs]
        outs = [b[n] if n else None for n in s.outputs]
        if s.kind == "view":
            return None
        if s.kind == "kernel":
            return self._bind_kernel(s, kernels)
        if s.kind == "matvec":  # generated batch-1 dense layer: column blocks as pool tasks
            from dcopt.backends.cpu.matvec import MatvecPlan

            plan, fn = MatvecPlan.from_params(p), self._native_function(p["kernel_name"])
            head = [ins[0].ctypes.data, ins[1].ctypes.data, outs[0].ctypes.data, ins[2].ctypes.data if plan.bias else 0]
            return parallel.bind_convs(fn, [[head + [lo, hi, 0, 1, 0]] for lo, hi in parallel.split(
                plan.blocks, parallel.threads())], (ins, outs))
        if s.kind == "gemm":  # generated row-major GEMM (directconv.gemm_plan): channel groups as tasks
            from dcopt.backends.cpu.directconv import DirectPlan

            plan, fn = DirectPlan.from_params(p), self._native_function(p["kernel_name"])
            if p.get("chunks"):
                return _bind_gemm_chunks([(self._native_function(c["kernel_name"]), DirectPlan.from_params(c),
                                           int(c["rows"])) for c in p["chunks"]], ins, outs)
            head = [ins[0].ctypes.data, ins[1].ctypes.data, outs[0].ctypes.data, ins[2].ctypes.data if plan.bias else 0]
            return parallel.bind_convs(fn, [[head + list(c) + [0] for c in task] for task in parallel.grid_tasks(
                plan.tiling.total_groups, 1, parallel.threads())], (ins, outs))
        if s.kind == "matmul":
            return gemm.bind_matmul(ins[0], ins[1], outs[0], p["mode"], bool(p.get("transA")), bool(p.get("transB")),
                                    float(p.get("alpha", 1.0)))
        if s.kind == "conv":
            bias = ins[2] if p.get("bias") else None  # generated kernels only: [x, w, bias?, residual?]
            residual = ins[-1] if p.get("residual") else None
            p = {**p, "view4d": self._sized(p["view4d"]), "out4d": self._sized(p["out4d"])}  # a run's batch
            x, out = ins[0].reshape(p["view4d"]), outs[0].reshape(p["out4d"])
            if residual is not None:
                residual = residual.reshape(p["out4d"])
            return gemm.bind_conv(x, ins[1], out, p, self.scratch, self._native_function, bias, residual)
        if s.kind == "concat":
            return _bind_concat(outs[0], ins, [int(o) for o in p["offsets"]])
        raise ExecutionError(f"unknown step kind '{s.kind}'", node=s.label)

    def _sized(self, dims) -> list[int]:
        """Step dims with the program's symbols (a conv's batch) at this binding's sizes."""
        return list(sized_dims(dims, self.bindings))

    def _native_function(self, name: str):
        """ctypes function of generated kernel ``name`` (in :attr:`native`)."""
        from dcopt.backends.cpu.parallel import CONV_PROTO

        if self.native is None:
            raise ExecutionError(f"generated kernel {name} is missing: the build has no native kernels")
        return CONV_PROTO(self.native.get_function_address(name))

    def _bind_kernel(self, s: Step, kernels: ModuleType) -> Callable[[], None]:
        """A generated kernel over its arrays; split into pool tasks over its first shared loop
        when it has a task wrapper and more than one thread runs."""
        p = s.params
        fn = getattr(kernels, p["kernel"])
        args = [self.buffers[a].reshape(1) if self.buffers[a].ndim == 0 else self.buffers[a] for a in p["args"]]
        lo, hi = 0, 0
        if p.get("outer_range"):
            env = {sym: int(self.buffers[c].shape[axis]) for sym, (c, axis) in p.get("symbols", {}).items()}
            lo, hi = (int(parse_index(t).evaluate(env)) for t in p["outer_range"])
        biggest = max((a.size for a in args), default=0)  # what codegen decided, at this binding's sizes
        if p.get("task") and parallel.threads() > 1 and hi - lo > 1 and lo == 0 and biggest >= TASK_ELEMENTS:
            views = [a.view(np.uint16) if a.dtype.kind == "V" or a.dtype == np.float16 else a for a in args]
            head = [a.ctypes.data for a in views]
            tail = [int(d) for a in views for d in a.shape]
            return tasks.bind_rows(getattr(kernels, p["task"]), head, tail, hi, views)
        args = [a.view(np.uint16) if a.dtype == np.float16 or a.dtype.kind == "V" else a for a in args]
        return lambda: fn(lo, hi, *args)

    def profile(self, feeds: Mapping[str, np.ndarray], reps: int = 20) -> list[dict]:
        """Median seconds of every bound step over ``reps`` runs: ``[{label, kind, seconds}]``
        in run order (what ``dcopt run --profile`` prints)."""
        import time

        self.run(feeds)
        samples = [[] for _ in self.calls]
        clock = time.perf_counter
        for _ in range(reps):
            for i, call in enumerate(self.calls):
                t0 = clock()
                call()
                samples[i].append(clock() - t0)
        return [{"label": s.label, "kind": s.kind, "seconds": float(np.median(t))}
                for s, t in zip(self.call_steps, samples)]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        for name, buf in self.input_buffers:
            value = feeds[name]
            if value.shape != buf.shape or value.dtype != buf.dtype:
                raise InputError(f"expected {buf.dtype}{list(buf.shape)}, got {value.dtype}{list(value.shape)}",
                                 input=name)
            np.copyto(buf, value)
        values = self.values
        values.clear()
        for name in self.dynamic_inputs:  # arrays sized at run time, sequences (lists), optionals
            values[name] = feeds[name]
        for call in self.calls:
            call()
        return [values[n] if n in self.dynamic else self.buffers[n].copy() for n in self.output_names]


def _bind_gemm_chunks(kernels, ins, outs) -> Callable[[], None] | None:
    """Generated GEMMs compiled for fixed numbers of rows of A (a build for every size:
    ``kernels`` = ``[(function, plan, rows)]``, most rows first, sharing packed weights) over a
    run's rows: chunks of the first size, then of the next for what remains, each chunk x channel
    group one call, split over the threads as a conv's rows and groups are; the last rows that
    fill no chunk go through a zero-padded copy into the smallest one (the kernels write whole
    chunks)."""
    a, out = ins[0], outs[0]
    k, n = a.shape[-1], out.shape[-1]
    m = a.size // k if k else 0
    if m == 0 or n == 0:
        return None
    w, b = ins[1].ctypes.data, ins[2].ctypes.data if kernels[0][1].bias else 0
    calls, start, keep = [], 0, [ins, outs]
    a_tail = out_tail = None
    for i, (fn, plan, rows) in enumerate(kernels):
        count = (m - start) // rows
        bases = [(a.ctypes.data + 4 * (start + j * rows) * k, out.ctypes.data + 4 * (start + j * rows) * n)
                 for j in range(count)]
        start += count * rows
        tail = m - start if i == len(kernels) - 1 else 0
        if tail:  # slack after each copy: the kernel may read a vector past a row's end
            a_tail = _aligned_zeros(4 * rows * k + ALIGN)[:4 * rows * k].view(np.float32).reshape(rows, k)
            out_tail = _aligned_zeros(4 * rows * n + ALIGN)[:4 * rows * n].view(np.float32).reshape(rows, n)
            bases.append((a_tail.ctypes.data, out_tail.ctypes.data))
            keep += [a_tail, out_tail]
        if bases:
            tasks = [[[bases[c][0], w, bases[c][1], b, g0, g1, 0, 1, 0] for g0, g1, c0, c1 in task
                      for c in range(c0, c1)]
                     for task in parallel.grid_tasks(plan.tiling.total_groups, len(bases), parallel.threads())]
            calls.append(parallel.bind_convs(fn, tasks, keep))
    if a_tail is None:
        return calls[0] if len(calls) == 1 else lambda: [c() for c in calls] and None
    a_rows, out_rows, rest = a.reshape(m, k), out.reshape(m, n), m - start

    def call() -> None:
        a_tail[:rest] = a_rows[start:]
        for c in calls:
            c()
        out_rows[start:] = out_tail[:rest]

    return call


def sized_types(program: Program, bindings: Mapping[str, int]) -> dict[str, tuple]:
    """``program.types`` with the symbols of a program for every size bound (InputError naming a
    symbol no binding gives a size)."""
    from dcopt.ops.shapes.dims import substitute

    for a, b, node in program.checks:  # equalities an expansion relied on (a Slice [:S] of a table)
        if substitute(a, bindings) != substitute(b, bindings):
            raise InputError(f"at sizes {dict(bindings)} node '{node}' broadcasts {a} = {substitute(a, bindings)} "
                             f"against {b} = {substitute(b, bindings)}: the model does not run at these sizes")
    return {name: (None if shape is None else sized_dims(shape, bindings, name), dtype)
            for name, (shape, dtype) in program.types.items()}


def sized_dims(dims, bindings: Mapping[str, int], what: str = "a step") -> tuple[int, ...]:
    """``dims`` with a program's symbols at ``bindings`` (InputError naming a dim no binding sizes)."""
    if all(isinstance(d, int) for d in dims):
        return tuple(dims)
    from dcopt.ops.shapes.dims import substitute

    sized = tuple(substitute(d, bindings) if isinstance(d, str) else d for d in dims)
    if not all(isinstance(d, int) for d in sized):
        raise InputError(f"'{what}' is sized by symbols {list(sized)}; this run gives sizes {dict(bindings)}")
    return sized


def _aligned_zeros(nbytes: int) -> np.ndarray:
    """Zeroed bytes whose first byte is 64-byte aligned (a zmm register / cache line)."""
    raw = np.zeros(nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes]


def _byte_view(source: np.ndarray, offset: int, shape, dtype) -> np.ndarray:
    """The array of ``shape``/``dtype`` at ``offset`` bytes into ``source``'s (C-contiguous) bytes."""
    raw = source.reshape(-1).view(np.uint8)
    dtype = to_numpy(dtype) if isinstance(dtype, str) else np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return raw[offset: offset + nbytes].view(dtype).reshape(shape)


def _bind_concat(whole: np.ndarray, parts: list[np.ndarray], offsets: list[int]) -> Callable[[], None]:
    """Copy each input to its byte range of ``whole``, except inputs the memory plan already placed
    there (their producers wrote into the output: :mod:`dcopt.ir.views`)."""
    pairs = []
    for part, offset in zip(parts, offsets):
        target = _byte_view(whole, offset, part.shape, part.dtype)
        if target.ctypes.data != part.ctypes.data:
            pairs.append((target, part))
    copy = np.copyto
    return lambda: [copy(d, s) for d, s in pairs] and None


def _bind_reference(s: Step, buffers: Mapping[str, np.ndarray], values: dict) -> Callable[[], None]:
    """An op without generated code runs its reference implementation (a *fallback* step, or a
    *dynamic* one whose values are sized at run time). Inputs come from the planned buffers or this
    run's dynamic values; results go into the planned buffers, or become dynamic values. Ops with
    subgraphs (If, Loop, Scan) get a runner for their bodies that sees the outer values the step
    lists after its own inputs (``n_inputs``)."""
    from dcopt.ir.executor import run_graph
    from dcopt.ir.serialize import _decode_attr
    from dcopt.ops import registry

    p = s.params
    opdef = registry.lookup(p["op"], p["domain"])
    attrs = {k: _decode_attr(v) for k, v in p.get("attrs", {}).items()}
    opset, n_out, call = int(p["opset"]), len(s.outputs), registry.call
    n_in = int(p.get("n_inputs", len(s.inputs)))
    own, captured = s.inputs[:n_in], s.inputs[n_in:]
    static = {n: buffers[n] for n in s.inputs if n and n in buffers}

    def value(name):
        return static[name] if name in static else values[name]

    def run() -> None:
        outer = {n: value(n) for n in captured}

        def run_subgraph(body, feeds):
            feeds = dict(zip(body.inputs, feeds)) if not isinstance(feeds, Mapping) else feeds
            result = run_graph(body, feeds, check_inputs=False, outer=outer)
            return [result[o] for o in body.outputs]

        args = [None if not n else value(n) for n in own]
        results = call(opdef, args, attrs, opset, run_subgraph, n_out)
        for name, result in zip(s.outputs, results):
            if name:
                if name in buffers:
                    if np.shape(result) != buffers[name].shape:  # copyto would broadcast it silently
                        raise ExecutionError(f"{p['op']} returned {list(np.shape(result))} for '{name}', "
                                             f"compiled for {list(buffers[name].shape)}", node=s.label)
                    np.copyto(buffers[name], result)
                else:
                    values[name] = result

    return run
