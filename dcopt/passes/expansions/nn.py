"""Matrix products and convolutions -> library calls; pooling -> window maps with wcr.

GEMM and convolution stay opaque ``LibraryCall`` nodes (``kind="gemm"|"conv"``): a tuned
library or a generated microkernel beats a naive loop nest by orders of magnitude, and their
memlets (whole operands) are all fusion and memory planning need to know. Conv geometry
(``auto_pad``, which depends on shapes) is resolved here to explicit pads, with the same
:func:`dcopt.ops.nn._geometry` the reference uses, so the library call has one meaning.

Pooling is a map over (N, C, output positions, kernel taps) reading the input at
``stride*o + dilation*k - pad_begin`` per spatial axis. Reads that fall in the padding yield the
memlet's ``outside`` value (-inf for max, 0 for sums), which also covers ``ceil_mode`` windows
hanging over the end. AveragePool divides by the window size when every window is complete;
otherwise a small count map over output positions and taps counts the taps that lie inside
(the input, or input plus pads with ``count_include_pad``) and a last map divides.
"""

from __future__ import annotations


from dcopt.ir.schedule import IMPL, IMPLS
from dcopt.ops.nn import _geometry
from dcopt.passes.expand import LoopBuilder, Refused, expansion, fmt, index, params_of

FLOATS = ("float16", "float32", "float64")


def _impl(node) -> str:
    """The level-1 implementation select-impl chose (``library``: the backend's default routine);
    a value no expansion or backend knows is refused here, before it reaches a library call."""
    impl = node.attrs.get(IMPL, "library")
    allowed = IMPLS.get(node.op, ("library",))
    if impl not in allowed:
        raise Refused(f"unknown implementation {IMPL}={impl!r} (allowed: {', '.join(allowed)})")
    return impl


def _library_options(node) -> dict:
    impl = _impl(node)
    return {} if impl == "library" else {"impl": impl}


@expansion("MatMul")
def matmul(graph, node):
    """A GEMM library call (batched and broadcast like np.matmul), or with ``loops`` one map
    over (batch..., M, N, K) accumulating with wcr sum -- any dtype, no library needed."""
    b = LoopBuilder(graph, node)
    a_, b_ = b.input(0), b.input(1)
    y = b.output()
    if _impl(node) == "loops":
        return _matmul_loops(b, a_, b_, y)
    b.require_dtype(a_, b_)
    b.library("gemm", "gemm", [("A", a_, b.full(a_)), ("B", b_, b.full(b_))], [("Y", y, b.full(y))],
              **_library_options(node))
    return b.nodes


def _matmul_loops(b: LoopBuilder, a_: str, b_: str, y: str):
    """np.matmul as one wcr-sum map (a 1-D operand has no M or N dim, batch dims broadcast)."""
    from dcopt.passes.expansions.linalg import matmul_subsets  # linalg imports this module

    sa, sy = b.shape(a_), b.shape(y)
    a_sub, b_sub, p = matmul_subsets(sa, b.shape(b_), sy)
    b.map("matmul", (*sy, sa[-1]), "out = a * c", [("a", a_, a_sub), ("c", b_, b_sub)],
          [("out", y, index(p[:len(sy)]), "sum")])
    return b.nodes


@expansion("Gemm")
def gemm(graph, node):
    """alpha * op(A) @ op(B) as a GEMM library call; beta * C is an elementwise map after it (the
    epilogue a library routine may absorb later, see fuse-epilogues)."""
    b = LoopBuilder(graph, node)
    a_, b_, c_ = b.input(0), b.input(1), b.input(2, optional=True)
    b.require_dtype(a_, b_, c_)
    y = b.output()
    beta = float(b.attr("beta", 1.0))
    product = b.transient(b.shape(y), b.dtype(y), "product") if c_ and beta != 0.0 else y
    b.library("gemm", "gemm", [("A", a_, b.full(a_)), ("B", b_, b.full(b_))], [("Y", product, b.full(product))],
              alpha=float(b.attr("alpha", 1.0)), transA=int(b.attr("transA", 0)), transB=int(b.attr("transB", 0)),
              **_library_options(node))
    if product != y:
        b.elementwise("a + c" if beta == 1.0 else f"a + {fmt(beta)} * c", {"a": product, "c": c_}, y, what="bias")
    return b.nodes


def _window(b: LoopBuilder, x: str, kernel):
    """(kernel, strides, dilations, output spatial shape, begin pads, end pads) of a window op."""
    nd = len(b.shape(x)) - 2
    spatial = b.static_dims(x, range(2, nd + 2))
    kernel = tuple(int(k) for k in kernel)
    strides = tuple(int(s) for s in (b.attr("strides") or (1,) * nd))
    dilations = tuple(int(d) for d in (b.attr("dilations") or (1,) * nd))
    out, begin, end = _geometry(spatial, kernel, strides, dilations, b.attr("auto_pad", "NOTSET"), b.attr("pads"),
                                bool(b.attr("ceil_mode", 0)))
    return spatial, kernel, strides, dilations, out, begin, end


@expansion("Conv")
def conv(graph, node):
    """A conv library call (then the bias as an elementwise map over the channels, which a
    routine may absorb: fuse-epilogues), or the ``loops``/``im2col`` expansions."""
    impl = _impl(node)  # level-1 choice (select-impl)
    if impl in ("loops", "im2col"):
        from dcopt.passes.expansions.conv_impls import expand_conv_variant  # imports this module

        return expand_conv_variant(graph, node, impl)
    b = LoopBuilder(graph, node)
    x, w, bias, y = b.input(0), b.input(1), b.input(2, optional=True), b.output()
    b.require_dtype(x, w, bias, allowed=FLOATS)
    kernel = b.static_dims(w, range(2, len(b.shape(w))))
    _, kernel, strides, dilations, _, begin, end = _window(b, x, kernel)
    product = b.transient(b.shape(y), b.dtype(y), "conv") if bias else y
    b.library("conv", "conv", [("X", x, b.full(x)), ("W", w, b.full(w))], [("Y", product, b.full(product))],
              strides=strides, pads=tuple(begin) + tuple(end), dilations=dilations, group=int(b.attr("group", 1)),
              **_library_options(node))
    if bias:
        shape = b.shape(y)
        reads = [("a", product, index(params_of(len(shape)))), ("c", bias, "i1")]
        b.map("bias", shape, "out = a + c", reads, [("out", y, index(params_of(len(shape))))])
    return b.nodes
