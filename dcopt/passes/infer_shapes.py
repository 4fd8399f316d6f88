"""Re-run shape inference after folding, so run-time shape computations become static types.

Exporters compute many shapes at run time (Shape -> Gather -> Concat -> Reshape/Expand). Once
fold-constants turns those into parameters, ONNX shape inference can type what follows; this pass
asks it again (through :mod:`dcopt.frontends.onnx_shapes`) and reports how many containers gained
known dims. Graphs holding loop-level nodes cannot go through ONNX and are left as they are.
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
    description = "re-run ONNX shape inference so folded shape computations give static types"

    def run(self, graph: Graph, ctx) -> PassResult:
        if any(n.domain == "dcopt.loop" for n in graph.nodes):
            return PassResult(graph, False, {"typed": 0}, [("graph", "holds loop-level nodes; not re-inferred")])
        if all(isinstance(c.type, TensorType) and c.type.is_static for c in graph.containers.values()):
            return PassResult(graph, False, {"typed": 0})
        from dcopt.frontends.onnx_shapes import reinfer_types

        before = _known_dims(graph)
        reinfer_types(graph)
        after = _known_dims(graph)
        typed = sum(1 for n, k in after.items() if k > before.get(n, -1))
        return PassResult(graph, typed > 0, {"typed": typed})
