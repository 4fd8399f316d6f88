"""What the fusion pass may put together: op classes, iteration spaces, and merge legality.

The fusion pass (:mod:`dcopt.passes.fuse`) decides *which* merges pay off with a data-movement
cost model; this module only says which merges are *allowed*. It knows nothing of bytes.

Every node gets one class from a small table (:func:`classify`):

* **elementwise** -- output element i depends on input element i (Add, Relu, Cast, inference
  BatchNormalization with constant per-channel statistics, ...);
* **broadcast** -- an elementwise op that stretches a smaller run-time input over its output
  (``Sub(x[N,C], mean[N,1])``, Expand): still one pass over the output;
* **reduction** -- reduces some axes of one input (ReduceMean, Softmax, LayerNormalization,
  GlobalAveragePool, ...). Its *signature* is (input shape, reduced axes);
* **gemm** / **conv** -- the heavy *anchors* (MatMul, Gemm, Conv). A group holds at most one;
* **opaque** -- everything else (data movement, windows, control flow, unknown shapes).

A cluster of nodes has a kind (elementwise, reduction, gemm, conv) and an iteration space, and
:func:`merge_kind` says whether two clusters may become one kernel:

* elementwise + elementwise: the same output shape (one loop nest over it). A producer in a
  *smaller* space feeding a broadcast is not pulled in: that would recompute it per element;
* reduction + elementwise: the elementwise ops run on the reduction's full input space (the
  prologue, e.g. ``Pow`` before the variance) or on its reduced space (per-row scalars such as
  ``Sqrt(var + eps)``); anything else -- say an epilogue that broadcasts the reduced value into
  a bigger shape than the input -- is refused;
* reduction + reduction: equal signatures (layer norm's two ReduceMeans over the same rows);
* anchor + elementwise: only downstream of the anchor (an epilogue: bias, residual Add,
  activation, BatchNormalization) and on the anchor's output shape;
* two anchors, anchor + reduction, anything + opaque: never.

A refused merge returns a reason string, which the pass reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from dcopt.ir.graph import Graph, Node
from dcopt.ops import elementwise
from dcopt.passes.common import constant, has_subgraph


class OpClass(str, Enum):
    ELEMENTWISE = "elementwise"
    BROADCAST = "broadcast"
    REDUCTION = "reduction"
    GEMM = "gemm"
    CONV = "conv"
    OPAQUE = "opaque"


ANCHORS = (OpClass.GEMM, OpClass.CONV)

#: Default-domain ops computed one output element at a time: the elementwise family's own list
#: (:mod:`dcopt.ops.elementwise`, one definition) plus Expand and inference BatchNormalization.
ELEMENTWISE_OPS = elementwise.ELEMENTWISE_OPS | {"Expand", "BatchNormalization"}

#: Reductions: op -> function(node, rank, opset, graph) giving the reduced axes (None: unknown).
_REDUCE_OPS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
_AXES_FROM_INPUT_SINCE = {"ReduceSum": 13}  # the others moved axes to an input at opset 18

#: (domain, op) -> class for ops of other domains (the layout pass's channels-last variants).
DOMAIN_OPS = {
    ("dcopt", "ConvNHWC"): OpClass.CONV,
    ("dcopt", "BatchNormalizationNHWC"): OpClass.ELEMENTWISE,
}

ANCHOR_OPS = {"MatMul": OpClass.GEMM, "Gemm": OpClass.GEMM, "Conv": OpClass.CONV}


@dataclass(frozen=True)
class NodeInfo:
    """A node's class and the shapes its kernel loops over.

    ``space``: the output shape (elementwise, anchors) or the reduced input's shape (reductions);
    ``axes``: the reduced axes of a reduction (non-negative, sorted).
    """

    cls: OpClass
    space: tuple | None = None
    axes: tuple[int, ...] | None = None
    reason: str = ""  # why a node is opaque


def opaque(reason: str) -> NodeInfo:
    return NodeInfo(OpClass.OPAQUE, reason=reason)


def _full_shape(graph: Graph, name: str) -> tuple | None:
    """The shape of ``name`` when every dim is known (ints or named symbols), else None."""
    t = graph.type_of(name) if name else None
    if t is None or getattr(t, "shape", None) is None or any(d is None for d in t.shape):
        return None
    return tuple(t.shape)


def _numel_le(small: tuple, big: tuple) -> bool:
    """True when ``small`` has fewer elements than ``big`` (a broadcast), judged by rank and dims."""
    if len(small) < len(big):
        return True
    return any(s == 1 and b != 1 for s, b in zip(small[-len(big):], big))


def _live_outputs(node: Node, read: set[str]) -> list[str]:
    return [o for o in node.outputs if o and o in read]


def classify(graph: Graph, node: Node, read: set[str], disabled: frozenset[OpClass] = frozenset()) -> NodeInfo:
    """The class of ``node`` (``read``: every container some node or graph output reads)."""
    info = _classify(graph, node, read)
    if info.cls in disabled:
        return opaque(f"fusion of {info.cls.value} ops is disabled")
    return info


def _classify(graph: Graph, node: Node, read: set[str]) -> NodeInfo:
    if has_subgraph(node):
        return opaque("it has a subgraph")
    key = (node.domain, node.op)
    if node.domain not in ("", "ai.onnx") and key not in DOMAIN_OPS:
        return opaque(f"op {node.domain}.{node.op} is not in the fusion table")
    out = _full_shape(graph, node.outputs[0]) if node.outputs else None
    if out is None:
        return opaque("its output shape is not known")
    cls = DOMAIN_OPS.get(key) or ANCHOR_OPS.get(node.op)
    if cls is not None:
        return NodeInfo(cls, out)
    if node.op in ELEMENTWISE_OPS:
        if len(_live_outputs(node, read)) > 1 or (node.op == "BatchNormalization"
                                                  and node.attrs.get("training_mode", 0)):
            return opaque("it computes more than one live output")
        shapes = [_full_shape(graph, i) for i in node.present_inputs if constant(graph, i) is None]
        if any(s is None for s in shapes):
            return opaque("an input shape is not known")
        stretched = node.op == "Expand" or any(_numel_le(s, out) for s in shapes)
        return NodeInfo(OpClass.BROADCAST if stretched else OpClass.ELEMENTWISE, out)
    axes = reduced_axes(graph, node)
    if axes is None:
        return opaque("it is not an elementwise op, a reduction over known axes, or an anchor")
    full = _full_shape(graph, node.inputs[0])
    if full is None:
        return opaque("its input shape is not known")
    return NodeInfo(OpClass.REDUCTION, full, axes)


def reduced_axes(graph: Graph, node: Node) -> tuple[int, ...] | None:
    """Axes a reduction-like node reduces (sorted, non-negative), or None if not one/unknown."""
    if node.domain not in ("", "ai.onnx") or not node.inputs:
        return None
    x = graph.type_of(node.inputs[0])
    rank = None if x is None or x.shape is None else len(x.shape)
    if rank is None:
        return None
    opset = graph.opset_of("")
    op, attrs = node.op, node.attrs
    if op in ("Softmax", "LogSoftmax", "Hardmax"):
        axis = attrs.get("axis", -1 if opset >= 13 else 1) % rank
        return (axis,) if opset >= 13 else tuple(range(axis, rank))
    if op in ("LayerNormalization", "RMSNormalization"):
        return tuple(range(attrs.get("axis", -1) % rank, rank))
    if op in ("GlobalAveragePool", "GlobalMaxPool", "InstanceNormalization"):
        return tuple(range(2, rank))
    if op in ("ArgMax", "ArgMin"):
        return (attrs.get("axis", 0) % rank,)
    if op not in _REDUCE_OPS:
        return None
    if opset >= _AXES_FROM_INPUT_SINCE.get(op, 18):
        if len(node.inputs) > 1 and node.inputs[1]:
            value = constant(graph, node.inputs[1])
            if value is None:
                return None
            axes = [int(a) for a in np.asarray(value).reshape(-1)]
        else:
            axes = []
        if not axes and attrs.get("noop_with_empty_axes", 0):
            return None
    else:
        axes = list(attrs.get("axes", ()))
    return tuple(sorted({a % rank for a in axes})) if axes else tuple(range(rank))


# -- clusters and merge legality ----------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A cluster's kind and iteration space (see the module doc)."""

    kind: str  # "elementwise", "reduction", "gemm", "conv"
    space: tuple
    axes: tuple[int, ...] | None = None  # reductions only

    def allowed_outputs(self) -> set[tuple]:
        """Shapes of the values a group of this shape may compute: the space, plus, for a
        reduction, its reduced shape with the reduced axes kept as 1s. Without keepdims the reduced
        value only broadcasts back along the right axes when the reduced axes lead (numpy aligns
        shapes from the right): ``Sub(x[8, 16], ReduceSum(x, axes=[1], keepdims=0)[8])`` pairs row
        i with sum j, which no row-by-row kernel computes."""
        if self.axes is None:
            return {self.space}
        keep = tuple(1 if i in self.axes else d for i, d in enumerate(self.space))
        squeezed = tuple(d for i, d in enumerate(self.space) if i not in self.axes)
        leading = self.axes == tuple(range(len(self.axes)))
        return {self.space, keep, squeezed} if leading else {self.space, keep}


def shape_of(info: NodeInfo) -> Shape | None:
    """The one-node cluster shape of a fusable node (None for opaque ones)."""
    if info.cls is OpClass.OPAQUE:
        return None
    kind = "elementwise" if info.cls is OpClass.BROADCAST else info.cls.value
    return Shape(kind, info.space, info.axes)


def merge_kind(a: Shape, b: Shape, *, anchor_fed_by_other: bool) -> Shape | str:
    """The shape of the merged cluster, or why ``a`` and ``b`` may not merge.

    ``anchor_fed_by_other``: the anchor of one cluster reads a value the other computes (the
    elementwise side would be a prologue of the GEMM/conv, which an epilogue kernel cannot run).
    """
    kinds = {a.kind, b.kind}
    if len(kinds & {"gemm", "conv"}) == 2 or (a.kind == b.kind and a.kind in ("gemm", "conv")):
        return "a group holds one GEMM/conv anchor; both clusters have one"
    if kinds == {"elementwise"}:
        return a if a.space == b.space else f"elementwise iteration spaces differ ({list(a.space)} vs {list(b.space)})"
    if kinds == {"reduction"}:
        if (a.space, a.axes) != (b.space, b.axes):
            return (f"reductions differ (shape {list(a.space)} axes {list(a.axes)} vs shape {list(b.space)} "
                    f"axes {list(b.axes)})")
        return a
    if "elementwise" not in kinds:
        return f"a {a.kind} cluster and a {b.kind} cluster do not fuse"
    big, small = (a, b) if b.kind == "elementwise" else (b, a)
    if big.kind in ("gemm", "conv"):
        if anchor_fed_by_other:
            return f"the elementwise ops would be a prologue of the {big.kind} anchor (only epilogues fuse)"
        if small.space != big.space:
            return f"epilogue shape {list(small.space)} differs from the {big.kind} output {list(big.space)}"
        return big
    if small.space not in big.allowed_outputs():
        return (f"elementwise shape {list(small.space)} is neither the reduction's input shape {list(big.space)} "
                f"nor its reduced shape")
    return big
