"""A stage's graph as nodes and edges for the browser, and which nodes a step changed.

Node ids are node labels (``label#2`` for a repeated label's second node); members of a fusion
group (or kernel) carry ``parent`` (the group's id) and ids ``group::member``, so the page can show
a group collapsed (one box) or expanded (its members inside it). Graph inputs and outputs are
nodes of their own; parameters are not drawn (a node lists them in its details). Edges run from
the node writing a container to each node reading it, one per (producer, reader) pair.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

from dcopt.ir.cost import graph_cost
from dcopt.ir.graph import Graph, Kind, Node
from dcopt.ir.groups import is_group


def node_ids(graph: Graph) -> list[str]:
    """One id per node, in order: its label, with ``#k`` on the k-th repeat of a label."""
    seen: Counter = Counter()
    ids = []
    for node in graph.nodes:
        k = seen[node.label]
        seen[node.label] += 1
        ids.append(node.label if k == 0 else f"{node.label}#{k + 1}")
    return ids


def iter_nodes(graph: Graph, prefix: str = ""):
    """(id, node) of every node and, inside each group, of its members (ids ``group::member``)."""
    for nid, node in zip(node_ids(graph), graph.nodes):
        yield prefix + nid, node
        if is_group(node):
            yield from iter_nodes(node.attrs["body"], f"{prefix}{nid}::")


def find_node(graph: Graph, node_id: str) -> tuple[Graph, Node] | None:
    """(the graph holding it, the node) for an id of :func:`graph_elements` (members included)."""
    head, _, rest = node_id.partition("::")
    for nid, node in zip(node_ids(graph), graph.nodes):
        if nid == head:
            if not rest:
                return graph, node
            return find_node(node.attrs["body"], rest) if node.subgraphs else None
    return None


def op_name(node: Node) -> str:
    if is_group(node):
        return f"{node.attrs.get('kind', 'group')} group"
    return node.op if not node.domain else (node.op if node.domain == "dcopt.loop" else f"{node.domain}.{node.op}")


def _shape_text(graph: Graph, node: Node) -> str:
    outs = [o for o in node.outputs if o]
    t = graph.containers[outs[0]].type if outs and outs[0] in graph.containers else None
    return "" if t is None else str(t)


def _nodes(graph: Graph, bindings: Mapping[str, int], parent: str | None, out: list, edges: list,
           costs=None) -> None:
    costs = costs if costs is not None else graph_cost(graph, bindings).nodes
    ids = node_ids(graph)
    prefix = f"{parent}::" if parent else ""
    producer: dict[str, str] = {}
    for nid, node in zip(ids, graph.nodes):
        for o in node.outputs:
            if o:
                producer[o] = prefix + nid
    if parent is None:
        for name in graph.inputs:
            out.append({"id": f"in:{name}", "label": name, "op": "input", "kind": "io",
                        "sub": str(graph.containers[name].type)})
            producer[name] = f"in:{name}"
    pairs: dict[tuple[str, str], list[str]] = {}
    for nid, node, cost in zip(ids, graph.nodes, costs):
        full = prefix + nid
        kind = "group" if is_group(node) else ("loop" if node.domain == "dcopt.loop" else "op")
        data = {"id": full, "label": node.label, "op": op_name(node), "kind": kind, "sub": _shape_text(graph, node),
                "flops": cost.flops, "bytes": cost.bytes_moved, "constant": cost.constant}
        if parent:
            data["parent"] = parent
        if is_group(node):
            data["members"] = len(node.attrs["body"].nodes)
        out.append(data)
        for name in dict.fromkeys([*node.present_inputs, *sorted(node.outer_reads())]):
            source = producer.get(name)
            if source is not None and source != full:
                pairs.setdefault((source, full), []).append(name)
        if is_group(node):
            _nodes(node.attrs["body"], bindings, full, out, edges)
    if parent is None:
        for name in graph.outputs:
            out.append({"id": f"out:{name}", "label": name, "op": "output", "kind": "io",
                        "sub": str(graph.containers[name].type) if name in graph.containers else ""})
            if name in producer:
                pairs.setdefault((producer[name], f"out:{name}"), []).append(name)
    for (source, target), names in pairs.items():
        edges.append({"id": f"{source}->{target}", "source": source, "target": target, "label": names[0],
                      "names": names, "inner": parent is not None})


def graph_elements(graph: Graph, bindings: Mapping[str, int] | None = None) -> dict:
    """{"nodes": [...], "edges": [...], "totals": {...}} of ``graph`` (see the module doc)."""
    nodes: list[dict] = []
    edges: list[dict] = []
    cost = graph_cost(graph, bindings)
    _nodes(graph, dict(bindings or {}), None, nodes, edges, cost.nodes)
    params = sum(1 for n in graph.containers if graph.kind(n) is Kind.PARAMETER)
    return {"nodes": nodes, "edges": edges,
            "totals": {"nodes": len(graph.nodes), "flops": cost.total_flops, "bytes": cost.total_bytes,
                       "transient_bytes": cost.transient_bytes, "unknown_nodes": cost.unknown_nodes,
                       "parameters": params, "parameter_bytes": cost.parameter_bytes}}


def changes(before: Graph, after: Graph) -> dict[str, list[str]]:
    """Node ids added, removed (ids in ``before``) and rewired from ``before`` to ``after``."""
    from dcopt.passes.patches.apply import node_changes

    added, removed, rewired = node_changes(before, after)
    return {"added": _ids_of(after, added), "removed": _ids_of(before, removed), "rewired": _ids_of(after, rewired)}


def _ids_of(graph: Graph, labels: list[str]) -> list[str]:
    """Ids of the nodes with these labels (a label given k times: its first k nodes' ids)."""
    wanted = Counter(labels)
    ids = []
    for nid, node in zip(node_ids(graph), graph.nodes):
        if wanted[node.label] > 0:
            wanted[node.label] -= 1
            ids.append(nid)
    return ids
