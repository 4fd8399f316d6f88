"""fold-pad (level 2): an explicit zero ``Pad`` before a convolution becomes the conv's own padding.

``Conv(Pad(x, pads, 0), W)`` equals ``Conv(x, W, pads=conv_pads + pads)``: a convolution's
padding *is* a constant-zero border. The same holds for ``AveragePool`` when the border counts
in the average (``count_include_pad=1``, which the explicit zeros did) and for ``MaxPool`` when
the fill is ``-inf`` (the border a max-pool ignores). Why it matters: exporters of TensorFlow
"SAME" padding (transformers' MobileNet v1/v2, EfficientNet, ...) write a ``Pad`` before every
strided conv. Kept, each one is a whole extra copy of the activation, and it hides the conv's
true input from the kernel choice (a depthwise conv over a padded copy cannot use the kernel
that pads on the fly). MobileNet-v2 at 224x224 had 18 such Pads after zero-width ones were
removed.

Folding is exact, not approximate: the conv reads the same values in the same order. Refused,
with the reason, when it would not be: a fill other than zero (``-inf`` for MaxPool), a mode
other than constant, negative pads (a crop), padding of the batch or channel axes, pads or fill
computed at run time, an ``auto_pad`` of SAME_UPPER/SAME_LOWER (whose pads depend on the input
size the fold changes), ``ceil_mode=1`` pools (whose last-window rule reads the padded size),
an AveragePool with pads of its own that exclude the border from the average, a MaxPool whose
Indices output is read (indices would count the explicit border), and a Pad read by other nodes
too (it must stay, so folding it would only duplicate work).
"""

from __future__ import annotations

import numpy as np

from dcopt.ir.graph import Graph, Node
from dcopt.passes.base import register_pass
from dcopt.passes.common import pad_spec
from dcopt.passes.match import Match
from dcopt.passes.pattern import Op, Var
from dcopt.passes.rewrite import Replacement, RewriteBuilder, RewritePass, RewriteRule

#: The ops whose padding attribute can take a Pad's border, and the fill their padding means.
WINDOW_OPS = ("Conv", "AveragePool", "MaxPool")

PADDED_WINDOW = Op(WINDOW_OPS, Op("Pad", Var("x"), ..., name="padded"), ..., name="window")


def _auto_pad(graph: Graph, node: Node) -> str:
    value = graph.attr(node, "auto_pad") or "NOTSET"
    return value.decode() if isinstance(value, bytes) else str(value)


def _window_pads(graph: Graph, node: Node, spatial: int) -> list[int]:
    """The window op's own pads (begin..., end...), zeros when absent or VALID."""
    if _auto_pad(graph, node) == "VALID":
        return [0] * (2 * spatial)
    pads = node.attrs.get("pads")
    return [int(p) for p in pads] if pads else [0] * (2 * spatial)


def _fill_problem(op: str, value) -> str | None:
    """Why the Pad's fill is not the border ``op``'s padding means, or None when it is."""
    if isinstance(value, str):
        return f"the fill value ('{value}') is computed at run time"
    v = float(np.asarray(value, dtype=np.float64))
    if op == "MaxPool":
        return None if v == -np.inf else f"the fill is {v:g}: a max-pool's padding is -inf"
    return None if v == 0 else f"the fill is {v:g}: a {op}'s padding is zero"


def _check(graph: Graph, m: Match):
    window, pad = m.node("window"), m.node("padded")
    try:
        spec = pad_spec(graph, pad)
    except ValueError as e:
        return m.fail(str(e), pad)
    if spec.mode != "constant":
        return m.fail(f"mode {spec.mode} is not a constant border", pad)
    problem = _fill_problem(window.op, spec.value)
    if problem:
        return m.fail(problem, pad)
    widths = spec.widths
    if len(widths) < 3:
        return m.fail(f"the pads cover {len(widths)} axes: a {window.op} input has a batch, a channel and "
                      f"at least one spatial axis", pad)
    if any(widths[0]) or any(widths[1]):
        return m.fail(f"it pads the batch or channel axis ({widths[0]}, {widths[1]})", pad)
    if any(b < 0 or e < 0 for b, e in widths):
        return m.fail(f"negative pads {widths} crop the input", pad)
    if not any(any(w) for w in widths[2:]):
        return m.fail("the pads are all zero (remove-noops drops it)", pad)
    auto_pad = _auto_pad(graph, window)
    if auto_pad not in ("NOTSET", "VALID"):
        return m.fail(f"auto_pad {auto_pad} sizes the padding from the input, which folding changes", window)
    if window.op != "Conv":
        if int(graph.attr(window, "ceil_mode") or 0):
            return m.fail("ceil_mode=1: the last window's rule reads the padded size", window)
        if window.op == "AveragePool" and not int(graph.attr(window, "count_include_pad") or 0) \
                and any(_window_pads(graph, window, len(widths) - 2)):
            return m.fail("its own pads are excluded from the average, the explicit border is not", window)
        if window.op == "MaxPool" and len(window.outputs) > 1 and window.outputs[1]:
            return m.fail("its Indices output would count the explicit border", window)
    return None


def _rewrite(graph: Graph, m: Match) -> Replacement:
    window, pad = m.node("window"), m.node("padded")
    widths = pad_spec(graph, pad).widths[2:]
    spatial = len(widths)
    own = _window_pads(graph, window, spatial)
    pads = [own[i] + widths[i][0] for i in range(spatial)] + [own[spatial + i] + widths[i][1] for i in range(spatial)]
    attrs = {k: v for k, v in window.attrs.items() if k not in ("auto_pad", "pads")}
    attrs["pads"] = pads
    if window.op == "AveragePool":
        attrs["count_include_pad"] = 1  # the explicit zeros were counted
    rb = RewriteBuilder(graph)
    out = rb.op(window.op, [pad.inputs[0], *window.inputs[1:]], like=m.root_value, attrs=attrs)
    return rb.replace({m.root_value: out})


FOLD_PAD = RewriteRule(
    "fold-pad", PADDED_WINDOW, _rewrite, _check,
    description="Conv/AveragePool/MaxPool(Pad(x, constant border)) -> the op with the border in its pads")

register_pass(RewritePass("fold-pad", FOLD_PAD,
                          description="an explicit constant Pad before a Conv, AveragePool (zero border) or "
                                      "MaxPool (-inf border) becomes the op's own padding"))
