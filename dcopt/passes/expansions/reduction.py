"""Reductions, the softmax family and the normalizations -> maps with write-conflict resolution.

A reduction is a map over the *input's* index space whose out memlet drops (or pins to 0, with
keepdims) the reduced params and carries a wcr: ``y[i0, 0] += a`` for ReduceSum over axis 1.
Statistics (max, sum, mean, variance) are small transients in keepdims shape; the maps that
use them read them through the same subset, so broadcasting back is a memlet, not an op.

Softmax is three maps -- max, sum of ``exp(a - m)``, then ``exp(a - m) / s`` -- recomputing the
exponential rather than materializing it (one full-size transient fewer; fusion decides the
rest). LayerNormalization is mean, variance, 1/sqrt(var + eps), normalize; BatchNormalization at
inference is a single map. Means divide every term by the count before summing (one map instead
of sum-then-scale); the result differs from sum/count by rounding only.

Reductions refuse float16: the reference accumulates it in float32, which a tasklet over
float16 operands would not.
"""

from __future__ import annotations

from dcopt.passes.expand import LoopBuilder, Refused, affine, expansion, fmt, index, params_of, product

WIDE = ("float32", "float64")
NUMBERS = WIDE + ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")

#: op -> (term tasklet, wcr, tasklet applied to the reduced value or None, dtypes allowed)
REDUCTIONS = {
    "ReduceSum": ("a", "sum", None, NUMBERS),
    "ReduceMean": ("a / {n}", "sum", None, WIDE),
    "ReduceMax": ("a", "max", None, NUMBERS),
    "ReduceMin": ("a", "min", None, NUMBERS),
    "ReduceProd": ("a", "prod", None, NUMBERS),
    "ReduceSumSquare": ("a * a", "sum", None, NUMBERS),
    "ReduceL1": ("abs(a)", "sum", None, NUMBERS),
    "ReduceL2": ("a * a", "sum", "sqrt(a)", WIDE),
    "ReduceLogSum": ("a", "sum", "log(a)", WIDE),
}


def reduced_subset(rank: int, axes, keepdims: bool = True) -> str:
    """Subset of a reduced container in terms of the input's params (``i0, 0`` / ``i0``)."""
    return index("0" if a in axes else p for a, p in enumerate(params_of(rank)) if keepdims or a not in axes)


def _count(shape, axes) -> str:
    """Number of reduced elements as tasklet text (parenthesized when it is a product of symbols)."""
    text = product([shape[a] for a in axes])
    return f"({text})" if "*" in text else text


def stats_shape(shape, axes) -> tuple:
    return tuple(1 if a in axes else d for a, d in enumerate(shape))


def reduce_map(b: LoopBuilder, what: str, x: str, axes, out: str, code: str = "a", wcr: str = "sum",
               keepdims: bool = True, extra_reads=()):
    """A map over ``x``'s index space combining ``code`` into ``out`` with ``wcr``."""
    shape = b.shape(x)
    reads = [("a", x, index(params_of(len(shape)))), *extra_reads]
    return b.map(what, shape, f"out = {code}", reads, [("out", out, reduced_subset(len(shape), axes, keepdims), wcr)])


def _axes(b: LoopBuilder, rank: int) -> tuple[int, ...] | None:
    """The reduced axes; () for a no-op (empty axes with noop_with_empty_axes)."""
    axes = b.attr("axes")
    name = b.input(1, optional=True)
    if name:
        axes = b.constant(name)
        if axes is None:
            raise Refused("axes are computed at run time")
        axes = axes.reshape(-1).tolist()
    if not axes:
        return () if b.attr("noop_with_empty_axes", 0) else tuple(range(rank))
    return tuple(sorted({int(a) % max(rank, 1) for a in axes}))


@expansion(*REDUCTIONS, "ReduceLogSumExp")
def reduction(graph, node):
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    shape = b.shape(x)
    axes = _axes(b, len(shape))
    keep = bool(b.attr("keepdims", 1))
    if node.op == "ReduceLogSumExp":
        b.require_dtype(x, allowed=WIDE)
        return log_sum_exp(b, x, y, axes, keep)
    term, wcr, post, allowed = REDUCTIONS[node.op]
    b.require_dtype(x, allowed=allowed)
    if not axes:
        b.elementwise("a", {"a": x}, y, what="copy")
        return b.nodes
    term = term.format(n=_count(shape, axes))
    target = b.transient(b.shape(y), b.dtype(y), "acc") if post else y
    reduce_map(b, "reduce", x, axes, target, term, wcr, keep)
    if post:
        b.elementwise(post, {"a": target}, y, what="finish")
    return b.nodes


def log_sum_exp(b: LoopBuilder, x: str, y: str, axes, keep: bool):
    """log(sum(exp(a - m))) + m with m the maximum, so large values do not overflow."""
    if not axes:
        b.elementwise("a", {"a": x}, y, what="copy")
        return b.nodes
    out_shape, dtype = b.shape(y), b.dtype(y)
    m, s = b.transient(out_shape, dtype, "max"), b.transient(out_shape, dtype, "sum")
    reduce_map(b, "max", x, axes, m, wcr="max", keepdims=keep)
    reduce_map(b, "sum", x, axes, s, "exp(a - m)", keepdims=keep,
               extra_reads=[("m", m, reduced_subset(len(b.shape(x)), axes, keep))])
    b.elementwise("log(s) + m if m > -inf else m", {"s": s, "m": m}, y, what="finish")
    return b.nodes


@expansion("GlobalAveragePool", "GlobalMaxPool")
def global_pool(graph, node):
    b = LoopBuilder(graph, node)
    x = b.input(0)
    b.require_dtype(x, allowed=WIDE)
    shape = b.shape(x)
    axes = tuple(range(2, len(shape)))
    if node.op == "GlobalMaxPool":
        reduce_map(b, "max", x, axes, b.output(), wcr="max")
    else:
        reduce_map(b, "mean", x, axes, b.output(), f"a / {_count(shape, axes)}")
    return b.nodes


def softmax_maps(b: LoopBuilder, x: str, y: str, axes, *, log: bool = False, mask: str | None = None,
                 zero_nan: bool = False) -> None:
    """Softmax (or log-softmax) of ``x`` (+ ``mask`` broadcast) over ``axes`` into ``y``: a max map,
    one map writing ``e = exp(a - m)`` and its sum, and the normalizing map. Computing the
    exponential once and storing it costs a write and a read of a row that form-kernels keeps
    in cache (the three maps share their outer loops); recomputing it cost a second ``exp``
    per element, the dominant work (BERT's attention softmax: 190 us against 60)."""
    shape = b.shape(x)
    rank = len(shape)
    full, sub = index(params_of(rank)), reduced_subset(rank, axes)
    dtype = b.dtype(x)
    stat = stats_shape(shape, axes)
    m, s = b.transient(stat, dtype, "max"), b.transient(stat, dtype, "sum")
    reads = [("a", x, full)]
    logit = "a"
    if mask is not None:
        reads.append(("c", mask, b.broadcast(mask, shape)))
        logit = "(a + c)"
    reduce_map(b, "max", x, axes, m, logit, wcr="max", extra_reads=reads[1:])
    if log:
        reduce_map(b, "sum", x, axes, s, f"exp({logit} - m)", extra_reads=[*reads[1:], ("m", m, sub)])
        b.map("normalize", shape, f"out = {logit} - m - log(s)", [*reads, ("m", m, sub), ("s", s, sub)],
              [("out", y, full)])
        return
    e = b.transient(shape, dtype, "exp")
    b.map("exp", shape, f"e = exp({logit} - m)\nout = e", [*reads, ("m", m, sub)],
          [("e", e, full), ("out", s, sub, "sum")], [dtype, dtype])
    code = "out = 0.0 if m == -inf else e / s" if zero_nan else "out = e / s"
    b.map("normalize", shape, code, [("e", e, full), ("m", m, sub), ("s", s, sub)] if zero_nan else
          [("e", e, full), ("s", s, sub)], [("out", y, full)])


@expansion("Softmax", "LogSoftmax")
def softmax(graph, node):
    """Before opset 13 the op normalizes over all axes from ``axis`` on (the 2-D flattening)."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=WIDE)
    shape = b.shape(x)
    axis = int(b.attr("axis", -1)) % len(shape)
    axes = (axis,) if b.opset >= 13 else tuple(range(axis, len(shape)))
    softmax_maps(b, x, y, axes, log=node.op == "LogSoftmax")
    return b.nodes


@expansion("LayerNormalization")
def layer_norm(graph, node):
    b = LoopBuilder(graph, node)
    x, scale, bias, y = b.input(0), b.input(1), b.input(2, optional=True), b.output()
    b.require_dtype(x, allowed=WIDE)
    shape = b.shape(x)
    axes = tuple(range(int(b.attr("axis", -1)) % len(shape), len(shape)))
    n, eps = _count(shape, axes), fmt(b.attr("epsilon", 1e-5))
    stat, sub, full = stats_shape(shape, axes), reduced_subset(len(shape), axes), index(params_of(len(shape)))
    stash = "float64" if b.dtype(x) == "float64" and b.attr("stash_type", 1) == 11 else "float32"
    mean = b.output(1) or b.transient(stat, stash, "mean")
    inv_std = b.output(2) or b.transient(stat, stash, "invstd")
    var = b.transient(stat, stash, "var")
    reduce_map(b, "mean", x, axes, mean, f"a / {n}")
    reduce_map(b, "var", x, axes, var, f"(a - m) * (a - m) / {n}", extra_reads=[("m", mean, sub)])
    b.elementwise(f"1.0 / sqrt(a + {eps})", {"a": var}, inv_std, what="invstd")
    reads = [("a", x, full), ("m", mean, sub), ("r", inv_std, sub), ("s", scale, b.broadcast(scale, shape))]
    if bias:
        reads.append(("c", bias, b.broadcast(bias, shape)))
    b.map("normalize", shape, "out = (a - m) * r * s" + (" + c" if bias else ""), reads, [("out", y, full)])
    return b.nodes


@expansion("BatchNormalization")
def batch_norm(graph, node):
    """Inference form only: per-channel statistics given, one map."""
    b = LoopBuilder(graph, node)
    if b.attr("training_mode", 0) or len(b.wired_outputs()) > 1:
        raise Refused("training mode (batch statistics) is not expanded")
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=WIDE)
    shape = b.shape(x)
    if len(shape) < 2:
        raise Refused("input of rank < 2")
    params = params_of(len(shape))

    def channel(name):  # (C,) along axis 1; opset < 9 spatial=0 parameters are shaped like x[1:]
        pshape = b.shape(name)
        return "i1" if len(pshape) == 1 else b.broadcast(name, shape[1:], params[1:])

    conns = dict(zip("scmv", (b.input(i) for i in range(1, 5))))
    reads = [("a", x, index(params))] + [(c, name, channel(name)) for c, name in conns.items()]
    code = f"out = (a - m) / sqrt(v + {fmt(b.attr('epsilon', 1e-5))}) * s + c"
    b.map("normalize", shape, code, reads, [("out", y, index(params))])
    return b.nodes


@expansion("LRN")
def lrn(graph, node):
    """Sum of squares over a window of ``size`` channels (a wcr map reading with outside 0), then scale."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=WIDE)
    shape = b.shape(x)
    size, rank = int(b.attr("size")), len(shape)
    p = params_of(rank + 1)
    squares = b.transient(shape, b.dtype(x), "sqsum")
    read = index([p[0], affine([(1, p[1]), (1, p[rank])], -((size - 1) // 2)), *p[2:rank]])
    b.map("window", (*shape, size), "out = a * a", [("a", x, read, 0.0)], [("out", squares, index(p[:rank]), "sum")])
    scale, bias, beta = fmt(b.attr("alpha", 1e-4) / size), fmt(b.attr("bias", 1.0)), fmt(b.attr("beta", 0.75))
    b.elementwise(f"a / pow({bias} + {scale} * s, {beta})", {"a": x, "s": squares}, y, what="normalize")
    return b.nodes
