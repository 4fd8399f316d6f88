"""The one-map transformer ops around attention: RotaryEmbedding, SwiGLU and TensorScatter (the
KV-cache write: an indirect-write map with the past cache as its init). Attention itself, with
its GEMMs and row-fused softmax, is :mod:`dcopt.passes.expansions.attention`."""

from __future__ import annotations

from dcopt.passes.expand import LoopBuilder, Refused, expansion, fmt, index, params_of
from dcopt.passes.expansions.attention import ANY_FLOAT
from dcopt.passes.expansions.linalg import rounded


@expansion("SwiGLU")
def swiglu(graph, node):
    """a * sigmoid(alpha * a) * b with the reference's gate: float32 arithmetic, cast to a's dtype."""
    b = LoopBuilder(graph, node)
    a, c = b.input(0), b.input(1)
    b.require_dtype(a, c, allowed=ANY_FLOAT)
    dtype, out = b.dtype(a), b.output()
    gate = f"1.0 / (1.0 + exp({fmt(-float(b.attr('alpha', 1.0)))} * as_float32(a)))"
    if dtype != "float32":
        gate = f"as_{dtype}({gate})"
    shape = b.shape(out)
    reads = [("a", a, b.broadcast(a, shape)), ("c", c, b.broadcast(c, shape))]
    b.map("swiglu", shape, f"g = {gate}\nout = {rounded(rounded('a * g', dtype) + ' * c', dtype)}", reads,
          [("out", out, index(params_of(len(shape))))])
    return b.nodes


@expansion("RotaryEmbedding")
def rotary_embedding(graph, node):
    """Each head's first ``rotary_embedding_dim`` features rotated pairwise by position angles:
    one map over the output reading the feature, its partner (the other half, or the
    neighbour when interleaved) and the cos/sin entry (at ``position_ids`` when given)."""
    b = LoopBuilder(graph, node)
    x, cos, sin = b.input(0), b.input(1), b.input(2)
    positions = b.input(3, optional=True)
    b.require_dtype(x, cos, sin, allowed=ANY_FLOAT)
    dtype = b.dtype(x)
    shape = b.static_dims(x, range(len(b.shape(x))))
    if len(shape) == 4:
        size = shape[3]
        bi, si, feat, base = "i0", "i2", "i3", None
    elif len(shape) == 3:
        heads = int(b.attr("num_heads", 0) or 0)
        if not heads or shape[2] % heads:
            raise Refused("3-D input needs num_heads dividing the hidden size")
        size = shape[2] // heads
        bi, si, feat, base = "i0", "i1", f"i2 % {size}", f"i2 // {size} * {size}"
    else:
        raise Refused(f"input of rank {len(shape)}")
    dim = int(b.attr("rotary_embedding_dim", 0) or 0) or size
    half = dim // 2
    if dim % 2 or dim > size or b.static_dims(cos, [len(b.shape(cos)) - 1])[0] != half:
        raise Refused(f"rotary dim {dim} does not fit head size {size} and the caches")
    interleaved = bool(b.attr("interleaved", 0))
    # features past the rotary dim pass through: their partner and angle indices are clamped in bounds
    if interleaved:
        partner = f"min(({feat}) // 2 * 2 + 1 - ({feat}) % 2, {size - 1})"  # the pair's other feature
        angle, first = f"min(({feat}) // 2, {half - 1})", f"({feat}) % 2 == 0"
    else:
        partner, angle, first = f"(({feat}) + {half}) % {dim}", f"min({feat}, {dim - 1}) % {half}", f"({feat}) < {half}"
    p = params_of(len(shape))
    partner_sub = list(p)
    partner_sub[-1] = partner if base is None else f"{base} + {partner}"
    reads = [("a", x, index(p)), ("q", x, index(partner_sub))]
    if positions:
        b.require_dtype(positions, allowed=("int64", "int32"))
        reads.append(("pos", positions, f"{bi}, {si}"))
        table = ["pos", angle]
    else:
        table = [bi, si, angle]
    reads += [("c", cos, index(table)), ("s", sin, index(table))]
    R = lambda e: rounded(e, dtype)
    real = R(f"{R('c * a')} - {R('s * q')}")  # the first of a pair: cos * x1 - sin * x2
    imag = R(f"{R('s * q')} + {R('c * a')}")  # the second: sin * x1 + cos * x2
    b.map("rotate", shape, f"out = a if ({feat}) >= {dim} else ({real} if {first} else {imag})", reads,
          [("out", b.output(), index(p))])
    return b.nodes


@expansion("TensorScatter")
def tensor_scatter(graph, node):
    """The cache with ``update`` written along ``axis`` from each batch entry's write index
    (wrapping in circular mode): one map over the update writing through an indirect subset,
    the past cache as its init. Linear-mode positions past the end are clamped to the last
    slot (the reference raises there), so no write leaves the buffer."""
    b = LoopBuilder(graph, node)
    past, update = b.input(0), b.input(1)
    offsets = b.input(2, optional=True)
    out = b.output()
    shape = b.shape(update)
    rank = len(shape)
    axis = int(b.attr("axis", -2)) % rank
    if axis == 0:
        raise Refused("axis 0 is the batch axis")
    mode = str(b.attr("mode", "linear"))
    size = b.static_dims(past, [axis])[0]
    p = params_of(rank)
    reads = [("a", update, index(p))]
    target = list(p)
    if offsets:
        b.require_dtype(offsets, allowed=("int64", "int32"))
        reads.append(("w", offsets, "i0"))
        pos = f"w + {p[axis]}"
    else:
        pos = p[axis]
    if size == 0:
        raise Refused("an empty cache axis")
    target[axis] = f"({pos}) % {size}" if mode == "circular" else f"min({pos}, {size - 1})"
    b.map("scatter", shape, "out = a", reads, [("out", out, index(target), None, past)])
    return b.nodes
