"""Values that are other values' bytes: views, slices and concatenation parts, defined once.

Why one module: which ops copy nothing decides expansion (a view op stays an op instead of a copy
map), memory planning (a view shares its source's bytes; a part lives inside a bigger buffer) and
code generation (a view is no step at all). Three modules kept their own ``VIEW_OPS`` sets before.

* **Views** -- Reshape, Flatten, Squeeze, Unsqueeze, Identity: the output is the input's bytes
  under another shape (every container is C-contiguous).
* **Slices** -- a Slice or Split along one axis, step 1, where every dim before the axis is 1:
  each output is one contiguous byte range of the input (batch-1 channel slices of NCHW data).
* **Concatenation parts** -- a Concat along one axis where every dim before it is 1: input k is a
  contiguous byte range of the output, so its producer can write there directly and the Concat
  copies nothing for it (DenseNet's growing feature map, Inception's branch outputs). Whether an
  input *becomes* a part is the memory plan's decision (:mod:`dcopt.passes.memory_plan`); this
  module only says where each would live.

Offsets are in bytes. Slices and parts need static shapes (the callers run on specialized
graphs); reshapes are views whatever the sizes.
"""

from __future__ import annotations

import math

import numpy as np

from dcopt.ir import dtypes
from dcopt.ir.graph import Graph, Node

#: Ops whose output is their input's bytes under another shape.
RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def _static(graph: Graph, name: str) -> tuple[int, ...] | None:
    t = graph.type_of(name) if name else None
    if t is None or getattr(t, "shape", None) is None or not t.is_static:
        return None
    return tuple(int(d) for d in t.shape)


def _default_domain(node: Node) -> bool:
    return node.domain in ("", "ai.onnx")


def _leading_ones(shape: tuple[int, ...], axis: int) -> bool:
    return all(d == 1 for d in shape[:axis])


def slice_views(graph: Graph, node: Node) -> list[tuple[str, str, int]] | None:
    """``[(output, source, byte offset)]`` when every output of ``node`` is a contiguous part of
    its (first) input (see the module docstring), else None."""
    if not _default_domain(node) or not node.inputs or not node.inputs[0]:
        return None
    src = node.inputs[0]
    if node.op in RESHAPES:  # a view whatever the sizes (every container is C-contiguous)
        out = node.outputs[0] if node.outputs else ""
        return [(out, src, 0)] if out else None
    in_shape = _static(graph, src)
    if in_shape is None:
        return None
    itemsize = int(dtypes.itemsize(graph.type_of(src).dtype))
    if node.op == "Split":
        axis = int(graph.attr(node, "axis", 0)) % max(len(in_shape), 1)
        if not _leading_ones(in_shape, axis):
            return None
        inner = math.prod(in_shape[axis + 1:]) * itemsize
        views, start = [], 0
        for out in node.outputs:
            shape = _static(graph, out) if out else None
            if shape is None:
                return None
            views.append((out, src, start * inner))
            start += shape[axis]
        return views
    if node.op == "Slice" and graph.opset_of("") >= 10:
        out = node.outputs[0]
        shape = _static(graph, out)
        if shape is None:
            return None
        starts, ends = graph.constant(node.inputs[1]), graph.constant(node.inputs[2])
        axes = graph.constant(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
        steps = graph.constant(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] else None
        if starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3] and axes is None) or (
                len(node.inputs) > 4 and node.inputs[4] and steps is None):
            return None
        axes = [int(a) % len(in_shape) for a in (axes.reshape(-1) if axes is not None else range(starts.size))]
        if steps is not None and any(int(s) != 1 for s in steps.reshape(-1)):
            return None
        changed = [a for a in range(len(in_shape)) if shape[a] != in_shape[a]]
        if len(changed) > 1:
            return None
        axis = changed[0] if changed else 0
        if not _leading_ones(in_shape, axis):
            return None
        begin = 0
        for a, s in zip(axes, starts.reshape(-1)):
            if a == axis:
                s = int(s)
                begin = min(max(s + in_shape[a] if s < 0 else s, 0), in_shape[a])
        return [(out, src, begin * math.prod(in_shape[axis + 1:]) * itemsize)]
    return None


def concat_parts(graph: Graph, node: Node) -> list[tuple[str, int]] | None:
    """``[(input, byte offset in the output)]`` of a Concat whose inputs are contiguous parts of
    its output (every dim before the axis is 1), else None."""
    if not (_default_domain(node) and node.op == "Concat"):
        return None
    out = _static(graph, node.outputs[0])
    if out is None:
        return None
    axis = int(graph.attr(node, "axis")) % len(out)
    if not _leading_ones(out, axis):
        return None
    inner = math.prod(out[axis + 1:]) * int(dtypes.itemsize(graph.type_of(node.outputs[0]).dtype))
    parts, start = [], 0
    for name in node.inputs:
        if not name:
            continue
        shape = _static(graph, name)
        if shape is None:
            return None
        parts.append((name, start * inner))
        start += shape[axis]
    return parts


def is_copy_free(graph: Graph, node: Node) -> bool:
    """Whether ``node`` stays an op through expansion: a view, a contiguous slice/split or a
    concatenation whose inputs may be written in place."""
    return slice_views(graph, node) is not None or concat_parts(graph, node) is not None


def nbytes(graph: Graph, name: str) -> int:
    shape = _static(graph, name)
    return int(np.prod(shape, dtype=np.int64)) * int(dtypes.itemsize(graph.type_of(name).dtype))
