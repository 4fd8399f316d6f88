"""The generated program: steps over named buffers, the kernels' sources, the weights and the
memory plan -- what the runtime binds and a build stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from dcopt.ops.misc import RANDOM_OPS

F32 = "float32"

#: Kernels touching at least this many elements get a pool-task wrapper and run split across the
#: threads (decided by codegen, or for a build for every size when it is bound to sizes): the
#: GEMM or conv before them was split across cores, and a serial kernel then read half its
#: operand from the other core's cache (GPT-2's 128x768 bias add: 48 us instead of 9 us).
TASK_ELEMENTS = 16384


@dataclass
class Step:
    kind: str
    inputs: list[str]
    outputs: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "inputs": self.inputs, "outputs": self.outputs, "params": self.params,
                "label": self.label}

    @classmethod
    def from_dict(cls, d: dict) -> "Step":
        return cls(d["kind"], list(d["inputs"]), list(d["outputs"]), dict(d["params"]), d.get("label", ""))


@dataclass
class Program:
    """Everything the runtime needs: buffers (name -> (shape, dtype)), weights, steps, kernels."""

    inputs: list[str]
    outputs: list[str]
    types: dict[str, tuple[tuple[int, ...], str]]
    params: dict[str, np.ndarray]
    steps: list[Step]
    kernels: dict[str, str] = field(default_factory=dict)  # generated function name -> source
    signatures: dict[str, list[str]] = field(default_factory=dict)  # name -> numba signatures
    opset: dict[str, int] = field(default_factory=dict)
    native: dict[str, str] = field(default_factory=dict)  # symbol -> LLVM IR functions (directconv)
    memory: dict = field(default_factory=dict)  # the memory plan: {"arena_size": n, "offsets": {name: [offset, bytes]}}
    weights_index: dict | None = None  # params written to a weights file as generated: its index
    #: [dim, dim, node]: sizes that must be equal at run time (``Graph.size_checks``), checked at bind
    checks: list = field(default_factory=list)


#: Ops a run must execute every time although their inputs are fixed (their results are random).
_EVERY_RUN = RANDOM_OPS | {"Dropout"}  # a step cannot tell whether its Dropout trains


def bind_time_steps(program: "Program") -> list[Step]:
    """Steps whose results follow from the weights and the bound sizes alone -- Shape and Size
    of any planned value, and steps over weights and such results (position ids from
    ``Range(0, S)``, a Reshape's target, the position embeddings they gather): run once when a
    program is bound, not by every run."""
    root = {}  # a view's bytes are its source's
    for s in program.steps:
        if s.kind == "view":
            root.update((o, root.get(s.inputs[0], s.inputs[0])) for o in s.outputs)
    writes: dict[str, int] = {}
    for s in program.steps:
        for o in s.outputs:
            if o and s.kind != "view":
                writes[root.get(o, o)] = writes.get(root.get(o, o), 0) + 1
    dynamic = {n for n, (shape, _) in program.types.items() if shape is None}
    fixed = set(program.params)
    out = []
    for s in program.steps:
        if any(writes.get(root.get(o, o), 0) > 1 for o in s.outputs if o):
            continue  # bytes a later step writes again (a scatter into zeros): every run
        if s.kind == "dynamic" or (s.kind == "fallback" and (
                s.params.get("op") in _EVERY_RUN or s.params.get("domain") not in ("", "ai.onnx"))):
            continue
        own = s.inputs[:int(s.params.get("n_inputs", len(s.inputs)))]
        if len(own) != len(s.inputs) or any(o in dynamic or o in program.outputs for o in s.outputs):
            continue  # captures outer values (a subgraph), or sized at run time, or the caller's
        if (s.params.get("op") in ("Shape", "Size") and s.kind == "fallback" and s.inputs[0] not in dynamic) or all(
                not n or n in fixed for n in own):
            out.append(s)
            fixed.update(o for o in s.outputs if o)
    return out


def placed_memory(memory: Mapping, bindings: Mapping[str, int]) -> Mapping:
    """The memory plan at ``bindings``: a program for every size keeps its buffers' sharing
    (``layout``, decided once by plan-memory) and places them here, per size."""
    if "layout" not in memory:
        return memory
    from dcopt.passes.memory_plan import Layout

    offsets, arena = Layout.from_dict(memory["layout"]).place(bindings)
    return {**memory, "arena_size": arena, "offsets": {k: list(v) for k, v in offsets.items()}}
