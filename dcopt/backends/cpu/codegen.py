"""Code generation: a lowered graph (kernels, library calls, views) -> a :class:`Program`.

The graph arrives from the driver (:mod:`dcopt.driver`) with every decision already in it:
``form-kernels`` grouped the maps into kernels with their shared loops and locals, library
calls carry their implementation (``impl``) and absorbed epilogues, and ``plan-memory`` wrote
the memory plan (:attr:`Graph.memory_plan`). This module only translates, node by node:

* a kernel group -> numba source (:mod:`map_codegen`) and a ``kernel`` step (plus a pool-task
  wrapper when its first loop is shared and the kernel is big enough to split);
* a library call -> the step of its implementation (:mod:`library_calls`: generated LLVM conv
  and GEMM kernels with packed weights, OpenBLAS, ...);
* an op that copies nothing (:mod:`dcopt.ir.views`): a view, contiguous slice or split -> a
  ``view`` step (its outputs are its input's bytes at offsets); a Concat whose inputs are
  contiguous parts of its output -> a ``concat`` step that copies only the inputs the plan did not
  place inside the output already;
* any other op -> an ``op`` step that runs the op's reference implementation: ``dynamic`` when
  the op's output sizes depend on input values (NonZero, Unique, ...), else ``fallback`` (an op
  with no expansion yet). The manifest counts both, so a model's native coverage is visible.

Why a flat step list: it is the whole run-time schedule. The runtime binds every step to its
buffers once, so running the model is one loop over prebound calls with no per-op decisions;
the list (plain JSON) is also what a build directory stores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dcopt.backends.cpu.map_codegen import KernelSpec, render_kernel, render_task
from dcopt.backends.cpu.program import TASK_ELEMENTS, Program, Step
from dcopt.ir.file_maps import release_pages
from dcopt.ir.graph import Graph, Node
from dcopt.ir.loops import LIBRARY_CALL, is_loop_node, loop_spec
from dcopt.ir.types import TensorType
from dcopt.ir.views import concat_parts, slice_views
from dcopt.kernels.weights import WeightsWriter, read_weights
from dcopt.passes.kernels import is_kernel



#: What :attr:`CodeGenerator.params` holds for a parameter already written to the weights file.
_WRITTEN = object()


class CodeGenerator:
    def __init__(self, graph: Graph, weights: Path | None = None):
        self.graph = graph
        self.writer = None if weights is None else WeightsWriter(weights)
        self.steps: list[Step] = []
        self.kernels: dict[str, str] = {}
        self.signatures: dict[str, set[str]] = {}
        self.native: dict[str, str] = {}
        self.params: dict[str, np.ndarray] = {n: c.data for n, c in graph.containers.items() if c.data is not None}
        self.types: dict[str, TensorType] = {n: c.type for n, c in graph.containers.items()}

    # -- helpers the library lowering uses ------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.types[name].shape)

    def dtype(self, name: str) -> str:
        return self.types[name].dtype

    def const(self, name: str | None) -> np.ndarray | None:
        data = self.params.get(name) if name and name not in self.graph.inputs else None
        return None if data is _WRITTEN else data

    def add_param(self, array: np.ndarray, base: str) -> str:
        """A new parameter (a packed weight); with a weights file it is written there at once."""
        name = self.graph.fresh_name(base)
        array = np.asarray(array, order="C")  # keeps rank 0 (ascontiguousarray does not)
        self.types[name] = TensorType.of(array)
        if self.writer is not None:
            self.writer.add(name, array)
            array = _WRITTEN
        self.params[name] = array
        return name

    def _program_params(self, used: set[str]) -> tuple[dict[str, np.ndarray], dict | None]:
        """The parameters the steps read, and the weights file's index when there is one (then
        every parameter is a copy-on-write map of that file)."""
        params = {k: v for k, v in self.params.items() if k in used}
        if self.writer is None:
            return params, None
        for name, data in params.items():
            if data is not _WRITTEN:
                self.writer.add(name, data)
        index = {k: v for k, v in self.writer.close().items() if k in used}
        return read_weights(self.writer.path, index), index

    def emit(self, kind: str, node: Node | None, inputs, outputs, **params) -> Step:
        step = Step(kind, list(inputs), list(outputs), params, node.label if node is not None else "")
        self.steps.append(step)
        return step

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> Program:
        from dcopt.backends.cpu.library_calls import lower_library_call

        for node in self.graph.nodes:
            if is_kernel(node):
                self._kernel(node)
            elif is_loop_node(node) and node.op == LIBRARY_CALL:
                lower_library_call(self, node)
                # weights mapped from the model file are packed now: their pages can go
                release_pages(c for c in (self.const(n) for n in node.inputs) if c is not None)
            elif (views := slice_views(self.graph, node)) is not None and all(
                    self._known(n) for n in (node.inputs[0], *(o for o, _, _ in views))):
                self.emit("view", node, node.inputs[:1], [o for o, _, _ in views], offsets=[b for _, _, b in views])
            elif (parts := concat_parts(self.graph, node)) is not None:
                self.emit("concat", node, [n for n, _ in parts], node.outputs[:1], offsets=[b for _, b in parts])
            else:
                self._op(node)
        used = {n for s in self.steps for n in s.inputs} | set(self.graph.outputs)
        names = {n for s in self.steps for n in (*s.inputs, *s.outputs) if n} | set(self.graph.inputs) | set(
            self.graph.outputs)
        types = {n: (self.shape(n) if self._known(n) else None, self.dtype(n)) for n in names}
        plan = self.graph.memory_plan
        memory = {} if plan is None else {"arena_size": plan.arena_size,
                                         "offsets": {k: list(v) for k, v in plan.offsets.items()},
                                         "parts": {k: list(v) for k, v in plan.parts.items()}}
        if plan is not None and plan.symbolic:  # placed per size when a run binds the symbols
            memory["layout"] = plan.layout.to_dict()
        params, index = self._program_params(used)
        return Program(list(self.graph.inputs), list(self.graph.outputs), types, params, self.steps, self.kernels,
                       {k: sorted(v) for k, v in self.signatures.items()}, dict(self.graph.opset), self.native,
                       memory, index, [list(c) for c in self.graph.size_checks])

    def _kernel(self, node: Node) -> None:
        body = node.attrs["body"]
        specs = tuple(loop_spec(n) for n in body.nodes)
        locals_ = frozenset(node.attrs.get("locals", ()))
        types = {}
        for spec in specs:
            for name in (*(m.container for m in (*spec.inputs, *spec.outputs)), *spec.input_containers):
                t = self.types.get(name) or body.containers[name].type
                types[name] = (t.dtype, len(t.shape))
        shapes = {name: tuple(self.types[name].shape) for name in types  # symbolic dims: sized by a run
                  if name in self.types and self._known(name)}
        kernel = render_kernel(KernelSpec(specs, int(node.attrs.get("outer", 0)), locals_, types, shapes))
        self.kernels[kernel.name] = kernel.source
        self.signatures.setdefault(kernel.name, set()).add(kernel.signature)
        params = {"kernel": kernel.name, "outer_range": list(kernel.outer_range) if kernel.outer_range else None,
                  "symbols": {k: list(v) for k, v in kernel.symbols.items()}}
        ranks = [types[a][1] for a in kernel.args]
        dtypes = [types[a][0] for a in kernel.args]
        sized_by_run = any(not self.types[a].is_static for a in kernel.args if a in self.types)
        biggest = max((int(np.prod(self.shape(a))) for a in kernel.args if self.types[a].is_static), default=0)
        if kernel.parallel and (biggest >= TASK_ELEMENTS or sized_by_run):  # symbolic: a run's rows decide
            task, source = render_task(kernel, ranks, dtypes)
            self.kernels[task] = source
            self.signatures[task] = {"cfunc void(CPointer(int64))"}
            params["task"] = task
        written = set(node.outputs)
        inputs = [a for a in kernel.args if a not in written]
        outputs = [a for a in kernel.args if a in written]
        extra = [a for a in kernel.args if a not in node.inputs and a not in written]  # kernel-internal arrays
        params["args"] = kernel.args
        params["scratch"] = extra
        self.emit("kernel", node, [a for a in inputs if a not in extra], outputs + extra, **params)

    def _static(self, name: str) -> bool:
        t = self.types.get(name)
        return isinstance(t, TensorType) and t.is_static

    def _known(self, name: str) -> bool:
        """Static, or sized by symbols a run binds (a build for every size): every dim known."""
        t = self.types.get(name)
        return isinstance(t, TensorType) and t.shape is not None and None not in t.shape

    def _op(self, node: Node) -> None:
        """An op without an expansion runs its reference: a *dynamic* step when its values are sized
        by data at run time (they live outside the arena), else a *fallback* (not compiled yet)."""
        from dcopt.ir.serialize import _encode_attr

        captured = sorted(node.outer_reads() - set(node.inputs))  # what If/Loop/Scan bodies read outside
        sized_at_run_time = not all(self._known(n) for n in (*node.present_inputs, *node.outputs, *captured) if n)
        kind = "dynamic" if sized_at_run_time else "fallback"
        self.emit(kind, node, [*node.inputs, *captured], node.outputs, op=node.op, domain=node.domain,
                  opset=self.graph.opset_of(node.domain), attrs={k: _encode_attr(v) for k, v in node.attrs.items()},
                  n_inputs=len(node.inputs))


def generate(graph: Graph, weights: Path | None = None) -> Program:
    """The program of a lowered graph (see the module docstring). ``weights``: a file to write
    the parameters to as they are made (packed weights at once, so their copies never pile up
    in memory); the program's parameters are then maps of it (``program.weights_index``)."""
    return CodeGenerator(graph, weights).run()
