"""Remove nodes whose output equals one of their inputs.

Each rule is one small function in ``RULES`` keyed by op: it returns ``forward(name)`` (the
output is the value of input ``name``), ``refuse(reason)`` (it looks like a no-op but is not
provably one — the reason lands in the pass's refusals), or None (an ordinary node). The rules:

* Identity; Dropout in inference mode whose mask output is unused;
* Cast/CastLike to the input's own dtype (only when that dtype is trustworthy, see
  :func:`~dcopt.passes.common.known_dtype`);
* Reshape/Flatten/Squeeze/Unsqueeze/Expand whose output type has the input's exact, fully known
  shape;
* Transpose with the identity permutation; Pad with all-zero pads; Slice that provably covers the
  whole tensor; Concat/Sum/Mean/Max/Min of a single input;
* Add/Sub of constant zero and Mul/Div by constant one, when broadcasting with the constant
  changes neither the shape nor the dtype (``x * ones(4)`` on an ``[N, 1]`` input broadcasts to
  ``[N, 4]`` and is kept). ``x + 0.0`` turns ``-0.0`` into ``+0.0``; that difference is accepted.

Readers of a removed output are rewired to the forwarded input. A graph output keeps its name:
the forwarded value is renamed to it when that is safe (it is produced by a node, and is not a
graph input, parameter, another output, or read inside a subgraph); otherwise the node stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from dcopt.ir import dtypes
from dcopt.ir.graph import Graph, Node
from dcopt.passes.base import Pass, PassResult, register_pass
from dcopt.passes.common import (broadcast_keeps_shape, constant, dropout_is_training, known_dtype, pad_spec,
                                 same_known_shape, subgraph_reads)


@dataclass(frozen=True)
class Match:
    forward: str | None = None
    reason: str = ""


def forward(name: str) -> Match:
    return Match(forward=name)


def refuse(reason: str) -> Match:
    return Match(reason=reason)


Rule = Callable[[Graph, Node, "set[str]"], "Match | None"]
RULES: dict[str, Rule] = {}


def rule(*ops: str):
    def register(fn: Rule) -> Rule:
        for op in ops:
            RULES[op] = fn
        return fn

    return register


# -- rules ------------------------------------------------------------------------------------


@rule("Identity")
def _identity(graph, node, read):
    return forward(node.inputs[0])


@rule("Dropout")
def _dropout(graph, node, read):
    training = dropout_is_training(graph, node)
    if training is not False:
        return refuse("it may run in training mode" if training is None else "it runs in training mode")
    if len(node.outputs) > 1 and node.outputs[1] and node.outputs[1] in read:
        return refuse(f"its mask output '{node.outputs[1]}' is used")
    return forward(node.inputs[0])


@rule("Cast", "CastLike")
def _cast(graph, node, read):
    x = node.inputs[0]
    source = known_dtype(graph, x)
    target = dtypes.from_onnx(int(node.attrs["to"])) if node.op == "Cast" else known_dtype(graph, node.inputs[1])
    if source is None or target is None:
        return refuse("the dtype of its input or target is unknown")
    return forward(x) if source == target else None


@rule("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand")
def _same_shape(graph, node, read):
    x, y = node.inputs[0], node.outputs[0]
    if same_known_shape(graph.type_of(x), graph.type_of(y)) and graph.type_of(x).dtype == graph.type_of(y).dtype:
        return forward(x)
    return None


@rule("Transpose")
def _transpose(graph, node, read):
    perm = node.attrs.get("perm")
    if perm is None:  # default reverses the axes: identity only for rank <= 1
        rank = graph.type_of(node.inputs[0]).rank
        return forward(node.inputs[0]) if rank is not None and rank <= 1 else None
    return forward(node.inputs[0]) if tuple(perm) == tuple(range(len(perm))) else None


@rule("Pad")
def _pad(graph, node, read):
    try:
        widths = pad_spec(graph, node).widths
    except ValueError:
        return None
    return forward(node.inputs[0]) if not any(any(w) for w in widths) else None


_BIG = 2**31 - 1  # exporters write INT_MAX / INT64_MAX ends to mean "to the end"


@rule("Slice")
def _slice(graph, node, read):
    if graph.opset_of(node.domain) < 10:
        starts, ends, axes, steps = (node.attrs.get("starts"), node.attrs.get("ends"), node.attrs.get("axes"), None)
    else:
        parts = [constant(graph, n) if n else None for n in (list(node.inputs[1:5]) + [""] * 4)[:4]]
        if any(p is None for p, n in zip(parts, (list(node.inputs[1:5]) + [""] * 4)[:4]) if n):
            return None
        starts, ends, axes, steps = parts
    shape = graph.type_of(node.inputs[0]).shape
    if starts is None or ends is None or shape is None:
        return None
    starts, ends = np.asarray(starts).reshape(-1), np.asarray(ends).reshape(-1)
    axes = np.arange(len(starts)) if axes is None else np.asarray(axes).reshape(-1)
    steps = np.ones(len(starts), dtype=np.int64) if steps is None else np.asarray(steps).reshape(-1)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = shape[int(axis) % len(shape)] if shape else None
        static = isinstance(dim, int)
        if step != 1:
            return None
        if not (start == 0 or (static and start <= -dim)):
            return None
        if not (end >= _BIG or (static and end >= dim)):
            return None if static else refuse(f"cannot prove end {int(end)} covers axis {int(axis)} of unknown size")
    return forward(node.inputs[0])


@rule("Concat", "Sum", "Mean", "Max", "Min")
def _single_input(graph, node, read):
    return forward(node.inputs[0]) if len(node.present_inputs) == 1 else None


_NEUTRAL = {"Add": (0, (0, 1)), "Sub": (0, (1,)), "Mul": (1, (0, 1)), "Div": (1, (1,))}


@rule("Add", "Sub", "Mul", "Div")
def _neutral_constant(graph, node, read):
    value, positions = _NEUTRAL[node.op]
    for pos in positions:
        c = constant(graph, node.inputs[pos])
        if c is None or c.size == 0 or not np.all(c == value):
            continue
        x = node.inputs[1 - pos]
        xt = graph.type_of(x)
        if not broadcast_keeps_shape(xt.shape if xt else None, tuple(c.shape)):
            return refuse(f"broadcasting {xt} with the constant {value} of shape {list(c.shape)} changes its shape")
        if known_dtype(graph, x) != dtypes.from_numpy(c.dtype):
            return refuse(f"the dtype of '{x}' is not known to be {c.dtype}")
        return forward(x)
    return None


# -- the pass ---------------------------------------------------------------------------------


@register_pass(aliases=("noops", "noop"))
class RemoveNoops(Pass):
    name = "remove-noops"
    in_place = True
    description = "remove nodes whose output equals an input (Identity, Cast to same type, x*1, ...)"

    def run(self, graph: Graph, ctx) -> PassResult:
        in_subgraphs = subgraph_reads(graph)
        read = {i for n in graph.nodes for i in n.present_inputs} | set(graph.outputs) | in_subgraphs
        rename: dict[str, str] = {}
        kept: list[Node] = []
        at_outputs: list[tuple[Node, str]] = []
        refusals: list[tuple[str, str]] = []
        removed = 0
        for node in graph.nodes:
            if rename and any(i in rename for i in node.inputs):
                node = node.replace(inputs=tuple(rename.get(i, i) for i in node.inputs))
            fn = RULES.get(node.op) if node.domain in ("", "ai.onnx") else None
            match = fn(graph, node, read) if fn and node.inputs and node.inputs[0] else None
            if match is None or match.forward is None:
                if match is not None:
                    refusals.append((node.label, match.reason))
                kept.append(node)
                continue
            y = node.outputs[0]
            if y in in_subgraphs:
                refusals.append((node.label, f"its output '{y}' is read inside a subgraph"))
                kept.append(node)
            elif y in graph.outputs:
                at_outputs.append((node, match.forward))
                kept.append(node)
            else:
                rename[y] = match.forward
                self._drop_outputs(graph, node)
                removed += 1
        graph.nodes = kept
        for node, x in at_outputs:
            why = self._rename_into_output(graph, node, x, in_subgraphs)
            if why:
                refusals.append((node.label, why))
            else:
                removed += 1
        return PassResult(graph, removed > 0, {"removed": removed}, refusals)

    @staticmethod
    def _drop_outputs(graph: Graph, node: Node) -> None:
        for o in node.outputs:
            graph.containers.pop(o, None)

    def _rename_into_output(self, graph: Graph, node: Node, x: str, in_subgraphs: set[str]) -> str:
        """Remove ``node`` (whose output is a graph output) by renaming ``x`` to that output."""
        y = node.outputs[0]
        producer = graph.producer(x)
        if x in graph.inputs or x in graph.outputs or producer is None or x in in_subgraphs:
            what = ("a graph input" if x in graph.inputs else "also a graph output" if x in graph.outputs
                    else "read inside a subgraph" if x in in_subgraphs else "a parameter")
            return f"its output '{y}' is a graph output and its input '{x}' is {what}; kept to preserve the name"
        y_container = graph.containers[y]
        self._drop_outputs(graph, node)
        graph.nodes = [n for n in graph.nodes if n is not node]
        graph.nodes = [n.replace(inputs=tuple(y if i == x else i for i in n.inputs),
                                 outputs=tuple(y if o == x else o for o in n.outputs))
                       if x in n.inputs or x in n.outputs else n for n in graph.nodes]
        graph.containers.pop(x, None)
        graph.containers[y] = y_container
        return ""
