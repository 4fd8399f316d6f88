"""Fusion groups: a set of nodes folded into one node that owns a body graph.

Fusion passes decide *which* nodes belong together; this module is the one place that knows
how a group is represented, so the reference executor, the exporter and the backends agree:

* the group is a :class:`Node` with ``domain="dcopt"``, ``op="FusedGroup"``, attributes
  ``body`` (a :class:`Graph` whose inputs/outputs are the group's) and ``kind`` (what sort of
  kernel it is: ``"elementwise"``, ``"reduction"``, ``"gemm"``, ``"conv"``, ...);
* the body's inputs are every container the group reads from outside (parameters included,
  so a body is self-contained) and its outputs every container the rest of the graph (or the
  graph's outputs) still reads;
* the group replaces its nodes in place, so the graph stays topologically ordered, and
  ``ungroup`` restores exactly the original nodes.

The reference executor runs a group by running its body; the ONNX exporter writes each group as a
model-local function whose body is the original ops, so onnxruntime and Netron still open the model.
"""

from __future__ import annotations

from typing import Iterable

import networkx as nx

from dcopt.errors import DcoptError
from dcopt.ir.graph import Graph, Node

GROUP_DOMAIN = "dcopt"
GROUP_OP = "FusedGroup"


def is_group(node: Node) -> bool:
    return node.domain == GROUP_DOMAIN and node.op == GROUP_OP


def is_convex(graph: Graph, members: Iterable[Node]) -> bool:
    """True when no path leaves the set and comes back (grouping would create a cycle)."""
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    chosen = {index[id(n)] for n in members}
    g = graph.to_networkx()
    outside_successors = {s for m in chosen for s in g.successors(m) if s not in chosen}
    reachable = set()
    for s in outside_successors:
        reachable |= nx.descendants(g, s) | {s}
    return not (reachable & chosen)


def group_boundary(graph: Graph, members: list[Node]) -> tuple[list[str], list[str]]:
    """(inputs read from outside the set, outputs used outside the set), in first-use order."""
    member_ids = {id(n) for n in members}
    written = {o for n in members for o in n.outputs if o}
    inputs = []
    for n in members:
        for name in n.present_inputs:
            if name not in written and name not in inputs:
                inputs.append(name)
    used_outside = set(graph.outputs)
    for n in graph.nodes:
        if id(n) not in member_ids:
            used_outside.update(n.present_inputs)
            used_outside |= n.outer_reads()
    outputs = [o for n in members for o in n.outputs if o and o in used_outside]
    return inputs, outputs


def make_group(graph: Graph, members: list[Node], *, name: str, kind: str) -> Node:
    """Replace ``members`` in ``graph`` by one FusedGroup node; returns the new node."""
    if not members:
        raise DcoptError("cannot make an empty fusion group")
    if not is_convex(graph, members):
        raise DcoptError(f"nodes {[m.label for m in members]} do not form a convex set; grouping would "
                         "create a cycle")
    inputs, outputs = group_boundary(graph, members)
    body = Graph(name, graph.opset)
    for n in inputs:
        body.add_input(n, graph.containers[n].type)
    for m in members:
        for o in m.outputs:
            if o:
                body.add_container(o, graph.containers[o].type)
        body.add_node(m)
    body.outputs = list(outputs)
    group = Node(GROUP_OP, tuple(inputs), tuple(outputs), {"body": body, "kind": kind}, name=name,
                 domain=GROUP_DOMAIN)
    member_ids = {id(m) for m in members}
    position = max(i for i, n in enumerate(graph.nodes) if id(n) in member_ids)
    new_nodes = []
    for i, n in enumerate(graph.nodes):
        if i == position:
            new_nodes.append(group)
        if id(n) not in member_ids:
            new_nodes.append(n)
    graph.nodes = new_nodes
    graph.opset.setdefault(GROUP_DOMAIN, 1)
    graph.toposort()
    return group


def ungroup(graph: Graph) -> Graph:
    """Inline every group's body back into ``graph`` (in place); returns the graph."""
    nodes = []
    for n in graph.nodes:
        if is_group(n):
            nodes.extend(ungroup(n.attrs["body"]).nodes)
        else:
            nodes.append(n)
    graph.nodes = nodes
    if not any(is_group(n) for n in nodes):
        graph.opset.pop(GROUP_DOMAIN, None)
    return graph


def groups(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if is_group(n)]
