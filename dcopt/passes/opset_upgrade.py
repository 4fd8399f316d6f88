"""Raising a graph's default-domain opset when a rewrite needs a newer op.

Recognizing ``LayerNormalization`` needs opset 17 and ``Gelu`` opset 20, but exporters often
write older opsets. Bumping ``graph.opset[""]`` reinterprets *every* node under the new version,
so it is only allowed when no node's meaning changes. The rule is explicit and conservative:

* for each default-domain node (subgraphs included) we list the versions in
  ``(current, target]`` at which its op got a new schema;
* each such change must be in :data:`COMPATIBLE`, a hand-checked table of changes that only
  widen type constraints or add attributes/inputs whose defaults keep the old behaviour; or in
  :data:`COMPATIBLE_IF`, changes that are harmless unless the node uses the changed feature
  (a ``Reduce*`` node with an ``axes`` *attribute* cannot live at opset 18, one without can);
* anything else refuses, naming the op and the version, so the report says what blocked it.

The table covers opsets 14-20 (what LayerNormalization and Gelu need); a change it does not
know about is treated as incompatible rather than guessed at. Nodes that the rewrite itself is
about to delete are passed as ``ignore``.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable, Iterator

import onnx.defs

from dcopt.ir.graph import Graph, Node

#: (op, version): why the new version leaves existing nodes' meaning unchanged.
COMPATIBLE: dict[tuple[str, int], str] = {
    **{(op, 14): "adds 8/16-bit integer types" for op in ("Add", "Sub", "Mul", "Div", "Relu", "CumSum")},
    ("Identity", 14): "adds sequence types",
    ("Reshape", 14): "adds allowzero (default 0: old behaviour)",
    ("BatchNormalization", 14): "adds training_mode (default 0: inference, the old meaning of one output)",
    **{(op, 14): "adds layout (default 0: old layout)" for op in ("GRU", "LSTM", "RNN")},
    ("BatchNormalization", 15): "widens type constraints",
    ("Pow", 15): "adds bfloat16",
    ("Shape", 15): "adds start/end (default: the whole shape)",
    **{(op, 16): "adds bfloat16 or optional types" for op in (
        "GreaterOrEqual", "LessOrEqual", "Identity", "If", "Loop", "Scan", "LeakyRelu", "PRelu", "Where")},
    **{(op, 16): "adds reduction (default 'none')" for op in ("ScatterElements", "ScatterND")},
    **{(op, 18): "adds reduction modes min/max" for op in ("ScatterElements", "ScatterND")},
    ("Split", 18): "adds num_outputs (split sizes still come from the input)",
    ("Pad", 18): "adds the optional axes input",
    ("Resize", 18): "adds antialias/axes/keep_aspect_ratio_policy with neutral defaults",
    ("LpPool", 18): "adds ceil_mode (default 0)",
    **{(op, 18): "adds optional types" for op in ("OptionalGetElement", "OptionalHasElement")},
    ("AveragePool", 19): "adds dilations (default 1)",
    **{(op, 19): "adds float8 types and saturate (only affects float8)" for op in (
        "Cast", "CastLike", "QuantizeLinear", "DequantizeLinear")},
    **{(op, 19): "adds float8/string types" for op in (
        "Constant", "Equal", "Identity", "If", "Loop", "Scan", "Reshape", "Shape", "Size")},
    ("Pad", 19): "adds the 'wrap' mode",
    ("Resize", 19): "adds the half_pixel_symmetric mode",
    **{(op, 20): "adds types" for op in ("ConstantOfShape", "IsInf", "IsNaN", "ReduceMax", "ReduceMin")},
}

_REDUCE_18 = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
              "ReduceMin", "ReduceProd", "ReduceSumSquare")

#: (op, version): (predicate on the node, what the node must not use).
COMPATIBLE_IF: dict[tuple[str, int], tuple[Callable[[Node], bool], str]] = {
    (op, 18): (lambda n: "axes" not in n.attrs, "an axes attribute (axes became an input)") for op in _REDUCE_18
}


def _nodes(graph: Graph) -> Iterator[Node]:
    for node in graph.nodes:
        yield node
        for body in node.subgraphs:
            yield from _nodes(body)


@functools.lru_cache(maxsize=None)
def _changes(op: str, start: int, target: int) -> tuple[int, ...]:
    """Versions in (start, target] at which ``op`` got a new schema."""
    found = []
    for version in range(start + 1, target + 1):
        try:
            if onnx.defs.get_schema(op, version, "").since_version == version:
                found.append(version)
        except onnx.defs.SchemaError:
            return (version,)  # removed or not defined: certainly not compatible
    return tuple(found)


def upgrade_problem(graph: Graph, target: int, ignore: Iterable[Node] = ()) -> str:
    """Why the default-domain opset of ``graph`` cannot become ``target``; '' if it can."""
    start = graph.opset_of("")
    if start >= target:
        return ""
    skip = {id(n) for n in ignore}
    for node in _nodes(graph):
        if id(node) in skip or node.domain not in ("", "ai.onnx"):
            continue
        for version in _changes(node.op, start, target):
            if (node.op, version) in COMPATIBLE:
                continue
            cond = COMPATIBLE_IF.get((node.op, version))
            if cond is not None and cond[0](node):
                continue
            what = f"node '{node.label}' uses {cond[1]}" if cond else "a change not known to be compatible"
            return (f"needs opset {target} but the graph is at {start}, and {node.op} changed at opset "
                    f"{version} ({what})")
    return ""


def raise_opset(graph: Graph, target: int) -> None:
    """Set the default-domain opset to at least ``target``, in subgraphs too (call after
    :func:`upgrade_problem` has allowed it)."""
    key = "ai.onnx" if "ai.onnx" in graph.opset and "" not in graph.opset else ""
    graph.opset[key] = max(graph.opset_of(""), target)
    for node in graph.nodes:
        for body in node.subgraphs:
            raise_opset(body, target)
