"""Small graph queries shared by the canonicalization passes.

Each answers one question a rewrite must settle before it may fire — is this value a known
constant, is this dtype trustworthy, is this op deterministic, who reads this name from inside
a subgraph — so that every pass answers it the same (conservative) way.
"""

from __future__ import annotations

import numpy as np

from dcopt.ir import dtypes
from dcopt.ir.graph import Graph, Node
from dcopt.ir.types import TensorType

#: Ops whose result differs from run to run. They are never folded, merged or deduplicated.
RANDOM_OPS = frozenset({
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
})


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
