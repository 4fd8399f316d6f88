"""Choosing where an idea patch goes: blocks, stage ends, and rules that follow a plan.

Idea patches decide globally (the last feature map of each resolution, blocks that do not
overlap) and then edit locally. :func:`planned_rule` joins the two: a plan maps each candidate
root value to None (go) or the reason it was passed over, and a rewrite rule that consults it
lets the ordinary rewrite engine do the editing — rewiring readers, keeping output names —
and report every passed-over candidate with its reason under ``--explain``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from dcopt.ir.graph import Graph, Node
from dcopt.passes.match import GraphIndex, Match
from dcopt.passes.pattern import Pattern
from dcopt.passes.rewrite import Replacement, RewriteRule

__all__ = ["Block", "Stop", "find_block", "planned_rule", "topo_positions"]


def planned_rule(name: str, pattern: Pattern, plan: Mapping[str, str | None],
                 rewrite: Callable[[Graph, Match], Replacement | None], description: str = "") -> RewriteRule:
    """A rule that fires only at roots the plan approved (``plan[value] is None``); any other
    root is refused with the plan's reason (or "not a candidate")."""

    def check(graph: Graph, m: Match):
        reason = plan.get(m.root_value, "not a candidate site")
        return None if reason is None else m.fail(reason, m.root)

    return RewriteRule(name, pattern, rewrite, check, description)


def topo_positions(graph: Graph) -> dict[str, int]:
    """Value name -> position of its producer in the (topologically ordered) node list; graph
    inputs and parameters are -1."""
    return {out: i for i, node in enumerate(graph.nodes) for out in node.outputs if out}


class Stop(str):
    """A refusal from ``find_block``'s ``accept`` that also ends the walk: no bigger block may be
    built past this entry (e.g. the entry already feeds a residual merge)."""


@dataclass(frozen=True)
class Block:
    """A single-entry, single-exit region: every node in ``nodes`` reads only ``entry``, values
    made inside the region, and constants; ``exit`` is the value it ends in."""

    entry: str
    exit: str
    nodes: tuple[Node, ...]  # exit's producer first, then walking upstream


def find_block(graph: Graph, index: GraphIndex, positions: Mapping[str, int], exit: str,
               accept: Callable[[str, tuple[Node, ...]], str | None], max_nodes: int,
               big_enough: Callable[[tuple[Node, ...]], bool] = lambda region: True,
               requirement: str = "") -> Block | str:
    """The smallest single-entry region ending at ``exit`` that is ``big_enough`` and whose entry
    ``accept`` approves.

    Walks upstream from ``exit``'s producer, always expanding the open value produced latest;
    whenever exactly one non-constant value feeds the region, that value is a candidate entry.
    Candidates whose region is not ``big_enough`` are passed over silently (``requirement``
    describes the size wanted, for the message); ``accept(entry, nodes)`` returns None (take it)
    or why not; a :class:`Stop` reason ends the walk. Returns the Block, or the reason for the
    nearest refused candidate (or why the walk found none).
    """
    first = index.producer(exit)
    if first is None:
        return f"'{exit}' is not computed by a node"
    region = [first]
    open_values = _open_inputs(index, first)
    nearest = ""
    while True:
        if len(open_values) == 1 and big_enough(tuple(region)):
            entry = next(iter(open_values))
            reason = accept(entry, tuple(region))
            if reason is None:
                return Block(entry, exit, tuple(region))
            if isinstance(reason, Stop):
                return nearest or f"the block from '{entry}' ({len(region)} nodes): {reason}"
            nearest = nearest or f"nearest single-entry block (from '{entry}', {len(region)} nodes): {reason}"
        expandable = [v for v in open_values if index.producer(v) is not None]
        if nearest and len(region) >= max_nodes or not expandable:
            return nearest or f"no single-entry block{requirement} above '{exit}' before the graph inputs"
        if len(region) >= max_nodes:
            return f"no single-entry block{requirement} within {max_nodes} nodes above '{exit}'"
        latest = max(expandable, key=lambda v: positions.get(v, -1))
        node = index.producer(latest)
        open_values.discard(latest)
        if node not in region:
            region.append(node)
            open_values |= _open_inputs(index, node)


def _open_inputs(index: GraphIndex, node: Node) -> set[str]:
    return {v for v in node.present_inputs if index.constant(v) is None}
