"""Infer types again after rewrites, so shape computations that became constants give static types.

Exporters compute many shapes at run time (Shape -> Gather -> Concat -> Reshape/Expand). Type
inference (:mod:`dcopt.ir.shape_inference`, dcopt's own rules) folds such chains itself, so after
any rewrite this pass retypes every container -- op-level and loop-level nodes, fusion-group
bodies, subgraphs -- and reports how many containers gained known dims. A container keeps its old
type where that one knew more (see :func:`dcopt.frontends.onnx_shapes.reinfer_types`).
"""

from __future__ import annotations

from dcopt.ir.graph import Graph
from dcopt.ir.types import TensorType
from dcopt.passes.base import Pass, PassResult, register_pass


def _known_dims(graph: Graph) -> dict[str, int]:
    return {n: sum(isinstance(d, int) for d in c.type.shape) for n, c in graph.containers.items()
            if isinstance(c.type, TensorType) and c.type.shape is not None}


@register_pass(aliases=("shapes",))
class InferShapes(Pass):
    name = "infer-shapes"
    in_place = True
    description = "re-infer every container's type (dcopt's shape rules) so folded shape computations give static types"

    def run(self, graph: Graph, ctx) -> PassResult:
        from dcopt.frontends.onnx_shapes import reinfer_types

        types = {n: c.type for n, c in graph.containers.items()}
        before = _known_dims(graph)
        reinfer_types(graph)
        after = _known_dims(graph)
        typed = sum(1 for n, k in after.items() if k > before.get(n, -1))
        changed = sum(1 for n, c in graph.containers.items() if c.type != types.get(n))
        return PassResult(graph, changed > 0, {"typed": typed, "retyped": changed})
