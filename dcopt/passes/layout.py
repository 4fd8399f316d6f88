"""Level 4: layout transformation NCHW -> NHWC for conv stacks, and transpose cancellation.

Why, honestly: at op level a layout change moves *no fewer* bytes -- a conv reads and writes the
same tensors in either order -- and every boundary costs a Transpose (a full read and write).
What NHWC buys is kernel speed on backends that vectorize over channels (the innermost,
contiguous dim): im2col-free convs, per-channel epilogues as vector ops. The op-level cost model
cannot see that gain, so the pass is **opt-in** (``prefer="nhwc"``), and the cost model is used
only to bound the price: a region is converted when its boundary transposes move at most
``max_overhead`` (default 5%) of the bytes its ops move. With the default ``prefer="nchw"`` the
pass only cancels transposes.

Steps:

1. **Regions.** A node is convertible when its data is rank 4 and it is a Conv, pool,
   BatchNormalization or LRN (these get the channels-last variants of
   :mod:`dcopt.ops.layout_ops`), an elementwise op whose run-time inputs all have its output
   shape (constants are permuted at compile time), or a Concat (its axis is permuted). Regions are
   the connected components of convertible nodes; one without a layout-sensitive op (conv, pool,
   normalization) is left alone.
2. **Rewrite.** Each value entering a region gets one ``Transpose(perm=[0,2,3,1])``; values the
   region computes get channels-last twins (``name__nhwc``); a value read outside the region (or a
   graph output) is transposed back into its original name, so the graph's interface is unchanged.
3. **Cancel.** ``simplify-chains`` (:mod:`dcopt.passes.chains`) merges back-to-back Transposes
   and drops inverse pairs: a model exported from an NHWC framework often starts with the very
   transpose step 2 inverts, and the two vanish.
"""

from __future__ import annotations

from typing import Mapping

import networkx as nx
import numpy as np

import dcopt.ops.layout_ops  # noqa: F401  (registers the channels-last ops)
from dcopt.ir.cost import graph_cost, reads
from dcopt.ir.graph import Graph, Node
from dcopt.ops.layout_ops import CHANNELS_LAST, to_channels_first, to_channels_last
from dcopt.passes.base import Pass, PassResult, get_pass, register_pass
from dcopt.passes.chains import compose  # importing it registers simplify-chains
from dcopt.passes.common import constant
from dcopt.passes.fuse import bind_symbols, container_sizes
from dcopt.passes.fusion_rules import OpClass, classify

RANK = 4
SENSITIVE = frozenset(CHANNELS_LAST)


def _rank(graph: Graph, name: str) -> int | None:
    t = graph.type_of(name)
    return None if t is None or getattr(t, "shape", None) is None else len(t.shape)


def _activations(graph: Graph, node: Node) -> list[str]:
    """The node's run-time (non-constant) inputs."""
    return [i for i in node.present_inputs if constant(graph, i) is None]


def convertible(graph: Graph, node: Node, read: set[str]) -> bool:
    """Whether ``node`` has a channels-last form (see step 1 of the module doc)."""
    if node.domain not in ("", "ai.onnx") or not node.outputs or _rank(graph, node.outputs[0]) != RANK:
        return False
    live_outputs = [o for o in node.outputs if o and o in read]
    if node.op in SENSITIVE:
        data_only = node.inputs[0] in _activations(graph, node) and len(_activations(graph, node)) == 1
        return data_only and set(live_outputs) <= {node.outputs[0]}
    if node.op == "Concat":
        return all(_rank(graph, i) == RANK for i in node.present_inputs)
    if classify(graph, node, read).cls is not OpClass.ELEMENTWISE or node.op in ("Expand", "Identity"):
        return False
    consts_ok = all(np.ndim(constant(graph, i)) <= RANK for i in node.present_inputs if constant(graph, i) is not None)
    return consts_ok and all(_rank(graph, i) == RANK for i in _activations(graph, node))


def regions(graph: Graph) -> list[list[Node]]:
    """Connected components (nodes, in graph order) of convertible nodes with a sensitive op."""
    read = {i for n in graph.nodes for i in reads(n)} | set(graph.outputs)
    ok = {i for i, n in enumerate(graph.nodes) if convertible(graph, n, read)}
    g = nx.Graph()
    g.add_nodes_from(ok)
    producer = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs if o}
    for i in ok:
        for name in _activations(graph, graph.nodes[i]):
            if producer.get(name) in ok:
                g.add_edge(producer[name], i)
    found = [[graph.nodes[i] for i in sorted(c)] for c in nx.connected_components(g)]
    return sorted((c for c in found if any(n.op in SENSITIVE for n in c)), key=lambda c: graph.nodes.index(c[0]))


def boundary(graph: Graph, region: list[Node]) -> tuple[list[str], list[str]]:
    """(values entering the region, values it computes that are read outside or are outputs)."""
    members = {id(n) for n in region}
    produced = {o for n in region for o in n.outputs if o}
    entering = list(dict.fromkeys(a for n in region for a in _activations(graph, n) if a not in produced))
    outside = set(graph.outputs) | {r for n in graph.nodes if id(n) not in members for r in reads(n)}
    leaving = [o for n in region for o in n.outputs if o in outside]
    return entering, leaving


def _undone_by(node: Node | None, perm: tuple) -> bool:
    """Whether ``node`` is a Transpose that a Transpose by ``perm`` undoes (or the reverse)."""
    return (node is not None and node.op == "Transpose" and node.domain in ("", "ai.onnx") and "perm" in node.attrs
            and compose(tuple(node.attrs["perm"]), perm) == tuple(range(len(perm))))


def boundary_price(graph: Graph, region: list[Node], size: Mapping[str, int]) -> int:
    """Bytes the region's boundary transposes add: a full read and write of each crossing value,
    except where a transpose already in the graph is the inverse one. Then the two cancel, and the
    existing transpose's read and write are saved too when nothing else reads its output (an NHWC
    exporter's input transpose): the price can be negative."""
    entering, leaving = boundary(graph, region)
    members = {id(n) for n in region}
    producers = {o: n for n in graph.nodes for o in n.outputs if o}
    readers = {}
    for n in graph.nodes:
        for name in reads(n):
            readers.setdefault(name, []).append(n)
    price = 0
    for v in entering:
        if _undone_by(producers.get(v), to_channels_last(RANK)):
            only_region = all(id(r) in members for r in readers.get(v, [])) and v not in graph.outputs
            price -= 2 * size.get(v, 0) if only_region else 0
        else:
            price += 2 * size.get(v, 0)
    for o in leaving:
        outside = [r for r in readers.get(o, []) if id(r) not in members]
        cancels = outside and o not in graph.outputs and all(_undone_by(r, to_channels_first(RANK)) for r in outside)
        price += -2 * size.get(o, 0) * len(outside) if cancels else 2 * size.get(o, 0)
    return price


def _permuted_constant(data: np.ndarray) -> np.ndarray:
    """A constant broadcast against NCHW data, made to broadcast against NHWC data."""
    full = data.reshape((1,) * (RANK - data.ndim) + data.shape)
    return np.ascontiguousarray(np.transpose(full, to_channels_last(RANK)))


def _nhwc_type(t):
    return t.with_shape(tuple(t.shape[i] for i in to_channels_last(RANK)))


def convert_region(graph: Graph, region: list[Node]) -> int:
    """Rewrite one region to channels-last (step 2); returns the number of transposes inserted."""
    entering, leaving = boundary(graph, region)
    twin = {}
    for name in entering + [o for n in region for o in n.outputs if o]:
        twin[name] = graph.fresh_name(f"{name}__nhwc")
        graph.add_container(twin[name], _nhwc_type(graph.type_of(name)))
    into = [Node("Transpose", (v,), (twin[v],), {"perm": to_channels_last(RANK)}, name=graph.fresh_name("to_nhwc"))
            for v in entering]
    back = [Node("Transpose", (twin[o],), (o,), {"perm": to_channels_first(RANK)}, name=graph.fresh_name("to_nchw"))
            for o in leaving]
    rewritten = {id(n): _channels_last_node(graph, n, twin) for n in region}
    nodes = []
    for node in graph.nodes:
        if node is region[0]:
            nodes.extend(into)
        nodes.append(rewritten.get(id(node), node))
        if node is region[-1]:
            nodes.extend(back)
    graph.nodes = nodes
    graph.toposort()  # an entering value may be computed after the region's first node
    return len(into) + len(back)


def _channels_last_node(graph: Graph, node: Node, twin: Mapping[str, str]) -> Node:
    inputs = []
    for name in node.inputs:
        data = constant(graph, name) if name else None
        if name in twin:
            inputs.append(twin[name])
        elif data is not None and node.op not in SENSITIVE and data.size > 1:
            permuted = graph.fresh_name(f"{name}__nhwc")
            graph.add_parameter(permuted, _permuted_constant(data))
            inputs.append(permuted)
        else:
            inputs.append(name)
    outputs = tuple(twin.get(o, o) if o else o for o in node.outputs)
    if node.op in SENSITIVE:
        return Node(CHANNELS_LAST[node.op], tuple(inputs), outputs, node.attrs, name=node.name, domain="dcopt")
    attrs = dict(node.attrs)
    if node.op == "Concat":
        attrs["axis"] = to_channels_last(RANK).index(node.attrs.get("axis") % RANK)
    return node.replace(inputs=tuple(inputs), outputs=outputs, attrs=attrs)


@register_pass
class Layout(Pass):
    """Convert conv regions to channels-last when preferred and cheap enough; cancel transposes."""

    name = "layout"
    in_place = True
    description = "level 4: NCHW -> NHWC for conv regions (opt-in, prefer='nhwc'); cancel inverse transposes"

    def __init__(self, *, prefer: str = "nchw", max_overhead: float = 0.05, bindings: Mapping[str, int] | None = None,
                 dim_size: int = 1):
        if prefer not in ("nchw", "nhwc"):
            raise ValueError(f"prefer must be 'nchw' or 'nhwc', not {prefer!r}")
        self.prefer, self.max_overhead = prefer, max_overhead
        self.bindings, self.dim_size = dict(bindings or {}), dim_size

    def run(self, graph: Graph, ctx) -> PassResult:
        stats = {"regions_converted": 0, "regions_skipped": 0, "transposes_inserted": 0, "boundary_bytes": 0}
        refusals = []
        if self.prefer == "nhwc" and graph.opset_of("") >= 9:
            binding = bind_symbols(graph, self.bindings, self.dim_size)
            size = container_sizes(graph, binding)
            moved = {id(n): c.bytes_moved or 0 for n, c in zip(graph.nodes, graph_cost(graph, binding).nodes)}
            for region in regions(graph):  # regions are disjoint: converting one leaves the others' nodes
                price = boundary_price(graph, region, size)
                work = sum(moved[id(n)] for n in region)
                label = region[0].label
                if not work or price > self.max_overhead * work:
                    stats["regions_skipped"] += 1
                    refusals.append((label, f"boundary transposes would move {price} bytes, more than "
                                            f"{self.max_overhead:.0%} of the region's {work}"))
                    continue
                stats["transposes_inserted"] += convert_region(graph, region)
                stats["boundary_bytes"] += price
                stats["regions_converted"] += 1
        chains = get_pass("simplify-chains")(graph, ctx)
        stats["transposes_cancelled"] = chains.stats.get("transpose-transpose", 0)
        modified = bool(stats["regions_converted"]) or chains.modified
        return PassResult(graph, modified, stats, refusals)
