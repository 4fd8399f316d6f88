"""Normalizations -> a few maps that form-kernels row-fuses into one pass over each row.

Every op here standardizes ``x`` over some axes and applies an affine transform. The maps follow
:func:`dcopt.ops.normalization._standardize` step for step, in its compute dtype (``stash_type``
where the op has one, else float32 -- float64 for float64 inputs)::

    s = sum(x)                 reduction map (wcr sum, reduced axes innermost)
    mean = s / n               one iteration per row
    q = sum((x - mean)^2)      reduction map
    inv = 1 / sqrt(q / n + eps)   one iteration per row
    y = (x - mean) * inv * scale + bias      over x

All maps iterate the rows (the kept axes) first, in the same order (:class:`Rows`), so
form-kernels shares those loops and ``s``, ``mean``, ``q``, ``inv`` live in registers: one kernel,
one pass per row (two reads of the row for the statistics, one for the result). Statistics over
leading axes (BatchNormalization's training statistics, MeanVarianceNormalization's default
``(0, 2, 3)``) make the channel the row: the maps iterate ``c, n, h, w`` and write ``y``
permuted, still contiguous innermost.

GroupNormalization reduces over ``(n, g, k, spatial)`` with channel ``g*C/G + k``; its statistics
are per ``(n, g)`` arrays (the normalizing map iterates channels, not groups, so only ``n`` is
shared). LRN sums a window of squares with reads outside the channel range yielding 0.
"""

from __future__ import annotations

from dcopt.ir import dtypes as dt
from dcopt.passes.expand import LoopBuilder, Refused, affine, expansion, fmt, index
from dcopt.passes.expansions.reduction import FLOATS, Rows, compute_dtype, widened


def stash_dtype(b: LoopBuilder, x: str, stash_type: int | None = None) -> str:
    """The dtype statistics are computed in: ``stash_type`` (an ONNX element type) when the op has
    one, else float64 for float64 inputs and float32 for the rest (the reference's rule)."""
    if stash_type is not None:
        dtype = dt.from_onnx(int(stash_type))
        if dtype not in FLOATS:
            raise Refused(f"stash_type {stash_type} ({dtype}) is not a float type")
        return dtype
    return "float64" if b.dtype(x) == "float64" else "float32"


def inverse_root(v: str) -> str:
    """Tasklet text of 1/sqrt(v), exact at 0 (inf) and inf (0): under the kernels' fast-math
    flags LLVM turns 1/sqrt (and x/sqrt) into a reciprocal-root estimate that is NaN there."""
    return f"inf if {v} == 0 else (0.0 if {v} == inf else 1.0 / sqrt({v}))"


def as_dtype(conn: str, stored: str, dtype: str) -> str:
    """Tasklet text converting connector ``conn`` (storing ``stored``) to ``dtype``."""
    return conn if stored == dtype else f"as_{dtype}({conn})"


def statistic(b: LoopBuilder, rows: Rows, dtype: str, hint: str, output: str | None = None) -> tuple[str, list]:
    """A container for a per-row statistic and the out memlets writing it: a transient in the
    compute ``dtype``, plus the op's ``output`` when one is wired (stored in its own dtype, the
    later maps read the unrounded transient as the reference does)."""
    stat = rows.stat()
    if output and b.dtype(output) == dtype:
        return output, [(hint, output, stat)]
    name = b.transient(rows.stat_shape(), dtype, hint)
    return name, [(hint, name, stat)] + ([(hint + "_out", output, stat)] if output else [])


def standardize(b: LoopBuilder, x: str, rows: Rows, dtype: str, eps: float, mean_out: str | None = None,
                inv_out: str | None = None, read: str | None = None) -> tuple[str, str, str]:
    """Maps computing the mean and 1/sqrt(var + eps) of each row of ``x`` in ``dtype``; returns
    (mean, sum of squared deviations, inverse std) containers. ``read``: the subset ``x`` is
    read at (default: the rows' own)."""
    read = read or rows.full
    stat = rows.stat()
    n = rows.count
    a = as_dtype("a", b.dtype(x), dtype)
    total = b.transient(rows.stat_shape(), dtype, "sum")
    rows.map(b, "sum", f"out = {a}", [("a", x, read)], [("out", total, stat, "sum")])
    mean, writes = statistic(b, rows, dtype, "mean", mean_out)
    rows.map(b, "mean", _assign(writes, f"s / {n}"), [("s", total, stat)], writes, _dtypes(b, writes),
             rows_only=True)
    squares = b.transient(rows.stat_shape(), dtype, "squares")
    rows.map(b, "var", f"d = {a} - m\nout = d * d", [("a", x, read), ("m", mean, stat)],
             [("out", squares, stat, "sum")])
    inv, writes = statistic(b, rows, dtype, "invstd", inv_out)
    code = f"v = q / {n} + {fmt(eps)}\n" + _assign(writes, inverse_root("v"))
    rows.map(b, "invstd", code, [("q", squares, stat)], writes, _dtypes(b, writes), rows_only=True)
    return mean, squares, inv


def _assign(writes, expr: str) -> str:
    """Tasklet assigning ``expr`` to every out connector of ``writes``."""
    first = writes[0][0]
    return "\n".join([f"{first} = {expr}"] + [f"{w[0]} = {first}" for w in writes[1:]])


def _dtypes(b: LoopBuilder, writes) -> list[str]:
    return [b.dtype(w[1]) for w in writes]


def trailing(rank: int, axis: int) -> tuple[int, ...]:
    return tuple(range(axis % max(rank, 1), rank))


# ------------------------------------------------------------------------------ the ops

@expansion("LayerNormalization")
def layer_norm(graph, node):
    b = LoopBuilder(graph, node)
    x, scale, bias, y = b.input(0), b.input(1), b.input(2, optional=True), b.output()
    b.require_dtype(x, allowed=FLOATS)
    shape = b.shape(x)
    rows = Rows(shape, trailing(len(shape), int(b.attr("axis", -1))))
    dtype = stash_dtype(b, x, b.attr("stash_type", 1))
    mean, _, inv = standardize(b, x, rows, dtype, b.attr("epsilon", 1e-5), b.output(1), b.output(2))
    reads = [("a", x, rows.full), ("m", mean, rows.stat()), ("r", inv, rows.stat()),
             ("s", scale, b.broadcast(scale, shape))]
    if bias:
        reads.append(("c", bias, b.broadcast(bias, shape)))
    a = as_dtype("a", b.dtype(x), dtype)
    rows.map(b, "normalize", f"out = ({a} - m) * r * s" + (" + c" if bias else ""), reads, [("out", y, rows.full)])
    return b.nodes


@expansion("RMSNormalization")
def rms_norm(graph, node):
    """x / sqrt(mean(x^2) + eps) * scale over the trailing axes from ``axis`` (as x * (1/sqrt(...)),
    which is what the kernels' fast-math division computes anyway)."""
    b = LoopBuilder(graph, node)
    x, scale, y = b.input(0), b.input(1), b.output()
    b.require_dtype(x, allowed=FLOATS)
    shape = b.shape(x)
    rows = Rows(shape, trailing(len(shape), int(b.attr("axis", -1))))
    dtype = stash_dtype(b, x, b.attr("stash_type", 1))
    a, stat = as_dtype("a", b.dtype(x), dtype), rows.stat()
    squares = b.transient(rows.stat_shape(), dtype, "squares")
    rows.map(b, "squares", f"w = {a}\nout = w * w", [("a", x, rows.full)], [("out", squares, stat, "sum")])
    inv = b.transient(rows.stat_shape(), dtype, "invrms")
    rows.map(b, "invrms", f"v = q / {rows.count} + {fmt(b.attr('epsilon', 1e-5))}\nout = {inverse_root('v')}",
             [("q", squares, stat)], [("out", inv, stat)], rows_only=True)
    rows.map(b, "normalize", f"out = {a} * r * s", [("a", x, rows.full), ("r", inv, stat),
                                                     ("s", scale, b.broadcast(scale, shape))], [("out", y, rows.full)])
    return b.nodes


@expansion("InstanceNormalization")
def instance_norm(graph, node):
    """Per (n, c) statistics over the spatial axes; scale and bias per channel."""
    b = LoopBuilder(graph, node)
    x, scale, bias, y = b.input(0), b.input(1), b.input(2), b.output()
    b.require_dtype(x, allowed=FLOATS)
    shape = b.shape(x)
    if len(shape) < 2:
        raise Refused("input of rank < 2")
    rows = Rows(shape, range(2, len(shape)))
    dtype = stash_dtype(b, x)
    mean, _, inv = standardize(b, x, rows, dtype, b.attr("epsilon", 1e-5))
    a = as_dtype("a", b.dtype(x), dtype)
    rows.map(b, "normalize", f"out = ({a} - m) * r * s + c",
             [("a", x, rows.full), ("m", mean, rows.stat()), ("r", inv, rows.stat()), ("s", scale, "i1"),
              ("c", bias, "i1")], [("out", y, rows.full)])
    return b.nodes


@expansion("GroupNormalization")
def group_norm(graph, node):
    """Statistics over (n, g, k, spatial...) -- channel ``g * C/G + k`` -- then a map over x reading
    them at ``(n, c // (C/G))``; scale and bias per group before opset 21, per channel after."""
    b = LoopBuilder(graph, node)
    x, scale, bias, y = b.input(0), b.input(1), b.input(2), b.output()
    b.require_dtype(x, allowed=FLOATS)
    shape = b.shape(x)
    groups = int(b.attr("num_groups"))
    if len(shape) < 2 or not isinstance(shape[1], int) or groups <= 0 or shape[1] % groups:
        raise Refused(f"channels {shape[1:2]} do not split into {groups} groups")
    per = shape[1] // groups
    grouped = Rows((shape[0], groups, per, *shape[2:]), range(2, len(shape) + 1))
    spatial = [f"i{a + 1}" for a in range(2, len(shape))]
    read = index(["i0", affine([(per, "i1"), (1, "i2")]), *spatial])
    dtype = stash_dtype(b, x, b.attr("stash_type", 1))
    mean, _, inv = standardize(b, x, grouped, dtype, b.attr("epsilon", 1e-5), read=read)
    over_x = Rows(shape, ())
    group = f"i1 // {per}" if per > 1 else "i1"
    stat = index(["i0", group, *["0"] * (len(shape) - 1)])
    channel = "i1" if b.opset >= 21 else group
    a = as_dtype("a", b.dtype(x), dtype)
    over_x.map(b, "normalize", f"out = ({a} - m) * r * s + c",
               [("a", x, over_x.full), ("m", mean, stat), ("r", inv, stat), ("s", scale, channel),
                ("c", bias, channel)], [("out", y, over_x.full)])
    return b.nodes


@expansion("MeanVarianceNormalization")
def mean_variance_norm(graph, node):
    """(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9): both sums in one map."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS)
    shape = b.shape(x)
    rank = len(shape)
    axes = [int(a) for a in b.attr("axes", (0, 2, 3))]
    if any(not -rank <= a < rank for a in axes):
        raise Refused(f"axes {axes} do not fit rank {rank}")
    rows = Rows(shape, [a % rank for a in axes])
    dtype = stash_dtype(b, x)
    a, stat, n = as_dtype("a", b.dtype(x), dtype), rows.stat(), rows.count
    sums, squares = (b.transient(rows.stat_shape(), dtype, hint) for hint in ("sum", "squares"))
    rows.map(b, "sums", f"w = {a}\nout = w\nsq = w * w", [("a", x, rows.full)],
             [("out", sums, stat, "sum"), ("sq", squares, stat, "sum")], [dtype, dtype])
    mean, spread = (b.transient(rows.stat_shape(), dtype, hint) for hint in ("mean", "std"))
    rows.map(b, "std", f"m = s / {n}\nout = m\nd = sqrt(q / {n} - m * m) + 1e-09", [("s", sums, stat),
                                                                                 ("q", squares, stat)],
             [("out", mean, stat), ("d", spread, stat)], [dtype, dtype], rows_only=True)
    rows.map(b, "normalize", f"out = ({a} - m) / d", [("a", x, rows.full), ("m", mean, stat), ("d", spread, stat)],
             [("out", y, rows.full)])
    return b.nodes


@expansion("LpNormalization")
def lp_norm(graph, node):
    """x / ||x||_p along ``axis`` (0 where the norm is 0), as x * (1 / norm)."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS)
    shape = b.shape(x)
    if not shape:
        raise Refused("rank-0 input")
    p = int(b.attr("p", 2))
    if p <= 0:
        raise Refused(f"p = {p}")
    rows = Rows(shape, (int(b.attr("axis", -1)) % len(shape),))
    dtype = stash_dtype(b, x)
    stat = rows.stat()
    a = as_dtype("a", b.dtype(x), dtype)
    term = {1: "w", 2: "w * w"}.get(p, f"pow(w, {p})")
    total = b.transient(rows.stat_shape(), dtype, "sum")
    rows.map(b, "sum", f"w = abs({a})\nout = {term}", [("a", x, rows.full)], [("out", total, stat, "sum")])
    inv = b.transient(rows.stat_shape(), dtype, "invnorm")
    code = f"out = {inverse_root('s')}" if p == 2 else f"out = 1.0 / pow(s, {fmt(1.0 / p)})"
    rows.map(b, "invnorm", code, [("s", total, stat)], [("out", inv, stat)], rows_only=True)
    rows.map(b, "normalize", "out = 0.0 if s == 0 else a * r", [("a", x, rows.full), ("s", total, stat),
                                                               ("r", inv, stat)], [("out", y, rows.full)])
    return b.nodes


@expansion("BatchNormalization")
def batch_norm(graph, node):
    """Inference: one map with the given per-channel statistics. Training (``training_mode``,
    opset 14+): the batch statistics over (n, spatial) per channel, and the updated running mean
    and variance when those outputs are wired."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS)
    shape = b.shape(x)
    if len(shape) < 2:
        raise Refused("input of rank < 2")
    dtype = stash_dtype(b, x)
    eps = fmt(b.attr("epsilon", 1e-5))
    a = as_dtype("a", b.dtype(x), dtype)
    conns = dict(zip("scmv", (b.input(i) for i in range(1, 5))))
    if b.attr("training_mode", 0):
        return _batch_norm_training(b, x, y, conns, dtype, float(b.attr("epsilon", 1e-5)))
    if len(b.wired_outputs()) > 1:
        raise Refused("the statistics outputs of opsets before 14 (is_test = 0) are not expanded")

    def channel(name):  # (C,) along axis 1; opset < 9 spatial=0 parameters are shaped like x[1:]
        if len(b.shape(name)) == 1:
            return "i1"
        return b.broadcast(name, shape[1:], [f"i{k}" for k in range(1, len(shape))])

    rows = Rows(shape, ())
    reads = [("a", x, rows.full)] + [(c, name, channel(name)) for c, name in conns.items()]
    var = as_dtype("v", b.dtype(conns["v"]), dtype)
    rows.map(b, "normalize", f"d = {var} + {eps}\nout = ({a} - m) * ({inverse_root('d')}) * s + c", reads,
             [("out", y, rows.full)])
    return b.nodes


def _batch_norm_training(b: LoopBuilder, x: str, y: str, conns: dict, dtype: str, eps: float):
    shape = b.shape(x)
    if any(len(b.shape(name)) != 1 for name in conns.values()):
        raise Refused("training mode with parameters not shaped (C,)")
    rows = Rows(shape, (0, *range(2, len(shape))))
    mean, squares, inv = standardize(b, x, rows, dtype, eps)
    stat = rows.stat()
    a = as_dtype("a", b.dtype(x), dtype)
    rows.map(b, "normalize", f"out = ({a} - m) * r * s + c",
             [("a", x, rows.full), ("m", mean, stat), ("r", inv, stat), ("s", conns["s"], "i1"),
              ("c", conns["c"], "i1")], [("out", y, rows.full)])
    running = [(i, conn) for i, conn in ((1, "m"), (2, "v")) if b.output(i)]
    if running:
        momentum = float(b.attr("momentum", 0.9))
        keep, take = fmt(momentum), fmt(1 - momentum)
        batch = {"m": "bm", "v": f"q / {rows.count}"}
        code = "\n".join(f"out_{c} = r{c} * {keep} + {batch[c]} * {take}" for _, c in running)
        reads = [("bm", mean, stat), ("q", squares, stat)] + [(f"r{c}", conns[c], "i1") for _, c in running]
        writes = [(f"out_{c}", b.output(i), "i1") for i, c in running]
        rows.map(b, "running", code, reads, writes, rows_only=True)
    return b.nodes


def _power(q: str, beta: float) -> str:
    """Tasklet text of ``q ** beta`` for LRN's constant exponent without ``pow`` (a scalar libm
    call that kept the kernel from vectorizing): square roots for the exponents models use (0.75
    is the default: sqrt(q) * sqrt(sqrt(q)), each root correctly rounded), else
    ``exp(beta * log(q))``. Both give pow's results at q = 0, inf, NaN and q < 0 (NaN); q ** 0 is 1."""
    roots = {0.25: f"sqrt(sqrt({q}))", 0.5: f"sqrt({q})", 0.75: f"(sqrt({q}) * sqrt(sqrt({q})))", 1.0: q}
    if beta == 0:
        return "1.0"
    return roots.get(beta, f"exp({fmt(beta)} * log({q}))")


#: Windows up to this many channels are read as that many guarded memlets of one map (the
#: common LRN sizes 3-5); wider ones sum into a transient through a wcr map.
LRN_UNROLL = 16


@expansion("LRN")
def lrn(graph, node):
    """Sum of squares over a window of ``size`` channels (reads outside the channels are 0), then
    ``x / (bias + alpha / size * sum) ** beta``. A window of up to :data:`LRN_UNROLL` channels is
    one map reading each channel of the window (one guarded memlet each, summed in the
    reference's order), so the innermost loop runs along the contiguous last axis and vectorizes;
    a wider window is a wcr map into a transient first. The power is :func:`_power`'s."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS)
    shape = b.shape(x)
    if len(shape) < 2:
        raise Refused("input of rank < 2")
    size, rank = int(b.attr("size")), len(shape)
    dtype = compute_dtype(b.dtype(x))
    before = (size - 1) // 2
    scale, bias, beta = fmt(b.attr("alpha", 1e-4) / size), fmt(b.attr("bias", 1.0)), float(b.attr("beta", 0.75))
    over_x = Rows(shape, ())
    lead, rest = over_x.full.split(", ")[:1], over_x.full.split(", ")[2:]

    def scaled(total: str) -> str:
        return f"q = {bias} + {scale} * ({total})\nout = {widened('a', b.dtype(x))} / {_power('q', beta)}"

    if size <= LRN_UNROLL:
        reads = [("a", x, over_x.full)]
        terms = []
        for k in range(size):
            reads.append((f"w{k}", x, index([*lead, affine([(1, "i1")], k - before), *rest]), 0.0))
            terms.append(f"v{k} * v{k}")
        code = [f"v{k} = {widened(f'w{k}', b.dtype(x))}" for k in range(size)]
        code.append(f"s = {' + '.join(terms)}")
        over_x.map(b, "lrn", "\n".join([*code, scaled("s")]), reads, [("out", y, over_x.full)])
        return b.nodes
    squares = b.transient(shape, dtype, "sqsum")
    window = Rows((*shape, size), (rank,))
    read = index(["i0", affine([(1, "i1"), (1, f"i{rank}")], -before), *window.full.split(", ")[2:rank]])
    window.map(b, "window", f"v = {widened('w', b.dtype(x))}\nout = v * v", [("w", x, read, 0.0)],
               [("out", squares, window.stat(keepdims=False), "sum")])
    over_x.map(b, "normalize", scaled("s"), [("a", x, over_x.full), ("s", squares, over_x.full)],
               [("out", y, over_x.full)])
    return b.nodes
