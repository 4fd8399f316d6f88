"""Re-infer every container's type of a graph, optionally with symbolic dims bound to sizes.

Exporters often leave intermediate shapes unknown (dynamic axes, Reshape targets computed at run
time). Binding the symbolic input dims (``{"batch": 1, "sequence": 128}``) and inferring again
makes them static, which the cost model, the memory planner and the code generator need. This
used to export the graph to ONNX and run ONNX shape inference; it is now dcopt's own inference
(:mod:`dcopt.ir.shape_inference`), which folds shape arithmetic as it goes, sees dcopt's own ops
(fusion groups, loop-level nodes, channels-last variants) and costs no serialization.
"""

from __future__ import annotations

from typing import Mapping

from dcopt.ir.graph import Graph
from dcopt.ir.shape_inference import infer_types
from dcopt.ir.types import TensorType


def specialize(graph: Graph, bindings: Mapping[str, int]) -> Graph:
    """Bind symbolic dims of the graph's inputs (in place) and re-infer all types; returns the graph."""
    infer_types(graph, dict(bindings))
    return graph


def reinfer_types(graph: Graph) -> Graph:
    """Infer every container's type again (in place); a container keeps its old type where that one
    knows more dims (a static size the model declared for a data-dependent output)."""
    before = {name: c.type for name, c in graph.containers.items()}
    infer_types(graph)
    for name, c in graph.containers.items():
        old = before.get(name)
        if old is not None and (old == c.type or _better(old, c.type)):
            c.type = old  # the very object when unchanged: passes detect edits by identity
    return graph


def _known(t: TensorType) -> int:
    return sum(isinstance(d, int) for d in t.shape)


def _better(new, old) -> bool:
    """Whether ``new`` knows more dims than ``old`` (same dtype and rank): never lose information."""
    if not isinstance(new, TensorType) or not isinstance(old, TensorType) or new.dtype != old.dtype \
            or new.shape is None:
        return False
    if old.shape is None:
        return True
    return len(new.shape) == len(old.shape) and _known(new) > _known(old)


def fill_types_from_folding(graph: Graph) -> Graph:
    """Give the graph (in place) the types its values have once shape arithmetic is folded.

    The graph itself keeps every node: this is for measuring an *unoptimized* graph (the cost
    model needs static sizes) without letting the optimization it is compared against run first.
    Inference folds shape arithmetic internally, so no folding pass has to run."""
    return reinfer_types(graph)
