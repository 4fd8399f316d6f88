"""Attention ops -> GEMM library calls around row-fused softmax maps.

dcopt's ``Attention`` (domain ``dcopt``: what ``recognize-ops`` writes for the decomposed
scaled-dot-product attention exporters emit)::

    scores = gemm(q, k, transB=1, alpha=scale)          one batched library call, K used transposed
    m[r]   = max_j (scores[r, j] + mask[r, j])           \\
    e[r,j] = exp(scores[r, j] + mask[r, j] - m[r])       } maps over the rows (softmax_maps): one
    s[r]   = sum_j e[r, j]                               } kernel, one pass per row, m and s in
    p[r,j] = e[r, j] / s[r]                             /  registers
    out    = gemm(p, v)

The mask is added where it is read instead of being materialized with the scores. With
``zero_nan_probs`` a row whose logits are all -inf gives zeros. float64 products are maps
(:func:`linalg.matmul`): the CPU GEMM routines take float32.

ONNX ``Attention`` (opset 23+) is the same pipeline with everything the spec adds written into
the maps' tasklets and memlets (:func:`onnx_attention`): head splitting of 3-D inputs and KV-cache
concatenation are index arithmetic in the maps reading K (the K^T copy, or the scores map) and
copy maps for V and the ``present_key``/``present_value`` outputs when wired; grouped-query heads
are a layout -- the scores live as ``[B, kv_heads, group * S, T]``, which is byte for byte
``[B, q_heads, S, T]``, so one batched GEMM serves every query head of a KV head -- and the
bias (mask, causal/window frontier, KV padding) is an expression of the row and key indices
read where the logits are formed. The half types follow the reference's rounding step by step
(``as_float16`` wherever numpy rounds), so they agree with it to the last bit up to summation order.

FlexAttention shares that pipeline (no bias; its ``score_mod``/``prob_mod`` subgraphs inlined as
loops). The one-map transformer ops around attention (RotaryEmbedding, SwiGLU, TensorScatter)
are in :mod:`dcopt.passes.expansions.transformer_ops`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from onnx import helper

from dcopt.passes.expand import LoopBuilder, Refused, expansion, fmt, index, params_of
from dcopt.passes.expansions.linalg import HALF, matmul, rounded, widened
from dcopt.passes.expansions.reduction import softmax_maps

FLOATS = ("float32", "float64")
ANY_FLOAT = ("float16", "bfloat16", "float32", "float64")
#: Longest rows whose bfloat16 softmax sum is unrolled to round after every addition like the
#: reference; longer rows sum in float32 (within an ulp of bfloat16 of the reference).
UNROLLED_BF16_SUM = 64


@expansion("Attention", domain="dcopt")
def dcopt_attention(graph, node):
    b = LoopBuilder(graph, node)
    q, k, v = b.input(0), b.input(1), b.input(2)
    mask = b.input(3, optional=True)
    b.require_dtype(q, k, v, allowed=FLOATS)
    if mask:
        b.require_dtype(mask, allowed=FLOATS)
    y = b.output()
    qs, ks = b.shape(q), b.shape(k)
    if len(qs) < 2 or len(ks) < 2:
        raise Refused("q and k need rank >= 2")
    scores_shape = (*[max(a, c) if isinstance(a, int) and isinstance(c, int) else a
                      for a, c in zip(qs[:-2], ks[:-2])], qs[-2], ks[-2])
    dtype = b.dtype(q)
    scores = b.transient(scores_shape, dtype, "scores")
    probs = b.transient(scores_shape, dtype, "probs")
    scale = float(b.attr("scale", 1.0))
    if dtype != "float32":  # a map reads K transposed in place
        matmul(b, "qk", q, k, scores, trans_b=True, alpha=scale)
    else:
        kt = k
        if b.constant(k) is None:  # K^T as a copy map: the GEMM routines then read plain row-major operands
            kt = b.transient((*ks[:-2], ks[-1], ks[-2]), b.dtype(k), "kt")
            p = params_of(len(ks))
            b.map("kt", b.shape(kt), "out = a", [("a", k, index([*p[:-2], p[-1], p[-2]]))], [("out", kt, index(p))])
        b.library("qk", "gemm", [("A", q, b.full(q)), ("B", kt, b.full(kt))], [("Y", scores, b.full(scores))],
                  alpha=scale, transB=int(kt == k), transA=0)
    softmax_maps(b, scores, probs, (len(scores_shape) - 1,), mask=mask, zero_nan=bool(b.attr("zero_nan_probs", 0)))
    matmul(b, "pv", probs, v, y)
    return b.nodes


# ------------------------------------------------------------------------------------ ONNX Attention

@dataclass(frozen=True)
class Heads:
    """Sizes of one Attention node: batch, query/KV heads, query rows, cached and new keys,
    head sizes; ``g`` query heads share each KV head."""

    batch: int
    q_heads: int
    kv_heads: int
    rows: int  # S
    past: int  # P
    new: int  # L
    size: int  # D (q, k)
    v_size: int  # Dv
    rank3: bool

    @property
    def keys(self) -> int:  # T
        return self.past + self.new

    @property
    def g(self) -> int:
        return self.q_heads // self.kv_heads


def _heads(b: LoopBuilder, q, k, v, past_k, past_v) -> Heads:
    qs, ks, vs = (b.static_dims(x, range(len(b.shape(x)))) for x in (q, k, v))
    if len(qs) == 3:
        hq, hkv = int(b.attr("q_num_heads") or 0), int(b.attr("kv_num_heads") or 0)
        if not hq or not hkv or qs[2] % hq or ks[2] % hkv or vs[2] % hkv:
            raise Refused("3-D attention needs q_num_heads and kv_num_heads dividing the hidden sizes")
        shape = Heads(qs[0], hq, hkv, qs[1], 0, ks[1], qs[2] // hq, vs[2] // hkv, True)
    elif len(qs) == 4:
        shape = Heads(qs[0], qs[1], ks[1], qs[2], 0, ks[2], qs[3], vs[3], False)
    else:
        raise Refused(f"Q of rank {len(qs)} (3 or 4 expected)")
    if past_k:
        if not past_v or b.static_dims(past_k, [2]) != b.static_dims(past_v, [2]):
            raise Refused("past_key and past_value must come together, with equal lengths")
        shape = dataclasses.replace(shape, past=b.static_dims(past_k, [2])[0])
    if shape.kv_heads and shape.q_heads % shape.kv_heads:
        raise Refused(f"{shape.q_heads} query heads do not share {shape.kv_heads} KV heads evenly")
    if min(shape.kv_heads, shape.keys, shape.size) == 0:  # (the reference fails on no keys)
        raise Refused("no KV heads, keys or head features")
    return shape


@dataclass(frozen=True)
class Coords:
    """Index expressions of one element of the scores, over a map's params, in both layouts:
    ``(b, h, r)`` the grouped row (KV head, ``r = j * S + s`` for query head ``h * g + j``) and
    ``(b, hq, s)`` the query head and row; ``t`` the key."""

    b: str
    h: str
    r: str
    hq: str
    s: str
    t: str


def _grouped(n: Heads) -> Coords:
    """Coordinates of a map over the grouped scores ``[B, kv_heads, g * S, T]``."""
    if n.g == 1:
        return Coords("i0", "i1", "i2", "i1", "i2", "i3")
    return Coords("i0", "i1", "i2", f"i1 * {n.g} + i2 // {n.rows}", f"i2 % {n.rows}", "i3")


def _standard(n: Heads) -> Coords:
    """Coordinates of a map over ``[B, q_heads, S, T]`` (the qk_matmul_output)."""
    if n.g == 1:
        return Coords("i0", "i1", "i2", "i1", "i2", "i3")
    return Coords("i0", f"i1 // {n.g}", f"(i1 % {n.g}) * {n.rows} + i2", "i1", "i2", "i3")


def _split_read(conn: str, x: str, rank3: bool, b_, h, row, d, size: int, row_offset: int = 0, outside=None):
    """In-memlet reading head ``h``, row ``row`` (minus ``row_offset``), feature ``d`` of a 4-D
    ``[B, H, rows, size]`` or 3-D ``[B, rows, H * size]`` input."""
    row = f"{row} - {row_offset}" if row_offset else row
    sub = [b_, row, f"({h}) * {size} + {d}"] if rank3 else [b_, h, row, d]
    return (conn, x, index(sub)) + ((outside,) if outside is not None else ())


def _cache_code(b: LoopBuilder, n: Heads, new: str, past: str | None, size: int, b_, h, t, d):
    """(tasklet expression, reads) of element (b, h, t, d) of the key (or value) cache: the past
    entries, then the new ones (head-split when 3-D)."""
    if not past:
        return "x", [_split_read("x", new, n.rank3, b_, h, t, d, size)]
    reads = [("p", past, index([b_, h, t, d]), 0.0), _split_read("x", new, n.rank3, b_, h, t, d, size, n.past, 0.0)]
    return f"p if {t} < {n.past} else x", reads


def _cache(b: LoopBuilder, n: Heads, new: str, past: str | None, size: int, present: str | None, hint: str) -> str:
    """The ``[B, kv_heads, T, size]`` cache as a container: ``present`` when wired, the input
    itself when it already is one, else a transient written by a copy map."""
    if present is None and past is None and not n.rank3:
        return new
    target = present or b.transient((n.batch, n.kv_heads, n.keys, size), b.dtype(new), hint)
    p = params_of(4)
    code, reads = _cache_code(b, n, new, past, size, *p)
    b.map(hint, (n.batch, n.kv_heads, n.keys, size), f"out = {code}", reads, [("out", target, index(p))])
    return target


@dataclass
class Logits:
    """How one element's logit, bias and debug values are computed (see :func:`_logit_code`)."""

    code: list[str]  # statements assigning sc (score), cap (after softcap), z (bias) and x (logit)
    reads: list[tuple]
    has_bias: bool


def _logit_code(b: LoopBuilder, n: Heads, c: Coords, scores: str, mask, nonpad, dtype: str, prec: str) -> Logits:
    """Statements computing, for the element at coordinates ``c``: ``sc`` the scaled score,
    ``cap`` after softcap, ``z`` the bias and ``x`` the logit in the softmax precision -- with
    the reference's rounding to the input dtype after each numpy operation."""
    reads = [("a", scores, index([c.b, c.h, c.r, c.t]))]
    code = [f"sc = {rounded('a', dtype)}"]
    softcap = float(b.attr("softcap", 0.0) or 0.0)
    if softcap > 0:
        cap = fmt(softcap)
        inner = rounded(f"sc / {cap}", dtype)
        code.append(f"cap = {rounded(cap + ' * ' + rounded(f'tanh({inner})', dtype), dtype)}")
    else:
        code.append("cap = sc")
    terms = []
    if mask:
        mshape = b.shape(mask)
        if len(mshape) > 4:
            raise Refused(f"attn_mask of rank {len(mshape)}")
        targets = [(c.b, n.batch), (c.hq, n.q_heads), (c.s, n.rows)][4 - len(mshape):] if len(mshape) > 1 else []
        dims = []
        for (expr, size), d in zip(targets, mshape[:-1]):
            if d not in (1, size):
                raise Refused(f"attn_mask of shape {list(mshape)} does not broadcast to the scores")
            dims.append("0" if d == 1 else expr)
        if mshape[-1] > n.keys:
            raise Refused(f"attn_mask has {mshape[-1]} keys, more than the {n.keys} attended")
        boolean = b.dtype(mask) == "bool"
        short = mshape[-1] < n.keys  # the reference pads the missing keys as masked
        reads.append(("c", mask, index([*dims, c.t])) + (((0.0 if boolean else -math.inf),) if short else ()))
        terms.append("(0.0 if c else -inf)" if boolean else "c")
    conditions = []
    if nonpad:
        reads.append(("n", nonpad, c.b))
    offset = str(n.past) if n.past else (f"n - {n.rows}" if nonpad else "0")
    distance = f"({c.s}) + {offset} - ({c.t})" if offset != "0" else f"({c.s}) - ({c.t})"
    if int(b.attr("is_causal", 0) or 0):
        conditions.append(f"{distance} >= 0")
    left, right = int(b.attr("left_window_size", -1)), int(b.attr("right_window_size", -1))
    if left >= 0:
        conditions.append(f"{distance} <= {left}")
    if right >= 0:
        conditions.append(f"{distance} >= {-right}")
    if nonpad:
        conditions.append(f"{c.t} < n")
    if conditions:
        terms.append(f"(0.0 if {' and '.join(conditions)} else -inf)")
    if terms:
        code.append(f"z = {rounded(' + '.join(terms), dtype)}")
        code.append(f"x = {rounded('cap + z', dtype)}")
    else:
        code.append("x = cap")
    if prec != dtype:
        code.append(f"x = as_{prec}(x)")
    return Logits(code, reads, bool(terms))


def _precision(b: LoopBuilder, dtype: str) -> str:
    value = b.attr("softmax_precision")
    if value is None:
        return dtype
    prec = helper.tensor_dtype_to_np_dtype(int(value))
    name = "bfloat16" if prec.kind == "V" else prec.name
    if name not in ANY_FLOAT:
        raise Refused(f"softmax_precision {name}")
    return name


#: The softmax's shift of a row with maximum ``m``: ONNX Attention's safe softmax shifts
#: an all -inf row by 0; FlexAttention's softmax shifts by 0 whenever the maximum is not finite.
SAFE_SHIFT = "0.0 if m == -inf else m"
FINITE_SHIFT = "m if abs(m) < inf else 0.0"


@expansion("Attention")
def onnx_attention(graph, node):
    """ONNX Attention (see the module docstring): caches, scores, softmax, product, outputs."""
    b = LoopBuilder(graph, node)
    q, k, v = b.input(0), b.input(1), b.input(2)
    mask, past_k, past_v, nonpad = (b.input(i, optional=True) for i in range(3, 7))
    dtype = b.dtype(q)
    b.require_dtype(q, k, v, past_k, past_v, allowed=(dtype,) if dtype in ANY_FLOAT else ANY_FLOAT)
    if mask:
        b.require_dtype(mask, allowed=(dtype, "bool"))
    if nonpad:
        b.require_dtype(nonpad, allowed=("int64", "int32"))
    n = _heads(b, q, k, v, past_k, past_v)
    prec = _precision(b, dtype)
    y, present_k, present_v, debug = (b.output(i) for i in range(4))
    scale = b.attr("scale")
    scale = 1 / math.sqrt(n.size) if scale is None else float(scale)
    grouped = (n.batch, n.kv_heads, n.g * n.rows, n.keys)
    if present_k:  # K is read where it is used; present_key is written only when wired
        _cache(b, n, k, past_k, n.size, present_k, "kcache")

        def key(*at):
            return "x", [("x", present_k, index(at))]
    else:
        def key(*at):
            return _cache_code(b, n, k, past_k, n.size, *at)
    vc = _cache(b, n, v, past_v, n.v_size, present_v, "vcache")
    scores = _scores(b, n, q, key, dtype, _root(scale, dtype), grouped)
    logits = _logit_code(b, n, _grouped(n), scores, mask, nonpad, dtype, prec)
    keep = float(b.attr("softcap", 0.0) or 0.0) > 0 or dtype in HALF  # a tanh or rounding steps: computed once
    probs = _softmax(b, n, logits, grouped, dtype, prec, dtype, SAFE_SHIFT, keep)
    _product(b, n, probs, vc, y, dtype, grouped)
    if debug:
        _debug_output(b, n, scores, probs, mask, nonpad, dtype, debug)
    return b.nodes


def _root(scale: float, dtype: str) -> float:
    """sqrt(scale) as the reference has it: computed in float32, held in the input dtype."""
    import ml_dtypes  # noqa: F401  (bfloat16)

    typ = np.dtype("bfloat16") if dtype == "bfloat16" else np.dtype(dtype)
    return float(np.asarray(np.sqrt(np.float32(scale))).astype(typ))


def _scores(b: LoopBuilder, n: Heads, q: str, key, dtype: str, root: float, grouped) -> str:
    """(q * root) @ (k * root)^T in the grouped layout: float32 as a GEMM (Q regrouped by a copy
    map when needed, K transposed by one, read straight from the cache's sources); other dtypes as
    one map with the reference's rounding of the scaled operands, summing in float32 for half
    types. ``key(b, h, t, d)`` gives (expression, reads) of a key element."""
    p = params_of(5)
    c = _grouped(n)
    if dtype == "float32":
        qg = q if not n.rank3 and n.g == 1 else b.transient((*grouped[:3], n.size), dtype, "qg")
        if qg != q:
            b.map("qg", b.shape(qg), "out = a", [_split_read("a", q, n.rank3, p[0], c.hq, c.s, p[3], n.size)],
                  [("out", qg, index(p[:4]))])
        kt = b.transient((n.batch, n.kv_heads, n.size, n.keys), dtype, "kt")  # row-major B operand
        value, reads = key(p[0], p[1], p[3], p[2])
        b.map("kt", b.shape(kt), f"out = {value}", reads, [("out", kt, index(p[:4]))])
        scores = b.transient(grouped, dtype, "scores")
        matmul(b, "qk", qg, kt, scores, alpha=root * root)
        return scores
    scores = b.transient(grouped, "float32" if dtype in HALF else dtype, "scores")
    r = fmt(root)
    value, reads = key(p[0], p[1], p[3], p[4])
    term = f"{widened(rounded(f'a * {r}', dtype), dtype)} * {widened(rounded(f'({value}) * {r}', dtype), dtype)}"
    b.map("qk", (*grouped, n.size), f"out = {term}",
          [_split_read("a", q, n.rank3, p[0], c.hq, c.s, p[4], n.size), *reads],
          [("out", scores, index(p[:4]), "sum")])
    return scores


def _softmax(b: LoopBuilder, n: Heads, logits: Logits, grouped, dtype: str, prec: str, probs_dtype: str,
             shift: str, keep: bool) -> str:
    """Softmax of the logits over the keys in ``prec``: a map forming the logits (stored when
    ``keep``: they cost a tanh or rounding steps) with the row maxima of logit and bias, one
    writing the exponentials and their sum, one normalizing (rows whose bias masks every key
    give zeros) -- one kernel over the rows."""
    full, row = index(params_of(4)), "i0, i1, i2, 0"
    stat = (*grouped[:3], 1)
    m = b.transient(stat, prec, "max")
    writes = [("mx", m, row, "max")]
    code = list(logits.code) + ["mx = x"]
    if logits.has_bias:
        zm = b.transient(stat, dtype, "biasmax")
        writes.append(("mz", zm, row, "max"))
        code.append("mz = z")
    if keep:
        xs = b.transient(grouped, prec, "logits")
        writes.append(("lx", xs, full))
        code.append("lx = x")
    b.map("logits", grouped, "\n".join(code), logits.reads, writes)
    e = b.transient(grouped, prec, "exp")
    head, reads = ([], [("x", xs, full)]) if keep else (list(logits.code), list(logits.reads))
    shifted = rounded(f"x - ({shift})", prec)
    code = [*head, f"e = {rounded(f'exp({shifted})', prec)}"]
    if prec == "bfloat16" and n.keys <= UNROLLED_BF16_SUM:
        b.map("exp", grouped, "\n".join(code), [*reads, ("m", m, row)], [("e", e, full)])
        s = _sequential_sum(b, e, stat, n.keys, prec)
    else:  # numpy sums float16 in float32 (and a kernel holds bfloat16 sums of long rows so too)
        s = b.transient(stat, "float32" if prec in HALF else prec, "sum")
        b.map("exp", grouped, "\n".join([*code, "out = e"]), [*reads, ("m", m, row)],
              [("e", e, full), ("out", s, row, "sum")])
    probs = b.transient(grouped, probs_dtype, "probs")
    total = rounded("s", prec)  # a register in the kernel: rounded as the container would be
    if shift == SAFE_SHIFT:
        value = rounded(f"e / (1.0 if {total} == 0.0 else {total})", prec)
    else:
        value = rounded(f"e / {total}", prec)
    reads = [("e", e, full), ("s", s, row)]
    if logits.has_bias:
        value = f"0.0 if mz == -inf else {value}"
        reads.append(("mz", zm, row))
    b.map("normalize", grouped, f"out = {value}", reads, [("out", probs, full)])
    return probs


def _sequential_sum(b: LoopBuilder, e: str, stat, keys: int, prec: str) -> str:
    """Row sums of ``e`` rounded to ``prec`` after every addition, in key order: numpy reduces
    ml_dtypes' bfloat16 through its scalar add loop, so that is the reference's sum."""
    s = b.transient(stat, prec, "sum")
    reads = [(f"e{t}", e, f"i0, i1, i2, {t}") for t in range(keys)]
    total = "e0"
    for t in range(1, keys):
        total = rounded(f"{total} + e{t}", prec)
    b.map("sum", stat, f"out = {total}", reads, [("out", s, "i0, i1, i2, i3")])
    return s


def _product(b: LoopBuilder, n: Heads, probs: str, vc: str, y: str, dtype: str, grouped,
             accumulate: str | None = None) -> None:
    """y = probs @ V per KV head (grouped layout), then into Y's layout when that differs;
    summed in ``accumulate`` (default: the dtype, float32 for half types)."""
    out_g = (*grouped[:3], n.v_size)
    acc = accumulate or ("float32" if dtype in HALF else dtype)
    direct = not n.rank3 and n.g == 1 and acc == dtype
    yg = y if direct else b.transient(out_g, acc, "yg")
    matmul(b, "pv", probs, vc, yg)
    if direct:
        return
    shape = b.shape(y)
    p = params_of(len(shape))
    if n.rank3:  # [B, S, q_heads * Dv]
        hq, d, s = f"i2 // {n.v_size}", f"i2 % {n.v_size}", "i1"
    else:
        hq, s, d = "i1", "i2", "i3"
    h = hq if n.g == 1 else f"({hq}) // {n.g}"
    r = s if n.g == 1 else f"(({hq}) % {n.g}) * {n.rows} + {s}"
    b.map("merge", shape, "out = a", [("a", yg, index([p[0], h, r, d]))], [("out", y, index(p))])


def _debug_output(b: LoopBuilder, n: Heads, scores, probs, mask, nonpad, dtype, debug) -> None:
    """qk_matmul_output ``[B, q_heads, S, T]``: the scores, softcapped scores, logits (with the
    bias) or probabilities, by ``qk_matmul_output_mode``."""
    mode = int(b.attr("qk_matmul_output_mode", 0) or 0)
    c = _standard(n)
    space = (n.batch, n.q_heads, n.rows, n.keys)
    if mode == 3:
        b.map("qk_output", space, "out = a", [("a", probs, index([c.b, c.h, c.r, c.t]))],
              [("out", debug, index(params_of(4)))])
        return
    logits = _logit_code(b, n, c, scores, mask, nonpad, dtype, dtype)
    pick = {0: "sc", 1: "cap", 2: "x"}.get(mode)
    if pick is None:
        raise Refused(f"qk_matmul_output_mode {mode}")
    code = [line for line in logits.code if mode == 2 or not line.startswith(("z =", "x ="))]
    b.map("qk_output", space, "\n".join([*code, f"out = {pick}"]),
          logits.reads if mode == 2 else logits.reads[:1], [("out", debug, index(params_of(4)))])


# ------------------------------------------------------------------------------------ FlexAttention

@expansion("FlexAttention", domain="ai.onnx.preview")
def flex_attention(graph, node):
    """Attention without mask, bias or caches, softmax in ``softmax_precision`` (float32, or
    float64 for float64 inputs) and the product with V in that precision. The ``score_mod`` and
    ``prob_mod`` subgraphs are inlined (:func:`inline_subgraph`) on the scores/probabilities in
    the ``[B, q_heads, S, T]`` layout they are defined on."""
    b = LoopBuilder(graph, node)
    q, k, v = b.input(0), b.input(1), b.input(2)
    dtype = b.dtype(q)
    b.require_dtype(q, k, v, allowed=(dtype,) if dtype in ANY_FLOAT else ANY_FLOAT)
    if len(b.shape(q)) != 4:
        raise Refused("FlexAttention takes 4-D Q, K, V")
    n = _heads(b, q, k, v, None, None)

    def key(*at):
        return "x", [("x", k, index(at))]

    prec = "float64" if dtype == "float64" else "float32"
    if b.attr("softmax_precision") is not None:
        prec = _precision(b, dtype)
    scale = b.attr("scale")
    scale = 1 / math.sqrt(n.size) if scale is None else float(scale)
    grouped = (n.batch, n.kv_heads, n.g * n.rows, n.keys)
    standard = (n.batch, n.q_heads, n.rows, n.keys)
    scores = _scores(b, n, q, key, dtype, _root(scale, dtype), grouped)
    c = _grouped(n)
    score_mod, prob_mod = b.attr("score_mod"), b.attr("prob_mod")
    if score_mod is not None:  # the subgraph on [B, q_heads, S, T] scores in the softmax precision
        s = _standard(n)
        xs = b.transient(standard, prec, "scores_std")
        b.map("scores_std", standard, f"out = {rounded('a', dtype)}", [("a", scores, index([s.b, s.h, s.r, s.t]))],
              [("out", xs, index(params_of(4)))])
        modded = inline_subgraph(b, score_mod, xs, "score_mod")
        logits = Logits(["x = a"], [("a", modded, index([c.b, c.hq, c.s, c.t]))], False)
    else:
        code = [f"sc = {rounded('a', dtype)}", "x = sc" if prec == dtype else f"x = as_{prec}(sc)"]
        logits = Logits(code, [("a", scores, index([c.b, c.h, c.r, c.t]))], False)
    probs = _softmax(b, n, logits, grouped, dtype, prec, prec, FINITE_SHIFT, keep=dtype in HALF)
    if prob_mod is not None:
        probs = _regrouped(b, n, inline_subgraph(b, prob_mod, _ungrouped(b, n, probs, standard), "prob_mod"),
                           grouped)
    _product(b, n, probs, v, b.output(), dtype, grouped, accumulate=prec)
    return b.nodes


def _ungrouped(b: LoopBuilder, n: Heads, x: str, standard) -> str:
    """``x`` from the grouped layout in ``[B, q_heads, S, T]`` (the same container when g == 1)."""
    if n.g == 1:
        return x
    out = b.transient(standard, b.dtype(x), "std")
    s = _standard(n)
    b.map("ungroup", standard, "out = a", [("a", x, index([s.b, s.h, s.r, s.t]))], [("out", out, index(params_of(4)))])
    return out


def _regrouped(b: LoopBuilder, n: Heads, x: str, grouped) -> str:
    if n.g == 1:
        return x
    out = b.transient(grouped, b.dtype(x), "grouped")
    c = _grouped(n)
    b.map("regroup", grouped, "out = a", [("a", x, index([c.b, c.hq, c.s, c.t]))], [("out", out, index(params_of(4)))])
    return out


def inline_subgraph(b: LoopBuilder, body, value: str, hint: str) -> str:
    """The loop nodes of a one-input, one-output subgraph applied to ``value``; returns the
    container holding its result. The body is specialized to ``value``'s shape, its constants
    folded (shape arithmetic on the scores' shape becomes constants) and expanded; every op of
    it must expand. Its containers join the graph under fresh names."""
    from dcopt.backends.cpu.specialize import specialize
    from dcopt.ir.loops import is_loop_node, rename_container
    from dcopt.ir.types import TensorType
    from dcopt.passes.expand import ExpandPass
    from dcopt.passes.pipelines import build_pipeline

    outside = {c for nd in body.nodes for c in nd.inputs if c and c not in body.containers}
    if len(body.inputs) != 1 or len(body.outputs) != 1 or outside:
        raise Refused(f"{hint}: a subgraph of one input and one output, reading nothing from outside, is expanded")
    sub = body.copy()
    name = sub.inputs[0]
    declared = sub.containers[name].type
    if declared.dtype != b.dtype(value) or (declared.shape is not None and len(declared.shape) != len(b.shape(value))):
        raise Refused(f"{hint} takes {declared}, the scores are {b.dtype(value)}{list(b.shape(value))}")
    sub.containers[name].type = TensorType(b.dtype(value), tuple(b.shape(value)))
    try:
        sub = specialize(sub, {})
        sub = build_pipeline("O1")(sub).graph
        ExpandPass(keep_views=False)(sub)
    except Refused:
        raise
    except Exception as exc:  # noqa: BLE001 (a body the passes cannot take stays an op: the reason is reported)
        raise Refused(f"{hint}: {type(exc).__name__}: {exc}") from None
    left = [nd.op for nd in sub.nodes if not is_loop_node(nd)]
    if left:
        raise Refused(f"{hint}: ops without an expansion: {sorted(set(left))}")
    used = {c for nd in sub.nodes for c in (*nd.inputs, *nd.outputs) if c} | {sub.outputs[0]}
    names = {name: value}
    for old in sorted(used - {name}):
        new = b.graph.fresh_name(f"{b.node.outputs[0] or b.node.op}_{hint}")
        container = sub.containers[old]
        if container.data is not None:
            b.graph.add_parameter(new, container.data)
        else:
            b.graph.add_container(new, container.type)
        names[old] = new
    for nd in sub.nodes:
        for old in {c for c in (*nd.inputs, *nd.outputs) if c}:
            nd = rename_container(nd, old, f"\0{names[old]}")  # marked: no later rename touches it
        for new in names.values():
            nd = rename_container(nd, f"\0{new}", new)
        b.nodes.append(nd.replace(name=f"{b.node.label}/{hint}/{nd.name}"))
    return names[sub.outputs[0]]
