"""Which CPU routine runs a Conv, MatMul or Gemm: what ``select-impl`` asks for the cpu target.

The answer becomes the node's ``dcopt.impl`` and, through ``expand``, the ``impl`` of its
library call; ``fuse-epilogues`` then knows what the routine can absorb (:data:`EPILOGUES`) and
:mod:`library_calls` runs exactly that routine. Order of preference (measured on this kind of
machine in issue 4's work, see :mod:`directconv` and :mod:`gemm`):

* Conv (NCHW float32, 1-D or 2-D, constant weights): ``pointwise`` for 1x1/stride-1/unpadded
  convs whose plane fills its 16-pixel vectors; ``direct`` (the register-blocked generated
  kernel) where its planner accepts the shape (AVX-512 hosts, not depthwise, not narrow 1x1);
  ``depthwise`` (the per-channel kernel of :mod:`library`, bias and clamp fused) for one filter
  per channel; else ``blas`` (shifted GEMMs or im2col over OpenBLAS). Other float32 convs
  (3-D, run-time weights) expand ``im2col`` (a copy map and a GEMM call); other dtypes ``loops``.
* MatMul/Gemm with constant 2-D float32 weights: ``matvec`` for one row, ``generated`` for
  more (weights packed once, bias/ReLU absorbed); other float32 products ``blas``; other dtypes
  ``loops`` (a map: integer and float64 products have no routine here).
"""

from __future__ import annotations

import numpy as np

from dcopt.backends.cpu import directconv, matvec
from dcopt.ir.graph import Graph, Node
from dcopt.ops.nn import _geometry
from dcopt.ops.shapes.dims import per_sample

F32 = "float32"

#: What each routine can absorb after it (fuse-epilogues): a bias over the output channels
#: (conv) or columns (GEMM), a clamp (ReLU, ReLU6, Clip: :mod:`dcopt.ir.clamp`), a residual
#: tensor shaped like the output.
EPILOGUES = {
    ("conv", "direct"): frozenset({"bias", "clamp"}),
    ("conv", "pointwise"): frozenset({"bias", "clamp", "residual"}),
    ("conv", "depthwise"): frozenset({"bias", "clamp"}),
    ("gemm", "generated"): frozenset({"bias", "clamp"}),
    ("gemm", "matvec"): frozenset({"bias", "clamp"}),
}


def _static(graph: Graph, name: str) -> tuple[int, ...] | None:
    t = graph.type_of(name) if name else None
    if t is None or t.shape is None or not t.is_static:
        return None
    return tuple(int(d) for d in t.shape)


def _batch_free(graph: Graph, name: str) -> tuple[int, ...] | None:
    """A conv operand's shape decided per image (:func:`~dcopt.ops.shapes.dims.per_sample`): the
    conv routines work image by image, so a symbolic batch (a build for every size) does not
    decide anything."""
    t = graph.type_of(name) if name else None
    return None if t is None else per_sample(t.shape)


def choose(graph: Graph, node: Node) -> str | None:
    if node.op == "Conv":
        return choose_conv(graph, node)
    if node.op in ("MatMul", "Gemm"):
        return choose_gemm(graph, node)
    return None


def conv_geometry(graph: Graph, node: Node, x_shape, w_shape) -> dict | None:
    """The 2-D geometry of a (1-D or 2-D) Conv node: kernel, strides, begin pads, dilations, group."""
    nd = len(x_shape) - 2
    kernel = tuple(w_shape[2:])
    strides = tuple(graph.attr(node, "strides") or (1,) * nd)
    dilations = tuple(graph.attr(node, "dilations") or (1,) * nd)
    _, begin, _ = _geometry(x_shape[2:], kernel, strides, dilations, graph.attr(node, "auto_pad", "NOTSET"),
                            graph.attr(node, "pads"))
    if nd == 1:
        kernel, strides, dilations, begin = (1, *kernel), (1, *strides), (1, *dilations), (0, *begin)
    return dict(kernel=[int(k) for k in kernel], strides=[int(s) for s in strides], pads=[int(p) for p in begin],
                dilations=[int(d) for d in dilations], group=int(graph.attr(node, "group", 1)))


def choose_conv(graph: Graph, node: Node) -> str | None:
    """A routine for a 1-D/2-D float32 conv with constant weights; ``im2col`` (a copy map and a
    GEMM library call) for other float32 convs; ``loops`` for other dtypes; None when sizes are
    unknown (select-impl then leaves the op alone)."""
    x, w = node.inputs[0], node.inputs[1]
    xs, ws, ys = _batch_free(graph, x), _static(graph, w), _batch_free(graph, node.outputs[0])
    if xs is None or ws is None or ys is None:
        return None
    if graph.type_of(x).dtype != F32 or graph.type_of(w).dtype != F32:
        return "loops"
    if (len(xs) not in (3, 4) or graph.constant(w) is None
            or (len(node.inputs) > 2 and node.inputs[2] and graph.constant(node.inputs[2]) is None)):
        return "im2col"
    g = conv_geometry(graph, node, xs, ws)
    if len(xs) == 3:
        xs, ws, ys = (xs[0], xs[1], 1, xs[2]), (*ws[:2], 1, ws[2]), (ys[0], ys[1], 1, ys[2])
    cin, group = xs[1], g["group"]
    depthwise = bool(group == cin == ws[0] and group > 1)
    oh, ow = ys[2], ys[3]
    if (g["kernel"] == [1, 1] and g["strides"] == [1, 1] and g["pads"] == [0, 0] and not depthwise
            and _no_end_pads(graph, node) and directconv.pointwise_fits(oh * ow)
            and directconv.pointwise_plan(cin // group, ws[0] // group, oh * ow) is not None):
        return "pointwise"
    if depthwise:
        return "depthwise"
    if directconv.plan(xs, ws, ys, **g) is not None:
        return "direct"
    return "blas"


def _no_end_pads(graph: Graph, node: Node) -> bool:
    pads = graph.attr(node, "pads")
    return not pads or not any(pads)


def choose_gemm(graph: Graph, node: Node) -> str | None:
    """``matvec``/``generated`` for constant 2-D float32 weights, ``blas`` for other float32
    products of matrices, ``loops`` (one map) for other dtypes and 1-D operands."""
    a, b = node.inputs[0], node.inputs[1]
    sa, sb = _static(graph, a), _static(graph, b)
    if sa is None and sb is not None and _rows_sized_by_run(graph, node):
        return "generated"  # a build for every size: chunks of GEMM_CHUNK_ROWS rows (runtime.py)
    if sa is None or sb is None:
        return None
    dtypes = {graph.type_of(a).dtype, graph.type_of(b).dtype}
    if dtypes != {F32} or len(sa) < 2 or len(sb) < 2:
        return "loops" if node.op == "MatMul" else None
    trans_a = node.op == "Gemm" and bool(graph.attr(node, "transA", 0))
    bw = graph.constant(b)
    if bw is not None and bw.ndim == 2 and len(sa) >= 2 and not trans_a:
        m = int(np.prod(sa[:-1]))
        k, n = (bw.shape[::-1] if node.op == "Gemm" and graph.attr(node, "transB", 0) else bw.shape)
        if m == 1 and matvec.plan(k, n, False, False) is not None:
            return "matvec"
        if m > 1 and directconv.gemm_plan(m, k, n) is not None:
            return "generated"
    return "blas"


def _rows_sized_by_run(graph: Graph, node: Node) -> bool:
    """A float32 product of a matrix whose leading dims are symbolic (batch, sequence) and whose
    last dim is static with constant 2-D weights: the generated GEMM then runs compiled for a
    fixed chunk of rows, over as many chunks as a run has rows."""
    a, b = node.inputs[0], node.inputs[1]
    ta, bw = graph.type_of(a), graph.constant(b)
    if (ta.shape is None or len(ta.shape) < 2 or None in ta.shape or not isinstance(ta.shape[-1], int)
            or bw is None or bw.ndim != 2 or ta.dtype != F32 or bw.dtype != np.float32):
        return False
    if node.op == "Gemm" and graph.attr(node, "transA", 0):
        return False
    k, n = (bw.shape[::-1] if node.op == "Gemm" and graph.attr(node, "transB", 0) else bw.shape)
    return directconv.gemm_chunk_plans(k, n) is not None


def epilogues(kind: str, impl: str | None) -> frozenset[str]:
    """What the routine ``impl`` of a ``kind`` library call absorbs (nothing when unknown)."""
    return EPILOGUES.get((kind, impl or ""), frozenset())
