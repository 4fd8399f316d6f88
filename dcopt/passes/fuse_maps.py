"""Map fusion (level 3, loop level): a producer map inlined into the one consumer map that reads
its result element by element, so the intermediate never goes to memory.

DaCe's MapFusion, for dcopt's maps (:mod:`dcopt.ir.loops`). Producer ``P`` writes container
``t`` without a write-conflict resolution, one param per dim (``t[i0, i1] = ...``); consumer
``C`` is ``t``'s only reader and reads it at one param (or ``0`` on a size-1 dim) per dim,
through one subset. Then every element of ``t`` is read exactly once, by the iteration of ``C``
that the substitution ``P's params -> C's index expressions`` names, and ``P``'s tasklet can run
inside ``C``'s iteration instead:

    P: map[i0=0:N, i1=0:16] {out = a + b}           a <- x[i0, i1]   b <- bias[i1]   out -> t[i0, i1]
    C: map[i0=0:N, i1=0:16] {out = max(a, 0.0)}     a <- t[i0, i1]                   out -> y[i0, i1]
    => map[i0=0:N, i1=0:16] {f0 = a0 + b0; out = max(f0, 0.0)}  a0 <- x[i0, i1]  b0 <- bias[i1]  out -> y[i0, i1]

``t`` disappears. Chains collapse by repetition (Add -> Gelu's five maps -> one map), and a
reduction consumer takes its elementwise prologue (``(a - m)**2`` before a variance's sum).
Where ``P``'s tasklet would compute in another type than the one ``t`` stores (a Cast, a float64
intermediate stored as float32) the value is converted with ``as_<dtype>`` exactly where the
store would have converted it, so the fused map computes what the pair did.

Refused, with the reason reported: several readers or a graph output (the value must exist in
memory), a read with an ``outside`` value or an indirect subset, ``t`` holding the indices of
another of the consumer's memlets (a Gather's indices: loaded before the tasklet runs), a consumer reading ``t`` at
other positions than its iteration (a broadcast read would recompute ``P`` per read), iteration
counts that differ, maps in different kernels-to-be (fusion runs per node list: the graph and
each group body separately), and a pair whose fused loop would read a container across its rows
where one of them with a transcendental tasklet read contiguously before (a Transpose copy and a
Gelu: erf would run element by element instead of in vectors; see :func:`_strided_after_fusion`).
"""

from __future__ import annotations

import ast
from typing import Mapping

from dcopt.ir.graph import Graph, Node
from dcopt.ir.groups import is_group
from dcopt.ir.loops import MAP, Range, is_loop_node, loop_spec, make_map
from dcopt.ir.tasklet import infer_types, parse_tasklet
from dcopt.passes.base import Pass, PassResult, register_pass


class _Substitute(ast.NodeTransformer):
    def __init__(self, mapping: Mapping[str, str]):
        self.mapping = {k: ast.parse(v, mode="eval").body for k, v in mapping.items()}

    def visit_Name(self, node):
        if node.id in self.mapping:
            return ast.copy_location(self.mapping[node.id], node)
        return node

    def visit_Call(self, node):  # function names are not substituted
        node.args = [self.visit(a) for a in node.args]
        return node


def substitute(text: str, mapping: Mapping[str, str], mode: str = "eval") -> str:
    """``text`` (an expression or statements) with names replaced by the given expression texts."""
    if not mapping:
        return text
    tree = ast.parse(text.strip(), mode=mode)
    wrapped = {k: f"({v})" if mode == "exec" else v for k, v in mapping.items()}
    return ast.unparse(_Substitute(wrapped).visit(tree))


def _dim_text(d) -> str:
    return f"{d.begin}:{d.end}" if isinstance(d, Range) else d.text


def fusion_refusal(graph: Graph, nodes: list[Node], producer: Node, consumer: Node, readers) -> str | None:
    """Why ``producer`` cannot be fused into ``consumer`` (None when it can)."""
    p, c = loop_spec(producer), loop_spec(consumer)
    if len(p.outputs) != 1 or p.outputs[0].wcr is not None:
        return "the producer has several outputs or accumulates (wcr)"
    t = p.outputs[0].container
    if t in graph.outputs or graph.kind(t).value == "input":
        return f"'{t}' is a graph output"
    if len(readers.get(t, [])) != 1:
        return f"'{t}' has {len(readers.get(t, []))} readers"
    reads = [m for m in c.inputs if m.container == t]
    if len({m.subset_text for m in reads}) != 1 or any(m.outside is not None for m in reads):
        return f"the consumer reads '{t}' through several subsets or with an outside value"
    conn_names = {m.connector for m in c.inputs}
    if any(d.names & conn_names for m in reads for d in m.subset if not isinstance(d, Range)):
        return f"the consumer reads '{t}' indirectly"
    t_conns = {m.connector for m in reads}
    if any(d.names & t_conns for m in (*c.inputs, *c.outputs) for d in m.subset if not isinstance(d, Range)):
        return f"'{t}' holds indices the consumer loads through (Gather/Scatter): they must be in memory first"
    writes = p.outputs[0].subset
    mapping = _substitution(p, writes, reads[0].subset)
    if mapping is None:
        return f"the consumer reads '{t}' at [{reads[0].subset_text}], not one element per iteration"
    used = set(mapping.values())
    missing = [q for q in c.params if q not in used and _extent_len(c, q) != 1]
    if missing:
        return f"the consumer reads each element of '{t}' more than once (along {missing}): fusing would recompute it"
    strided = _strided_after_fusion(graph, p, c, mapping, reads[0])
    if strided is not None:
        return (f"fused, the innermost loop would read '{strided}' across its rows (a transpose) and run the "
                f"tasklet's transcendental functions element by element instead of in vectors")
    return None


def _expensive(code: str) -> bool:
    """Whether a tasklet calls a transcendental function (erf, exp, tanh, ...: the tasklet
    function table's own classification, :data:`dcopt.ir.tasklet.FUNCTIONS`) or raises to a power:
    work that vectorizes only when the loop reads contiguous elements. ``**`` counts here though
    the cost model charges it as one operation: the generated kernels lower a float power to a
    scalar library call."""
    if parse_tasklet(code).transcendentals:
        return True
    return any(isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow)
               for node in ast.walk(ast.parse(code.strip(), mode="exec")))


def _inner_param(spec) -> str | None:
    """The innermost loop param that takes more than one value."""
    for param in reversed(spec.params):
        if _extent_len(spec, param) != 1:
            return param
    return None


def _strided(graph: Graph, container: str, dim_names: list[set[str]], inner: str) -> bool:
    """Whether a read of ``container`` whose dims mention ``dim_names`` walks across rows when
    ``inner`` advances: ``inner`` indexes a dim other than the last one of more than one element,
    and not that last one."""
    t = graph.type_of(container)
    if t is None or t.shape is None or len(t.shape) != len(dim_names):
        return False
    wide = [i for i, n in enumerate(t.shape) if n != 1]
    if not wide or inner in dim_names[wide[-1]]:
        return False
    return any(inner in dim_names[i] for i in wide[:-1])


def _strided_after_fusion(graph: Graph, p, c, mapping: Mapping[str, str], t_read) -> str | None:
    """A container the fused map would read across rows in its innermost loop while one of the
    pair's expensive tasklets (:func:`_expensive`) ran on contiguous reads before: then fusing
    turns a vectorized map plus a cheap transpose copy into one scalar map (SegFormer's
    Transpose -> Gelu, 128 x 3136 elements: 1.27 ms fused). Returns that container, or None."""
    inner_c, inner_p = _inner_param(c), _inner_param(p)
    if inner_c is None or inner_p is None:
        return None
    renamed = {q: ({v} if v.isidentifier() else set()) for q, v in mapping.items()}
    strided_after, strided_before = None, False
    for m in p.inputs:
        if any(isinstance(d, Range) for d in m.subset):
            continue
        own = [set(d.names) for d in m.subset]
        fused = [set().union(*(renamed.get(n, {n}) for n in names)) for names in own]
        strided_before |= _strided(graph, m.container, own, inner_p)
        if strided_after is None and _strided(graph, m.container, fused, inner_c):
            strided_after = m.container
    if strided_after is None:
        return None
    consumer_was_contiguous = not _strided(graph, t_read.container, [set(d.names) for d in t_read.subset], inner_c)
    if _expensive(c.tasklet.code) and consumer_was_contiguous:
        return strided_after
    if _expensive(p.tasklet.code) and not strided_before:
        return strided_after
    return None


def _substitution(p, writes, reads) -> dict[str, str] | None:
    """P's params -> C's index expressions, when P writes one param per dim and C reads one of
    its params (or 0 for a size-1 dim) per dim, each of C's params at most once."""
    mapping: dict[str, str] = {}
    used = set()
    for w, r in zip(writes, reads):
        if isinstance(w, Range) or isinstance(r, Range):
            return None
        r_text = r.text
        if w.text in p.params:
            if w.text in mapping:
                return None
            if r_text != "0" and (r_text in used or len(r.names) != 1 or r_text not in r.names):
                return None
            if r_text == "0" and _extent_len(p, w.text) != 1:
                return None
            mapping[w.text] = r_text
            used.add(r_text)
        elif w.text != r_text:
            return None
    for j, param in enumerate(p.params):
        if param not in mapping:
            if _extent_len(p, param) != 1:
                return None
            mapping[param] = p.ranges[j][0].text
    return mapping


def _extent_len(spec, param: str) -> int | None:
    b, e = spec.ranges[spec.params.index(param)]
    try:
        return int(e.evaluate({})) - int(b.evaluate({}))
    except Exception:  # symbolic
        return None


def fuse_pair(graph: Graph, producer: Node, consumer: Node) -> Node:
    """The consumer with the producer inlined (see the module docstring); ``graph`` gives types."""
    p, c = loop_spec(producer), loop_spec(consumer)
    t = p.outputs[0].container
    read = next(m for m in c.inputs if m.container == t)
    mapping = _substitution(p, p.outputs[0].subset, read.subset)
    taken = set(c.tasklet.reads) | set(c.tasklet.writes) | {m.connector for m in c.inputs} | set(c.params)
    taken |= {m.connector for m in c.outputs}
    fresh: dict[str, str] = {}

    def new_name(base: str) -> str:
        k = 0
        while f"{base}_f{k}" in taken:
            k += 1
        taken.add(f"{base}_f{k}")
        return f"{base}_f{k}"

    for m in p.inputs:
        fresh[m.connector] = new_name(m.connector)
    for w in p.tasklet.writes:
        if w != p.outputs[0].connector:
            fresh[w] = new_name(w)
    value = new_name("v")
    fresh[p.outputs[0].connector] = value
    code = substitute(p.tasklet.code, {**{k: v for k, v in fresh.items()}, **mapping}, mode="exec")
    # the store into t would have converted to t's dtype: keep that conversion
    types = {m.connector: graph.type_of(m.container).dtype for m in p.inputs}
    types.update({param: "int64" for param in p.params})
    types.update({s: "int64" for s, _, _ in p.symbols})
    computed = infer_types(p.tasklet, types)[p.outputs[0].connector]
    stored = p.out_dtypes[0]
    if computed != stored:
        code += f"\n{value} = as_{stored}({value})"
    code += "\n" + "\n".join(f"{conn} = {value}" for conn in dict.fromkeys(m.connector for m in c.inputs
                                                                          if m.container == t))
    code += "\n" + c.tasklet.code.strip()
    renames = {**{m.connector: fresh[m.connector] for m in p.inputs}, **mapping}
    reads = [(fresh[m.connector], m.container, ", ".join(substitute(_dim_text(d), renames) for d in m.subset),
              m.outside) for m in p.inputs]
    reads += [(m.connector, m.container, m.subset_text, m.outside) for m in c.inputs if m.container != t]
    writes = [(m.connector, m.container, m.subset_text, m.wcr, m.init) for m in c.outputs]  # init: a scatter's data
    symbols = list(dict.fromkeys([*c.symbols, *p.symbols]))
    symbols = [s for s in symbols if s[1] != t]
    parse_tasklet(code)
    return make_map(consumer.name, c.params, [(b.text, e.text) for b, e in c.ranges], code, reads, writes,
                    c.out_dtypes, symbols)


def fuse_node_list(graph: Graph, nodes: list[Node], refusals: list | None = None) -> tuple[list[Node], int]:
    """Fuse maps in ``nodes`` (a graph's or a group body's node list) to a fixed point; returns
    the new list and the number of fusions. ``graph`` owns the containers."""
    fused = 0
    changed = True
    while changed:
        changed = False
        readers: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for name in dict.fromkeys(n.present_inputs):
                readers.setdefault(name, []).append(i)
            for body in n.subgraphs:
                for name in n.outer_reads():
                    readers.setdefault(name, []).append(i)
        producer_of = {o: i for i, n in enumerate(nodes) for o in n.outputs if o}
        for ci, consumer in enumerate(nodes):
            if not (is_loop_node(consumer) and consumer.op == MAP):
                continue
            for name in consumer.present_inputs:
                pi = producer_of.get(name)
                if pi is None:
                    continue
                producer = nodes[pi]
                if not (is_loop_node(producer) and producer.op == MAP):
                    continue
                why = fusion_refusal(graph, nodes, producer, consumer, readers)
                if why is not None:
                    if refusals is not None:
                        refusals.append((consumer.label, f"not fused with {producer.label}: {why}"))
                    continue
                merged = fuse_pair(graph, producer, consumer)
                nodes = [merged if i == ci else n for i, n in enumerate(nodes) if i != pi]
                fused += 1
                changed = True
                break
            if changed:
                break
    return nodes, fused


@register_pass(aliases=("fuse-loops",))
class FuseMaps(Pass):
    """Inline producer maps into their single element-wise consumer (loop level), in the graph
    and in every fusion-group body; transients that disappear are removed."""

    name = "fuse-maps"
    in_place = True
    description = "level 3 (loops): map fusion -- producer maps inlined into their one consumer map"

    def run(self, graph: Graph, ctx) -> PassResult:
        refusals: list = []
        total = self._run(graph, graph, refusals)
        if total:
            graph.remove_unused_containers()
        return PassResult(graph, bool(total), {"fused": total}, refusals)

    def _run(self, graph: Graph, owner: Graph, refusals) -> int:
        nodes, total = fuse_node_list(owner, list(graph.nodes), refusals)
        out = []
        for n in nodes:
            if is_group(n):
                body = n.attrs["body"].copy()
                count = self._run(body, body, refusals)
                if count:
                    body.remove_unused_containers()
                    n = n.replace(attrs={**n.attrs, "body": body})
                    total += count
            out.append(n)
        if total:
            graph.nodes = out
        return total
