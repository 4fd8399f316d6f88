"""Products in general: Einsum, the integer GEMMs and convolutions, Det; and the matmul helper the
attention and recurrent expansions share.

:func:`matmul` is ``Y = alpha * A @ op(B)`` (batched and broadcast like ``np.matmul``): a GEMM
library call when every operand is float32 (the CPU backend's BLAS and generated kernels take
float32), else one map over ``(batch..., M, N, K)`` with wcr sum -- the reduced param innermost,
so the renderer accumulates in a register. Half types multiply in float32 (numpy's matmul does
for float16, and widens bfloat16), which is why callers give them a float32 result container.

* **Einsum**: one map over (output letters..., summed letters...) reading every operand at its
  letters (a letter repeated in one operand is a diagonal: the same param twice), wcr sum when
  letters are summed; a float32 batched matmul (``bij,bjk->bik`` and its transposed forms) is a
  GEMM library call instead.
* **MatMulInteger / QLinearMatMul**: ``(a - a_zp) * (b - b_zp)`` summed in int32 (exact: the
  reference's float64 products of 8-bit values are exact too); QLinearMatMul requantizes in a
  second map: ``clip(rint(acc * a_scale * b_scale / y_scale) + y_zp)`` in float64 like the reference.
* **ConvInteger / QLinearConv**: the zero points are subtracted in int32 copies of x and w (so a
  padded read, 0, means what the reference's zero padding of the shifted input means), then the
  direct convolution map of :mod:`conv_impls` accumulates in int32; QLinearConv adds the int32
  bias there and requantizes per output channel.
* **Det**: LU factorization with partial pivoting unrolled over the (static) matrix size, the
  pivot chosen like LAPACK's (first row of largest magnitude): maps per elimination step over the
  batch, the rows swapped through indirect reads.
"""

from __future__ import annotations

import math

import numpy as np

from dcopt.passes.expand import (
    LoopBuilder,
    Refused,
    affine,
    expansion,
    fmt,
    index,
    params_of,
)
from dcopt.passes.expansions.conv_impls import ConvShape, loops
from dcopt.passes.expansions.nn import _window

HALF = ("float16", "bfloat16")
FLOATS = ("float16", "bfloat16", "float32", "float64")
INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
EIGHT_BIT = ("int8", "uint8")


def widened(expr: str, dtype: str) -> str:
    """``expr`` (of element type ``dtype``) as numpy computes products of it: half types in float32."""
    return f"as_float32({expr})" if dtype in HALF else expr


def rounded(expr: str, dtype: str) -> str:
    """``expr`` rounded to ``dtype`` where numpy would round a half-type result (kernels compute
    half types in float32 and would otherwise keep the extra bits)."""
    return f"as_{dtype}({expr})" if dtype in HALF else expr


def matmul_subsets(sa, sb, sy, trans_b: bool = False):
    """(A subset, B subset, params) of ``Y = A @ op(B)`` as one map over ``(*sy, K)`` (np.matmul
    rules: a 1-D operand has no M or N dim, batch dims broadcast)."""
    if not sa or not sb:
        raise Refused("a matrix product of a scalar")
    has_m, has_n = len(sa) > 1, len(sb) > 1
    rank = len(sy)
    batch = rank - has_m - has_n
    p = params_of(rank + 1)
    kk = p[rank]

    def batch_subset(shape):
        lead = batch - len(shape)
        return [p[lead + j] if d == sy[lead + j] else "0" for j, d in enumerate(shape)]

    a_sub = batch_subset(sa[:-2]) + ([p[batch], kk] if has_m else [kk])
    n_param = p[batch + has_m]
    if has_n:
        b_sub = batch_subset(sb[:-2]) + ([n_param, kk] if trans_b else [kk, n_param])
    else:
        b_sub = [kk]
    return index(a_sub), index(b_sub), p


def matmul(b: LoopBuilder, what: str, a: str, bm: str, y: str, *, trans_b: bool = False, alpha: float = 1.0) -> None:
    """``y = alpha * a @ op(bm)``: a GEMM library call for float32, else a wcr-sum map (see module doc)."""
    sa, sb, sy = b.shape(a), b.shape(bm), b.shape(y)
    empty = 0 in (*sa, *sb)  # nothing to compute: a map (the GEMM routines expect work)
    if {b.dtype(a), b.dtype(bm), b.dtype(y)} == {"float32"} and len(sa) >= 2 and len(sb) >= 2 and not empty:
        options = {**({"alpha": float(alpha)} if alpha != 1.0 else {}), **({"transB": 1} if trans_b else {})}
        b.library(what, "gemm", [("A", a, b.full(a)), ("B", bm, b.full(bm))], [("Y", y, b.full(y))], **options)
        return
    a_sub, b_sub, p = matmul_subsets(sa, sb, sy, trans_b)
    k = sa[-1]
    term = f"{widened('a', b.dtype(a))} * {widened('c', b.dtype(bm))}"
    if alpha != 1.0:
        term = f"({term}) * {fmt(alpha)}"
    b.map(what, (*sy, k), f"out = {term}", [("a", a, a_sub), ("c", bm, b_sub)],
          [("out", y, index(p[:len(sy)]), "sum")])


# ------------------------------------------------------------------------------------ Einsum

def _parse_equation(equation: str, ranks: list[int]) -> tuple[list[list[str]], list[str]]:
    """Per operand its labels (ellipsis dims named ``...0``, ``...1``, right-aligned across
    operands) and the output's labels (numpy's implicit output when there is no ``->``)."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise Refused(f"equation {equation!r} names {len(terms)} operands, the node has {len(ranks)}")
    ell = max((r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t), default=0)
    names = [f"...{j}" for j in range(ell)]

    def labels(term: str, rank: int) -> list[str]:
        if "..." not in term:
            return list(term)
        head, tail = term.split("...")
        n = rank - len(head) - len(tail)
        return [*head, *names[ell - n:], *tail]

    operands = [labels(t, r) for t, r in zip(terms, ranks)]
    if arrow:
        out = labels(rhs, len(rhs.replace("...", "")) + ell)
    else:
        counts = {}
        for ls in operands:
            for c in ls:
                counts[c] = counts.get(c, 0) + 1
        out = [*names, *sorted(c for c, n in counts.items() if n == 1 and c not in names)]
    for ls, r in zip(operands, ranks):
        if len(ls) != r:
            raise Refused(f"equation {equation!r} does not fit operand ranks {ranks}")
    return operands, out


def _gemm_form(operands, out):
    """(transB) when ``A[batch, m, k] @ B[batch, k, n]`` (or B as [batch, n, k]) gives ``Y[batch, m, n]``."""
    if len(operands) != 2 or len(out) < 2:
        return None
    (la, lb), batch = operands, out[:-2]
    m, n = out[-2:]
    if len(la) != len(out) or la[:-2] != batch or la[-2] != m or len(set(la)) != len(la):
        return None
    k = la[-1]
    if k in out or lb[:-2] != batch or len(lb) != len(out) or len(set(lb)) != len(lb):
        return None
    if lb[-2:] == [k, n]:
        return False
    if lb[-2:] == [n, k]:
        return True
    return None


@expansion("Einsum")
def einsum(graph, node):
    b = LoopBuilder(graph, node)
    xs = [x for x in node.inputs]
    if not xs or any(not x for x in xs):
        raise Refused("an operand is omitted")
    y = b.output()
    dtype = b.dtype(xs[0])
    b.require_dtype(*xs, allowed=FLOATS + INTS)
    operands, out = _parse_equation(str(b.attr("equation")), [len(b.shape(x)) for x in xs])
    sizes: dict[str, int | str] = {}  # a label's size: the first operand's that is not a broadcast 1
    for x, ls in zip(xs, operands):
        for label, d in zip(ls, b.shape(x)):
            if sizes.get(label, 1) == 1:
                sizes[label] = d
    summed = [c for c in dict.fromkeys(c for ls in operands for c in ls) if c not in out]
    space_labels = [*out, *summed]
    if tuple(b.shape(y)) != tuple(sizes[c] for c in out):
        raise Refused(f"output shape {list(b.shape(y))} differs from the equation's {[sizes[c] for c in out]}")
    trans_b = _gemm_form(operands, out)
    if trans_b is not None and dtype == "float32" and all(
            b.shape(x)[:-2] == b.shape(y)[:-2] for x in xs):
        bm = xs[1]
        if trans_b:  # a row-major B operand for the GEMM routines
            sb = b.shape(bm)
            bm = b.transient((*sb[:-2], sb[-1], sb[-2]), dtype, "bt")
            p = params_of(len(sb))
            b.map("bt", b.shape(bm), "out = a", [("a", xs[1], index([*p[:-2], p[-1], p[-2]]))],
                  [("out", bm, index(p))])
        matmul(b, "gemm", xs[0], bm, y)
        return b.nodes
    param = dict(zip(space_labels, params_of(len(space_labels))))
    conns = [f"x{k}" for k in range(len(xs))]
    reads = []
    for conn, x, ls in zip(conns, xs, operands):
        dims = ["0" if d == 1 and sizes[c] != 1 else param[c] for c, d in zip(ls, b.shape(x))]
        reads.append((conn, x, index(dims)))
    term = " * ".join(widened(c, dtype) for c in conns)
    out_sub = index(param[c] for c in out)
    space = [sizes[c] for c in space_labels]
    if not summed:
        b.map("einsum", space, f"out = {term}", reads, [("out", y, out_sub)])
        return b.nodes
    acc = b.transient(b.shape(y), "float32", "acc") if dtype in HALF else y
    b.map("einsum", space, f"out = {term}", reads, [("out", acc, out_sub, "sum")])
    if acc != y:
        b.elementwise("a", {"a": acc}, y, what="cast")
    return b.nodes


# ------------------------------------------------------------------------------------ integer GEMM

def _zero_point_read(b: LoopBuilder, zp: str | None, operand_shape, params, per_axis: int | None, conn: str):
    """In-memlet of a zero point (or scale) applied to an operand indexed by ``params``: a 1-D
    value of several entries runs along ``per_axis`` of the operand, anything else broadcasts."""
    if zp is None:
        return None
    shape = b.shape(zp)
    if len(shape) == 1 and per_axis is not None:
        return (conn, zp, "0" if shape[0] == 1 else params[per_axis])
    if not shape:
        return (conn, zp, "")
    return (conn, zp, b.broadcast(zp, operand_shape, params))


def _integer_product(b: LoopBuilder, a, a_zp, bm, b_zp, acc) -> None:
    """acc[int32] = sum_k (a - a_zp) * (b - b_zp) over the matmul's K."""
    sa, sb, sy = b.shape(a), b.shape(bm), b.shape(acc)
    if len(sa) < 2 or len(sb) < 2:
        raise Refused("integer products of 1-D operands")
    a_sub, b_sub, p = matmul_subsets(sa, sb, sy)
    a_params = [s.strip() for s in a_sub.split(",")]
    b_params = [s.strip() for s in b_sub.split(",")]
    reads = [("a", a, a_sub), ("c", bm, b_sub)]
    za = _zero_point_read(b, a_zp, sa, a_params, len(sa) - 2, "za")
    zb = _zero_point_read(b, b_zp, sb, b_params, len(sb) - 1, "zb")
    left = "as_int32(a)" + (" - as_int32(za)" if za else "")
    right = "as_int32(c)" + (" - as_int32(zb)" if zb else "")
    reads += [r for r in (za, zb) if r]
    b.map("product", (*sy, sa[-1]), f"out = ({left}) * ({right})", reads, [("out", acc, index(p[:len(sy)]), "sum")],
          ["int32"])


def requantize(b: LoopBuilder, acc: str, scale_reads, scale_code: str, y_zp: str | None, y: str) -> None:
    """y = saturate(rint(acc * scale) + y_zp) in float64, the reference's arithmetic."""
    shape = b.shape(y)
    p = params_of(len(shape))
    info = np.iinfo(np.dtype(b.dtype(y)))
    value = f"rint(as_float64(a) * ({scale_code}))" + (" + as_float64(z)" if y_zp else "")
    reads = [("a", acc, index(p)), *scale_reads]
    if y_zp:
        reads.append(("z", y_zp, "" if not b.shape(y_zp) else b.broadcast(y_zp, shape)))
    b.map("requantize", shape, f"out = as_{b.dtype(y)}(min(max({value}, {float(info.min)}), {float(info.max)}))",
          reads, [("out", y, index(p))])


@expansion("MatMulInteger")
def matmul_integer(graph, node):
    b = LoopBuilder(graph, node)
    a, bm = b.input(0), b.input(1)
    a_zp, b_zp = b.input(2, optional=True), b.input(3, optional=True)
    b.require_dtype(a, bm, a_zp, b_zp, allowed=EIGHT_BIT)
    _integer_product(b, a, a_zp, bm, b_zp, b.output())
    return b.nodes


@expansion("QLinearMatMul")
def qlinear_matmul(graph, node):
    b = LoopBuilder(graph, node)
    a, a_scale, a_zp, bm, b_scale, b_zp, y_scale, y_zp = (b.input(i, optional=i in (2, 5, 7)) for i in range(8))
    b.require_dtype(a, bm, a_zp, b_zp, y_zp, allowed=EIGHT_BIT)
    b.require_dtype(a_scale, b_scale, y_scale, allowed=FLOATS)
    y = b.output()
    acc = b.transient(b.shape(y), "int32", "acc")
    _integer_product(b, a, a_zp, bm, b_zp, acc)
    shape = b.shape(y)
    p = params_of(len(shape))
    sa = b.shape(a_scale)
    a_read = ("sa", a_scale, "" if not sa else ("0" if sa[-1] == 1 and len(sa) == 1 else p[-2]) if len(sa) == 1
              else b.broadcast(a_scale, shape))
    reads = [a_read, ("sb", b_scale, "" if not b.shape(b_scale) else b.broadcast(b_scale, shape)),
             ("sy", y_scale, "" if not b.shape(y_scale) else b.broadcast(y_scale, shape))]
    requantize(b, acc, reads, "as_float64(sa) * as_float64(sb) / as_float64(sy)", y_zp, y)
    return b.nodes


# ------------------------------------------------------------------------------------ integer Conv

def _shifted(b: LoopBuilder, t: str, zp: str | None, per_channel: bool, hint: str) -> str:
    """int32 copy of ``t`` minus its zero point (a 1-D zero point of several values per axis-0 index)."""
    shape = b.shape(t)
    out = b.transient(shape, "int32", hint)
    p = params_of(len(shape))
    reads = [("a", t, index(p))]
    code = "out = as_int32(a)"
    if zp:
        zs = b.shape(zp)
        sub = "" if not zs else ("0" if math.prod(zs) == 1 else p[0]) if len(zs) == 1 else None
        if sub is None or (not per_channel and sub == p[0]):
            raise Refused(f"zero point '{zp}' of shape {list(zs)} is not a scalar or per-channel vector")
        if len(zs) == 1 and math.prod(zs) == 1 and zs[0] != 1:
            sub = "0"
        reads.append(("z", zp, sub))
        code += " - as_int32(z)"
    b.map(hint, shape, code, reads, [("out", out, index(p))])
    return out


def _integer_conv(b: LoopBuilder, x, x_zp, w, w_zp, bias, acc) -> None:
    """acc[int32] = conv(x - x_zp, w - w_zp) (+ bias): the direct convolution map over shifted copies."""
    kernel = b.static_dims(w, range(2, len(b.shape(w))))
    _, kernel, strides, dilations, out, begin, end = _window(b, x, kernel)
    (channels,), (filters,) = b.static_dims(x, [1]), b.static_dims(w, [0])
    group = int(b.attr("group", 1))
    if group <= 0 or channels % group or filters % group or b.shape(w)[1] != channels // group:
        raise Refused(f"group={group} does not fit C={channels}, M={filters}")
    xs = _shifted(b, x, x_zp, False, "xshift")
    ws = _shifted(b, w, w_zp, True, "wshift")
    shape = ConvShape(xs, ws, bias, acc, channels, filters, group, tuple(kernel), tuple(strides), tuple(dilations),
                      tuple(out), tuple(begin), any(begin) or any(end))
    loops(b, shape, {})


@expansion("ConvInteger")
def conv_integer(graph, node):
    b = LoopBuilder(graph, node)
    x, w = b.input(0), b.input(1)
    x_zp, w_zp = b.input(2, optional=True), b.input(3, optional=True)
    b.require_dtype(x, w, x_zp, w_zp, allowed=EIGHT_BIT)
    _integer_conv(b, x, x_zp, w, w_zp, None, b.output())
    return b.nodes


@expansion("QLinearConv")
def qlinear_conv(graph, node):
    b = LoopBuilder(graph, node)
    x, x_scale, x_zp, w, w_scale, w_zp, y_scale = (b.input(i) for i in range(7))
    y_zp, bias = b.input(7, optional=True), b.input(8, optional=True)
    b.require_dtype(x, w, x_zp, w_zp, y_zp, allowed=EIGHT_BIT)
    b.require_dtype(x_scale, w_scale, y_scale, allowed=FLOATS)
    if bias:
        b.require_dtype(bias, allowed=("int32",))
    y = b.output()
    acc = b.transient(b.shape(y), "int32", "acc")
    _integer_conv(b, x, x_zp, w, w_zp, bias, acc)
    ws = b.shape(w_scale)
    if len(ws) > 1 or math.prod(ws) not in (1, b.shape(y)[1]):
        raise Refused(f"w_scale of shape {list(ws)} is not a scalar or per-channel vector")
    w_sub = "" if not ws else ("0" if ws[0] == 1 else "i1")
    scalar = lambda name: "" if not b.shape(name) else index(["0"] * len(b.shape(name)))
    if math.prod(b.shape(x_scale)) != 1 or math.prod(b.shape(y_scale)) != 1:
        raise Refused("x_scale and y_scale must be scalars")
    reads = [("sx", x_scale, scalar(x_scale)), ("sw", w_scale, w_sub), ("sy", y_scale, scalar(y_scale))]
    requantize(b, acc, reads, "as_float64(sx) * as_float64(sw) / as_float64(sy)",
               y_zp if y_zp else None, y)
    return b.nodes


# ------------------------------------------------------------------------------------ Det

#: Largest matrix the unrolled LU is built for (its map count grows with n).
DET_MAX = 16


@expansion("Det")
def det(graph, node):
    """LU with partial pivoting unrolled over the static size ``n``; the determinant is the sign
    of the row swaps times the product of the pivots. Computed in float32 for float32 input and
    float64 otherwise (the reference widens half types to float64)."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS)
    shape = b.shape(x)
    if len(shape) < 2:
        raise Refused("Det needs a matrix")
    n, n2 = b.static_dims(x, [len(shape) - 2, len(shape) - 1])
    if n != n2 or n > DET_MAX:
        raise Refused(f"Det of {n}x{n2} matrices (expanded for square ones up to {DET_MAX})")
    batch = tuple(shape[:-2])
    nb = len(batch)
    work = "float32" if b.dtype(x) == "float32" else "float64"
    full = params_of(nb + 2)
    lead, (i, j) = full[:nb], full[nb:]
    per_matrix = index([*lead, "0"])
    cur = b.transient((*batch, n, n), work, "lu")
    b.map("load", (*batch, n, n), f"out = as_{work}(a)", [("a", x, index(full))], [("out", cur, index(full))])
    sign = None
    for k in range(n - 1):
        below = index([*lead, affine([(1, i)], k), str(k)])  # column k from row k down, i counting from 0
        big = b.transient((*batch, 1), work, f"big{k}")
        b.map(f"big{k}", (*batch, n - k), "out = abs(a)", [("a", cur, below)], [("out", big, per_matrix, "max")])
        piv = b.transient((*batch, 1), "int64", f"piv{k}")
        b.map(f"pivot{k}", (*batch, n - k), f"out = {i} + {k} if abs(a) == m else {n - 1}",
              [("a", cur, below), ("m", big, per_matrix)], [("out", piv, per_matrix, "min")])
        nxt = b.transient((*batch, n, n), work, f"lu{k + 1}")
        reads = [("r", piv, per_matrix), ("a", cur, index(full)),
                 ("u", cur, index([*lead, "r", j])),  # the pivot row: row k after the swap
                 ("top", cur, index([*lead, str(k), j])),  # row k: moves to the pivot's place
                 ("d", cur, index([*lead, "r", str(k)])),  # the pivot
                 ("s", cur, index([*lead, i, str(k)])), ("sk", cur, index([*lead, str(k), str(k)]))]
        code = "\n".join([
            f"src = u if {i} == {k} else (top if {i} == r else a)",
            f"f = (sk if {i} == r else s) / d if {i} > {k} and d != 0.0 else 0.0",
            f"out = src - f * u if {i} > {k} and {j} > {k} else (0.0 if {i} > {k} else src)",
        ])
        b.map(f"eliminate{k}", (*batch, n, n), code, reads, [("out", nxt, index(full))])
        flip = b.transient((*batch, 1), work, f"sign{k}")
        reads = [("r", piv, per_matrix)] + ([("s", sign, per_matrix)] if sign else [])
        b.map(f"sign{k}", (*batch, 1), f"out = {'s' if sign else '1.0'} * (1.0 if r == {k} else -1.0)", reads,
              [("out", flip, index(full[:nb + 1]))])
        sign, cur = flip, nxt
    prod = b.transient((*batch, 1), work, "prod")
    b.map("diagonal", (*batch, n), "out = a", [("a", cur, index([*lead, i, i]))], [("out", prod, per_matrix, "prod")])
    reads = [("a", prod, index([*lead, "0"]))] + ([("s", sign, index([*lead, "0"]))] if sign else [])
    b.map("det", batch, f"out = {'s * a' if sign else 'a'}", reads, [("out", y, index(lead))])
    return b.nodes
