"""Re-infer every container's type of a graph, optionally with symbolic dims bound to sizes.

Exporters often leave intermediate shapes unknown (dynamic axes, Reshape targets computed at run
time). Binding the symbolic input dims (``{"batch": 1, "sequence": 128}``) and running ONNX shape
inference with data propagation again makes them static, which the cost model, the memory planner
and the code generator need. This is the one place that does it: the graph goes out through the
exporter, ONNX infers, and the inferred types come back.
"""

from __future__ import annotations

from typing import Mapping

from dcopt.frontends.onnx_export import export_model
from dcopt.frontends.onnx_import import _tensor_type, infer_shapes
from dcopt.ir.graph import Graph
from dcopt.ir.types import TensorType


#: Constants up to this many elements go to shape inference (shape arithmetic reads them); bigger
#: ones (weights) only need their types, and serializing them would dominate the time.
SMALL_CONSTANT = 4096


def specialize(graph: Graph, bindings: Mapping[str, int]) -> Graph:
    """Bind symbolic dims of the graph's inputs (in place) and re-infer all types; returns the graph."""
    for name in graph.inputs:
        c = graph.containers[name]
        if isinstance(c.type, TensorType):
            c.type = c.type.specialize(dict(bindings))
    return reinfer_types(graph)


def reinfer_types(graph: Graph) -> Graph:
    """Run ONNX shape inference over the graph (in place): unknown dims become known where ONNX can tell."""
    model = export_model(graph, check=False, weight_limit=SMALL_CONSTANT)
    del model.graph.value_info[:]  # infer afresh from the (specialized) inputs, not from stale types
    inferred = infer_shapes(model)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        c = graph.containers.get(vi.name)
        if c is None or c.data is not None or vi.name in graph.inputs or not vi.type.HasField("tensor_type"):
            continue
        new = _tensor_type(vi.type, vi.name, None)
        if _better(new, c.type):
            c.type = new
    return graph


def _better(new: TensorType, old) -> bool:
    """Take the inferred type when it knows more dims than the current one (never lose information)."""
    if not isinstance(old, TensorType) or new.dtype != old.dtype or new.shape is None:
        return False
    if old.shape is None:
        return True
    if len(new.shape) != len(old.shape):
        return False
    known_new = sum(isinstance(d, int) for d in new.shape)
    known_old = sum(isinstance(d, int) for d in old.shape)
    return known_new > known_old


def fill_types_from_folding(graph: Graph) -> Graph:
    """Give the graph (in place) the types its values have once shape arithmetic is folded.

    The graph itself keeps every node: this is for measuring an *unoptimized* graph (the cost
    model needs static sizes) without letting the optimization it is compared against run first.
    """
    from dcopt.passes.pipelines import build_pipeline

    typed = build_pipeline("fold-constants,infer-shapes")(graph.copy()).graph
    for name, c in graph.containers.items():
        t = typed.containers.get(name)
        if t is not None and c.data is None and name not in graph.inputs and _better(t.type, c.type):
            c.type = t.type
    return graph
