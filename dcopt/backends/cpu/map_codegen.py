"""Maps -> numba loop nests: the CPU renderer of the loop-level IR.

The input is a *kernel* as the ``form-kernels`` pass (:mod:`dcopt.passes.kernels`) leaves it in
the graph: one Map, or a group of Maps that share their first ``outer`` loop levels, plus the
group's *locals* (transients that live in a register per outer iteration). The renderer decides
nothing: it writes what the IR says, mechanically.

::

    def k_<hash>(lo, hi, A0, A1, A2):           # arrays: every container the maps touch
        S0 = A0.shape[1]                         # symbols from the shapes they are bound to
        H0 = A2[0]                               # fixed elements of read-only arrays, loaded once
        for o0 in range(lo, hi):                 # outer level 0: split across pool tasks
            # map 0 (reduction into a local): acc, inner loops, store
            acc0 = -np.inf
            for p0_1 in range(0, S0):
                c0_a = A0[_ix(o0), _ix(p0_1)]   # subscripts unsigned (see subscript())
                t0_out = c0_a * H0
                acc0 = fmaxnum(acc0, t0_out)     # plus a NaN flag (maxnum ignores NaN)
            L0 = acc0
            # map 1 reads L0 as a scalar ...

* Loads are ``array[index expressions]``; a memlet with an ``outside`` value clamps the index
  and selects (``v if 0 <= i < n else outside``) so the loop stays branch-free; a subset that
  names another connector (an indirect read, e.g. Gather's ``data[i0, idx % 5]``) loads that
  connector first.
* A write-conflict-resolved (wcr) output whose subset does not move in the map's inner loops
  accumulates in a scalar and is stored once (the vectorizable reduction); one that does is
  initialized over its region for the current outer iteration and updated in place.
* Half types are stored as uint16 bits and converted on load/store (:mod:`scalar_code`).

Every kernel takes ``(lo, hi, arrays...)``: with ``outer >= 1`` the first outer loop runs over
``[lo, hi)`` so the runtime can split it into pool tasks (:func:`render_task`); with
``outer == 0`` the kernel is serial and ignores them. Names are content hashes of the source, so
equal kernels (every layer of a transformer) compile once.

Which loops a kernel has over windows (border/interior segments, flat loops over short-rowed
planes, written-out strided taps) is :mod:`map_windows`'s part.
"""

from __future__ import annotations

import ast
import hashlib
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from dcopt.errors import UnsupportedError
from dcopt.ir.loops import LoopSpec, Memlet, Range
from dcopt.ir.tasklet import IndexExpr
from dcopt.backends.cpu.map_windows import IND, WindowLevels, constant_param_bounds, small_window, stays_inside
from dcopt.backends.cpu.scalar_code import (HALF_TYPES, ScalarTranslator, compute_dtype, literal,
                                            storage_dtype)

#: Integer types numba computes in int64: a local of one wraps like its container would.
NARROW_INTS = frozenset({"int8", "int16", "int32", "uint8", "uint16", "uint32"})


@dataclass(frozen=True)
class KernelSpec:
    """What to render: maps in order, the shared outer depth, the local containers, and the
    (dtype, rank) of every container the maps touch."""

    maps: tuple[LoopSpec, ...]
    outer: int
    locals: frozenset[str]
    types: Mapping[str, tuple[str, int]]
    #: shapes of the containers (where every dim is known; a symbolic dim, as a build for every
    #: size's batch, is its text): a guarded read ("outside" value) checks and clamps only the dims
    #: whose index can leave the container -- a clamped index is not affine, so a guard on every dim
    #: kept pooling and LRN windows from vectorizing
    shapes: Mapping[str, tuple[int | str, ...]] = field(default_factory=dict)


@dataclass
class RenderedKernel:
    name: str
    source: str
    args: list[str]  # container names, in argument order after (lo, hi)
    signature: str  # numba signature of the kernel
    parallel: bool  # the first outer loop may be split over [lo, hi)
    outer_range: tuple[str, str] | None = None  # (begin, end) index text of outer level 0 (over symbols)
    symbols: dict[str, tuple[str, int]] = field(default_factory=dict)  # symbol -> (container, axis)


def numba_array_type(dtype: str, rank: int) -> str:
    """numba type of a C-contiguous array as a kernel sees it (rank 0 as one element)."""
    base = {"bool": "boolean"}.get(storage_dtype(dtype), storage_dtype(dtype))
    return f"{base}[{', '.join([':'] * (max(rank, 1) - 1) + ['::1'])}]"


def _identity(wcr: str, dtype: str) -> str:
    if dtype == "bool":
        return {"sum": "False", "prod": "True", "max": "False", "min": "True"}[wcr]
    if wcr in ("sum", "prod"):
        return literal(0 if wcr == "sum" else 1, dtype)
    if dtype in ("float32", "float64"):
        return literal(-math.inf if wcr == "max" else math.inf, dtype)
    info = np.iinfo(np.dtype(dtype))
    return literal(info.min if wcr == "max" else info.max, dtype)


def _split_nan(wcr: str | None, dtype: str) -> bool:
    """Whether a register max/min accumulator keeps its NaN flag apart (float max and min)."""
    return wcr in ("max", "min") and dtype in ("float32", "float64")


def _combine(wcr: str, acc: str, value: str, dtype: str) -> str:
    if wcr == "sum":
        return f"{acc} + {value}" if dtype != "bool" else f"({acc} or {value})"
    if wcr == "prod":
        return f"{acc} * {value}" if dtype != "bool" else f"({acc} and {value})"
    if dtype in ("float32", "float64"):
        return f"{'fmaxp' if wcr == 'max' else 'fminp'}({acc}, {value})"
    return f"{wcr}({acc}, {value})"


class _Renamer(ast.NodeTransformer):
    def __init__(self, names: Mapping[str, str]):
        self.names = names

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(self.names.get(node.id, node.id), ast.Load()), node)


def subscript(var: str, idx: Sequence[str]) -> str:
    """``A3[i, _ix(o0 + 1)]``: index expressions cast to unsigned. Every index a memlet produces
    is in bounds and non-negative (guarded reads clamp), but numba wraps a negative signed index
    (``i < 0 ? i + n : i``) and LLVM could not drop that select for a loop starting at the run-time
    ``lo`` of a pool task: contiguous loads became gathers (a GELU kernel 0.25 -> 0.16 ms).
    Literal non-negative integers stay as they are (numba folds their check)."""
    return f"{var}[{', '.join(i if i.isdigit() else f'_ix({i})' for i in idx)}]"


def index_text(expr: IndexExpr, names: Mapping[str, str]) -> str:
    """An index expression as Python source with its names renamed."""
    return ast.unparse(_Renamer(names).visit(ast.parse(expr.text, mode="eval").body))


class _Renderer(WindowLevels):
    def __init__(self, spec: KernelSpec):
        self.spec = spec
        self.lines: list[str] = []
        self.args: list[str] = []
        self.arg_var: dict[str, str] = {}
        self.local_var: dict[str, str] = {}
        self.symbols: dict[str, tuple[str, int]] = {}
        #: outer level -> inclusive (lo, hi) of the peeled segment being written (see _outer_levels)
        self._segment: dict[int, tuple[int, int]] = {}
        #: while a flattened plane loop is written (see map_windows): container -> its plane view
        self._flat: dict[str, str] = {}
        self.outer_names = [f"o{j}" for j in range(spec.outer)]
        #: the map being written: param -> the symbolic dim its range [0, dim) covers (a batch)
        self._covering: dict[str, str] = {}
        #: containers some map of the kernel writes (their reads stay where they are)
        self.written = {x.container for m in spec.maps for x in m.outputs}
        #: loop-invariant loads hoisted to the kernel's entry: element reference -> (variable, container)
        self.hoisted: dict[str, tuple[str, str]] = {}
        for name in sorted(spec.locals):
            self.local_var[name] = f"L{len(self.local_var)}"
        for m in spec.maps:
            for c in (*(x.container for x in m.inputs), *(x.container for x in m.outputs),
                      *(x.init for x in m.outputs if x.init)):
                if c not in spec.locals and c not in self.arg_var:
                    self.arg_var[c] = f"A{len(self.args)}"
                    self.args.append(c)
            for sym, container, axis in m.symbols:
                self.symbols.setdefault(sym, (container, axis))

    def dtype(self, name: str) -> str:
        return self.spec.types[name][0]

    def rank(self, name: str) -> int:
        return self.spec.types[name][1]

    # -- whole kernel ------------------------------------------------------------------------
    def render(self) -> RenderedKernel:
        body: list[str] = []
        for sym, (container, axis) in sorted(self.symbols.items()):
            if container not in self.arg_var:
                raise UnsupportedError(f"symbol {sym} is bound to '{container}', which is not a kernel argument")
            body.append(f"{IND}S_{sym} = {self.arg_var[container]}.shape[{axis}]")
        outer = self.spec.outer
        first = self.spec.maps[0]
        loops = self._outer_levels(0, 1, {})
        body.extend(f"{IND}{var} = {self._load_expr(c, ref)}" for ref, (var, c) in self.hoisted.items())
        body.extend(loops)
        if len(body) == sum(1 for line in body if line.strip().startswith("S_")):
            body.append(f"{IND}pass")
        params = ", ".join(["lo", "hi", *(self.arg_var[a] for a in self.args)])
        text = "\n".join(body)
        digest = hashlib.sha1(f"{params}\n{text}".encode()).hexdigest()[:16]
        name = f"k_{digest}"
        source = f"@njit(**_OPTS)\ndef {name}({params}):\n{text}\n"
        sig_args = ", ".join(["int64", "int64"] + [numba_array_type(self.dtype(a), self.rank(a)) for a in self.args])
        outer_range = None
        if outer and self._joined_outer():  # levels 0 and 1 as one loop: [0, E0 * E1)
            e0, e1 = first.ranges[0][1], first.ranges[1][1]
            outer_range = (first.ranges[0][0].text, f"({e0.text}) * ({e1.text})")
        elif outer:
            b, e = first.ranges[0]
            outer_range = (b.text, e.text)
        return RenderedKernel(name, source, list(self.args), f"void({sig_args})", outer > 0, outer_range,
                              dict(self.symbols))

    def _bound(self, expr: IndexExpr) -> str:
        return index_text(expr, {s: f"S_{s}" for s in self.symbols})

    # -- one map ------------------------------------------------------------------------------
    def _map(self, mi: int, m: LoopSpec, depth: int) -> list[str]:
        self._covering = covering_params(m)
        outer = self.spec.outer
        names = {p: self.outer_names[j] if j < outer else f"p{mi}_{j}" for j, p in enumerate(m.params)}
        names.update({s: f"S_{s}" for s in self.symbols})
        conn = {c.connector: f"c{mi}_{c.connector}" for c in m.inputs}
        inner = list(range(outer, len(m.params)))
        inner_params = {m.params[j] for j in inner}
        lines: list[str] = [f"{IND * depth}# map {mi}"]
        window = small_window(m, inner)
        unrolled = self._unrolled_param(m, inner, window)
        # outputs: how each is written
        stores, after = [], []
        for k, out in enumerate(m.outputs):
            dtype = m.out_dtypes[k]
            uses_inner = any(self._names_of(d) & inner_params for d in out.subset)
            if out.init:
                lines.extend(self._copy_init(out, depth))
                stores.append(("update" if out.wcr else "direct", out, compute_dtype(dtype) if out.wcr else dtype,
                               None))
                continue
            if out.wcr is None:
                stores.append(("direct", out, dtype, None))
                continue
            cdt = compute_dtype(dtype)
            if not uses_inner:
                acc = f"acc{mi}_{k}"
                lines.append(f"{IND * depth}{acc} = {_identity(out.wcr, cdt)}")
                if _split_nan(out.wcr, cdt) and unrolled is None:  # a written-out window's select keeps NaN
                    flag = ("False", f"{acc}_nan") if window is not None else (literal(0, cdt),
                                                                               f"{acc}_nan > {literal(0, cdt)}")
                    lines.append(f"{IND * depth}{acc}_nan = {flag[0]}")
                    after.append(f"{IND * depth}{acc} = ({literal(math.nan, cdt)} if {flag[1]} else {acc})")
                stores.append(("acc", out, cdt, acc))
                after.append(self._store(out, acc, names, dtype, depth))
            else:
                lines.extend(self._init_region(m, out, names, cdt, depth))
                stores.append(("update", out, cdt, None))
        # the inner loop nest; a maxnum/minnum register reduction's innermost trip count is hidden
        # from LLVM (mathlib.opaque_count says why: an assertion in llvmlite's LLVM aborts on some)
        hide = window is None and any(kind == "acc" and _split_nan(out.wcr, cdt) for kind, out, cdt, _ in stores)
        d = depth
        for j in inner:
            if m.params[j] == unrolled:
                continue
            b, e = m.ranges[j]
            end = index_text(e, names)
            if hide and j == inner[-1]:
                end = f"opaque_count({end})"
            lines.append(f"{IND * d}for {names[m.params[j]]} in range({index_text(b, names)}, {end}):")
            d += 1
        if unrolled is None:
            lines.extend(self._body(m, mi, names, conn, stores, window, d, written_out=False))
        else:  # one copy of the body per value, the param a literal in each
            lo, hi = constant_param_bounds(m)[unrolled]
            for value in range(lo, hi + 1):
                lines.extend(self._body(m, mi, {**names, unrolled: str(value)}, conn, stores, window, d,
                                        written_out=True))
        lines.extend(after)
        return lines

    def _body(self, m: LoopSpec, mi: int, names, conn, stores, window: int | None, d: int,
              written_out: bool) -> list[str]:
        """One iteration of ``m``'s innermost loop at depth ``d``: its loads, its tasklet and what
        each output does with the result (stored, accumulated in a register or in memory);
        ``written_out``: one of the copies of :meth:`_unrolled_param`."""
        lines = self._loads(m, names, conn, d)
        types = {conn_name: compute_dtype(self._conn_dtype(m, conn_name)) for conn_name in conn}
        types.update({p: "int64" for p in m.params})
        types.update({s: "int64" for s in self.symbols})
        rename = {**conn, **{p: names[p] for p in m.params}, **{s: f"S_{s}" for s in self.symbols}}
        for w in m.tasklet.writes:
            rename.setdefault(w, f"t{mi}_{w}")
        translator = ScalarTranslator(types, rename)
        lines.extend(f"{IND * d}{line}" for line in translator.translate(m.tasklet))
        names = {**names, **conn}  # indirect out subsets name loaded connectors
        for kind, out, dtype, acc in stores:
            value, vtype = rename[out.connector], translator.types[out.connector]
            if kind == "direct":
                lines.append(self._store(out, value, names, dtype, d, vtype))
            elif kind == "acc" and _split_nan(out.wcr, dtype) and written_out:
                # one select takes a value that is larger (smaller) or NaN, so a NaN stays once
                # taken (its compares are false); an or-ed NaN flag beside it, as below, chained
                # across the written-out copies and kept the loop scalar (the stem pool 3x slower)
                lines += [f"{IND * d}{acc}_v = {self._cast(value, vtype, dtype)}",
                          f"{IND * d}{acc} = ({acc}_v if ({acc}_v {'>' if out.wcr == 'max' else '<'} {acc}) "
                          f"| ({acc}_v != {acc}_v) else {acc})"]
            elif kind == "acc" and _split_nan(out.wcr, dtype) and window is not None:
                # a small fixed window (pooling): fully unrolled, vectorized across outputs, where a
                # compare-and-select and an or-ed NaN flag cost 3 vector ops and maxnum 6 (2.2x)
                lines += [f"{IND * d}{acc}_v = {self._cast(value, vtype, dtype)}",
                          f"{IND * d}{acc} = ({acc}_v if {acc}_v {'>' if out.wcr == 'max' else '<'} {acc} else {acc})",
                          f"{IND * d}{acc}_nan = {acc}_nan | ({acc}_v != {acc}_v)"]
            elif kind == "acc" and _split_nan(out.wcr, dtype):
                # a long row: LLVM's maxnum/minnum (NaN-ignoring) and a maxnum of 0/1 NaN flags both
                # vectorize as reductions along it, where a NaN-propagating select, or a compare-and-
                # select beside an or-reduced flag, kept the loop scalar (4x on BERT's softmax rows)
                one, zero = literal(1, dtype), literal(0, dtype)
                lines += [f"{IND * d}{acc}_v = {self._cast(value, vtype, dtype)}",
                          f"{IND * d}{acc} = {'fmaxnum' if out.wcr == 'max' else 'fminnum'}({acc}, {acc}_v)",
                          f"{IND * d}{acc}_nan = fmaxnum({acc}_nan, ({one} if {acc}_v != {acc}_v else {zero}))"]
            elif kind == "acc":
                lines.append(f"{IND * d}{acc} = {_combine(out.wcr, acc, self._cast(value, vtype, dtype), dtype)}")
            else:
                target = self._ref(out.container, out, names)
                current = self._load_expr(out.container, target)
                combined = _combine(out.wcr, current, self._cast(value, vtype, dtype), dtype)
                lines.append(self._store(out, combined, names, out_dtype_of(self, out), d, dtype))
        return lines

    def _conn_dtype(self, m: LoopSpec, connector: str) -> str:
        memlet = next(c for c in m.inputs if c.connector == connector)
        return self.dtype(memlet.container)


    def _cast(self, value: str, from_type: str, to_dtype: str) -> str:
        to = compute_dtype(to_dtype)
        if from_type == to:
            return value
        if to == "bool":
            return f"({value} != 0)"
        return f"{'f32' if to == 'float32' else 'np.' + to}({value})"

    # -- memory access -----------------------------------------------------------------------
    def _ref(self, container: str, memlet: Memlet, names) -> str:
        """``A3[i, j]`` (or the local's variable) for a memlet with its subset rendered."""
        if container in self.local_var:
            return self.local_var[container]
        if container in self._flat:  # the last two axes as one: q plus the taps' offsets
            width = self.spec.shapes[container][-1]
            level = self.spec.outer - 2
            zero = {p: "0" for p, n in names.items() if n in self.outer_names[level:]}
            row, col = (index_text(d, {**names, **zero}) for d in memlet.subset[-2:])
            lead = [index_text(d, names) for d in memlet.subset[:-2]]
            return subscript(self._flat[container], [*lead, "0", f"q + ({row}) * {width} + ({col})"])
        idx = [index_text(d, names) for d in memlet.subset]
        if self.rank(container) == 0:
            idx = ["0"]
        return subscript(self.arg_var[container], idx)

    def _load_expr(self, container: str, ref: str) -> str:
        if container in self.local_var:
            return ref
        dtype = self.dtype(container)
        return f"{HALF_TYPES[dtype][0]}({ref})" if dtype in HALF_TYPES else ref

    def _loads(self, m: LoopSpec, names, conn, depth: int) -> list[str]:
        lines = []
        bounds = self._bounds_of(m, self._segment)
        done: set[str] = set()
        pending = list(m.inputs)
        conn_names = set(conn)
        while pending:
            progressed = False
            for memlet in list(pending):
                deps = set().union(*(self._names_of(d) for d in memlet.subset)) & conn_names if memlet.subset else set()
                if deps - done:
                    continue
                local_names = {**names, **{c: conn[c] for c in deps}}
                lines += [f"{IND * depth}{line}" for line in
                          self._read(memlet, local_names, bounds, conn[memlet.connector])]
                done.add(memlet.connector)
                pending.remove(memlet)
                progressed = True
            if not progressed:
                raise UnsupportedError(f"indirect memlets {[str(p) for p in pending]} depend on each other")
        return lines

    def _read(self, memlet: Memlet, names, bounds: Mapping[str, tuple[int, int]] | None, target: str) -> list[str]:
        """Statements loading ``memlet`` into variable ``target``. A read with an ``outside``
        value (padding, windows) checks and clamps the dims that can leave the container; where
        the container is static and non-empty the clamped load is always in bounds, so it is done
        unconditionally and the value selected (a load under a branch does not vectorize)."""
        c = memlet.container
        if c in self.local_var:
            return [f"{target} = {self.local_var[c]}"]
        if self._invariant(memlet):
            ref = self._ref(c, memlet, {})
            return [f"{target} = {self.hoisted.setdefault(ref, (f'H{len(self.hoisted)}', c))[0]}"]
        if memlet.outside is None or c in self._flat:  # flat interior: every tap is inside the plane
            return [f"{target} = {self._load_expr(c, self._ref(c, memlet, names))}"]
        idx = [index_text(d, names) for d in memlet.subset]
        var = self.arg_var[c]
        inside = self._inside_dims(memlet, bounds)
        checks = [f"(0 <= {i} < {var}.shape[{k}])" for k, i in enumerate(idx) if k not in inside]
        clamped = [i if k in inside else f"min(max({i}, 0), {var}.shape[{k}] - 1)" for k, i in enumerate(idx)]
        load = self._load_expr(c, subscript(var, clamped))
        if not checks:
            return [f"{target} = {load}"]
        outside = literal(memlet.outside, compute_dtype(self.dtype(c)))
        shape = self.spec.shapes.get(c)  # non-empty (an axis a param covers is, where the load runs): clamped is safe
        if shape is not None and all(k in inside or (isinstance(d, int) and d > 0) for k, d in enumerate(shape)):
            return [f"{target}_raw = {load}", f"{target} = ({target}_raw if {' and '.join(checks)} else {outside})"]
        return [f"{target} = ({load} if {' and '.join(checks)} else {outside})"]

    def _invariant(self, memlet: Memlet) -> bool:
        """A read of one fixed element (a scalar parameter, ``x[0, 3]``) of a non-empty static
        container no map of the kernel writes: loaded once at the kernel's entry. Loaded in the
        loop, LLVM must assume a store may change it; with two streamed inputs beside it the loop
        stayed scalar (a Mish kernel: 23 ms instead of 3.7 ms on 524,288 elements)."""
        shape = self.spec.shapes.get(memlet.container)
        return (memlet.outside is None and memlet.container not in self.written and shape is not None
                and all(isinstance(d, int) and d > 0 for d in shape) and not any(self._names_of(d) for d in memlet.subset)
                and not any(isinstance(d, Range) for d in memlet.subset))

    def _inside_dims(self, memlet: Memlet, bounds: Mapping[str, tuple[int, int]] | None) -> set[int]:
        """Dims of a guarded read whose index provably stays inside the container: the container's
        shape is static and every name the index uses is a loop param with constant bounds."""
        shape = self.spec.shapes.get(memlet.container)
        if bounds is None or shape is None or len(shape) != len(memlet.subset):
            return set()
        inside = set()
        for k, dim in enumerate(memlet.subset):
            if isinstance(dim, Range):
                continue
            if isinstance(shape[k], str):  # a symbolic axis: inside where a param covers exactly it
                if self._covering.get(dim.text) == shape[k]:
                    inside.add(k)
            elif dim.names <= bounds.keys() and stays_inside(dim, bounds, shape[k]):
                inside.add(k)
        return inside

    def _store(self, out: Memlet, value: str, names, dtype: str, depth: int, vtype: str | None = None) -> str:
        c = out.container
        if vtype is not None:
            value = self._cast(value, vtype, dtype)
        stored = self.dtype(c)
        if c in self.local_var:  # a local holds exactly what its container would
            if stored in HALF_TYPES:
                value = f"{HALF_TYPES[stored][0]}({HALF_TYPES[stored][1]}({value}))"
            elif stored in NARROW_INTS:
                value = f"np.{stored}({value})"
            return f"{IND * depth}{self.local_var[c]} = {value}"
        if stored in HALF_TYPES:
            value = f"{HALF_TYPES[stored][1]}({value})"
        return f"{IND * depth}{self._ref(c, out, names)} = {value}"

    def _copy_init(self, out: Memlet, depth: int) -> list[str]:
        """The output starts as a copy of its init container (indirect writes update it)."""
        dst, src = self.arg_var[out.container], self.arg_var[out.init]
        rank = max(self.rank(out.container), 1)
        lines, d = [], depth
        for k in range(rank):
            lines.append(f"{IND * d}for z{k} in range({dst}.shape[{k}]):")
            d += 1
        idx = ", ".join(f"z{k}" for k in range(rank))
        lines.append(f"{IND * d}{dst}[{idx}] = {src}[{idx}]")
        return lines

    def _init_region(self, m: LoopSpec, out: Memlet, names, cdt: str, depth: int) -> list[str]:
        """Set a wcr output's region for this outer iteration to the identity: loops over the
        inner params its subset uses (each dim a param or a constant), else the whole array."""
        outer = self.spec.outer
        inner = {m.params[j]: j for j in range(outer, len(m.params))}
        simple = all(not isinstance(d, Range) and (d.names <= set(m.params) | set(self.symbols))
                     and (len(d.names & set(inner)) == 0 or d.text in inner) for d in out.subset)
        identity = _identity(out.wcr, cdt)
        lines, d = [], depth
        c = out.container
        if c in self.local_var:
            return [f"{IND * depth}{self.local_var[c]} = {identity}"]
        stored = self.dtype(c)
        value = f"{HALF_TYPES[stored][1]}({identity})" if stored in HALF_TYPES else identity
        if simple:
            used = [p for p in inner if any(dd.text == p for dd in out.subset)]
            for p in used:
                b, e = m.ranges[inner[p]]
                lines.append(f"{IND * d}for {names[p]} in range({index_text(b, names)}, {index_text(e, names)}):")
                d += 1
            lines.append(f"{IND * d}{self._ref(c, out, names)} = {value}")
            return lines
        if outer:  # set what this outer iteration writes: the whole array would erase earlier ones
            for p, j in inner.items():
                b, e = m.ranges[j]
                lines.append(f"{IND * d}for {names[p]} in range({index_text(b, names)}, {index_text(e, names)}):")
                d += 1
            lines.append(f"{IND * d}{self._ref(c, out, names)} = {value}")
            return lines
        var = self.arg_var[c]
        rank = max(self.rank(c), 1)
        for k in range(rank):
            lines.append(f"{IND * d}for z{k} in range({var}.shape[{k}]):")
            d += 1
        lines.append(f"{IND * d}{var}[{', '.join(f'z{k}' for k in range(rank))}] = {value}")
        return lines


def out_dtype_of(renderer: _Renderer, out: Memlet) -> str:
    return renderer.dtype(out.container)


def covering_params(m: LoopSpec) -> dict[str, str]:
    """Params of ``m`` that run over ``[0, S)`` for a symbolic dim ``S``: an index that is such a
    param stays inside an axis of size ``S``, and a load under it runs only where ``S >= 1``."""
    return {p: e.text for p, (b, e) in zip(m.params, m.ranges)
            if not b.names and int(b.evaluate({})) == 0 and e.names and e.text.isidentifier()}


def render_kernel(spec: KernelSpec) -> RenderedKernel:
    """Numba source of one kernel (see the module docstring)."""
    if not spec.maps:
        raise UnsupportedError("a kernel needs at least one map")
    return _Renderer(spec).render()


def render_task(kernel: RenderedKernel, ranks: Sequence[int], dtypes: Sequence[str]) -> tuple[str, str]:
    """(name, source) of the pool-task wrapper of a parallel kernel: a ``cfunc`` taking one row
    ``[lo, hi, address..., dims...]`` that rebuilds the arrays (``carray``) and calls the kernel
    on its ``[lo, hi)`` share of the first outer loop."""
    fields = 2 + len(ranks) + sum(max(r, 1) for r in ranks)
    lines = [f"    r = carray(row, ({fields},))"]
    args, pos = [], 2 + len(ranks)
    for k, (rank, dtype) in enumerate(zip(ranks, dtypes)):
        dims = ", ".join(f"r[{pos + d}]" for d in range(max(rank, 1)))
        pos += max(rank, 1)
        lines.append(f"    q{k} = carray(_ptr_{storage_dtype(dtype)}(r[{2 + k}]), ({dims},))")
        args.append(f"q{k}")
    lines.append(f"    {kernel.name}(r[0], r[1], {', '.join(args)})")
    name = f"{kernel.name}_task"
    return name, f"def {name}(row):\n" + "\n".join(lines) + "\n"
