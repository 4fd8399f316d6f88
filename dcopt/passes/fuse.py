"""Level 3: fuse nodes into FusedGroup kernels, chosen by a data-movement cost model.

Why: fusion does not change the arithmetic; it changes how many bytes cross kernel
boundaries. A value computed and consumed inside one kernel never goes to memory. So the pass
does not match a fixed list of patterns. It classifies ops (:mod:`dcopt.passes.fusion_rules`:
elementwise, broadcast, reduction, gemm/conv anchor, opaque) and lets a cost model choose.

**Cost model.** A cluster S of nodes, run as one kernel, moves
``bytes(S) = size(values S reads from outside) + size(values S writes that someone outside
reads)`` (each distinct value once, graph outputs always written; sizes from the container types
with symbolic dims bound, as :mod:`dcopt.ir.cost` does). Merging clusters A and B saves
``bytes(A) + bytes(B) - bytes(A | B)``: the intermediate's write and reads disappear, minus
whatever must still be written because a node outside the pair reads it (an intermediate used
outside stays a group output, so it is still written; only the reads inside the pair go away),
plus inputs both read that are now read once. This is exactly the per-kernel byte count of
:func:`dcopt.ir.cost.graph_cost` on the grouped graph, so the pass greedily lowers the number
the report measures.

**Greedy.** Start from one cluster per node. Candidate merges are producer->consumer pairs of
clusters. Repeatedly take the candidate with the largest saving, check legality, merge, and
re-score the merged cluster's neighbours. A refused candidate comes back when either side
changes (a merge elsewhere can make it legal: layer norm's Div only joins the rows' group once
``Sqrt(var + eps)`` between them has). Legality:

* :func:`~dcopt.passes.fusion_rules.merge_kind` -- kinds and iteration spaces are compatible;
* convexity -- no path from one cluster to the other through a third. It is checked on the
  quotient graph of clusters, not node by node: two clusters can each be convex and still depend
  on each other, and keeping the cluster graph acyclic is what lets every group be materialized
  (``make_group`` re-checks with :func:`dcopt.ir.groups.is_convex` on the graph it rewrites);
* ``min_saving`` -- a merge must save at least that many bytes.

Finally every cluster of two or more nodes becomes a FusedGroup (``make_group``) of its kind.

Options (``get_pass("fuse", elementwise=False, ...)``): ``elementwise``, ``broadcast``,
``reduction``, ``epilogue`` switch op classes off (an off class is opaque), ``min_saving``, and
``bindings``/``dim_size`` for symbolic dims (costs only; shapes are compared symbolically).
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from typing import Mapping

from dcopt.ir.cost import constant_containers, graph_cost, reads
from dcopt.ir.graph import Graph
from dcopt.ir.groups import make_group
from dcopt.passes.base import Pass, PassResult, register_pass
from dcopt.passes.fusion_rules import ANCHORS, OpClass, Shape, classify, merge_kind, opaque, shape_of


@dataclass
class Cluster:
    """A set of node indices that will run as one kernel."""

    id: int
    members: list[int]
    shape: Shape | None  # None: opaque, never merged
    anchor: int | None = None  # node index of the GEMM/conv, if any
    version: int = 0
    lo: int = 0  # smallest / largest member index (node order is topological)
    hi: int = 0
    inputs: set[str] = field(default_factory=set)  # read from outside the cluster
    produced: set[str] = field(default_factory=set)


class _Clustering:
    """The union of nodes into clusters, with the byte costs and the legality checks."""

    def __init__(self, graph: Graph, size: Mapping[str, int], infos: list):
        self.graph = graph
        self.size = size
        self.nodes = graph.nodes
        self.readers: dict[str, set[int]] = {}
        for i, node in enumerate(self.nodes):
            for name in reads(node):
                self.readers.setdefault(name, set()).add(i)
        self.outputs = set(graph.outputs)
        self.producer = {o: i for i, n in enumerate(self.nodes) for o in n.outputs if o}
        self.owner = list(range(len(self.nodes)))  # node index -> cluster id
        self.clusters: dict[int, Cluster] = {}
        for i, (node, info) in enumerate(zip(self.nodes, infos)):
            c = Cluster(i, [i], shape_of(info), i if info.cls in ANCHORS else None, lo=i, hi=i,
                        inputs=set(reads(node)), produced={o for o in node.outputs if o})
            self.clusters[i] = c

    # -- costs ----------------------------------------------------------------------------------
    def _written(self, produced: set[str], members: set[int]) -> int:
        return sum(self.size.get(o, 0) for o in produced
                   if o in self.outputs or any(r not in members for r in self.readers.get(o, ())))

    def bytes_of(self, c: Cluster) -> int:
        return sum(self.size.get(i, 0) for i in c.inputs) + self._written(c.produced, set(c.members))

    def merged_bytes(self, a: Cluster, b: Cluster) -> int:
        produced = a.produced | b.produced
        inputs = (a.inputs | b.inputs) - produced
        return sum(self.size.get(i, 0) for i in inputs) + self._written(produced, set(a.members) | set(b.members))

    def saving(self, a: Cluster, b: Cluster) -> int:
        return self.bytes_of(a) + self.bytes_of(b) - self.merged_bytes(a, b)

    # -- structure ------------------------------------------------------------------------------
    def successors(self, c: Cluster) -> set[int]:
        return {self.owner[r] for o in c.produced for r in self.readers.get(o, ())} - {c.id}

    def neighbours(self, c: Cluster) -> set[int]:
        preds = {self.owner[self.producer[n]] for n in c.inputs if n in self.producer}
        return (self.successors(c) | preds) - {c.id}

    def reaches_through_other(self, a: Cluster, b: Cluster) -> bool:
        """True when a path leads from ``a`` to ``b`` through some third cluster."""
        stack = [s for s in self.successors(a) if s != b.id]
        seen = set(stack)
        while stack:
            c = self.clusters[stack.pop()]
            if c.lo >= b.hi:  # nodes are in topological order: c cannot reach b
                continue
            for s in self.successors(c):
                if s == b.id:
                    return True
                if s not in seen:
                    seen.add(s)
                    stack.append(s)
        return False

    def refusal(self, a: Cluster, b: Cluster) -> str:
        """'' when ``a`` and ``b`` may merge, else why not."""
        if a.shape is None or b.shape is None:
            return "an opaque node does not fuse"
        anchor_fed = any(self._anchor_reads(x, y) for x, y in ((a, b), (b, a)))
        merged = merge_kind(a.shape, b.shape, anchor_fed_by_other=anchor_fed)
        if isinstance(merged, str):
            return merged
        crossing = (a.produced & b.inputs) | (b.produced & a.inputs)
        odd = sorted(v for v in crossing if self.shape_of(v) not in merged.allowed_outputs())
        if odd:
            return (f"'{odd[0]}' of shape {list(self.shape_of(odd[0]) or [])} would cross inside a group over "
                    f"{list(merged.space)}: not the space or its reduced shape (keepdims=0?)")
        if self.reaches_through_other(a, b) or self.reaches_through_other(b, a):
            return "merging would not be convex (a path between them leaves and re-enters)"
        return ""

    def shape_of(self, name: str) -> tuple | None:
        t = self.graph.type_of(name)
        return None if t is None or getattr(t, "shape", None) is None else tuple(t.shape)

    def is_downstream(self, a: Cluster, b: Cluster) -> bool:
        """Whether ``b`` reads what ``a`` computes and has no anchor of its own: ``b`` extends ``a``
        downstream. Among equal savings these merges go first, so a residual branch's
        BatchNormalization joins its own conv rather than being pulled into the conv it is added
        to (same bytes, a simpler kernel), and a conv's epilogue wins over a reduction's prologue."""
        return b.anchor is None and any(o in b.inputs for o in a.produced)

    def _anchor_reads(self, a: Cluster, b: Cluster) -> bool:
        return a.anchor is not None and any(i in b.produced for i in reads(self.nodes[a.anchor]))

    def merge(self, a: Cluster, b: Cluster) -> Cluster:
        merged_shape = merge_kind(a.shape, b.shape, anchor_fed_by_other=False)
        keep, gone = (a, b) if len(a.members) >= len(b.members) else (b, a)
        keep.members = sorted(keep.members + gone.members)
        keep.produced |= gone.produced
        keep.inputs = (keep.inputs | gone.inputs) - keep.produced
        keep.anchor = keep.anchor if keep.anchor is not None else gone.anchor
        keep.shape = merged_shape
        keep.lo, keep.hi = min(keep.lo, gone.lo), max(keep.hi, gone.hi)
        keep.version += 1
        for m in gone.members:
            self.owner[m] = keep.id
        del self.clusters[gone.id]
        return keep


def cluster(graph: Graph, size: Mapping[str, int], infos: list, min_saving: int = 1):
    """Greedy clustering: (clusters with >= 2 members, refusals of merges that never happened)."""
    state = _Clustering(graph, size, infos)
    heap: list = []
    counter = 0

    def push(c: Cluster) -> None:
        nonlocal counter
        if c.shape is None:
            return
        for other_id in state.neighbours(c):
            other = state.clusters[other_id]
            if other.shape is None:
                continue
            saving = state.saving(c, other)
            if saving >= min_saving:
                counter += 1
                indirect = not (state.is_downstream(c, other) or state.is_downstream(other, c))
                heapq.heappush(heap, (-saving, indirect, min(c.lo, other.lo), counter, c.id, c.version, other.id,
                                      other.version))

    for c in list(state.clusters.values()):
        push(c)
    refused: dict[tuple[int, int], str] = {}
    while heap:
        *_, a_id, a_ver, b_id, b_ver = heapq.heappop(heap)
        a, b = state.clusters.get(a_id), state.clusters.get(b_id)
        if a is None or b is None or a.version != a_ver or b.version != b_ver:
            continue
        why = state.refusal(a, b)
        if why:
            refused[tuple(sorted((a.members[0], b.members[0])))] = why
            continue
        push(state.merge(a, b))
    refusals = [(f"{graph.nodes[x].label} + {graph.nodes[y].label}", why) for (x, y), why in refused.items()
                if state.owner[x] != state.owner[y]]
    return [c for c in state.clusters.values() if len(c.members) > 1], refusals


def bind_symbols(graph: Graph, bindings: Mapping[str, int] | None = None, dim_size: int = 1) -> dict[str, int]:
    """``bindings`` plus ``dim_size`` for every other symbolic dim of the graph's containers."""
    symbols = set().union(*(getattr(c.type, "symbols", set()) for c in graph.containers.values()))
    return {**{s: dim_size for s in symbols}, **dict(bindings or {})}


def container_sizes(graph: Graph, binding: Mapping[str, int]) -> dict[str, int]:
    """Bytes of every container whose size is known once ``binding`` fixes symbolic dims."""
    sizes = {}
    for name, c in graph.containers.items():
        t = c.type.specialize(binding) if hasattr(c.type, "specialize") else None
        if t is not None and t.nbytes is not None:
            sizes[name] = t.nbytes
    return sizes


def _group_name(graph: Graph, kind: str, label: str) -> str:
    base = f"{kind}_{re.sub(r'[^A-Za-z0-9_]', '_', label)}"
    taken = {n.name for n in graph.nodes} | set(graph.containers)
    return base if base not in taken else graph.fresh_name(base)


@register_pass
class Fuse(Pass):
    """Fuse elementwise chains, reductions with their prologues/epilogues, and GEMM/conv epilogues."""

    name = "fuse"
    in_place = True
    description = "level 3: fuse ops into FusedGroup kernels, merging greedily by bytes saved"

    def __init__(self, *, elementwise: bool = True, broadcast: bool = True, reduction: bool = True,
                 epilogue: bool = True, min_saving: int = 1, bindings: Mapping[str, int] | None = None,
                 dim_size: int = 1):
        self.disabled = frozenset(
            cls for cls, on in ((OpClass.ELEMENTWISE, elementwise), (OpClass.BROADCAST, broadcast),
                                (OpClass.REDUCTION, reduction), (OpClass.GEMM, epilogue), (OpClass.CONV, epilogue))
            if not on)
        self.min_saving = min_saving
        self.bindings = dict(bindings or {})
        self.dim_size = dim_size

    def run(self, graph: Graph, ctx) -> PassResult:
        read = {i for n in graph.nodes for i in reads(n)} | set(graph.outputs)
        constants = constant_containers(graph) - set(graph.parameters)
        infos = [opaque("it computes a constant (fold-constants removes it)") if set(n.outputs) & constants
                 else classify(graph, n, read, self.disabled) for n in graph.nodes]
        binding = bind_symbols(graph, self.bindings, self.dim_size)
        size = container_sizes(graph, binding)
        before = graph_cost(graph, binding).transient_bytes
        clusters, refusals = cluster(graph, size, infos, self.min_saving)
        original = list(graph.nodes)
        kinds: dict[str, int] = {}
        for c in sorted(clusters, key=lambda c: c.hi):
            members = [original[i] for i in c.members]
            label = original[c.anchor].label if c.anchor is not None else members[0].label
            make_group(graph, members, name=_group_name(graph, c.shape.kind, label), kind=c.shape.kind)
            kinds[c.shape.kind] = kinds.get(c.shape.kind, 0) + 1
        after = graph_cost(graph, binding).transient_bytes if clusters else before
        stats = {"groups": len(clusters), "fused_nodes": sum(len(c.members) for c in clusters),
                 **{f"groups_{k}": v for k, v in sorted(kinds.items())},
                 "transient_bytes_before": before, "transient_bytes_after": after}
        return PassResult(graph, bool(clusters), stats, refusals)
