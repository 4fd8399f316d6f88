"""The IR verifier: finds every structural problem in a graph and names it.

Checks: each container is defined once (graph input, parameter, or one producing node); every
node input is defined before use (topological order, no cycles); graph outputs are produced;
node outputs are declared containers; names are unique. Problems are collected and reported
together in one :class:`VerificationError`.
"""

from __future__ import annotations

import networkx as nx

from dcopt.errors import VerificationError
from dcopt.ir.graph import Graph, Node


def topological_order(graph: Graph) -> list[Node]:
    """Nodes in a stable topological order; VerificationError naming a cycle if there is one."""
    g = graph.to_networkx()
    try:
        order = list(nx.lexicographical_topological_sort(g))
    except nx.NetworkXUnfeasible:
        cycle = nx.find_cycle(g)
        names = [graph.nodes[u].label for u, _ in cycle]
        raise VerificationError([f"cycle through nodes {' -> '.join(names + names[:1])}"]) from None
    return [graph.nodes[i] for i in order]


def find_problems(graph: Graph, outer_scope: frozenset[str] = frozenset()) -> list[str]:
    problems: list[str] = []
    defined: set[str] = set(outer_scope)
    seen_inputs: set[str] = set()
    for name in graph.inputs:
        if name not in graph.containers:
            problems.append(f"graph input '{name}' has no container")
        if name in seen_inputs:
            problems.append(f"graph input '{name}' is listed twice")
        seen_inputs.add(name)
    defined |= seen_inputs
    for name, c in graph.containers.items():
        if c.data is not None and name not in graph.inputs:
            defined.add(name)
            if c.type.shape is not None and tuple(c.data.shape) != tuple(c.type.shape):
                problems.append(f"parameter '{name}' has data of shape {c.data.shape} but type {c.type}")
    producers: dict[str, str] = {}
    for node in graph.nodes:
        for out in node.outputs:
            if not out:
                continue
            if out in producers:
                problems.append(f"container '{out}' is written by both '{producers[out]}' and '{node.label}'")
            elif out in graph.inputs or (out in graph.containers and graph.containers[out].data is not None):
                problems.append(f"node '{node.label}' ({node.op}) writes '{out}', which is a graph input or parameter")
            producers[out] = node.label
            if out not in graph.containers:
                problems.append(f"node '{node.label}' ({node.op}) writes '{out}', which has no container")
    try:
        topological_order(graph)
    except VerificationError as exc:
        problems.extend(exc.problems)
    for node in graph.nodes:
        for name in node.present_inputs:
            if name in defined:
                continue
            if name in producers:
                problems.append(f"node '{node.label}' ({node.op}) reads '{name}' before it is written "
                                "(nodes out of topological order, or a cycle)")
            else:
                problems.append(f"node '{node.label}' ({node.op}) reads '{name}', which nothing defines")
        defined.update(o for o in node.outputs if o)
    for node in graph.nodes:
        if node.domain == "dcopt.loop":
            from dcopt.ir.loops import find_loop_problems

            problems.extend(find_loop_problems(graph, node))
    for name in graph.outputs:
        if name not in defined and name not in producers:
            problems.append(f"graph output '{name}' is never produced")
    for node in graph.nodes:
        for key, value in node.attrs.items():
            if isinstance(value, Graph):
                sub = find_problems(value, frozenset(defined | set(graph.containers)))
                problems.extend(f"in subgraph '{key}' of node '{node.label}': {p}" for p in sub)
    return problems


def verify(graph: Graph, file: str | None = None) -> None:
    """Raise VerificationError listing every problem in ``graph`` (no-op when it is valid)."""
    problems = find_problems(graph)
    if problems:
        raise VerificationError(problems, file=file)
