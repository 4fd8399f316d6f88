"""Dead-code elimination: drop nodes whose outputs nothing reads, then unused containers.

A value is live when it is a graph output, an input of a live node, or read implicitly by a
subgraph of a live node. ONNX ops have no side effects, so a node with no live output — random
ops included — can go. Graph inputs stay even when unused: they are the model's interface.
Parameters nothing reads are dropped (they are only data).
"""

from __future__ import annotations

from dcopt.ir.graph import Graph
from dcopt.passes.base import Pass, PassResult, register_pass
from dcopt.passes.common import node_subgraph_reads


@register_pass
class DeadCodeElimination(Pass):
    name = "dce"
    in_place = True
    description = "remove nodes whose outputs are unused, and unused containers"

    def run(self, graph: Graph, ctx) -> PassResult:
        live = set(graph.outputs)
        kept = []
        for node in reversed(graph.nodes):
            if any(o in live for o in node.outputs if o):
                kept.append(node)
                live.update(node.present_inputs)
                live |= node_subgraph_reads(node)
        nodes_removed = len(graph.nodes) - len(kept)
        if nodes_removed:
            graph.nodes = kept[::-1]
        used = live | set(graph.inputs) | {o for n in graph.nodes for o in n.outputs if o}
        unused = [name for name in graph.containers if name not in used]
        for name in unused:
            del graph.containers[name]
        stats = {"nodes_removed": nodes_removed, "containers_removed": len(unused)}
        return PassResult(graph, bool(nodes_removed or unused), stats)
