"""Loop-level IR: maps over iteration spaces, library calls, and the memlets that connect them.

Op expansion (``dcopt.passes.expand``) lowers op nodes to these. They are ordinary
:class:`~dcopt.ir.graph.Node` objects in domain ``"dcopt.loop"`` whose attributes are plain
strings, numbers and tuples, so the JSON serializer, the printer and CSE treat them like any
op. This module is the one place that knows how those attributes are laid out; code generators
should read nodes through :func:`loop_spec` (parsed memlets, ranges, tasklet) rather than the
raw tuples.

**Map** -- ``for params in ranges: tasklet`` (DaCe's map scope with one tasklet)::

    params      ("i0", "i1")                      iteration variables
    ranges      (("0", "N"), ("0", "16"))         half-open [begin, end) per param, index
                                                  expressions over symbolic dims (a box: bounds
                                                  never depend on other params)
    code        "out = max(a, 0.0)"               the tasklet (see dcopt.ir.tasklet)
    in_memlets  (("a", "x", "i0, i1"),            connector <- container[subset]; an optional
                 ("b", "x", "i0, i1 - 1", 0.0))   4th item is the value read *outside* the
                                                  container's bounds (padding); without it every
                                                  read must be in bounds
    out_memlets (("out", "y", "i0, 0", "sum"),)   connector -> container[subset]; an optional
                                                  4th item is the write-conflict resolution
                                                  (wcr: sum, prod, max, min, or None), an
                                                  optional 5th the container the output starts
                                                  as a copy of (*init*; see indirect writes)
    out_dtypes  ("float32",)                      dtype stored per out memlet (values are cast)
    symbols     (("N", "x", 0),)                  symbolic dim -> (input container, axis) it is
                                                  read from at run time (omitted when none)

Subsets have one entry per container dimension: an index expression (``i0``, ``2*i2 + i4 - 1``,
``0``) or a range ``begin:end``. **Indirect** subsets name an input connector of the same map in
an index expression: ``("a", "data", "i0, idx % 5")`` reads ``data`` at the (integer) value the
connector ``idx`` loaded (Gather); such a dimension's bounds are the container's. An out memlet
with an indirect subset writes data-dependent elements (Scatter): it must name an *init*
container the output starts from (the elements no iteration writes), and iterations writing the
same element resolve by its wcr, or without one the last iteration wins. Rank-0 containers have the empty subset ``""``. Each output
container is written by exactly one node, completely: a map without wcr writes every element
exactly once (its out subsets are distinct params, or ``0`` for size-1 dims, so the iteration
space *is* the output's index space); a map with wcr starts from the wcr's identity (0 for sum,
-inf for max, ...) and combines every iteration's value into it, so reductions are maps whose
out subset omits the reduced params (DaCe's Reduce library node expands to exactly this).
Broadcasting is a memlet reading ``0`` along a size-1 dim. Tasklets may read the params and
symbols as integers (average pooling counts in-bounds taps that way).

**LibraryCall** -- an opaque routine (GEMM, convolution) applied to whole operands::

    kind        "gemm" | "conv"
    in_memlets  (("A", "x", "0:N, 0:16"), ("B", "w", "0:16, 0:10"), ("C", "b", "0:10"))
    out_memlets (("Y", "y", "0:N, 0:10"),)
    out_dtypes, symbols                           as for Map
    gemm:  alpha, beta (float), transA, transB (int)   Y = alpha * op(A) @ op(B) + beta * C,
           batched and broadcast like np.matmul; op() transposes the last two axes when set
    conv:  strides, pads (begin..., end...), dilations (int tuples), group (int): ONNX Conv
           with explicit pads; optional bias connector B (over the output channels) and
           residual connector R (shaped like Y, added after the bias)
    both:  impl (the routine select-impl chose; absent: the backend's default), activation
           ("relu" or "clip", applied last) and clamp ([lo, hi], null for an open side) -- an
           epilogue fuse-epilogues folded in (:mod:`dcopt.ir.clamp`)

Binding rule (what the reference executor relies on): a node's ``inputs`` are the distinct
containers of its in-memlets, in order of first appearance, and its ``outputs`` those of its
out-memlets, in order. :func:`rename_container` keeps both in step when a pass renames a value.
"""

from __future__ import annotations

import ast
import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from dcopt.ir import dtypes as dt
from dcopt.ir.graph import Graph, Node
from dcopt.ir.tasklet import IndexExpr, Tasklet, TaskletError, parse_index, parse_tasklet

LOOP_DOMAIN = "dcopt.loop"
MAP = "Map"
LIBRARY_CALL = "LibraryCall"

#: wcr name -> (numpy ufunc combining values, identity the output starts from)
WCR = {"sum": (np.add, 0), "prod": (np.multiply, 1), "max": (np.maximum, -math.inf), "min": (np.minimum, math.inf)}

#: connectors of each library kind: (required inputs, optional inputs, outputs)
LIBRARY_KINDS = {"gemm": (("A", "B"), ("C",), ("Y",)), "conv": (("X", "W"), ("B", "R"), ("Y",))}


def is_loop_node(node: Node) -> bool:
    return node.domain == LOOP_DOMAIN


# ------------------------------------------------------------------------------ memlets

@dataclass(frozen=True)
class Range:
    """A half-open range ``begin:end`` in a subset."""

    begin: IndexExpr
    end: IndexExpr

    def __str__(self) -> str:
        return f"{self.begin}:{self.end}"


@dataclass(frozen=True)
class Memlet:
    """Which elements of ``container`` a connector reads or writes."""

    connector: str
    container: str
    subset: tuple[IndexExpr | Range, ...]
    wcr: str | None = None  # out memlets only
    outside: float | None = None  # in memlets only: value of out-of-bounds reads
    init: str | None = None  # out memlets only: container the output starts as a copy of

    @property
    def subset_text(self) -> str:
        return ", ".join(str(d) for d in self.subset)

    def __str__(self) -> str:
        extra = f" (wcr {self.wcr})" if self.wcr else f" (outside {self.outside!r})" if self.outside is not None else ""
        if self.init:
            extra += f" (init {self.init})"
        return f"{self.container}[{self.subset_text}]{extra}"

    def names(self) -> set[str]:
        """Every name the subset mentions (params, symbols, connectors)."""
        found: set[str] = set()
        for d in self.subset:
            found |= (d.begin.names | d.end.names) if isinstance(d, Range) else d.names
        return found


@functools.lru_cache(maxsize=8192)
def parse_subset(text: str) -> tuple[IndexExpr | Range, ...]:
    """``"i0, 2*i1 + 1, 0:N"`` -> one IndexExpr or Range per dimension (``""`` -> rank 0).

    Python's own subscript syntax parses it: ``_[i0, 0:N]``; the parts go to parse_index.
    """
    if not text.strip():
        return ()
    try:
        node = ast.parse(f"_[{text}]", mode="eval").body.slice
    except SyntaxError as exc:
        raise TaskletError(f"subset {text!r} is not valid: {exc.msg}") from None
    dims = []
    for part in node.elts if isinstance(node, ast.Tuple) else [node]:
        if not isinstance(part, ast.Slice):
            dims.append(parse_index(ast.unparse(part)))
        elif part.step is None and part.lower is not None and part.upper is not None:
            dims.append(Range(parse_index(ast.unparse(part.lower)), parse_index(ast.unparse(part.upper))))
        else:
            raise TaskletError(f"subset {text!r}: ranges are begin:end (both given, no step)")
    return tuple(dims)


def _memlet(entry: tuple, out: bool) -> Memlet:
    if len(entry) not in ((3, 4, 5) if out else (3, 4)):
        raise TaskletError(f"memlet {entry!r}: expected (connector, container, subset[, "
                           f"{'wcr[, init]' if out else 'outside'}])")
    conn, container, subset = entry[:3]
    extra = entry[3] if len(entry) >= 4 and entry[3] != "" else None
    if out and extra is not None and extra not in WCR:
        raise TaskletError(f"memlet {entry!r}: unknown wcr {extra!r} (known: {', '.join(WCR)})")
    init = entry[4] if out and len(entry) == 5 else None
    return Memlet(conn, container, parse_subset(subset), wcr=extra if out else None,
                  outside=None if out or extra is None else float(extra), init=init)


# ------------------------------------------------------------------------------ parsed nodes

@dataclass(frozen=True)
class LoopSpec:
    """A loop node's attributes, parsed. ``params``/``ranges``/``tasklet`` are empty for library calls."""

    op: str
    inputs: tuple[Memlet, ...]
    outputs: tuple[Memlet, ...]
    out_dtypes: tuple[str, ...]
    symbols: tuple[tuple[str, str, int], ...]
    params: tuple[str, ...] = ()
    ranges: tuple[tuple[IndexExpr, IndexExpr], ...] = ()
    tasklet: Tasklet | None = None
    kind: str = ""
    options: tuple[tuple[str, Any], ...] = ()  # library parameters (alpha, strides, ...)

    @property
    def input_containers(self) -> tuple[str, ...]:
        """The node's inputs: in-memlet containers, then init containers (first appearance order)."""
        return tuple(dict.fromkeys([*(m.container for m in self.inputs), *(m.init for m in self.outputs if m.init)]))

    @property
    def connectors(self) -> frozenset[str]:
        return frozenset(m.connector for m in self.inputs)

    def indirect(self, memlet: Memlet) -> bool:
        """Whether a memlet's subset depends on loaded values (names an input connector)."""
        return bool(memlet.names() & self.connectors)

    def bind(self, shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
        """Symbol values from the shapes of the input containers (name -> shape)."""
        return {sym: int(shapes[container][axis]) for sym, container, axis in self.symbols}

    def param_bounds(self, bindings: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        """param -> inclusive (first, last) value; last < first for an empty range."""
        return {p: (int(b.evaluate(bindings)), int(e.evaluate(bindings)) - 1)
                for p, (b, e) in zip(self.params, self.ranges)}


_MAP_ATTRS = ("params", "ranges", "code", "in_memlets", "out_memlets", "out_dtypes", "symbols")


def loop_spec(node: Node) -> LoopSpec:
    """Parse a loop node (raises TaskletError naming the problem)."""
    return spec_from_attrs(node.op, node.attrs)


def spec_from_attrs(op: str, a: Mapping[str, Any]) -> LoopSpec:
    """Parse loop-node attributes (cached: nodes are immutable, their attributes hashable)."""
    if op == MAP:
        return _parse_map(a.get("params", ()), a.get("ranges", ()), a.get("code", ""), a.get("in_memlets", ()),
                          a.get("out_memlets", ()), a.get("out_dtypes", ()), a.get("symbols", ()))
    if op == LIBRARY_CALL:
        options = tuple(sorted((k, v) for k, v in a.items() if k not in _MAP_ATTRS and k != "kind"))
        return _parse_library(a.get("kind", ""), a.get("in_memlets", ()), a.get("out_memlets", ()),
                              a.get("out_dtypes", ()), a.get("symbols", ()), options)
    raise TaskletError(f"{op} is not a loop-level op")


@functools.lru_cache(maxsize=4096)
def _parse_map(params, ranges, code, in_memlets, out_memlets, out_dtypes, symbols) -> LoopSpec:
    if len(ranges) != len(params):
        raise TaskletError(f"map has {len(params)} params but {len(ranges)} ranges")
    return LoopSpec(MAP, tuple(_memlet(m, False) for m in in_memlets), tuple(_memlet(m, True) for m in out_memlets),
                    tuple(out_dtypes), tuple(tuple(s) for s in symbols), tuple(params),
                    tuple((parse_index(b), parse_index(e)) for b, e in ranges), parse_tasklet(code))


@functools.lru_cache(maxsize=1024)
def _parse_library(kind, in_memlets, out_memlets, out_dtypes, symbols, options) -> LoopSpec:
    if kind not in LIBRARY_KINDS:
        raise TaskletError(f"unknown library kind {kind!r} (known: {', '.join(LIBRARY_KINDS)})")
    return LoopSpec(LIBRARY_CALL, tuple(_memlet(m, False) for m in in_memlets),
                    tuple(_memlet(m, True) for m in out_memlets), tuple(out_dtypes),
                    tuple(tuple(s) for s in symbols), kind=kind, options=options)


# ------------------------------------------------------------------------------ building nodes

def _memlet_attrs(entries) -> tuple:
    out = []
    for e in entries:
        e = tuple(e)
        if len(e) == 5 and e[4] is not None:
            out.append((*e[:3], e[3] or "", e[4]))  # no wcr is "" (attributes hold no None)
        else:
            out.append(e[:3] + ((e[3],) if len(e) > 3 and e[3] is not None else ()))
    return tuple(out)


def make_map(name: str, params: Sequence[str], ranges: Sequence[tuple[Any, Any]], code: str,
             reads: Sequence[tuple], writes: Sequence[tuple], out_dtypes: Sequence[str],
             symbols: Sequence[tuple[str, str, int]] = ()) -> Node:
    """A Map node; ``reads``/``writes`` are memlet tuples, inputs/outputs follow the binding rule."""
    attrs = {"params": tuple(params), "ranges": tuple((str(b), str(e)) for b, e in ranges), "code": code,
             "in_memlets": _memlet_attrs(reads), "out_memlets": _memlet_attrs(writes),
             "out_dtypes": tuple(out_dtypes)}
    if symbols:
        attrs["symbols"] = tuple(tuple(s) for s in symbols)
    return _node(MAP, name, attrs)


def make_library_call(name: str, kind: str, reads: Sequence[tuple], writes: Sequence[tuple],
                      out_dtypes: Sequence[str], symbols: Sequence[tuple[str, str, int]] = (), **options) -> Node:
    attrs = {"kind": kind, "in_memlets": _memlet_attrs(reads), "out_memlets": _memlet_attrs(writes),
             "out_dtypes": tuple(out_dtypes), **options}
    if symbols:
        attrs["symbols"] = tuple(tuple(s) for s in symbols)
    return _node(LIBRARY_CALL, name, attrs)


def _node(op: str, name: str, attrs: dict) -> Node:
    inputs = tuple(dict.fromkeys([*(m[1] for m in attrs["in_memlets"]),
                                  *(m[4] for m in attrs["out_memlets"] if len(m) == 5)]))
    outputs = tuple(m[1] for m in attrs["out_memlets"])
    node = Node(op, inputs, outputs, attrs, name=name, domain=LOOP_DOMAIN)
    loop_spec(node)  # fail now, at the expansion that built it, not at run time
    return node


def rename_container(node: Node, old: str, new: str) -> Node:
    """The node with every memlet (and symbol binding) of ``old`` pointing at ``new``."""
    def swap(name: str) -> str:
        return new if name == old else name

    attrs = dict(node.attrs)
    attrs["in_memlets"] = tuple((e[0], swap(e[1]), *e[2:]) for e in attrs.get("in_memlets", ()))
    attrs["out_memlets"] = tuple((e[0], swap(e[1]), *e[2:4], *(swap(x) for x in e[4:]))
                                 for e in attrs.get("out_memlets", ()))
    if "symbols" in attrs:
        attrs["symbols"] = tuple((sym, swap(c), axis) for sym, c, axis in attrs["symbols"])
    return node.replace(attrs=attrs, inputs=tuple(map(swap, node.inputs)), outputs=tuple(map(swap, node.outputs)))


# ------------------------------------------------------------------------------ extents and cost

def dim_bounds(dim: IndexExpr | Range, bounds: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
    """Inclusive (lo, hi) of the indices one subset dimension touches."""
    if isinstance(dim, Range):
        return dim.begin.bounds(bounds)[0], dim.end.bounds(bounds)[1] - 1
    return dim.bounds(bounds)


def _interval_env(spec: LoopSpec, bindings: Mapping[str, int]) -> dict[str, tuple[int, int]] | None:
    """Intervals of params and symbols; None when the iteration space is empty."""
    env = {k: (v, v) for k, v in bindings.items()}
    for p, (lo, hi) in spec.param_bounds(bindings).items():
        if hi < lo:
            return None
        env[p] = (lo, hi)
    return env


def written_shape(spec: LoopSpec, memlet: Memlet, bindings: Mapping[str, int]) -> tuple[int, ...]:
    """Shape of the container an out memlet fills: the extent of its subset over the space
    (an empty range contributes an empty extent). Not defined for indirect writes (their shape
    is their init container's)."""
    env = {**{k: (v, v) for k, v in bindings.items()}, **spec.param_bounds(bindings)}
    return tuple(max(0, dim_bounds(d, env)[1] + 1) for d in memlet.subset)


def footprint(spec: LoopSpec, memlet: Memlet, bindings: Mapping[str, int], shape: Sequence[int] | None) -> int:
    """Distinct elements a memlet touches: per dim its index interval (clipped to the container),
    no more than the number of parameter values it ranges over (so strided reads count once per
    read element). An upper bound for non-affine or diagonal subsets."""
    env = _interval_env(spec, bindings)
    if env is None:
        return 0
    lengths = {p: hi - lo + 1 for p, (lo, hi) in spec.param_bounds(bindings).items()}
    if shape is not None:  # indirect dims (loaded indices) may touch any element along them
        env = {**env, **{c: (0, max(0, max(shape, default=1) - 1)) for c in spec.connectors}}
    total = 1
    for axis, d in enumerate(memlet.subset):
        if shape is not None and (d.names if isinstance(d, IndexExpr) else set()) & spec.connectors:
            total *= shape[axis]
            continue
        lo, hi = dim_bounds(d, env)
        if shape is not None:
            lo, hi = max(lo, 0), min(hi, shape[axis] - 1)
        count = max(0, hi - lo + 1)
        if isinstance(d, IndexExpr) and d.names & lengths.keys():
            count = min(count, math.prod(lengths[p] for p in d.names if p in lengths))
        total *= count
    return total


@dataclass(frozen=True)
class MemletCost:
    bytes_read: int
    bytes_written: int


def _static_shape(graph: Graph, name: str, bindings: Mapping[str, int]) -> tuple[int, ...] | None:
    t = graph.type_of(name)
    if t is None or t.shape is None:
        return None
    t = t.specialize(dict(bindings))
    return tuple(t.shape) if t.is_static else None


def memlet_cost(graph: Graph, node: Node, bindings: Mapping[str, int] | None = None) -> MemletCost | None:
    """Bytes a loop node reads and writes, from its memlets (None when a size is not known).

    Each container counts its memlets' footprints (identical subsets once), capped at its size;
    parameters count like any input. ``bindings`` gives values to symbolic dims.
    """
    spec = loop_spec(node)
    bindings = dict(bindings or {})
    shapes = {}
    for name in (*spec.input_containers, *(m.container for m in spec.outputs)):
        shapes[name] = _static_shape(graph, name, bindings)
        if shapes[name] is None:
            return None
    bindings.update(spec.bind(shapes))
    try:
        totals = []
        for memlets in (spec.inputs, spec.outputs):
            per_container: dict[str, int] = {}
            seen = set()
            for m in memlets:
                if (m.container, m.subset_text) not in seen:
                    seen.add((m.container, m.subset_text))
                    per_container[m.container] = per_container.get(m.container, 0) + footprint(
                        spec, m, bindings, shapes[m.container])
            totals.append(sum(min(n, math.prod(shapes[c])) * _itemsize(graph, c) for c, n in per_container.items()))
    except (KeyError, TaskletError):  # a symbol without a value
        return None
    return MemletCost(int(math.ceil(totals[0])), int(math.ceil(totals[1])))


def _itemsize(graph: Graph, name: str) -> float:
    return dt.itemsize(graph.type_of(name).dtype)


def loop_flops(graph: Graph, node: Node, bindings: Mapping[str, int] | None = None,
               transcendental: int = 8) -> int | None:
    """FLOPs of a loop node: tasklet operations (plus one per wcr combine) per iteration for a
    map; 2 per multiply-add for GEMM/conv library calls. None when a size is not known."""
    spec = loop_spec(node)
    bindings = dict(bindings or {})
    shapes = {n: _static_shape(graph, n, bindings) for n in (*spec.input_containers, *node.outputs)}
    if any(s is None for s in shapes.values()):
        return None
    bindings.update(spec.bind(shapes))
    if spec.op == MAP:
        iterations = math.prod(max(0, hi - lo + 1) for lo, hi in spec.param_bounds(bindings).values())
        per = spec.tasklet.flops + transcendental * spec.tasklet.transcendentals + sum(
            1 for m in spec.outputs if m.wcr)
        return iterations * per
    conn = {m.connector: shapes[m.container] for m in (*spec.inputs, *spec.outputs)}
    out = conn["Y"]
    opts = dict(spec.options)
    # epilogues, one FLOP per output element each (as the op-level Add/Relu they replace):
    # bias (gemm C, conv B), residual (conv R), activation
    bias_and_residual = ("C",) if spec.kind == "gemm" else ("B", "R")
    epilogue = math.prod(out) * (sum(c in conn for c in bias_and_residual) + bool(opts.get("activation")))
    if spec.kind == "gemm":
        a = conn["A"]
        k = a[-2] if opts.get("transA") and len(a) > 1 else a[-1]
        return 2 * math.prod(out) * k + epilogue
    # conv: each output element is a dot product over C/group input channels times the kernel
    return 2 * math.prod(out) * math.prod(conn["W"][1:]) + epilogue


# ------------------------------------------------------------------------------ printing

def format_loop_node(node: Node) -> str:
    """One readable line (two for multi-statement tasklets are joined with '; ')::

        %y = map[i0=0:N, i1=0:16] {out = max(a, 0.0)}  a <- x[i0, i1]  out -> y[i0, i1]
    """
    spec = loop_spec(node)
    reads = "  ".join(f"{m.connector} <- {m}" for m in spec.inputs)
    writes = "  ".join(f"{m.connector} -> {m}" for m in spec.outputs)
    outs = ", ".join(f"%{o}" for o in node.outputs)
    if spec.op == MAP:
        space = ", ".join(f"{p}={b}:{e}" for p, (b, e) in zip(spec.params, spec.ranges))
        code = "; ".join(line.strip() for line in spec.tasklet.code.strip().splitlines())
        head = f"map[{space}] {{{code}}}"
    else:
        opts = ", ".join(f"{k}={v}" for k, v in spec.options)
        head = f"{spec.kind}{{{opts}}}" if opts else spec.kind
    return f"{outs} = {head}  {reads}  {writes}".rstrip()


def format_loop_graph(graph: Graph) -> str:
    """The graph with loop nodes in the map notation and op nodes in the usual printer's form."""
    from dcopt.ir.printer import format_node

    lines = [f"graph {graph.name}"]
    lines += [f"  input  {n}: {graph.containers[n].type}" for n in graph.inputs]
    lines += [f"  param  {n}: {c.type}" for n, c in graph.parameters.items()]
    lines += ["  " + (format_loop_node(n) if is_loop_node(n) else format_node(n, graph)) for n in graph.nodes]
    lines += [f"  output {n}: {graph.containers[n].type}" for n in graph.outputs]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ verification

_PROBE = 1009  # symbolic dims are checked by binding each to a distinct value from here on


def find_loop_problems(graph: Graph, node: Node) -> list[str]:
    """Structural problems of one loop node: binding rule, connectors, symbols, subset ranks,
    in-bounds reads, written shapes matching the output containers, single writes without wcr."""
    where = f"loop node '{node.label}'"
    try:
        spec = loop_spec(node)
    except TaskletError as exc:
        return [f"{where}: {exc.message}"]
    problems = []
    if node.inputs != spec.input_containers:
        problems.append(f"{where}: inputs {list(node.inputs)} differ from its in-memlet containers "
                        f"{list(spec.input_containers)}")
    if node.outputs != tuple(m.container for m in spec.outputs):
        problems.append(f"{where}: outputs {list(node.outputs)} differ from its out-memlet containers")
    if len(spec.out_dtypes) != len(spec.outputs):
        problems.append(f"{where}: {len(spec.out_dtypes)} out_dtypes for {len(spec.outputs)} out memlets")
    in_conns = [m.connector for m in spec.inputs]
    if len(set(in_conns)) != len(in_conns):
        problems.append(f"{where}: duplicate input connectors {in_conns}")
    if spec.op == MAP:
        known = set(in_conns) | set(spec.params) | {s for s, _, _ in spec.symbols}
        if spec.tasklet.reads - known:
            problems.append(f"{where}: tasklet reads {sorted(spec.tasklet.reads - known)}, which are not "
                            "connectors, params or symbols")
        for m in spec.outputs:
            if m.connector not in spec.tasklet.writes:
                problems.append(f"{where}: tasklet never assigns output connector '{m.connector}'")
    else:
        required, optional, outs = LIBRARY_KINDS[spec.kind]
        if not set(required) <= set(in_conns) or set(in_conns) - set(required) - set(optional):
            problems.append(f"{where}: {spec.kind} takes connectors {required} (+ optional {optional}), got {in_conns}")
        if [m.connector for m in spec.outputs] != list(outs):
            problems.append(f"{where}: {spec.kind} writes connectors {outs}")
    shapes = {}
    probe = {}
    for name in (*spec.input_containers, *node.outputs):
        t = graph.type_of(name)
        if t is None or t.shape is None or None in t.shape:
            continue
        for d in t.shape:
            if isinstance(d, str):
                probe.setdefault(d, _PROBE + 2 * len(probe))
        shapes[name] = tuple(probe[d] if isinstance(d, str) else d for d in t.shape)
    for sym, container, axis in spec.symbols:
        t = graph.type_of(container)
        if container not in spec.input_containers or t is None or t.shape is None or axis >= len(t.shape) \
                or t.shape[axis] != sym:
            problems.append(f"{where}: symbol {sym!r} is bound to axis {axis} of '{container}', which is not it")
    if problems or any(n not in shapes for n in (*spec.input_containers, *node.outputs)):
        return problems  # the rest needs consistent, known shapes
    bindings = spec.bind(shapes)
    for m in (*spec.inputs, *spec.outputs):
        if len(m.subset) != len(shapes[m.container]):
            problems.append(f"{where}: subset [{m.subset_text}] has {len(m.subset)} dims, '{m.container}' has "
                            f"{len(shapes[m.container])}")
    if problems:
        return problems
    env = _interval_env(spec, bindings) if spec.op == MAP else {k: (v, v) for k, v in bindings.items()}
    if env is None:
        return problems
    conns = spec.connectors
    for m in spec.inputs:
        if m.outside is None:
            for axis, (d, size) in enumerate(zip(m.subset, shapes[m.container])):
                if (d.names if not isinstance(d, Range) else d.begin.names | d.end.names) & conns:
                    continue  # indirect: the loaded index decides (in bounds by the op's contract)
                lo, hi = dim_bounds(d, env)
                if lo < 0 or hi >= size:
                    problems.append(f"{where}: reads {m.container}[{m.subset_text}] out of bounds on axis {axis} "
                                    f"(indices {lo}..{hi}, size {size}) without an outside value")
    for m in spec.outputs:
        if spec.indirect(m) or m.init:
            if not m.init:
                problems.append(f"{where}: writes {m.container}[{m.subset_text}] at loaded indices without an "
                                "init container")
            elif m.init in shapes and shapes[m.init] != shapes[m.container]:
                problems.append(f"{where}: init '{m.init}' has shape {list(shapes[m.init])}, the output "
                                f"{list(shapes[m.container])}")
            continue
        got = tuple(dim_bounds(d, env)[1] + 1 for d in m.subset)
        if got != shapes[m.container]:
            problems.append(f"{where}: writes {m.container}[{m.subset_text}] with extent {list(got)}, but the "
                            f"container has shape {list(shapes[m.container])}")
        if spec.op == MAP and m.wcr is None:
            problems.extend(_single_write_problems(where, spec, m, bindings))
    return problems


def _single_write_problems(where: str, spec: LoopSpec, m: Memlet, bindings) -> list[str]:
    used = []
    for d in m.subset:
        lin = d.linear(bindings, spec.params) if isinstance(d, IndexExpr) else None
        if lin is None or len([k for k in lin if k is not None and lin[k]]) > 1:
            return [f"{where}: out subset [{m.subset_text}] is not one param (or a constant) per dim"]
        used += [k for k in lin if k is not None and lin[k]]
    bounds = spec.param_bounds(bindings)
    missing = [p for p in spec.params if p not in used and bounds[p][1] > bounds[p][0]]
    if missing or len(used) != len(set(used)):
        return [f"{where}: writes {m.container}[{m.subset_text}] more than once per element without a wcr "
                f"(params {missing or used} repeat writes)"]
    return []
