"""Small graph queries shared by the canonicalization passes.

Each answers one question a rewrite must settle before it may fire — is this value a known
constant, is this dtype trustworthy, is this op deterministic, who reads this name from inside
a subgraph — so that every pass answers it the same (conservative) way.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dcopt.ir import dtypes
from dcopt.ir.graph import Graph, Node
from dcopt.ir.types import TensorType

#: Ops whose result differs from run to run (:mod:`dcopt.ops.misc`): never folded, merged or deduplicated.
from dcopt.ops.misc import RANDOM_OPS  # noqa: E402


def constant(graph: Graph, name: str) -> np.ndarray | None:
    """The data of ``name`` when it is a parameter (:meth:`Graph.constant`)."""
    return graph.constant(name)


def dropout_is_training(graph: Graph, node: Node) -> bool | None:
    """Whether a Dropout node drops elements: False (inference), True, or None (not known).

    Before opset 12 an ONNX Dropout is an identity at inference (``is_test`` existed only up to
    opset 6: is_test=0 meant training). From opset 12 the optional ``training_mode`` input
    decides, and only a constant False (or its absence) proves inference.
    """
    opset = graph.opset_of(node.domain)
    if opset < 7:
        return not node.attrs.get("is_test", 0)
    if opset < 12 or len(node.inputs) < 3 or not node.inputs[2]:
        return False
    flag = constant(graph, node.inputs[2])
    if flag is None:
        return None
    return bool(np.asarray(flag).reshape(-1)[0]) if flag.size else False


def is_nondeterministic(graph: Graph, node: Node) -> bool:
    """True for random ops and for a Dropout that may be in training mode."""
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op in RANDOM_OPS:
        return True
    return node.op == "Dropout" and dropout_is_training(graph, node) is not False


def has_subgraph(node: Node) -> bool:
    return bool(node.subgraphs)


def node_subgraph_reads(node: Node) -> set[str]:
    """Outer-scope names that the subgraphs of ``node`` (If/Loop/Scan bodies) read implicitly."""
    return node.outer_reads()


def subgraph_reads(graph: Graph) -> set[str]:
    """Names of ``graph``'s scope that subgraphs read implicitly (not as node inputs).

    Renaming or deleting such a value in the outer graph would leave the subgraph dangling, so
    passes treat these reads as uses that cannot be rewired.
    """
    reads: set[str] = set()
    for node in graph.nodes:
        reads |= node_subgraph_reads(node)
    return reads


def known_dtype(graph: Graph, name: str) -> str | None:
    """The dtype of ``name`` when it can be trusted, else None.

    The importer gives a transient whose type inference failed the placeholder type
    ``float32[?]``; a dtype is trusted only for graph inputs, parameters, and transients with a
    known rank (which means inference did run on them).
    """
    c = graph.containers.get(name)
    if c is None:
        return None
    if c.data is not None:
        return dtypes.from_numpy(c.data.dtype)
    if name in graph.inputs or c.type.shape is not None:
        return c.type.dtype
    return None


def same_known_shape(a: TensorType | None, b: TensorType | None) -> bool:
    """True when both shapes are fully known and identical.

    Symbolic dims count as known: the IR defines two dims with the same name to be equal.
    Unknown dims (None) never compare equal, not even to themselves.
    """
    if a is None or b is None or a.shape is None or b.shape is None:
        return False
    return all(d is not None for d in a.shape) and tuple(a.shape) == tuple(b.shape)


def broadcast_keeps_shape(shape: tuple | None, other: tuple) -> bool:
    """True when broadcasting a tensor of ``shape`` with one of static ``other`` gives ``shape``.

    ``shape`` may hold symbolic or unknown dims; a dim of ``other`` must be 1 or equal to a static
    dim of ``shape``. An unknown-rank ``shape`` only keeps its shape against a scalar.
    """
    if shape is None:
        return len(other) == 0
    if len(other) > len(shape):
        return False
    for mine, theirs in zip(reversed(shape), reversed(other)):
        if theirs != 1 and not (isinstance(mine, int) and mine == theirs):
            return False
    return True


def numel(array: np.ndarray | None) -> int:
    return 0 if array is None else int(np.asarray(array).size)


class PadSpec(NamedTuple):
    """What a Pad node does, read once for every pass that needs it (remove-noops, the
    Pad-into-window folding, the loop expansion)."""
    widths: list[tuple[int, int]]  # (begin, end) per axis of the input; negative crops
    value: object  # the fill: a number, or the name of the run-time input that holds it
    mode: str  # constant, edge, reflect or wrap


def pad_spec(graph: Graph, node: Node) -> PadSpec:
    """The pads, fill and mode of a Pad node at any opset (attributes before opset 11, inputs
    after, the ``axes`` input from opset 18). Raises ValueError naming what is not known at
    compile time (pads computed at run time, axes of an input whose rank is unknown) or is
    malformed (a pads length that does not give each axis a begin and an end)."""
    from dcopt.ops.tensor import norm_axis

    opset = graph.opset_of(node.domain)
    mode = graph.attr(node, "mode") or "constant"
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    axes = None
    if opset < 11:
        pads, value = node.attrs.get("pads"), float(graph.attr(node, "value") or 0.0)
    else:
        name = node.inputs[1] if len(node.inputs) > 1 else ""
        pads = constant(graph, name) if name else None
        if pads is None:
            raise ValueError(f"the pads ('{name}', input 1) are computed at run time")
        value_name = node.inputs[2] if len(node.inputs) > 2 else ""
        value = constant(graph, value_name) if value_name else np.zeros(1)
        if value is None:
            value = value_name
        else:
            value = np.asarray(value).reshape(-1)
            value = value[0] if value.size else 0
        axes_name = node.inputs[3] if len(node.inputs) > 3 else ""
        if axes_name:
            axes = constant(graph, axes_name)
            if axes is None:
                raise ValueError(f"the axes ('{axes_name}', input 3) are computed at run time")
    pads = [int(p) for p in np.asarray(pads if pads is not None else [], dtype=np.int64).reshape(-1)]
    t = graph.type_of(node.inputs[0])
    known_rank = t.rank if t is not None else None
    if axes is None:  # every axis: the input's rank decides (a wrong pads length is reported below)
        rank = known_rank if known_rank is not None else len(pads) // 2
        axes = range(rank)
    else:
        if known_rank is None:
            raise ValueError("the input's rank is unknown, so the pad axes cannot be placed")
        rank = known_rank
        axes = [norm_axis(int(a), rank) for a in np.asarray(axes).reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise ValueError(f"pads {pads} do not give a begin and an end for each of the {len(axes)} axes")
    widths = [(0, 0)] * rank
    for i, axis in enumerate(axes):
        widths[axis] = (pads[i], pads[i + len(axes)])
    return PadSpec(widths, value, mode)
