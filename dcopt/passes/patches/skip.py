"""``add_skip_connections``: make shape-preserving blocks residual (an idea patch).

A *block* is a single-entry, single-exit region ``x -> ... -> y`` (see
:func:`~dcopt.passes.patches.sites.find_block`) that ends in one of the ``ends`` ops, holds at
least ``min_layers`` layers (Conv, ConvTranspose, Gemm, MatMul — so a BatchNorm+Relu pair is
not a block), and whose output has exactly the type of its input. Each such block gets
``y' = y + scale * x`` and every reader of ``y`` reads ``y'`` instead. On SqueezeNet with
``ends=Concat`` this finds the fire modules whose input and output widths agree — the "simple
bypass" of the SqueezeNet paper; on ResNet-50 with the defaults, a skip around every 3x3 conv.

Blocks are chosen in graph order, the smallest qualifying block at each end, never overlapping
a block already chosen. Refused, with the reason: outputs with no same-typed single entry within
``max_length`` nodes, blocks that already have a skip from their entry (ResNet's own), blocks
overlapping a chosen one, and graph outputs.
"""

from __future__ import annotations

from dcopt.ir.graph import Graph, Node
from dcopt.passes.common import same_known_shape
from dcopt.passes.match import GraphIndex, Match, Predicate
from dcopt.passes.pattern import Op
from dcopt.passes.patches.edit import float_value
from dcopt.passes.patches.registry import Param, patch
from dcopt.passes.patches.sites import Stop, find_block, planned_rule, topo_positions
from dcopt.passes.rewrite import RewriteBuilder

__all__ = ["add_skip_connections"]

MERGES = frozenset({"Add", "Sum"})
LAYERS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_POSITIVE = Predicate(lambda n: n >= 1, ">= 1")


def _entry_problem(graph: Graph, index: GraphIndex, x: str, y: str, region: tuple[Node, ...]) -> str | None:
    """Why ``x`` cannot be the entry of a skip-connected block ending at ``y`` (None: it can).
    An entry that already feeds a residual merge in the region stops the search (:class:`Stop`):
    a bigger block around an existing residual block is not what this patch means."""
    merging = [n for n in list(region) + index.readers(y) if n.op in MERGES and x in n.inputs]
    if merging:
        return Stop(f"it already has a skip connection from '{x}' ('{merging[0].label}' adds it)")
    tx, ty = graph.type_of(x), graph.type_of(y)
    if not same_known_shape(tx, ty) or tx.dtype != ty.dtype:
        return f"'{x}' is {tx}, the block output is {ty}: not shape-preserving"
    if not float_value(graph, x):
        return f"'{x}' is not floating point"
    return None


def plan_blocks(graph: Graph, ends: list[str], min_layers: int, max_length: int) -> tuple[dict, dict]:
    """(plan, entries): for each end output, None or the reason it gets no skip; the chosen
    blocks' entries by output."""
    index, positions = GraphIndex(graph), topo_positions(graph)
    plan: dict[str, str | None] = {}
    entries: dict[str, str] = {}
    taken: dict[int, str] = {}  # id(node) -> exit of the chosen block holding it
    for node in graph.nodes:
        if node.op not in ends or not node.outputs or not node.outputs[0]:
            continue
        y = node.outputs[0]
        if y in index.protected:
            plan[y] = f"'{y}' is a graph output (or read inside a subgraph)"
            continue
        block = find_block(graph, index, positions, y, lambda x, region: _entry_problem(graph, index, x, y, region),
                           max_length, lambda region: sum(n.op in LAYERS for n in region) >= min_layers,
                           f" holding {min_layers}+ layer(s)")
        if isinstance(block, str):
            plan[y] = block
            continue
        clash = next((taken[id(n)] for n in block.nodes if id(n) in taken), None)
        if clash is not None:
            plan[y] = f"the block from '{block.entry}' overlaps the block ending at '{clash}' chosen before"
            continue
        taken.update({id(n): y for n in block.nodes})
        plan[y], entries[y] = None, block.entry
    return plan, entries


@patch("add_skip_connections", kind="idea", params=[
    Param("ends", list[str], ["Relu"], "op types whose output may end a block"),
    Param("min_layers", int, 1, "fewest layers (Conv, ConvTranspose, Gemm, MatMul) a block must hold",
          check=_POSITIVE),
    Param("max_length", int, 12, "how many nodes to walk upstream looking for the block's entry", check=_POSITIVE),
    Param("scale", float, 1.0, "weight of the skip path: y + scale * x"),
])
def add_skip_connections(graph, *, ends, min_layers, max_length, scale):
    """Add residual connections y + scale*x around single-entry blocks whose output has their input's type."""
    plan, entries = plan_blocks(graph, ends, min_layers, max_length)

    def rewrite(graph: Graph, m: Match):
        rb = RewriteBuilder(graph)
        x, y, site = entries[m.root_value], m.root_value, m.root.name
        if scale != 1.0:
            x = rb.op("Mul", [x, rb.const(scale, like=x, name="skip_scale")], like=x, name=f"{site}/skip_scale")
        return rb.replace({y: rb.op("Add", [y, x], like=y, name=f"{site}/skip")})

    return planned_rule("skip-connection", Op(tuple(ends), ...), plan, rewrite,
                        "block x -> ... -> y with type(y) == type(x): y -> y + scale * x")
