"""Expansion (level 2): lower op nodes to loop-level IR -- maps, reductions, library calls.

Every rule is registered per op, one line each, in the rule files of
``dcopt/passes/expansions/`` (elementwise, reductions and normalizations, nn, tensor)::

    @expansion("Relu", "Sigmoid", ...)
    def unary(graph, node) -> list[Node]: ...

A rule returns the loop nodes that replace ``node`` (writing the same output containers) and
adds whatever transient containers it needs to ``graph``. It refuses by raising
:class:`Refused` with the reason; the pass then keeps the op node, removes any containers the
rule added, and reports the reason in ``PassResult.refusals``. Ops without a rule stay too
(expansion is partial by design) and are counted in ``stats["unsupported"]``. Composite ops
expand to the loops of their parts (an attention block MatMul -> Softmax -> MatMul expands op by
op into gemm, three maps, gemm), so nothing here needs to match multi-op patterns.

:class:`LoopBuilder` is the shared work of every rule: shapes and dtypes read from the graph
(refusing when unknown), transients, broadcasting memlets, and symbol bindings computed from
the subsets, so a rule states only the iteration space, the tasklet and the memlets.

Reshape-like ops (Reshape, Flatten, Squeeze, Unsqueeze) expand to copy maps with index
arithmetic by default: every value then is produced by a loop that says which elements move,
and a later pass may turn a contiguous copy back into an alias. ``keep_views=True`` leaves them
as op nodes instead (zero-cost views of contiguous data), counted in ``stats["views"]``.

Fusion-group bodies are expanded in place; control-flow bodies (If/Loop/Scan) are not: those
ops have no rule and are reported as unsupported.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
from typing import Callable, Iterable, Mapping, Sequence

from dcopt.ir.graph import Graph, Node
from dcopt.ir.groups import is_group
from dcopt.ir.loops import LOOP_DOMAIN, Range, is_loop_node, make_library_call, make_map, parse_subset
from dcopt.ir.tasklet import parse_index, parse_tasklet
from dcopt.ir.types import TensorType
from dcopt.ir.views import is_copy_free
from dcopt.ops import loops as _loop_semantics  # noqa: F401  (registers Map/LibraryCall with the executor)
from dcopt.ops.registry import schema_defaults
from dcopt.passes.base import Pass, PassResult, register_pass

RULE_MODULES = [
    "dcopt.passes.expansions.elementwise",
    "dcopt.passes.expansions.reduction",
    "dcopt.passes.expansions.nn",
    "dcopt.passes.expansions.tensor",
    "dcopt.passes.expansions.attention",
    "dcopt.passes.expansions.transformer_ops",
    "dcopt.passes.expansions.pooling",
    "dcopt.passes.expansions.conv_transpose",
    "dcopt.passes.expansions.indexing",
    "dcopt.passes.expansions.normalization",
    "dcopt.passes.expansions.losses",
    "dcopt.passes.expansions.image",
    "dcopt.passes.expansions.point_sampling",
    "dcopt.passes.expansions.recurrent",
    "dcopt.passes.expansions.state_ops",
    "dcopt.passes.expansions.signal",
    "dcopt.passes.expansions.linalg",
    "dcopt.passes.expansions.quantize",
]

Rule = Callable[[Graph, Node], list]
_RULES: dict[tuple[str, str], Rule] = {}  # (domain, op) -> rule


class Refused(Exception):
    """An expansion rule declines a node; the message says why."""


def expansion(*ops: str, domain: str = ""):
    """Register an expansion rule for ops of ``domain`` (default: ONNX's)."""

    def register(fn: Rule) -> Rule:
        for op in ops:
            _RULES[(domain, op)] = fn
        return fn

    return register


def rules() -> dict[tuple[str, str], Rule]:
    for module in RULE_MODULES:
        importlib.import_module(module)
    return dict(_RULES)


def fmt(value: float) -> str:
    """A float literal for tasklet code that reads back exactly (negatives parenthesized)."""
    text = repr(float(value))
    return f"({text})" if text.startswith("-") else text


def params_of(rank: int) -> list[str]:
    return [f"i{k}" for k in range(rank)]


def index(dims: Iterable) -> str:
    return ", ".join(str(d) for d in dims)


def affine(terms: Sequence[tuple[int, str]], const: int = 0) -> str:
    """Canonical text of sum(coef * name) + const (``2*i2 + i4 - 1``)."""
    parts = [name if coef == 1 else f"{coef}*{name}" for coef, name in terms if coef]
    text = " + ".join(parts) or "0"
    if const and parts:
        text += f" + {const}" if const > 0 else f" - {-const}"
    elif const:
        text = str(const)
    return text


def clamped_to(dim, target) -> bool:
    """Whether ``dim`` is ``min(c, target)`` with a constant ``c >= 2`` (a Slice ``[:S]`` of a
    table of ``c`` rows, broadcast against ``S``). Broadcasting them is valid only where the two
    are equal (``min(c, S)`` is 1 only when ``S`` is), so an expansion may read it as ``target``
    -- after recording the equality in ``graph.size_checks``, which a run at other sizes fails."""
    from dcopt.ops.shapes.dims import _min_args

    args = _min_args(dim) if isinstance(dim, str) and isinstance(target, str) else None
    return args is not None and any(a == target for a in args) and all(
        a == target or (isinstance(a, int) and a >= 2) for a in args)


def compound_symbol(dim: str) -> str:
    """The one-symbol name of a dim that is an expression over symbols (``batch*seq`` ->
    ``D_batchXseq``): readable in generated code, distinct for distinct expressions."""
    return "D_" + "".join(c if c.isalnum() or c == "_" else {"*": "X", "+": "P", "-": "M"}.get(c, "_") for c in dim)


def _alias(text: str, compound: Mapping[str, str]) -> str:
    """``text`` with each compound dim (longest first) replaced by its symbol, where it stands as
    a whole factor (not inside a longer name)."""
    for d in sorted(compound, key=len, reverse=True):
        text = re.sub(rf"(?<![\w.]){re.escape(d)}(?![\w.])", compound[d], text)
    return text


def operand(dim) -> str:
    """A dim as an operand of a larger index expression: a symbolic dim that is itself an
    expression (``batch*seq``, ``2*N+1``) in parentheses, so ``i % (batch*seq)`` keeps its meaning."""
    text = str(dim)
    return text if isinstance(dim, int) or text.isidentifier() else f"({text})"


def product(dims: Sequence) -> str:
    """Text of the product of dims (ints folded, symbols kept): ``512*N`` or ``1024``."""
    ints = math.prod(d for d in dims if isinstance(d, int))
    syms = [operand(d) for d in dims if not isinstance(d, int)]
    return "*".join(([str(ints)] if ints != 1 or not syms else []) + syms)


class LoopBuilder:
    """Builds the loop nodes replacing one op node; see the module docstring."""

    def __init__(self, graph: Graph, node: Node):
        self.graph = graph
        self.node = node
        self.nodes: list[Node] = []

    # -- what the op node says ---------------------------------------------------------------
    def attr(self, name: str, default=None):
        if name in self.node.attrs:
            return self.node.attrs[name]
        defaults = schema_defaults(self.node.op, self.node.domain, self.graph.opset_of(self.node.domain))
        return defaults.get(name, default)

    @property
    def opset(self) -> int:
        return self.graph.opset_of(self.node.domain)

    def input(self, i: int, optional: bool = False) -> str | None:
        name = self.node.inputs[i] if i < len(self.node.inputs) else ""
        if not name and not optional:
            raise Refused(f"input {i} is missing")
        return name or None

    def output(self, i: int = 0) -> str | None:
        return self.node.outputs[i] if i < len(self.node.outputs) and self.node.outputs[i] else None

    def wired_outputs(self) -> list[int]:
        return [i for i, o in enumerate(self.node.outputs) if o]

    def shape(self, name: str) -> tuple:
        t = self.graph.type_of(name)
        if not isinstance(t, TensorType) or t.shape is None or any(d is None for d in t.shape):
            raise Refused(f"the shape of '{name}' is not known ({t})")
        return tuple(t.shape)

    def static_dims(self, name: str, axes: Iterable[int]) -> list[int]:
        shape = self.shape(name)
        dims = [shape[a] for a in axes]
        if not all(isinstance(d, int) for d in dims):
            raise Refused(f"'{name}' needs static sizes along axes {list(axes)} (has {list(shape)})")
        return dims

    def dtype(self, name: str) -> str:
        return self.graph.containers[name].type.dtype

    def require_dtype(self, *names: str, allowed=("float16", "float32", "float64")) -> None:
        for name in names:
            if name and self.dtype(name) not in allowed:
                raise Refused(f"'{name}' is {self.dtype(name)}; this expansion handles {', '.join(allowed)}")

    def constant(self, name: str | None):
        """Data of a parameter (a known constant), else None. Inside a fusion-group body the
        constants the body reads from outside carry their data too (see ExpandPass)."""
        c = self.graph.containers.get(name) if name else None
        return None if c is None else c.data

    # -- building ----------------------------------------------------------------------------
    def transient(self, shape: Sequence, dtype: str, hint: str) -> str:
        name = self.graph.fresh_name(f"{self.node.outputs[0] or self.node.op}_{hint}")
        self.graph.add_container(name, TensorType(dtype, tuple(shape)))
        return name

    def full(self, name: str) -> str:
        """The subset covering all of ``name`` (``0:N, 0:16``)."""
        return index(f"0:{d}" for d in self.shape(name))

    def broadcast(self, name: str, out_shape: Sequence, params: Sequence[str] | None = None) -> str:
        """Subset reading ``name`` broadcast (numpy rules) to ``out_shape`` at ``params``."""
        shape = self.shape(name)
        params = list(params or params_of(len(out_shape)))
        lead = len(out_shape) - len(shape)
        if lead < 0:
            raise Refused(f"'{name}' has more dims than the result")
        dims = []
        for k, d in enumerate(shape):
            target = out_shape[lead + k]
            if d == target:
                dims.append(params[lead + k])
            elif d == 1:
                dims.append("0")
            elif clamped_to(d, target):  # min(512,S) against S: equal wherever broadcasting is valid
                self.graph.size_checks.append((d, target, self.node.label))
                dims.append(params[lead + k])
            else:
                raise Refused(f"'{name}' of shape {list(shape)} does not broadcast to {list(out_shape)}")
        return index(dims)

    def map(self, what: str, space: Sequence, code: str, reads: Sequence[tuple], writes: Sequence[tuple],
            out_dtypes: Sequence[str] | None = None) -> Node:
        """Add a Map over ``[0, d)`` for each dim of ``space`` (params ``i0, i1, ...``)."""
        params = params_of(len(space))
        ranges = [(0, d) for d in space]
        dtypes_ = list(out_dtypes or [self.dtype(w[1]) for w in writes])
        ranges, reads, writes, symbols = self.bind_symbols(params, ranges, code, reads, writes)
        node = make_map(f"{self.node.label}/{what}", params, ranges, code, reads, writes, dtypes_, symbols)
        self.nodes.append(node)
        return node

    def library(self, what: str, kind: str, reads: Sequence[tuple], writes: Sequence[tuple], **options) -> Node:
        _, reads, writes, symbols = self.bind_symbols([], [], "", reads, writes)
        node = make_library_call(f"{self.node.label}/{what}", kind, reads, writes, [self.dtype(w[1]) for w in writes],
                                 symbols, **options)
        self.nodes.append(node)
        return node

    def elementwise(self, code: str, inputs: dict[str, str], out: str, what: str = "map") -> Node:
        """A map over ``out``'s shape reading each input broadcast to it."""
        shape = self.shape(out)
        reads = [(conn, name, self.broadcast(name, shape)) for conn, name in inputs.items()]
        return self.map(what, shape, f"out = {code}", reads, [("out", out, index(params_of(len(shape))))])

    def bind_symbols(self, params, ranges, code, reads, writes):
        """(ranges, reads, writes, symbol bindings) of a loop node: every symbolic dim it mentions
        bound to a container axis that has it (:meth:`_symbols`). A dim that is an expression
        over symbols (``batch*seq``: a flattened batch of sequences) is first renamed to one
        symbol of its own (``D_batchXseq``) wherever the node's ranges and memlets mention it,
        bound to an axis of that size: its factors alone are no container's dim."""
        compound = {}
        for m in (*reads, *writes):
            for c in (m[1], *(m[4:5] if len(m) > 4 and m[4] else ())):
                for d in self.shape(c) or ():
                    if isinstance(d, str) and not d.isidentifier():
                        compound[d] = compound_symbol(d)
        if compound:
            ranges = [(b, _alias(str(e), compound)) for b, e in ranges]
            reads = [(m[0], m[1], _alias(m[2], compound), *m[3:]) for m in reads]
            writes = [(m[0], m[1], _alias(m[2], compound), *m[3:]) for m in writes]
        return ranges, reads, writes, self._symbols(params, ranges, code, reads, writes, compound)

    def _symbols(self, params, ranges, code, reads, writes, compound=None) -> list[tuple[str, str, int]]:
        """Bind every symbolic dim the node mentions to an input container axis that has it
        (``compound``: dims renamed to one symbol each, see :meth:`bind_symbols`)."""
        names = set()
        for _, end in ranges:
            names |= parse_index(str(end)).names
        for m in (*reads, *writes):
            for d in parse_subset(m[2]):
                names |= d.begin.names | d.end.names if isinstance(d, Range) else d.names
        if code:
            names |= parse_tasklet(code).reads - {m[0] for m in reads}
        names -= set(params) | {m[0] for m in reads}  # connectors: indirect subsets
        bindings = []
        sources = [m[1] for m in reads] + [m[4] for m in writes if len(m) > 4 and m[4]]  # init containers too
        sources += [m[1] for m in writes]  # then outputs (sized like the inputs wherever both are known)
        dim_of = {alias: d for d, alias in (compound or {}).items()}
        for sym in sorted(names):
            want = dim_of.get(sym, sym)
            found = next(((sym, c, axis) for c in sources for axis, d in enumerate(self.shape(c) or ()) if d == want),
                         None)
            if found is None:
                raise Refused(f"symbolic dim '{sym}' is not a dim of any input, so its value is not known at run time")
            bindings.append(found)
        return bindings


# ------------------------------------------------------------------------------------ the pass

def from_sizes(graph: Graph) -> set[str]:
    """Values that follow from the sizes of symbolic dims and the weights alone: a ``Shape`` or
    ``Size`` of a tensor whose selected dims are not all static, and deterministic single ops
    over such values and parameters (a Reshape target, ``Range(0, seq)``, the position rows it
    gathers). A build for every size computes them once per size (:func:`~dcopt.backends.cpu.
    program.bind_time_steps`); expanded, each would be a kernel compiled for one run per size.
    Static graphs have none: their Shapes fold to constants."""
    from dcopt.passes.common import has_subgraph, is_nondeterministic

    derived: set[str] = set()
    for node in graph.nodes:
        default = node.domain in ("", "ai.onnx")
        ins = [i for i in node.present_inputs]
        if default and node.op in ("Shape", "Size") and ins and graph.containers[ins[0]].data is None:
            derived.update(o for o in node.outputs if o)
        elif (default and ins and any(i in derived for i in ins) and not has_subgraph(node) and not is_group(node)
              and all(i in derived or graph.containers[i].data is not None for i in ins)
              and not is_nondeterministic(graph, node)):
            derived.update(o for o in node.outputs if o)
    return derived


@register_pass
class ExpandPass(Pass):
    """Expand op nodes to loop-level nodes (see module docstring).

    ``ops``: expand only these op types (default: every op with a rule); ``exclude``: never
    these; ``keep_views``: leave the ops that copy nothing as ops (views, contiguous slices and splits,
    concatenations whose inputs may be written in place: :mod:`dcopt.ir.views`); ``dtypes``: expand
    only nodes whose values all have these element types (a target's kernels). Fusion-group bodies
    are expanded too. ``group``: wrap the loop nodes of each top-level op that expands to more
    than one node in a fusion group (kind ``"expansion"``), so the kernels formed later keep one
    op's loops together (softmax's three maps become one kernel, not three).
    """

    name = "expand"
    in_place = True
    description = "lower op nodes to maps, reductions and library calls with memlets"

    def __init__(self, ops: Iterable[str] | None = None, exclude: Iterable[str] = (), keep_views: bool = False,
                 group: bool = False, dtypes: Iterable[str] | None = None):
        self.ops = None if ops is None else frozenset(ops)
        self.dtypes = None if dtypes is None else frozenset(dtypes)
        self.exclude = frozenset(exclude)
        self.keep_views = keep_views
        self.group = group

    def run(self, graph: Graph, ctx) -> PassResult:
        stats = {"expanded": 0, "loop_nodes": 0, "transients": 0, "refused": 0, "views": 0, "from_sizes": 0,
                 "unsupported": {}}
        refusals: list[tuple[str, str]] = []
        modified = self._expand(graph, rules(), stats, refusals, top=True)
        stats["unsupported"] = dict(sorted(stats["unsupported"].items()))
        return PassResult(graph, modified, stats, refusals)

    def _expand(self, graph: Graph, table: dict[str, Rule], stats: dict, refusals: list, top: bool = False) -> bool:
        nodes, modified = [], False
        sized = from_sizes(graph) if top else set()
        for node in graph.nodes:
            if node.outputs and all(o in sized for o in node.outputs if o):
                stats["from_sizes"] += 1  # computed once per size by the runtime: no kernel to compile
                nodes.append(node)
                continue
            if is_group(node):
                body = node.attrs["body"].copy()
                for name in body.inputs:  # constants the body reads: rules may use their values
                    outer = graph.containers.get(name)
                    if outer is not None and outer.data is not None and name not in graph.inputs:
                        body.containers[name] = dataclasses.replace(body.containers[name], data=outer.data)
                if self._expand(body, table, stats, refusals):
                    node = node.replace(attrs={**node.attrs, "body": body})
                    graph.size_checks.extend(c for c in body.size_checks if c not in graph.size_checks)
                    modified = True
                nodes.append(node)
                continue
            domain = "" if node.domain == "ai.onnx" else node.domain
            rule = None if is_loop_node(node) else table.get((domain, node.op))
            if self.keep_views and is_copy_free(graph, node):
                stats["views"] += 1
                nodes.append(node)
                continue
            if node.op in self.exclude or (self.ops is not None and node.op not in self.ops):
                nodes.append(node)
                continue
            if rule is None:
                if not is_loop_node(node):
                    key = f"{node.domain}.{node.op}" if node.domain else node.op
                    stats["unsupported"][key] = stats["unsupported"].get(key, 0) + 1
                nodes.append(node)
                continue
            before = set(graph.containers)
            odd = self._odd_dtypes(graph, node)
            if odd:
                refusals.append((node.label, f"{node.op}: the target's kernels do not handle {', '.join(odd)}"))
                stats["refused"] += 1
                nodes.append(node)
                continue
            try:
                produced = rule(graph, node)
            except Refused as why:
                for name in set(graph.containers) - before:
                    del graph.containers[name]
                refusals.append((node.label, f"{node.op}: {why}"))
                stats["refused"] += 1
                nodes.append(node)
                continue
            stats["expanded"] += 1
            stats["loop_nodes"] += len(produced)
            stats["transients"] += len(set(graph.containers) - before)
            if self.group and top and len(produced) > 1:
                produced = _group_map_runs(graph, node, produced)
            nodes.extend(produced)
            modified = True
        if modified:
            graph.nodes = nodes
            graph.opset.setdefault(LOOP_DOMAIN, 1)
        return modified


    def _odd_dtypes(self, graph: Graph, node: Node) -> list[str]:
        if self.dtypes is None:
            return []
        found = {graph.containers[n].type.dtype for n in (*node.present_inputs, *node.outputs)
                 if n and n in graph.containers and isinstance(graph.containers[n].type, TensorType)}
        return sorted(found - self.dtypes)


def _group_map_runs(graph: Graph, op: Node, produced: list[Node]) -> list[Node]:
    """One op's loop nodes with each run of two or more consecutive maps wrapped in a fusion group
    of kind "expansion" (see ``group`` above). Library calls stay outside: they run on their own
    anyway, and at the top level fuse-epilogues sees them next to the maps after them."""
    out, run = [], []
    for node in [*produced, None]:
        if node is not None and node.op == "Map":
            run.append(node)
            continue
        if len(run) > 1:
            out.append(_expansion_group(graph, op, run, produced))
        else:
            out.extend(run)
        run = []
        if node is not None:
            out.append(node)
    return out


def _expansion_group(graph: Graph, op: Node, members: list[Node], produced: list[Node]) -> Node:
    """Loop nodes of one op as a fusion group of kind "expansion"; its outputs are what the
    op's other loop nodes or the rest of the graph read."""
    from dcopt.ir.groups import GROUP_DOMAIN, GROUP_OP

    written = [o for n in members for o in n.outputs if o]
    inputs = list(dict.fromkeys(i for n in members for i in n.present_inputs if i not in written))
    outside = {i for n in produced if n not in members for i in n.present_inputs} | set(op.outputs)
    outputs = [o for o in written if o in outside]
    body = Graph(op.label, graph.opset)
    for name in inputs:
        body.add_input(name, graph.containers[name].type)
    for name in written:
        body.add_container(name, graph.containers[name].type)
    body.nodes = list(members)
    body.outputs = outputs
    graph.opset.setdefault(GROUP_DOMAIN, 1)
    return Node(GROUP_OP, tuple(inputs), tuple(outputs), {"body": body, "kind": "expansion"}, name=op.label,
                domain=GROUP_DOMAIN)


def expand(graph: Graph, **options) -> PassResult:
    """Run the expansion pass in place (a convenience for tests and the API)."""
    return ExpandPass(**options)(graph)

