"""Indexing ops -> maps with indirect memlets, selections and scans as reductions.

* Gather, GatherElements, GatherND: one map over the output reading the indices, then the data
  at the loaded index (an *indirect* subset, ``data[i0, idx % 5, i2]``). ``% n`` turns ONNX's
  negative indices into positions, and keeps any index inside the container.
* ScatterElements, Scatter, ScatterND: one map over the updates writing the output at the loaded
  index (an indirect *out* memlet whose *init* is the data), so every element no update touches
  keeps its value. The reduction is the memlet's wcr (add -> sum, mul -> prod, max, min); with
  none, iterations run in row-major order and the last write of an element wins, which is how
  the reference's fancy assignment resolves duplicate indices.
* OneHot: a map over the output comparing the (truncated) index with the depth position.
* ArgMax, ArgMin: the extreme value per row (a max/min reduction), then the first (or, with
  select_last_index, the last) position holding it as a min/max reduction over positions. NaN
  counts as the extreme, as numpy's argmax/argmin make it.
* CumSum, CumProd: the loop IR has no scan, so prefix sums are reductions with masked terms:
  out[i] = the sum (product) over j of ``x[j] if j <= i`` -- one map for short axes (O(n^2) per
  row), scans within blocks of ~sqrt(n) plus a prefix of block totals for long ones
  (O(n^1.5)). Integers are exact; float sums are reassociated (as any fastmath reduction).
* TopK: every element's rank in the reference's order (a count over the row: O(n^2)), the index
  of rank r for each output position (a max over the row: O(n*k)), then the values gathered.
  Ties keep index order and NaN sorts as the largest value, as the reference's stable argsort
  makes them; ``sorted=0`` gets the sorted order too. Rows long enough that n^2 comparisons
  cost more than a sort (:data:`TOPK_MAX_COMPARISONS`) are refused.

Parameter inputs (CumSum's axis, TopK's k, OneHot's depth) must be constants.
"""

from __future__ import annotations

import math

import numpy as np

from dcopt.ops.tensor import norm_axis
from dcopt.passes.expand import LoopBuilder, Refused, expansion, index, operand, params_of

INTEGERS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
FLOATS = ("float16", "bfloat16", "float32", "float64")
#: TopK's O(n^2) ranking is refused beyond this many comparisons (rows * n * n)
TOPK_MAX_COMPARISONS = 1 << 22
_WCR = {"none": None, "add": "sum", "mul": "prod", "max": "max", "min": "min"}


def _constant_int(b: LoopBuilder, i: int, what: str) -> int:
    name = b.input(i)
    value = b.constant(name)
    if value is None:
        raise Refused(f"{what} ('{name}', input {i}) is computed at run time")
    return int(np.asarray(value).reshape(-1)[0])


def _wrap(conn: str, size) -> str:
    """A loaded index as a position along an axis of ``size`` (negative counts from the end)."""
    return f"{conn} % {operand(size)}"


# ------------------------------------------------------------------------------ gathers

@expansion("Gather")
def gather(graph, node):
    b = LoopBuilder(graph, node)
    data, indices, y = b.input(0), b.input(1), b.output()
    shape = b.shape(data)
    axis = norm_axis(b.attr("axis", 0), len(shape))
    q = len(b.shape(indices))
    p = params_of(len(b.shape(y)))
    subset = p[:axis] + [_wrap("idx", shape[axis])] + p[axis + q:]
    b.map("gather", b.shape(y), "out = a", [("idx", indices, index(p[axis:axis + q])), ("a", data, index(subset))],
          [("out", y, index(p))])
    return b.nodes


@expansion("GatherElements")
def gather_elements(graph, node):
    b = LoopBuilder(graph, node)
    data, indices, y = b.input(0), b.input(1), b.output()
    shape = b.shape(data)
    axis = norm_axis(b.attr("axis", 0), len(shape))
    p = params_of(len(shape))
    subset = p[:axis] + [_wrap("idx", shape[axis])] + p[axis + 1:]
    b.map("gather_elements", b.shape(y), "out = a", [("idx", indices, index(p)), ("a", data, index(subset))],
          [("out", y, index(p))])
    return b.nodes


@expansion("GatherND")
def gather_nd(graph, node):
    """``y[batch, m, rest] = data[batch, idx_0, ..., idx_{k-1}, rest]`` with ``idx_j`` loaded from
    ``indices[batch, m, j]``."""
    b = LoopBuilder(graph, node)
    data, indices, y = b.input(0), b.input(1), b.output()
    shape, ishape = b.shape(data), b.shape(indices)
    batch = int(b.attr("batch_dims", 0))
    k = b.static_dims(indices, [len(ishape) - 1])[0]
    p = params_of(len(b.shape(y)))
    lead = p[:len(ishape) - 1]  # batch and index positions
    reads = [(f"idx{j}", indices, index(lead + [str(j)])) for j in range(k)]
    subset = p[:batch] + [_wrap(f"idx{j}", shape[batch + j]) for j in range(k)] + p[len(ishape) - 1:]
    b.map("gather_nd", b.shape(y), "out = a", [*reads, ("a", data, index(subset))], [("out", y, index(p))])
    return b.nodes


# ------------------------------------------------------------------------------ scatters

def _reduction(b: LoopBuilder) -> str | None:
    reduction = b.attr("reduction", "none") if b.node.op != "Scatter" else "none"
    if reduction not in _WCR:
        raise Refused(f"reduction {reduction!r} is not an ONNX scatter reduction")
    return _WCR[reduction]


@expansion("ScatterElements", "Scatter")
def scatter_elements(graph, node):
    b = LoopBuilder(graph, node)
    data, indices, updates, y = b.input(0), b.input(1), b.input(2), b.output()
    shape = b.shape(data)
    axis = norm_axis(b.attr("axis", 0), len(shape))
    p = params_of(len(shape))
    subset = p[:axis] + [_wrap("idx", shape[axis])] + p[axis + 1:]
    b.map("scatter_elements", b.shape(indices), "out = u", [("idx", indices, index(p)), ("u", updates, index(p))],
          [("out", y, index(subset), _reduction(b), data)])
    return b.nodes


@expansion("ScatterND")
def scatter_nd(graph, node):
    """A map over ``updates``: its leading params pick the index tuple, the rest run over the
    slice of ``data`` that tuple addresses."""
    b = LoopBuilder(graph, node)
    data, indices, updates, y = b.input(0), b.input(1), b.input(2), b.output()
    shape, ishape = b.shape(data), b.shape(indices)
    k = b.static_dims(indices, [len(ishape) - 1])[0]
    p = params_of(len(b.shape(updates)))
    lead = p[:len(ishape) - 1]
    reads = [(f"idx{j}", indices, index(lead + [str(j)])) for j in range(k)]
    subset = [_wrap(f"idx{j}", shape[j]) for j in range(k)] + p[len(ishape) - 1:]
    b.map("scatter_nd", b.shape(updates), "out = u", [*reads, ("u", updates, index(p))],
          [("out", y, index(subset), _reduction(b), data)])
    return b.nodes


# ------------------------------------------------------------------------------ OneHot

@expansion("OneHot")
def one_hot(graph, node):
    """``y[..., d, ...] = on if index == d or index + depth == d else off``: a negative index
    counts from the end, an index outside [-depth, depth) sets nothing."""
    b = LoopBuilder(graph, node)
    indices, values, y = b.input(0), b.input(2), b.output()
    depth = _constant_int(b, 1, "depth")
    out_shape = b.shape(y)
    axis = norm_axis(b.attr("axis", -1), len(out_shape))
    p = params_of(len(out_shape))
    d = p[axis]
    reads = [("a", indices, index(p[:axis] + p[axis + 1:])), ("off", values, "0"), ("on", values, "1")]
    code = f"h = as_int64(a)\nout = on if h == {d} or h + {depth} == {d} else off"
    b.map("one_hot", out_shape, code, reads, [("out", y, index(p))])
    return b.nodes


# ------------------------------------------------------------------------------ ArgMax / ArgMin

def _row_layout(rank: int, axis: int) -> tuple[list[str], str]:
    """Params per axis of a tensor iterated with ``axis`` innermost (the rest keep their order),
    and the param of ``axis``: reductions along it accumulate in a register."""
    p = params_of(rank)
    per_axis = [p[k] if k < axis else p[k - 1] for k in range(rank)]
    per_axis[axis] = p[rank - 1]
    return per_axis, p[rank - 1]


def _row_space(shape, axis: int) -> list:
    return [d for k, d in enumerate(shape) if k != axis] + [shape[axis]]


def _reduced(per_axis: list[str], axis: int, keepdims: bool) -> str:
    return index(("0" if k == axis else q) for k, q in enumerate(per_axis) if keepdims or k != axis)


@expansion("ArgMax", "ArgMin")
def arg_extreme(graph, node):
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    shape = b.shape(x)
    if not shape:
        raise Refused("a rank-0 input has no axis to search")
    b.require_dtype(x, allowed=(*FLOATS, *INTEGERS, "bool"))
    axis = norm_axis(b.attr("axis", 0), len(shape))
    n = b.static_dims(x, [axis])[0]
    keep = bool(b.attr("keepdims", 1))
    last = bool(b.attr("select_last_index", 0))
    per_axis, j = _row_layout(len(shape), axis)
    space = _row_space(shape, axis)
    extreme = b.transient(b.shape(y), b.dtype(x), "extreme")
    wcr = "max" if node.op == "ArgMax" else "min"
    read = ("a", x, index(per_axis))
    b.map("extreme", space, "out = a", [read], [("out", extreme, _reduced(per_axis, axis, keep), wcr)])
    hit = "a == m or isnan(a)" if b.dtype(x) in FLOATS else "a == m"
    code = f"out = {j} if {hit} else {-1 if last else n}"
    b.map("position", space, code, [read, ("m", extreme, _reduced(per_axis, axis, keep))],
          [("out", y, _reduced(per_axis, axis, keep), "max" if last else "min")])
    return b.nodes


# ------------------------------------------------------------------------------ CumSum / CumProd

#: axes up to this long are scanned by one O(n^2) map; longer ones in blocks of ~sqrt(n)
SCAN_DIRECT_MAX = 32


def _at(params, axis: int, expr: str) -> str:
    """The subset ``params`` with ``expr`` on ``axis``."""
    return index([expr if k == axis else q for k, q in enumerate(params)])


@expansion("CumSum", "CumProd")
def cumulative(graph, node):
    """Scan position ``s`` of output ``i`` is ``i`` (``n-1-i`` reversed), and scan term ``u`` is
    ``x[u]`` (``x[n-1-u]``): the reference's order. Output s combines terms ``u <= s`` (``u < s``
    exclusive). Short axes: one map whose reduced param runs over the whole axis, terms past
    ``s`` replaced by the neutral ``-0.0`` (``1`` for products). Long axes, in blocks of B ~
    sqrt(n): scans within blocks (n*B), the prefix of block totals (n*n/B^2), and their
    combination (n) -- O(n^1.5) instead of O(n^2). float16/bfloat16 are refused: the reference
    rounds every partial result to the storage type, a kernel would accumulate in float32."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    shape = b.shape(x)
    b.require_dtype(x, allowed=("float32", "float64", *INTEGERS))
    if not shape:
        raise Refused("a rank-0 input has no axis to accumulate along")
    axis = _constant_int(b, 1, "axis") % len(shape)
    n = b.static_dims(x, [axis])[0]
    exclusive, reverse = bool(b.attr("exclusive", 0)), bool(b.attr("reverse", 0))
    rank = len(shape)
    p = params_of(rank + 1)
    out, u = p[:rank], p[rank]
    if node.op == "CumSum":
        neutral, wcr, combine = ("(-0.0)" if b.dtype(x) in FLOATS else "0"), "sum", "+"
    else:
        neutral, wcr, combine = "1", "prod", "*"

    def term(position: str) -> str:  # x's index of scan term ``position``
        return f"{n - 1} - {position}" if reverse else position

    if n <= SCAN_DIRECT_MAX:
        s = term(out[axis])  # reversal is its own inverse: scan position of output i
        b.map("scan", [*shape, n], f"out = a if {u} {'<' if exclusive else '<='} {s} else {neutral}",
              [("a", x, _at(out, axis, term(u)))], [("out", y, index(out), wcr)])
        return b.nodes
    block = math.isqrt(n - 1) + 1
    blocks = -(-n // block)
    # local[.., s, ..]: inclusive scan of s's block up to s (in scan order)
    local = b.transient(shape, b.dtype(x), "local")
    s = out[axis]
    first = f"min(({s} // {block})*{block} + {u}, {n - 1})"
    b.map("block_scan", [*shape, block], f"out = a if {u} <= {s} % {block} else {neutral}",
          [("a", x, _at(out, axis, term(first)))], [("out", local, index(out), wcr)])
    # before[.., c, ..]: all blocks before c combined (block k's total is local's last in block k)
    before_shape = [blocks if k == axis else d for k, d in enumerate(shape)]
    before = b.transient(before_shape, b.dtype(x), "before")
    c = out[axis]
    b.map("block_prefix", [*before_shape, blocks], f"out = a if {u} < {c} else {neutral}",
          [("a", local, _at(out, axis, f"min({u}*{block} + {block - 1}, {n - 1})"))],
          [("out", before, index(out), wcr)])
    # y[.., i, ..] = before[block of s] (op) local[s] at s = scan position (minus one: exclusive)
    q = params_of(rank)
    s = term(q[axis])
    at = f"max({s} - 1, 0)" if exclusive else s
    code = f"out = l {combine} e"
    if exclusive:
        code = f"out = (l {combine} e) if {s} > 0 else {neutral}"
    b.map("combine", shape, code, [("l", local, _at(q, axis, at)), ("e", before, _at(q, axis, f"({at}) // {block}"))],
          [("out", y, index(q))])
    return b.nodes


# ------------------------------------------------------------------------------ TopK

def _before(largest: bool, floats: bool, l: str, j: str) -> str:
    """Tasklet text: element ``l`` (value ``v``) comes before element ``j`` (value ``w``) in the
    reference's order -- by value (descending for largest, NaN first; ascending otherwise, NaN
    last), equal values by position."""
    if largest:
        strict = "v > w or (isnan(v) and not isnan(w))" if floats else "v > w"
    else:
        strict = "v < w or (isnan(w) and not isnan(v))" if floats else "v < w"
    same = "(v == w or (isnan(v) and isnan(w)))" if floats else "v == w"
    return f"{strict} or ({same} and {l} < {j})"


@expansion("TopK")
def top_k(graph, node):
    b = LoopBuilder(graph, node)
    x, values, indices = b.input(0), b.output(0), b.output(1)
    shape = b.shape(x)
    b.require_dtype(x, allowed=(*FLOATS, *INTEGERS))
    axis = norm_axis(b.attr("axis", -1), len(shape))
    k = _constant_int(b, 1, "k") if b.opset >= 10 else int(b.attr("k"))
    n = b.static_dims(x, [axis])[0]
    rows = int(np.prod([d for a, d in enumerate(shape) if a != axis and isinstance(d, int)], dtype=np.int64))
    if rows * n * n > TOPK_MAX_COMPARISONS:  # (a symbolic dim counts as 1: its size is not known here)
        raise Refused(f"ranking {rows} rows of {n} elements takes {rows * n * n} comparisons here "
                      f"(more than {TOPK_MAX_COMPARISONS}); a sort is cheaper")
    if not 0 <= k <= n:
        raise Refused(f"k={k} is outside [0, {n}]")
    floats = b.dtype(x) in FLOATS
    out_shape = list(shape)
    out_shape[axis] = k
    per_axis, j = _row_layout(len(shape), axis)
    # rank[.., j, ..] = how many elements l of the row come before element j (l innermost)
    rank = b.transient(shape, "int64", "rank")
    l = f"i{len(shape)}"
    row_j, row_l = list(per_axis), list(per_axis)
    row_l[axis] = l
    before = _before(bool(b.attr("largest", 1)), floats, l, j)
    b.map("rank", [*_row_space(shape, axis), n], f"out = 1 if {before} else 0",
          [("v", x, index(row_l)), ("w", x, index(row_j))], [("out", rank, index(row_j), "sum")])
    # idx[.., r, ..] = the j whose rank is r (exactly one per r < k)
    if indices is None:
        indices = b.transient(out_shape, "int64", "indices")
    q = params_of(len(shape) + 1)
    r, jj = q[axis], q[-1]
    at_j = list(q[:len(shape)])
    at_j[axis] = jj
    b.map("select", [*out_shape, n], f"out = {jj} if c == {r} else -1", [("c", rank, index(at_j))],
          [("out", indices, index(q[:len(shape)]), "max")], out_dtypes=["int64"])
    if values is not None:
        o = params_of(len(shape))
        source = list(o)
        source[axis] = "idx"
        b.map("values", out_shape, "out = a", [("idx", indices, index(o)), ("a", x, index(source))],
              [("out", values, index(o))])
    return b.nodes
