"""Inputs whose *values* decide sizes, and compiling for those values with a run-time guard.

A Reshape's target shape, a Resize's scales, a ReduceSum's axes, a TopK's k: when a model takes
such an operand as a graph input, the sizes of everything downstream follow from that input's
values, not only from input shapes. A compiler that fixes those sizes from an example feed and
forgets where they came from returns garbage on the next feed (the old backend did, with random
example data). dcopt instead *specializes on the value with a guard*, as it already does for
symbolic dims: the input becomes a compile-time constant (constant folding then makes every
downstream size static, so the whole model compiles natively), the build records the value,
and every run compares the fed value with it -- a different value selects or compiles another
variant, exactly like a new batch size does.

:func:`value_inputs` finds those inputs: graph inputs from which a value flows into an operand
an op reads for sizes (:func:`dcopt.ops.shapes.shape_inputs`), or for its loop structure
(:data:`STRUCTURE_INPUTS`), through any ops but ``Shape`` and ``Size`` (whose outputs depend on
their input's shape, not its values). Integer and boolean
inputs only carry such values in practice; a float input qualifies too when it feeds scales.
Sequence and optional inputs never do: they are run-time values (a list cannot be a constant),
so what they size runs as dynamic steps instead.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dcopt.ir.graph import Graph

#: Ops whose outputs depend only on their input's shape, never on its values.
SHAPE_ONLY = frozenset({"Shape", "Size"})


#: Operands whose values decide a loop's structure though not any size (CumSum's axis): with the
#: op's shape inputs (:func:`dcopt.ops.shapes.shape_inputs`, part of each op's shape rule) these
#: are what must be compile-time constants.
STRUCTURE_INPUTS: dict[str, tuple[int, ...]] = {"CumSum": (1,), "CumProd": (1,)}


def _shape_inputs(graph: Graph, node) -> tuple[int, ...]:
    from dcopt.ops.shapes import shape_inputs

    extra = STRUCTURE_INPUTS.get(node.op, ()) if node.domain in ("", "ai.onnx") else ()
    return tuple(dict.fromkeys((*shape_inputs(node.op, node.domain, graph.opset_of(node.domain)), *extra)))


def value_inputs(graph: Graph) -> dict[str, list[str]]:
    """``{graph input: [what reads its value for sizes, e.g. "Reshape 'r1' input 1"]}``."""
    from dcopt.ir.types import TensorType

    producers = graph.producers()
    inputs = {n for n in graph.inputs if isinstance(graph.containers[n].type, TensorType)}
    found: dict[str, list[str]] = {}
    for node in graph.nodes:
        for index in _shape_inputs(graph, node):
            if index >= len(node.inputs) or not node.inputs[index]:
                continue
            reason = f"{node.op} '{node.label}' input {index}"
            stack, seen = [node.inputs[index]], set()
            while stack:
                name = stack.pop()
                if name in seen:
                    continue
                seen.add(name)
                if name in inputs:
                    found.setdefault(name, []).append(reason)
                    continue
                if name in graph.inputs:
                    continue  # a sequence or optional input
                producer = producers.get(name)
                if producer is None or producer.op in SHAPE_ONLY:
                    continue
                stack.extend(i for i in producer.present_inputs)
    return found


def bind_values(graph: Graph, values: Mapping[str, np.ndarray]) -> Graph:
    """A copy of ``graph`` where each input in ``values`` is a constant holding that value."""
    out = graph.copy()
    for name, value in values.items():
        c = out.containers[name]
        c.data = np.asarray(value, order="C")  # (ascontiguousarray would make a scalar 1-D)
        out.inputs = [i for i in out.inputs if i != name]
    return out


def value_key(values: Mapping[str, np.ndarray]) -> tuple:
    """A hashable key of specialized values (dtype, shape and bytes of each)."""
    return tuple((name, str(v.dtype), tuple(v.shape), np.ascontiguousarray(v).tobytes())
                 for name, v in sorted(values.items()))
