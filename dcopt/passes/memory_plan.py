"""Level 4: memory planning -- where every transient lives in one arena, and when it may share.

Why: after fusion, the transients left are the values that cross kernel boundaries. Giving each
its own allocation costs the sum of their sizes; most are dead long before the model finishes,
so an arena in which values whose lifetimes do not overlap share bytes needs far less memory,
and a backend can allocate it once. The plan is an analysis: the graph is not changed, backends
call :func:`plan_memory` (deterministic, cheap) and lay out their buffers by it.

**What is planned.** Containers written by a node of the graph that are neither graph inputs,
parameters nor graph outputs (those belong to the caller), with a size known once ``bindings``
fixes symbolic dims (others are listed in ``MemoryPlan.unplanned`` with the reason). Values
inside a FusedGroup are the kernel's business, not the arena's.

**Liveness.** Over the node order (topological): a value is live from the node that writes it
to the last node that reads it (inputs, and values captured by subgraphs); a value nobody
reads lives only at its writer. Two values live at the same node may not share bytes.

**Aliasing (transient elimination).** A view op (Reshape, Flatten, Squeeze, Unsqueeze, Identity)
copies nothing: its output gets its source's bytes (both stay readable; nothing writes them).
A view of a graph input or parameter is recorded in ``aliases`` and takes no arena space.

**In-place.** An elementwise op, or a FusedGroup of kind "elementwise", may write an output into
an input's bytes when that input (and every view sharing its bytes) is last read by this node,
and has the output's shape and element size: output element j depends only on input element j,
which has been read by the time j is written. Graph inputs are never overwritten.

**Symbolic sizes.** A graph compiled for every size (symbolic batch or sequence dims kept) gets the
same decisions -- liveness, which values share a buffer, at which byte offset inside it -- with
buffer sizes that are polynomials over the symbols (:class:`Layout`). Only the placement below,
arithmetic on sizes, waits until a run binds the symbols (:meth:`Layout.place`, milliseconds).

**Assignment: greedy by size, best fit** (as in TFLite's arena planner). Buffers (a value plus
its views and in-place successors) are taken largest first; each is placed in the smallest gap,
among the buffers already placed whose lifetimes overlap its own, that fits it; if none fits,
after the highest of them. Offsets are aligned to ``alignment`` bytes, and every buffer is
followed by ``separation`` bytes (default one cache line) in which no other buffer starts.
Largest-first keeps big
buffers from fragmenting the arena; best fit keeps small ones in the holes. Placement is NP-hard
in general and no single order wins everywhere (on DenseNet-121 longest-lifetime-first gives a 5%
smaller arena than largest-first), so the same best fit also runs in two other orders
(:data:`ORDERS`) and the smallest arena is kept; each run is O(buffers^2), milliseconds here.

**Why buffers are separated.** LLVM vectorizes a loop that reads one array and writes another
only behind a run-time check that the two do not overlap within a few vectors; numba cannot say
two arguments never alias, so the check runs on every call. Two buffers laid end to end fail it
(the output starts where the input ends) and the kernel runs its scalar loop: BERT's GELU took
1.05 ms instead of 0.22 ms on [1, 131072] (Sapphire Rapids), its attention softmax 50% longer.
A cache line between buffers costs 64 bytes each and passes the check.

:func:`check_plan` re-derives liveness from the graph and proves that no two values live at the
same time share bytes unless they are a view of one another or a checked in-place pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from dcopt.errors import DcoptError, StaticSizesNeeded
from dcopt.ir.cost import reads
from dcopt.ir.graph import Graph, Kind, Node
from dcopt.ir.groups import is_group
from dcopt.passes.base import Pass, PassResult, register_pass
from dcopt.ops.shapes import dims
from dcopt.ops.shapes.dims import Dim
from dcopt.passes.fusion_rules import OpClass, classify

@dataclass
class MemoryPlan:
    """Where each planned transient lives: ``offsets[name] = (offset, nbytes)`` in an arena of
    ``arena_size`` bytes. ``inplace`` lists ``(input, output)`` pairs where the output overwrites
    the input; ``aliases`` maps a view's output to the value it views (planned or external);
    ``parts`` maps a value living inside a bigger one to ``(owner, byte offset)`` (a contiguous
    slice of its source, or a Concat input written straight into the Concat's output)."""

    offsets: dict[str, tuple[int, int]]
    arena_size: int
    inplace: list[tuple[str, str]] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    lifetimes: dict[str, tuple[int, int]] = field(default_factory=dict)
    unplanned: dict[str, str] = field(default_factory=dict)
    alignment: int = 64
    separation: int = 64
    total_bytes: int = 0  # sum of the planned values' sizes: memory with no reuse at all
    live_peak: int = 0  # most bytes live at one node, each value in its own buffer
    parts: dict[str, tuple[str, int]] = field(default_factory=dict)
    layout: "Layout | None" = None  # the buffers before placement (what a symbolic plan keeps)

    @property
    def symbolic(self) -> bool:
        """Whether placement waits for sizes (some buffer's size depends on a symbol)."""
        return self.layout is not None and not self.layout.static

    def placed(self, bindings: Mapping[str, int]) -> "MemoryPlan":
        """This plan with every buffer placed for ``bindings`` (a symbolic plan at one size)."""
        from dataclasses import replace

        offsets, arena = self.layout.place(bindings)
        return replace(self, offsets=offsets, arena_size=arena)

    def to_dict(self) -> dict:
        return {"arena_size": self.arena_size, "total_bytes": self.total_bytes, "live_peak": self.live_peak,
                "alignment": self.alignment, "separation": self.separation,
                "offsets": {k: list(v) for k, v in self.offsets.items()},
                "inplace": [list(p) for p in self.inplace], "aliases": dict(self.aliases),
                "parts": {k: list(v) for k, v in self.parts.items()}, "unplanned": dict(self.unplanned)}


# -- liveness -----------------------------------------------------------------------------------


def written(node: Node) -> list[str]:
    """What a node writes into memory: its outputs, and for a kernel its intermediates that are
    neither outputs nor register locals (they live while the kernel runs)."""
    names = [o for o in node.outputs if o]
    if is_group(node) and node.attrs.get("kind") == "kernel":
        from dcopt.passes.kernels import kernel_internals

        names += kernel_internals(node)
    return names


def transient_sizes(graph: Graph, bindings: Mapping[str, int] | None,
                    outputs: bool = False, symbolic: bool = False) -> tuple[dict[str, Dim], dict[str, str]]:
    """(bytes of each plannable transient -- and of the graph outputs a node writes, with
    ``outputs`` -- and why the others are not planned). ``symbolic``: a size over symbols the
    bindings leave free is kept as a polynomial (a dim string) instead of left unplanned."""
    binding = dict(bindings or {})
    sizes, unplanned = {}, {}
    wanted = (Kind.TRANSIENT, Kind.OUTPUT) if outputs else (Kind.TRANSIENT,)
    for node in graph.nodes:
        for name in written(node):
            if not name or graph.kind(name) not in wanted:
                continue
            t = graph.type_of(name)
            t = t.specialize(binding) if hasattr(t, "specialize") else None
            if symbolic and t is not None and t.nbytes is None and (size := symbolic_nbytes(t)) is not None:
                sizes[name] = size
            elif t is None or t.nbytes is None:
                unplanned[name] = f"size unknown ({graph.type_of(name)}); bind its symbolic dims"
            else:
                sizes[name] = t.nbytes
    return sizes, unplanned


def symbolic_nbytes(t) -> Dim:
    """Bytes of a tensor type whose dims may be symbols (a dim string), None when a dim is unknown
    or the element size is not whole bytes."""
    from dcopt.ir import dtypes

    itemsize = dtypes.itemsize(t.dtype)
    if t.shape is None or any(d is None for d in t.shape) or itemsize != int(itemsize):
        return None
    return dims.mul(dims.prod(t.shape), int(itemsize))


def lifetimes(graph: Graph, names) -> dict[str, tuple[int, int]]:
    """``name -> (index of the writing node, index of the last reading node)``."""
    wanted = set(names)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for name in written(node):
            if name in wanted:
                first[name] = last[name] = i
        for name in reads(node):
            if name in wanted:
                last[name] = i
    end = len(graph.nodes)
    for name in graph.outputs:  # read by the caller after the last node
        if name in first:
            last[name] = end
    return {n: (first[n], last[n]) for n in first}


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def live_peak(sizes: Mapping[str, int], life: Mapping[str, tuple[int, int]]) -> int:
    """Most bytes live at one node when every value has its own buffer."""
    delta: dict[int, int] = {}
    for name, (start, end) in life.items():
        delta[start] = delta.get(start, 0) + sizes[name]
        delta[end + 1] = delta.get(end + 1, 0) - sizes[name]
    peak = live = 0
    for point in sorted(delta):
        live += delta[point]
        peak = max(peak, live)
    return peak


# -- buffers: values sharing bytes through views and in-place updates ---------------------------


def _shape(graph: Graph, name: str, binding: dict) -> tuple | None:
    """(shape, dtype) with ``binding`` applied; symbolic dims stay (equal dims are equal strings)."""
    t = graph.type_of(name)
    t = t.specialize(binding) if hasattr(t, "specialize") else None
    return None if t is None or t.shape is None or None in t.shape else (tuple(t.shape), t.dtype)


def is_pointwise(graph: Graph, node: Node, read: set[str]) -> bool:
    """Whether output element j of ``node`` depends on input element j only (for in-place)."""
    if is_group(node):
        return node.attrs.get("kind") == "elementwise"
    return classify(graph, node, read).cls in (OpClass.ELEMENTWISE, OpClass.BROADCAST)


def is_view(node: Node, graph: Graph | None = None) -> bool:
    """A node whose outputs are its first input's bytes (:mod:`dcopt.ir.views`)."""
    from dcopt.ir.views import RESHAPES, slice_views

    if graph is None:
        return node.domain in ("", "ai.onnx") and node.op in RESHAPES and bool(node.inputs) and bool(node.inputs[0])
    return slice_views(graph, node) is not None


class _Buffers:
    """Union of values into buffers that share bytes: each member at a byte offset in its root."""

    def __init__(self, names, life):
        self.root = {n: n for n in names}
        self.rel = {n: 0 for n in names}
        self.members = {n: [n] for n in names}
        self.life = life

    def find(self, name: str) -> str:
        while self.root[name] != name:
            name = self.root[name]
        return name

    def offset(self, name: str) -> int:
        """Byte offset of ``name`` in its root's buffer."""
        return self.rel[name]

    def join(self, source: str, name: str, offset: int = 0) -> None:
        """``name`` (with all its members) lives at ``offset`` bytes into ``source``'s buffer."""
        r = self.find(source)
        shift = self.offset(source) + offset - self.offset(name)
        old = self.find(name)
        for m in self.members.pop(old):
            self.rel[m] += shift
            self.root[m] = r
            self.members[r].append(m)

    def last_use(self, root: str) -> int:
        return max(self.life[m][1] for m in self.members[root])

    def span(self, root: str) -> tuple[int, int]:
        spans = [self.life[m] for m in self.members[root]]
        return min(s for s, _ in spans), max(e for _, e in spans)


def views(graph: Graph, sizes: Mapping[str, int]) -> tuple[dict[str, str], set[str]]:
    """(``view output -> source`` for view nodes writing a planned value from a planned or external
    source, the views whose bytes are ultimately a graph input's or a parameter's)."""
    aliases, external, _ = _views(graph, sizes)
    return aliases, external


def _views(graph: Graph, sizes: Mapping[str, int]):
    """(aliases, external views, ``{view: byte offset in its source}``)."""
    from dcopt.ir.views import slice_views

    aliases: dict[str, str] = {}
    external: set[str] = set()
    offsets: dict[str, int] = {}
    for n in graph.nodes:
        for out, src, offset in slice_views(graph, n) or ():
            if out not in sizes:
                continue
            if src in external or graph.kind(src) in (Kind.INPUT, Kind.PARAMETER):
                external.add(out)
            elif src not in sizes:
                continue
            aliases[out] = src
            offsets[out] = offset
    return aliases, external, offsets


def _share(graph: Graph, sizes, life, aliases, binding, inplace: bool, view_offsets=None, concat: bool = False):
    """Join views to their sources, concatenation inputs into their Concat's output and in-place
    outputs to their inputs: (buffers, in-place pairs, parts)."""
    buffers = _Buffers(sizes, life)
    pairs: list[tuple[str, str]] = []
    parts: dict[str, tuple[str, int]] = {}
    read = {i for n in graph.nodes for i in reads(n)} | set(graph.outputs)
    view_offsets = view_offsets or {}
    for k, node in enumerate(graph.nodes):
        if is_view(node, graph):
            for out in node.outputs:
                if out in aliases and out in sizes and node.inputs[0] in sizes:
                    _check_same_bytes(node, out, sizes)
                    buffers.join(node.inputs[0], out, view_offsets.get(out, 0))
                    if view_offsets.get(out, 0) or len(node.outputs) > 1:
                        parts[out] = (node.inputs[0], view_offsets.get(out, 0))
            continue
        if not inplace or not is_pointwise(graph, node, read):
            continue
        node_reads, taken = set(reads(node)), set()
        for out in node.outputs:
            src = _inplace_source(graph, node, out, k, buffers, sizes, node_reads, taken, binding)
            if src:
                buffers.join(src, out)
                pairs.append((src, out))
                taken.add(src)
    if concat:
        _concat_in_place(graph, buffers, sizes, parts)
    return buffers, pairs, parts


def _check_same_bytes(node: Node, out: str, sizes) -> None:
    """A reshape's output is its input's bytes: where their sizes are not the same polynomial (a
    target shape fixed at the example sizes over a symbolic input), one plan cannot serve every
    size -- the build is compiled per size instead (:class:`StaticSizesNeeded`)."""
    from dcopt.ir.views import RESHAPES

    a, b = sizes[node.inputs[0]], sizes[out]
    if node.op in RESHAPES and a != b and not (isinstance(a, int) and isinstance(b, int)):
        raise StaticSizesNeeded(f"'{out}' ({b} bytes) views '{node.inputs[0]}' ({a} bytes): the sizes agree only "
                                "at some sizes", node=node.label, op=node.op)


def _concat_in_place(graph: Graph, buffers: _Buffers, sizes, parts) -> None:
    """Concat inputs that can live inside the output: a planned value that is its own buffer (not
    a view, slice or part of another), written by a node, read once by this Concat and by no
    other Concat, at most once among its inputs. Chains (DenseNet's concat of a concat) nest."""
    from dcopt.ir.views import concat_parts

    concat_readers: dict[str, int] = {}
    writers = {o for n in graph.nodes for o in n.outputs if o}
    for node in graph.nodes:
        for name in set(concat_parts(graph, node) and node.inputs or ()):
            concat_readers[name] = concat_readers.get(name, 0) + 1
    for node in graph.nodes:
        layout = concat_parts(graph, node)
        out = node.outputs[0] if node.outputs else ""
        if layout is None or out not in sizes:
            continue
        names = [n for n, _ in layout]
        for name, offset in layout:
            if (name not in sizes or name not in writers or names.count(name) != 1 or concat_readers.get(name) != 1
                    or buffers.find(name) != name or name in graph.outputs
                    or graph.type_of(name).dtype != graph.type_of(out).dtype or buffers.find(out) == name):
                continue
            buffers.join(out, name, offset)
            parts[name] = (out, offset)


def _inplace_source(graph, node, out, k, buffers, sizes, node_reads, taken, binding) -> str | None:
    """An input of ``node`` whose bytes ``out`` may take: dead after node k (with all its views),
    not read by node k through another view, same shape and dtype as ``out``."""
    if out not in sizes or _shape(graph, out, binding) is None:
        return None
    for src in dict.fromkeys(node.present_inputs):
        if src not in sizes or src in taken:
            continue
        root = buffers.find(src)
        if (buffers.last_use(root) == k and not node_reads & (set(buffers.members[root]) - {src})
                and _shape(graph, src, binding) == _shape(graph, out, binding)):
            return src
    return None


def _align(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


#: Orders in which the best-fit placement takes buffers: largest first, longest-lived first,
#: largest size x lifetime first. The plan keeps the smallest arena (ties: the earlier order).
ORDERS = {
    "size": lambda r, size, span: (-size, span, r),
    "lifetime": lambda r, size, span: (span[0] - span[1], -size, r),
    "area": lambda r, size, span: (-(span[1] - span[0] + 1) * size, span, r),
}


def _assign(spans: Mapping[str, tuple[int, int]], sizes, alignment: int, order,
            separation: int = 0) -> tuple[dict[str, int], int]:
    """Best fit in the given order (see the module doc): root -> offset, arena size. Each placed
    buffer keeps ``separation`` bytes after its end free of other buffers' starts."""
    roots = sorted(spans, key=lambda r: order(r, sizes[r], spans[r]))
    placed: list[tuple[int, int, tuple[int, int]]] = []  # (offset, end, span)
    offsets = {}
    arena = 0
    for root in roots:
        size, span = sizes[root], spans[root]
        busy = sorted((o, e) for o, e, s in placed if _overlap(s, span))
        best, best_gap, cursor = None, None, 0
        for start, end in busy:
            gap = start - cursor
            if gap >= size + separation and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, _align(end, alignment))
        offset = cursor if best is None else best
        offsets[root] = offset
        placed.append((offset, offset + size + separation, span))
        arena = max(arena, offset + size)
    return offsets, _align(arena, alignment) if arena else 0


@dataclass
class Layout:
    """The buffers of a plan before placement: which values share bytes, decided once on the
    graph, with sizes that may be polynomials over symbols. ``roots[r] = (bytes, span)``;
    ``members[v] = (root, byte offset in the root, bytes)``."""

    roots: dict[str, tuple[Dim, tuple[int, int]]]
    members: dict[str, tuple[str, int, Dim]]
    alignment: int = 64
    separation: int = 64

    @property
    def static(self) -> bool:
        return all(isinstance(b, int) for b, _ in self.roots.values())

    def place(self, bindings: Mapping[str, int] | None = None) -> tuple[dict[str, tuple[int, int]], int]:
        """(``value -> (offset, bytes)``, arena bytes) at ``bindings``: best fit in every order of
        :data:`ORDERS`, the smallest arena kept."""
        binding = dict(bindings or {})
        known: dict[Dim, int] = {}  # views and in-place outputs repeat their root's size: substitute once

        def size(b: Dim) -> int:
            if b not in known:
                known[b] = dims.substitute(b, binding)
                if not isinstance(known[b], int):
                    raise DcoptError(f"memory plan: buffer size {b} needs sizes for its symbols; got {binding}")
            return known[b]

        sizes = {r: size(b) for r, (b, _) in self.roots.items()}
        spans = {r: tuple(span) for r, (_, span) in self.roots.items()}
        root_offsets, arena = min((_assign(spans, sizes, self.alignment, order, self.separation)
                                   for order in ORDERS.values()), key=lambda result: result[1])
        return {n: (root_offsets[r] + rel, size(b)) for n, (r, rel, b) in self.members.items()}, arena

    def to_dict(self) -> dict:
        return {"roots": {r: [b, list(span)] for r, (b, span) in self.roots.items()},
                "members": {n: list(m) for n, m in self.members.items()},
                "alignment": self.alignment, "separation": self.separation}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Layout":
        return cls({r: (b, tuple(span)) for r, (b, span) in d["roots"].items()},
                   {n: (r, int(rel), b) for n, (r, rel, b) in d["members"].items()},
                   int(d.get("alignment", 64)), int(d.get("separation", 64)))


def plan_memory(graph: Graph, bindings: Mapping[str, int] | None = None, *, alignment: int = 64,
                inplace: bool = True, outputs: bool = False, concat: bool = False,
                separation: int = 64) -> MemoryPlan:
    """Plan the transients of ``graph`` into one arena (see the module doc). ``outputs``: plan the
    graph outputs too (live to the end); ``concat``: let Concat inputs live in their output;
    ``separation``: free bytes after each buffer (0 packs buffers end to end)."""
    if separation < 0:
        raise DcoptError(f"plan-memory: separation must be >= 0 bytes, got {separation}")
    sizes, unplanned = transient_sizes(graph, bindings, outputs, symbolic=True)
    life = lifetimes(graph, sizes)
    static = {n: b for n, b in sizes.items() if isinstance(b, int)}
    total, peak = sum(static.values()), live_peak(static, {n: life[n] for n in static})
    aliases, external, view_offsets = _views(graph, sizes)
    in_arena = {n: b for n, b in sizes.items() if n not in external}
    buffers, pairs, parts = _share(graph, in_arena, life, aliases, dict(bindings or {}), inplace, view_offsets,
                                   concat)
    layout = Layout({r: (in_arena[r], buffers.span(r)) for r in buffers.members},
                    {n: (buffers.find(n), buffers.offset(n), b) for n, b in in_arena.items()}, alignment, separation)
    offsets, arena = layout.place() if layout.static else ({}, 0)
    return MemoryPlan(offsets, arena, pairs, aliases, {n: life[n] for n in in_arena}, unplanned, alignment,
                      separation, total, peak, parts, layout)


# -- verification -------------------------------------------------------------------------------


def check_plan(graph: Graph, plan: MemoryPlan, bindings: Mapping[str, int] | None = None,
               outputs: bool = False) -> None:
    """Raise DcoptError unless no two values live at the same node share bytes (except a view and
    its source, or a checked in-place pair meeting at the writing node)."""
    problems = []
    sizes, _ = transient_sizes(graph, bindings, outputs)
    life = lifetimes(graph, sizes)
    binding = dict(bindings or {})
    producers = {o: (i, n) for i, n in enumerate(graph.nodes) for o in n.outputs if o}
    read = {i for n in graph.nodes for i in reads(n)} | set(graph.outputs)
    family = {n: n for n in sizes}

    def find(n):
        while family[n] != n:
            n = family[n]
        return n

    for view, src in plan.aliases.items():
        node = producers.get(view, (0, None))[1]
        if node is None or not is_view(node, graph) or node.inputs[0] != src:
            problems.append(f"'{view}' is declared a view of '{src}' but is not written by a view of it")
        elif src in sizes and view in sizes:
            family[find(view)] = find(src)
    for part, (owner, _) in plan.parts.items():
        if part in sizes and owner in sizes:
            family[find(part)] = find(owner)
    legal_inplace = set()
    for src, out in plan.inplace:
        k, node = producers.get(out, (None, None))
        if node is None or src not in node.present_inputs or not is_pointwise(graph, node, read):
            problems.append(f"in-place pair ({src} -> {out}): '{out}' is not written by a pointwise node "
                            f"reading '{src}'")
        elif life[src][1] != k or _shape(graph, src, binding) != _shape(graph, out, binding):
            problems.append(f"in-place pair ({src} -> {out}): '{src}' is read after it is overwritten, or the "
                            "shapes differ")
        else:
            legal_inplace.add((src, out))
    external = views(graph, sizes)[1]
    for name, size in sizes.items():
        if name in external:
            continue
        if name not in plan.offsets:
            problems.append(f"transient '{name}' has no place in the plan")
        elif plan.offsets[name][1] != size or plan.offsets[name][0] + size > plan.arena_size:
            problems.append(f"transient '{name}' ({size} bytes) at {plan.offsets[name]} does not fit the arena "
                            f"of {plan.arena_size} bytes")
    spans = sorted((off, off + n, name) for name, (off, n) in plan.offsets.items() if name in life and n)
    for i, (start, end, a) in enumerate(spans):
        for start_b, end_b, b in spans[i + 1:]:
            if start_b >= end:
                break
            if not _overlap(life[a], life[b]) or find(a) == find(b):
                continue
            first, second = (a, b) if life[a][0] <= life[b][0] else (b, a)
            if (first, second) in legal_inplace and life[first][1] == life[second][0]:
                continue
            problems.append(f"'{a}' {plan.offsets[a]} (live {life[a]}) and '{b}' {plan.offsets[b]} "
                            f"(live {life[b]}) share bytes while both are live")
    if problems:
        raise DcoptError(f"memory plan is invalid: {len(problems)} problem(s): " + "; ".join(problems[:10]))


#: Sizes every symbol takes where a symbolic plan is checked (a size-1 batch, odd sizes).
_CHECK_SIZES = (1, 3, 37)


@register_pass(aliases=("plan",))
class PlanMemory(Pass):
    """Compute the memory plan and report its peak memory against no reuse and the live-set peak.

    The nodes are left unchanged; the plan is written into the graph (``graph.memory_plan``),
    where code generators bind buffers from it, and into ``stats["plan"]`` for reports."""

    name = "plan-memory"
    in_place = True
    description = "level 4: plan transients into one arena (liveness, best-fit reuse, in-place, views)"

    def __init__(self, *, bindings: Mapping[str, int] | None = None, alignment: int = 64, inplace: bool = True,
                 outputs: bool = False, concat: bool = False, separation: int = 64):
        self.bindings, self.alignment, self.inplace = dict(bindings or {}), alignment, inplace
        self.outputs, self.concat, self.separation = outputs, concat, separation

    def run(self, graph: Graph, ctx) -> PassResult:
        plan = plan_memory(graph, self.bindings, alignment=self.alignment, inplace=self.inplace, outputs=self.outputs,
                           concat=self.concat, separation=self.separation)
        if plan.symbolic:  # the decisions hold at every size: checked at a few placements
            free = {d for n in graph.inputs for d in getattr(graph.type_of(n), "symbols", ())} - set(self.bindings)
            for sizes in _CHECK_SIZES:
                binding = {**{sym: sizes for sym in free}, **self.bindings}
                check_plan(graph, plan.placed(binding), binding, self.outputs)
        else:
            check_plan(graph, plan, self.bindings, self.outputs)
        graph.memory_plan = plan
        # a symbolic plan's figures are reported where every free symbol is 1 (sizes_at)
        shown = plan if not plan.symbolic else plan_memory(
            graph, {**dict.fromkeys(free, 1), **self.bindings}, alignment=self.alignment, inplace=self.inplace,
            outputs=self.outputs, concat=self.concat, separation=self.separation)
        stats = {"transients": len(shown.offsets), "bytes_no_reuse": shown.total_bytes,
                 "live_peak_bytes": shown.live_peak, "arena_bytes": shown.arena_size,
                 "inplace": len(plan.inplace), "views_aliased": len(plan.aliases), "parts": len(plan.parts),
                 "unplanned": len(plan.unplanned), "symbolic": plan.symbolic, "plan": plan.to_dict()}
        if plan.symbolic:
            stats["sizes_at"] = ", ".join(f"{sym}=1" for sym in sorted(free))
        return PassResult(graph, False, stats)
