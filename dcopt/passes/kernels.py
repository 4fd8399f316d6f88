"""form-kernels (level 3, loop level): decide which maps run as one kernel, how deep their loops
are shared, and which intermediates live in registers. The last fusion decision before code
generation; every backend renders exactly what it writes into the graph.

Input: an expanded graph (:mod:`dcopt.passes.expand`, ``group=True``) whose fusion groups (from
the op-level ``fuse`` pass, or one op's multi-node expansion) hold maps and library calls, after
``fuse-epilogues`` and ``fuse-maps``. Output: a flat node list of

* ``FusedGroup`` nodes of kind ``"kernel"``: a body of maps plus two attributes,
  ``outer`` -- how many leading loop levels the maps share -- and ``locals`` -- the body's
  intermediates that live in a scalar per outer iteration;
* library calls, view ops and any op that has no expansion, as they were.

**Segments.** A group's body is cut at every node that is not a map (library calls run on
their own); each run of maps becomes kernels. Maps outside groups are kernels by themselves.

**Shared loops (row fusion).** Maps run one after another inside ``outer`` shared loops
(``for row: max-map; sum-map; normalize-map`` is softmax in one pass over each row). A loop
level ``j`` can be shared when

1. every map's ``j``-th param is *parallel*: each of its outputs is indexed by it, so distinct
   values write distinct elements (a reduced param never is);
2. all maps give it the same range;
3. a value written inside the kernel and read by a later map there is read, on every dim the
   writer indexes by a shared param, at that same param -- so each outer iteration reads only
   what the same iteration wrote.

A run of maps is split greedily: a map joins the current kernel unless the joint kernel would
share no loop level while each part had one (a kernel whose outer loop is shared can be split
across threads); maps that share none alone (a full reduction) join freely.

**Locals.** An intermediate every access of which names only shared params (at consistent
positions) or the constant 0 has one element per outer iteration: it becomes a scalar (softmax's
row max and sum, layer norm's mean and variance) and takes no memory at all. Other intermediates
stay arrays, planned by ``plan-memory`` for the duration of the kernel.
"""

from __future__ import annotations

from typing import Iterable

from dcopt.ir.graph import Graph, Node
from dcopt.ir.groups import GROUP_DOMAIN, GROUP_OP, is_group
from dcopt.ir.loops import MAP, LoopSpec, Range, is_loop_node, loop_spec, rename_container
from dcopt.passes.base import Pass, PassResult, register_pass

KERNEL = "kernel"


def is_kernel(node: Node) -> bool:
    return is_group(node) and node.attrs.get("kind") == KERNEL


def is_map(node: Node) -> bool:
    return is_loop_node(node) and node.op == MAP


def parallel_prefix(spec: LoopSpec) -> int:
    """Leading params each of the map's outputs is indexed by (distinct values never write the
    same element)."""
    if any(m.init or spec.indirect(m) for m in spec.outputs):
        return 0  # data-dependent writes: one pass, in order
    k = 0
    for p in spec.params:
        if all(any(not isinstance(d, Range) and d.text == p for d in m.subset) for m in spec.outputs):
            k += 1
        else:
            break
    return k


def _positions(spec: LoopSpec, subset, k: int) -> dict[int, int]:
    """dim -> shared level j, for the dims of ``subset`` that are exactly shared param j."""
    shared = {p: j for j, p in enumerate(spec.params[:k])}
    return {d: shared[dim.text] for d, dim in enumerate(subset) if not isinstance(dim, Range) and dim.text in shared}


def shared_depth(specs: list[LoopSpec], internal: Iterable[str] = ()) -> int:
    """How many loop levels ``specs`` (in order) can share; see the module docstring."""
    if not specs:
        return 0
    k = min(parallel_prefix(s) for s in specs)
    first = specs[0]
    for j in range(k):
        if any(len(s.ranges) <= j or (s.ranges[j][0].text, s.ranges[j][1].text) !=
               (first.ranges[j][0].text, first.ranges[j][1].text) for s in specs):
            k = j
            break
    while k > 0 and not _reads_follow_writes(specs, k):
        k -= 1
    return k


def _reads_follow_writes(specs: list[LoopSpec], k: int) -> bool:
    writer: dict[str, tuple[LoopSpec, object]] = {}
    for s in specs:
        for m in s.inputs:
            if m.container not in writer:
                continue
            ws, wm = writer[m.container]
            for dim, j in _positions(ws, wm.subset, k).items():
                d = m.subset[dim] if dim < len(m.subset) else None
                if d is None or isinstance(d, Range) or d.text != s.params[j]:
                    return False
        for m in s.outputs:
            writer[m.container] = (s, m)
    return True


def scalar_locals(specs: list[LoopSpec], k: int, internal: set[str]) -> set[str]:
    """Internal containers with one element per outer iteration (see the module docstring)."""
    result = set()
    for name in internal:
        ok = True
        for s in specs:
            for m in (*s.inputs, *s.outputs):
                if m.container != name:
                    continue
                shared = {p: j for j, p in enumerate(s.params[:k])}
                for d in m.subset:
                    if isinstance(d, Range) or not (d.text == "0" or d.text in shared):
                        ok = False
        if ok:
            result.add(name)
    return result


def _locals_positions_agree(specs: list[LoopSpec], k: int, name: str) -> bool:
    seen = None
    for s in specs:
        for m in (*s.inputs, *s.outputs):
            if m.container == name:
                pos = tuple(s.params.index(d.text) if d.text in s.params[:k] else -1 for d in m.subset)
                if seen is None:
                    seen = pos
                elif pos != seen:
                    return False
    return True


class _Flat:
    """The graph's node list with groups opened: (node, origin) pairs, origin = the group a node
    came from (None for top-level nodes); body containers hoisted into the graph, renamed where
    two bodies used the same name."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.items: list[tuple[Node, int | None]] = []
        for gi, node in enumerate(graph.nodes):
            if is_group(node) and not is_kernel(node):
                for inner in self._hoist(node.attrs["body"]):
                    self.items.append((inner, gi))
            else:
                self.items.append((node, None))

    def _hoist(self, body: Graph) -> list[Node]:
        nodes = list(body.nodes)
        for name, c in body.containers.items():
            if name in body.inputs:
                continue
            existing = self.graph.containers.get(name)
            if existing is None:
                self.graph.containers[name] = c
            elif existing.type != c.type or (c.data is not None and existing.data is not c.data):
                new = self.graph.fresh_name(name)
                self.graph.containers[new] = c
                nodes = [rename_container(n, name, new) if is_loop_node(n) else
                         n.replace(inputs=tuple(new if i == name else i for i in n.inputs),
                                   outputs=tuple(new if o == name else o for o in n.outputs)) for n in nodes]
        return nodes


def form_kernels(graph: Graph) -> dict:
    """Rewrite ``graph`` (in place) into kernels; returns statistics."""
    flat = _Flat(graph).items
    readers: dict[str, list[int]] = {}
    for i, (n, _) in enumerate(flat):
        for name in dict.fromkeys([*n.present_inputs, *n.outer_reads()]):
            readers.setdefault(name, []).append(i)
    outputs = set(graph.outputs)
    stats = {"kernels": 0, "maps": 0, "shared_levels": 0, "locals": 0, "library_calls": 0, "other": 0}
    new_nodes: list[Node] = []
    i = 0
    while i < len(flat):
        node, origin = flat[i]
        if not is_map(node):
            new_nodes.append(node)
            stats["library_calls" if is_loop_node(node) else "other"] += 1
            i += 1
            continue
        run = [i]
        while origin is not None and i + len(run) < len(flat) and flat[i + len(run)][1] == origin \
                and is_map(flat[i + len(run)][0]):
            run.append(i + len(run))
        for kernel in _split(flat, run, readers, outputs):
            new_nodes.append(_make_kernel(graph, flat, kernel, readers, outputs, stats))
        i += len(run)
    graph.nodes = new_nodes
    graph.opset.setdefault(GROUP_DOMAIN, 1)
    return stats


def _internal(flat, members: list[int], readers, outputs) -> set[str]:
    inside = set(members)
    written = {o for i in members for o in flat[i][0].outputs if o}
    return {t for t in written if t not in outputs and set(readers.get(t, [])) <= inside}


def _split(flat, run: list[int], readers, outputs) -> list[list[int]]:
    """A run of maps -> kernels: a map joins the current kernel unless that would lose shared
    loop levels either side had (a kernel that could be split across threads would not be)."""
    kernels: list[list[int]] = []
    current: list[int] = []
    for i in run:
        candidate = current + [i]
        if current:
            alone = min(shared_depth([loop_spec(flat[j][0]) for j in current]),
                        shared_depth([loop_spec(flat[i][0])]))
            if shared_depth([loop_spec(flat[j][0]) for j in candidate]) < min(alone, 1):
                kernels.append(current)
                current = [i]
                continue
        current = candidate
    if current:
        kernels.append(current)
    return kernels


def _make_kernel(graph: Graph, flat, members: list[int], readers, outputs, stats) -> Node:
    nodes = [flat[i][0] for i in members]
    specs = [loop_spec(n) for n in nodes]
    internal = _internal(flat, members, readers, outputs)
    k = shared_depth(specs)
    local = {t for t in scalar_locals(specs, k, internal) if _locals_positions_agree(specs, k, t)}
    body = kernel_body(graph, f"kernel_{nodes[0].label}", nodes, internal)
    inputs, outs = list(body.inputs), list(body.outputs)
    stats["kernels"] += 1
    stats["maps"] += len(nodes)
    stats["shared_levels"] += k
    stats["locals"] += len(local)
    for name in local:
        graph.containers.pop(name, None)
    return Node(GROUP_OP, tuple(inputs), tuple(outs),
                {"body": body, "kind": KERNEL, "outer": k, "locals": tuple(sorted(local))},
                name=nodes[0].label if len(nodes) == 1 else f"{nodes[0].label}+{len(nodes) - 1}", domain=GROUP_DOMAIN)


def kernel_body(graph: Graph, name: str, nodes: list[Node], internal, previous: Graph | None = None) -> Graph:
    """A kernel's body graph over ``nodes`` (maps in order): inputs are what they read and do not
    write, outputs what they write except the ``internal`` intermediates. Types come from
    ``graph``, or from the ``previous`` body for its register locals (which ``graph`` no longer has)."""
    def type_of(c: str):
        found = graph.containers.get(c)
        return found.type if found is not None else previous.containers[c].type

    written = [o for n in nodes for o in n.outputs if o]
    body = Graph(name, graph.opset)
    for c in dict.fromkeys(i for n in nodes for i in n.present_inputs if i not in written):
        body.add_input(c, type_of(c))
    for c in written:
        body.add_container(c, type_of(c))
    body.nodes = list(nodes)
    body.outputs = [o for o in written if o not in internal]
    return body


def kernel_internals(node: Node) -> list[str]:
    """A kernel's intermediates that need memory (written inside, not outputs, not locals)."""
    body = node.attrs["body"]
    written = [o for n in body.nodes for o in n.outputs if o]
    return [t for t in written if t not in body.outputs and t not in node.attrs.get("locals", ())]


@register_pass
class FormKernels(Pass):
    """Group maps into kernels with shared outer loops and register-resident locals (see the
    module docstring); run after expand, fuse-epilogues and fuse-maps."""

    name = "form-kernels"
    in_place = True
    description = "level 3 (loops): maps -> kernels with shared outer loops (row fusion) and scalar locals"

    def run(self, graph: Graph, ctx) -> PassResult:
        stats = form_kernels(graph)
        return PassResult(graph, True, stats)
