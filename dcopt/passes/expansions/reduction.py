"""Reductions and the softmax family -> maps with write-conflict resolution (wcr).

A reduction is one map over the *input's* index space whose out memlet drops (or pins to 0,
with keepdims) the reduced params and carries a wcr: ``y[i0, 0] += a`` for ReduceSum over
axis 1. When the last axis is reduced, the map iterates the kept axes first and the reduced
axes innermost (:class:`Rows`), so every output element is finished by one run of the inner
loops and the renderer accumulates it in a register; when the last axis is kept, it stays the
innermost loop and the outputs are updated in place, a contiguous vector at a time. Params keep
the names of their axes (``i<axis>``) in any order, so memlet subsets read the same whatever
the order. Statistics (max, sum, mean) are small transients in keepdims shape read back through
the same subset: broadcasting is a memlet, not an op. Maps that finish a statistic (a mean's
division, a norm's root) iterate the kept axes only, in the same order, so form-kernels shares
those loops and keeps the statistic in a scalar.

Arithmetic follows the references in :mod:`dcopt.ops.reduce` step for step:

* float16/bfloat16 reductions accumulate in float32 and round once (``as_float32`` on the
  loaded value); integer reductions stay in their dtype (sums and products wrap);
* means and roots are taken of the finished sum (sum, then divide), as numpy does, so large
  magnitudes overflow exactly where the reference's do (over a symbolic count -- graphs not yet
  specialized -- each term is divided instead: the finishing map would not know the count);
* a reduction over an empty set yields the wcr's identity (0, 1, -inf/lowest, +inf/highest),
  then the finishing step (NaN for a mean, -inf for a log-sum);
* no reduced axes (``noop_with_empty_axes``, rank 0) is an elementwise map of the same terms;
* ReduceLogSumExp shifts by the largest *finite* value (0 when there is none);
* the softmax family computes in the input dtype and shifts by the row maximum only when it is
  finite (``x - where(isfinite(max), max, 0)``), so a row holding +inf gives NaN there and 0
  elsewhere, like the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

from dcopt.ir.loops import make_map
from dcopt.passes.expand import LoopBuilder, Refused, affine, expansion, index, product

HALF = ("float16", "bfloat16")
WIDE = ("float32", "float64")
FLOATS = HALF + WIDE
INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
NUMBERS = FLOATS + INTS


def compute_dtype(dtype: str) -> str:
    """The dtype the references compute ``dtype`` values in (half types in float32)."""
    return "float32" if dtype in HALF else dtype


def widened(conn: str, dtype: str) -> str:
    """Tasklet text of connector ``conn`` (storing ``dtype``) in its compute dtype."""
    return f"as_float32({conn})" if dtype in HALF else conn


# ------------------------------------------------------------------------------ iteration spaces

class Rows:
    """``shape`` split into kept axes (the rows) and reduced axes (each row's elements).

    Maps built here name the param of axis ``a`` ``i<a>`` and iterate in :attr:`order`; maps over
    the kept axes alone (finishing a statistic) iterate them in axis order, which is the same
    relative order."""

    def __init__(self, shape: Sequence, axes: Sequence[int]):
        self.shape = tuple(shape)
        self.axes = tuple(sorted(set(axes)))
        self.kept = tuple(a for a in range(len(self.shape)) if a not in self.axes)

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def full(self) -> str:
        """Subset of a tensor shaped like ``shape`` at the map's params."""
        return index(f"i{a}" for a in range(self.rank))

    def stat(self, keepdims: bool = True) -> str:
        """Subset of a per-row statistic (``i0, 0``; without keepdims ``i0``)."""
        return index("0" if a in self.axes else f"i{a}" for a in range(self.rank) if keepdims or a not in self.axes)

    def stat_shape(self, keepdims: bool = True) -> tuple:
        return tuple(1 if a in self.axes else d for a, d in enumerate(self.shape) if keepdims or a not in self.axes)

    @property
    def count(self) -> str:
        """Number of elements in a row, as tasklet text (a product of symbols parenthesized)."""
        text = product([self.shape[a] for a in self.axes])
        return f"({text})" if "*" in text else text

    @property
    def in_registers(self) -> bool:
        """Whether each output element is finished by one run of the innermost loops."""
        return not self.axes or self.axes[-1] == self.rank - 1

    @property
    def order(self) -> tuple[int, ...]:
        """The loop order of maps over the whole space. The innermost loop is always the last,
        contiguous axis. When that axis is reduced, the kept axes come first and the reduced
        ones innermost: each row is summed in a register. When it is kept (a sum over the
        sequence of [B, S, H]), the kept axes before the first reduced one come first and the
        rest keep their order: the statistics are updated in place a contiguous vector at a
        time (reading with a stride instead was 16-100x slower)."""
        if self.in_registers:
            return (*self.kept, *self.axes)
        lead = tuple(a for a in self.kept if a < self.axes[0])
        return (*lead, *(a for a in range(self.rank) if a not in lead))

    def map(self, b: LoopBuilder, what: str, code: str, reads, writes, out_dtypes=None, rows_only: bool = False):
        """Add a map over the whole space (in :attr:`order`), or with ``rows_only`` over the kept
        axes alone (one iteration per row: finishing a statistic)."""
        order = self.kept if rows_only else self.order
        return ordered_map(b, what, [(f"i{a}", self.shape[a]) for a in order], code, reads, writes, out_dtypes)


def ordered_map(b: LoopBuilder, what: str, space: Sequence[tuple[str, object]], code: str, reads, writes,
                out_dtypes=None):
    """A map with explicitly named params over ``[0, size)`` each, in the order given (the
    builder's ``map`` names them ``i0, i1, ...`` in axis order)."""
    params = [p for p, _ in space]
    ranges = [(0, size) for _, size in space]
    dtypes = list(out_dtypes or [b.dtype(w[1]) for w in writes])
    ranges, reads, writes, symbols = b.bind_symbols(params, ranges, code, reads, writes)
    node = make_map(f"{b.node.label}/{what}", params, ranges, code, reads, writes, dtypes, symbols)
    b.nodes.append(node)
    return node


def reduce_map(b: LoopBuilder, what: str, x: str, axes, out: str, code: str = "a", wcr: str = "sum",
               keepdims: bool = True, extra_reads=()):
    """A map over ``x``'s index space (reduced axes innermost) combining ``code`` into ``out``."""
    rows = Rows(b.shape(x), axes)
    return rows.map(b, what, f"out = {code}", [("a", x, rows.full), *extra_reads],
                    [("out", out, rows.stat(keepdims), wcr)])


# ------------------------------------------------------------------------------ Reduce*

#: op -> (term over the widened element ``{a}``, wcr, finishing step over the reduced ``{s}`` or
#: None, dtypes). ``{n}`` is the number of reduced elements.
REDUCTIONS = {
    "ReduceSum": ("{a}", "sum", None, NUMBERS),
    "ReduceMean": ("{a}", "sum", "{s} / {n}", NUMBERS),
    "ReduceMax": ("{a}", "max", None, NUMBERS + ("bool",)),
    "ReduceMin": ("{a}", "min", None, NUMBERS + ("bool",)),
    "ReduceProd": ("{a}", "prod", None, NUMBERS),
    "ReduceSumSquare": ("{a} * {a}", "sum", None, NUMBERS),
    "ReduceL1": ("abs({a})", "sum", None, NUMBERS),
    "ReduceL2": ("{a} * {a}", "sum", "sqrt({s})", NUMBERS),
    "ReduceLogSum": ("{a}", "sum", "log({s})", NUMBERS),
}


def reduced_axes(b: LoopBuilder, rank: int) -> tuple[int, ...]:
    """The reduced axes (attribute before opset 13/18, constant input after); () when nothing
    is reduced (empty axes with noop_with_empty_axes, or a rank-0 input)."""
    axes = b.attr("axes")
    name = b.input(1, optional=True)
    if name:
        axes = b.constant(name)
        if axes is None:
            raise Refused("axes are computed at run time")
        axes = axes.reshape(-1).tolist()
    if axes is None or len(axes) == 0:
        return () if b.attr("noop_with_empty_axes", 0) else tuple(range(rank))
    return tuple(sorted({int(a) % max(rank, 1) for a in axes}))


@expansion(*REDUCTIONS, "ReduceLogSumExp")
def reduction(graph, node):
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    rows = Rows(b.shape(x), reduced_axes(b, len(b.shape(x))))
    keep = bool(b.attr("keepdims", 1))
    if node.op == "ReduceLogSumExp":
        b.require_dtype(x, allowed=NUMBERS)
        log_sum_exp(b, x, y, rows, keep)
        return b.nodes
    term, wcr, finish, allowed = REDUCTIONS[node.op]
    b.require_dtype(x, allowed=allowed)
    dtype = b.dtype(x)
    term = term.format(a=widened("a", dtype))
    if not rows.axes:  # nothing reduced: the term (and finish) per element
        code = finish.format(s=f"({term})", n=rows.count) if finish else term
        rows.map(b, "elementwise", f"out = {code}", [("a", x, rows.full)], [("out", y, rows.full)])
        return b.nodes
    if node.op == "ReduceMean" and not rows.count.isdigit():
        # a symbolic count has no value in a map that does not read x: divide every term instead
        # (a rounding difference; compiled graphs have static sizes and take the exact path)
        if dtype not in FLOATS:
            raise Refused(f"an integer mean over a symbolic count ({rows.count})")
        term, finish = f"{term} / {rows.count}", None
    if dtype in HALF and not rows.in_registers and not finish:
        finish = "{s}"  # updated in place, a half-precision output would round at every step
    target = b.transient(rows.stat_shape(keep), compute_dtype(dtype), "acc") if finish else y
    rows.map(b, "reduce", f"out = {term}", [("a", x, rows.full)], [("out", target, rows.stat(keep), wcr)])
    if finish:
        rows.map(b, "finish", f"out = {finish.format(s='s', n=rows.count)}", [("s", target, rows.stat(keep))],
                 [("out", y, rows.stat(keep))], rows_only=True)
    return b.nodes


def log_sum_exp(b: LoopBuilder, x: str, y: str, rows: Rows, keep: bool) -> None:
    """log(sum(exp(a - k))) + k, k the largest finite element (0 if none): no overflow, and
    infinities and NaN pass through as in the reference. Integers compute in float64 with the
    shift rounded to the input dtype, as the reference does."""
    dtype = b.dtype(x)
    integer = dtype not in FLOATS
    acc = "float64" if integer else compute_dtype(dtype)
    a = widened("a", dtype)
    peak = f"as_float64({a})" if integer else f"{a} if abs({a}) < inf else -inf"
    shift = f"as_{dtype if integer else acc}(m if m > -inf else 0.0)"
    if not rows.axes:
        code = f"m = {peak}\nk = {shift}\nout = log(exp({a} - k)) + k"
        rows.map(b, "elementwise", code, [("a", x, rows.full)], [("out", y, rows.full)])
        return
    stat = rows.stat(keep)
    m, s = b.transient(rows.stat_shape(keep), acc, "max"), b.transient(rows.stat_shape(keep), acc, "sum")
    rows.map(b, "max", f"out = {peak}", [("a", x, rows.full)], [("out", m, stat, "max")])
    rows.map(b, "sum", f"k = {shift}\nout = exp({a} - k)", [("a", x, rows.full), ("m", m, stat)],
             [("out", s, stat, "sum")])
    rows.map(b, "finish", f"out = log(s) + {shift}", [("s", s, stat), ("m", m, stat)], [("out", y, stat)],
             rows_only=True)


@expansion("GlobalAveragePool", "GlobalMaxPool")
def global_pool(graph, node):
    """The mean (sum, then divide; half types in float32 like ``np.mean``) or max over axes 2..."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS)
    rows = Rows(b.shape(x), range(2, len(b.shape(x))))
    a = widened("a", b.dtype(x))
    if node.op == "GlobalMaxPool":
        rows.map(b, "max", "out = a", [("a", x, rows.full)], [("out", y, rows.stat(), "max")])
        return b.nodes
    if not rows.count.isdigit():  # symbolic spatial dims: divide every term (see reduction())
        rows.map(b, "mean", f"out = {a} / {rows.count}", [("a", x, rows.full)], [("out", y, rows.stat(), "sum")])
        return b.nodes
    total = b.transient(rows.stat_shape(), compute_dtype(b.dtype(x)), "sum")
    rows.map(b, "sum", f"out = {a}", [("a", x, rows.full)], [("out", total, rows.stat(), "sum")])
    rows.map(b, "mean", f"out = s / {rows.count}", [("s", total, rows.stat())], [("out", y, rows.stat())],
             rows_only=True)
    return b.nodes


# ------------------------------------------------------------------------------ softmax family

SHIFT = "k = m if abs(m) < inf else 0.0\n"  # the reference's shift: the row max when it is finite


def rounded(expr: str, dtype: str) -> str:
    """``expr`` rounded to ``dtype`` where kernels compute that dtype wider (half types): the
    reference computes the softmax family step for step in the input dtype."""
    return f"as_{dtype}({expr})" if dtype in HALF else expr


def softmax_maps(b: LoopBuilder, x: str, y: str, axes, *, log: bool = False, mask: str | None = None,
                 zero_nan: bool = False) -> None:
    """Softmax (or log-softmax) of ``x`` (+ ``mask`` broadcast) over ``axes`` into ``y``: a max map,
    one map writing ``e = exp(a - k)`` and its sum, and the normalizing map (all in the input
    dtype, reduced axes innermost). Computing the exponential once and storing it costs a write
    and a read of a row that form-kernels keeps in cache (the three maps share their outer
    loops); recomputing it cost a second ``exp`` per element, the dominant work (BERT's
    attention softmax: 190 us against 60). ``zero_nan``: a row whose logits are all -inf gives
    zeros (attention's guard)."""
    shape = b.shape(x)
    rows = Rows(shape, axes)
    dtype = b.dtype(x)
    m, s = b.transient(rows.stat_shape(), dtype, "max"), b.transient(rows.stat_shape(), dtype, "sum")
    full, stat = rows.full, rows.stat()
    reads = [("a", x, full)]
    logit = "a"
    if mask is not None:
        reads.append(("c", mask, b.broadcast(mask, shape)))
        logit = rounded("a + c", dtype)
    shifted = rounded(f"{logit} - k", dtype)
    total = rounded("s", dtype)  # a local sum is not rounded to its container's dtype by itself
    rows.map(b, "max", f"out = {logit}", reads, [("out", m, stat, "max")])
    if log:
        rows.map(b, "sum", f"{SHIFT}out = {rounded(f'exp({shifted})', dtype)}", [*reads, ("m", m, stat)],
                 [("out", s, stat, "sum")])
        rows.map(b, "normalize", f"{SHIFT}out = {shifted} - {rounded(f'log({total})', dtype)}",
                 [*reads, ("m", m, stat), ("s", s, stat)], [("out", y, full)])
        return
    e = b.transient(shape, dtype, "exp")
    rows.map(b, "exp", f"{SHIFT}e = {rounded(f'exp({shifted})', dtype)}\nout = e", [*reads, ("m", m, stat)],
             [("out", s, stat, "sum"), ("e", e, full)], [dtype, dtype])
    if zero_nan:
        rows.map(b, "normalize", f"out = 0.0 if m == -inf else e / {total}",
                 [("e", e, full), ("m", m, stat), ("s", s, stat)], [("out", y, full)])
    else:
        rows.map(b, "normalize", f"out = e / {total}", [("e", e, full), ("s", s, stat)], [("out", y, full)])


def softmax_axes(b: LoopBuilder, rank: int) -> tuple[int, ...]:
    """The normalized axes: ``axis`` from opset 13 on; before, every axis from ``axis`` on (the
    reference flattens the input to 2-D there)."""
    axis = int(b.attr("axis", -1 if b.opset >= 13 else 1)) % max(rank, 1)
    return (axis,) if b.opset >= 13 else tuple(range(axis, rank))


@expansion("Softmax", "LogSoftmax")
def softmax(graph, node):
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS)
    if not b.shape(x):
        raise Refused("rank-0 input")
    softmax_maps(b, x, y, softmax_axes(b, len(b.shape(x))), log=node.op == "LogSoftmax")
    return b.nodes


@expansion("Hardmax")
def hardmax(graph, node):
    """1 at the first maximum of each row, 0 elsewhere: the row max, the smallest (flat, row-major)
    position holding it -- or holding NaN, which ``np.argmax`` takes as the maximum -- then a
    map comparing positions."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=NUMBERS)
    shape = b.shape(x)
    if not shape:
        raise Refused("rank-0 input")
    rows = Rows(shape, softmax_axes(b, len(shape)))
    dims = b.static_dims(x, rows.axes)
    strides = [1] * len(dims)
    for k in range(len(dims) - 2, -1, -1):
        strides[k] = strides[k + 1] * dims[k + 1]
    flat = affine([(st, f"i{a}") for st, a in zip(strides, rows.axes)])
    total = strides[0] * dims[0] if dims else 1
    stat, full = rows.stat(), rows.full
    m = b.transient(rows.stat_shape(), b.dtype(x), "max")
    first = b.transient(rows.stat_shape(), "int64", "argmax")
    rows.map(b, "max", "out = a", [("a", x, full)], [("out", m, stat, "max")])
    rows.map(b, "argmax", f"out = {flat} if (a == m or a != a) else {total}", [("a", x, full), ("m", m, stat)],
             [("out", first, stat, "min")], ["int64"])
    rows.map(b, "onehot", f"out = 1 if {flat} == f else 0", [("f", first, stat)], [("out", y, full)])
    return b.nodes
