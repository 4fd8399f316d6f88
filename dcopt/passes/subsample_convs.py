"""subsample-strided-pointwise (level 2): a strided 1x1 convolution is a subsample, then a GEMM.

``Conv(x, W, b)`` with a 1x1 kernel, stride ``s > 1`` and no padding reads one input pixel in
``s`` per spatial axis; the output is exactly ``Conv(Slice(x, steps=s), W, b)`` with stride 1
(``ceil(H / s)`` pixels per axis either way). Why rewrite it: a stride-1 1x1 convolution is a
plain GEMM on the image, which every backend runs well (dcopt's CPU backend has a generated
pointwise kernel for it), while the strided form needs a gather inside the convolution. ResNet
v1.5's projection shortcuts (256->512 at 56x56, 512->1024 at 28x28, 1024->2048 at 14x14, stride
2) ran as strided direct convolutions in 2.14 / 1.42 / 1.00 ms on this repository's 2-core
znver4 host, and as a subsample copy plus the pointwise kernel in 1.25 / 1.17 / 0.90 ms
(onnxruntime: 1.08 / 0.92 / 0.86 ms). The copy moves ``C * H * W / s^2`` values, a small
fraction of the convolution's reads of the same tensor.

Refused, with the reason: other kernel sizes, padding (a padded 1x1 conv reads zeros at the
border the slice would not produce), all strides 1 (nothing to do), an ``auto_pad`` other than
NOTSET/VALID, an input of unknown rank, and graphs below opset 10 (whose Slice has no steps).
"""

from __future__ import annotations

import numpy as np

from dcopt.ir.graph import Graph
from dcopt.ir.types import TensorType
from dcopt.passes.base import register_pass
from dcopt.passes.match import Match
from dcopt.passes.pattern import Op, Var
from dcopt.passes.rewrite import Replacement, RewriteBuilder, RewritePass, RewriteRule

CONV = Op("Conv", Var("x"), Var("w"), ..., name="conv")

#: End index of a slice that runs to the end of an axis.
_TO_END = 2**62


def _strides(graph: Graph, m: Match) -> list[int] | None:
    """The strides of the matched conv if its kernel is 1x1 (all spatial axes) and the input's rank
    is known, else None."""
    conv = m.node("conv")
    t, w = graph.type_of(conv.inputs[0]), graph.type_of(conv.inputs[1])
    if t is None or t.rank is None or t.rank < 3:
        return None
    spatial = t.rank - 2
    kernel = conv.attrs.get("kernel_shape")
    if kernel is None and w is not None and w.shape is not None:
        kernel = list(w.shape[2:])
    if kernel is None or [int(k) for k in kernel] != [1] * spatial:
        return None
    return [int(s) for s in conv.attrs.get("strides") or [1] * spatial]


def _check(graph: Graph, m: Match):
    conv = m.node("conv")
    t = graph.type_of(conv.inputs[0])
    if t is None or t.rank is None or t.rank < 3:
        return m.fail("the input's rank is unknown", conv)
    strides = _strides(graph, m)
    if strides is None:
        return m.fail("the kernel is not 1x1 (or its size is unknown)", conv)
    if all(s == 1 for s in strides):
        return m.fail("the strides are all 1: nothing to subsample", conv)
    if any(int(p) for p in conv.attrs.get("pads") or ()):
        return m.fail("the conv is padded: a slice would not produce its zero border", conv)
    if graph.opset_of("") < 10:
        return m.fail(f"the graph is at opset {graph.opset_of('')}: Slice takes steps from opset 10", conv)
    auto_pad = conv.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad not in ("NOTSET", "VALID"):
        return m.fail(f"auto_pad {auto_pad} pads the input", conv)
    return None


def _rewrite(graph: Graph, m: Match) -> Replacement:
    conv = m.node("conv")
    x = conv.inputs[0]
    strides = _strides(graph, m)
    spatial = len(strides)
    xt, yt = graph.type_of(x), graph.type_of(conv.outputs[0])
    shape = None
    if xt.shape is not None and yt is not None and yt.shape is not None:
        shape = (*xt.shape[:2], *yt.shape[2:])
    rb = RewriteBuilder(graph)
    axes = list(range(2, 2 + spatial))
    consts = [rb.const(np.asarray(v, dtype=np.int64), name=n)
              for n, v in (("subsample_starts", [0] * spatial), ("subsample_ends", [_TO_END] * spatial),
                           ("subsample_axes", axes), ("subsample_steps", strides))]
    sampled = rb.op("Slice", [x, *consts], like=TensorType(xt.dtype, shape), name="subsample")
    attrs = {k: v for k, v in conv.attrs.items() if k not in ("strides", "auto_pad", "pads")}
    attrs["strides"] = [1] * spatial
    out = rb.op("Conv", [sampled, *conv.inputs[1:]], like=m.root_value, attrs=attrs)
    return rb.replace({m.root_value: out})


SUBSAMPLE_STRIDED_POINTWISE = RewriteRule(
    "subsample-strided-pointwise", CONV, _rewrite, _check,
    description="Conv(x, 1x1 kernel, stride s, no padding) -> Conv(Slice(x, steps=s), stride 1)")

register_pass(RewritePass("subsample-strided-pointwise", SUBSAMPLE_STRIDED_POINTWISE,
                          description="a strided 1x1 conv becomes a subsample (strided Slice) and a stride-1 "
                                      "1x1 conv: a plain GEMM on the image"))
