"""Common-subexpression elimination: one node per distinct computation, one copy per constant.

Two nodes compute the same value when their :attr:`Node.key` matches (same domain, op,
inputs and attributes); for two-input commutative ops the input order does not matter.
Nodes are visited in topological order with earlier merges already applied to their inputs, so
whole duplicated chains collapse in one run. Parameters with bit-identical data (same dtype,
shape and bytes) are merged first, which lets nodes reading different copies of one constant
merge too.

Never merged: nondeterministic ops (two RandomNormal draws are different values), nodes with
subgraphs, a node whose output is a graph output (its name must survive), and values read
inside subgraphs (those reads cannot be rewired).
"""

from __future__ import annotations

import hashlib

import numpy as np

from dcopt.ir.graph import Graph, Node
from dcopt.passes.base import Pass, PassResult, register_pass
from dcopt.passes.common import has_subgraph, is_nondeterministic, subgraph_reads

#: Two-input ops whose result does not depend on operand order (bit for bit, NaNs included).
COMMUTATIVE = frozenset({"Add", "Mul", "Max", "Min", "Sum", "Mean", "And", "Or", "Xor", "Equal",
                         "BitwiseAnd", "BitwiseOr", "BitwiseXor"})


def _key(node: Node) -> tuple:
    domain, op, inputs, attrs = node.key
    if op in COMMUTATIVE and domain in ("", "ai.onnx") and len(inputs) == 2:
        inputs = tuple(sorted(inputs))
    return domain, op, inputs, attrs


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _digest(a: np.ndarray) -> bytes:
    if a.dtype == object:  # strings: hash the values, not the object pointers
        return hashlib.blake2b(repr(a.reshape(-1).tolist()).encode(), digest_size=16).digest()
    return hashlib.blake2b(_bits(a), digest_size=16).digest()


def _fingerprint(a: np.ndarray) -> bytes:
    """The first and last 4 KiB of a tensor's bytes: different weights almost always differ
    there, so only tensors that agree are hashed whole (hashing reads every byte: every page
    of a model whose weights are mapped from its file)."""
    if a.dtype == object:
        return _digest(a)
    bits = _bits(a)
    return bytes(bits[:4096]) + bytes(bits[-4096:])


def _same_data(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype == object:
        return a.reshape(-1).tolist() == b.reshape(-1).tolist()
    return np.array_equal(_bits(a), _bits(b))


@register_pass
class CommonSubexpressionElimination(Pass):
    name = "cse"
    in_place = True
    description = "merge nodes computing the same value and parameters holding the same data"

    def run(self, graph: Graph, ctx) -> PassResult:
        in_subgraphs = subgraph_reads(graph)
        rename = self._duplicate_parameters(graph, in_subgraphs)
        params_merged = len(rename)
        for duplicate in rename:
            del graph.containers[duplicate]
        seen: dict[tuple, Node] = {}
        kept: list[Node] = []
        refusals: list[tuple[str, str]] = []
        nodes_merged = 0
        for node in graph.nodes:
            if rename and any(i in rename for i in node.inputs):
                node = node.replace(inputs=tuple(rename.get(i, i) for i in node.inputs))
            if is_nondeterministic(graph, node) or has_subgraph(node):
                kept.append(node)
                continue
            key = _key(node)
            first = seen.setdefault(key, node)
            why = "" if first is node else self._why_not(graph, node, first, in_subgraphs)
            if first is node or why:
                if why:
                    refusals.append((node.label, why))
                kept.append(node)
                continue
            for mine, theirs in zip(node.outputs, first.outputs):
                if mine:
                    rename[mine] = theirs
                    graph.containers.pop(mine, None)
            nodes_merged += 1
        changed = bool(rename)
        if changed:
            graph.nodes = kept
        return PassResult(graph, changed, {"nodes_merged": nodes_merged, "parameters_merged": params_merged},
                          refusals)

    @staticmethod
    def _why_not(graph: Graph, node: Node, first: Node, in_subgraphs: set[str]) -> str:
        for i, out in enumerate(node.outputs):
            if not out:
                continue
            if out in graph.outputs:
                return f"its output '{out}' is a graph output (same value as '{first.label}')"
            if out in in_subgraphs:
                return f"its output '{out}' is read inside a subgraph"
            if i >= len(first.outputs) or not first.outputs[i]:
                return f"it wires output {i}, which '{first.label}' leaves unset"
        return ""

    @staticmethod
    def _duplicate_parameters(graph: Graph, in_subgraphs: set[str]) -> dict[str, str]:
        """``{duplicate: kept}`` for parameters with identical data (first in container order kept)."""
        groups: dict[tuple, list[str]] = {}
        for name, c in graph.parameters.items():
            if name in graph.outputs or name in in_subgraphs:
                continue
            groups.setdefault((c.data.dtype.str, c.data.shape), []).append(name)
        candidates: dict[tuple, list[str]] = {}
        for key, names in groups.items():
            for name in names if len(names) > 1 else ():
                candidates.setdefault((key, _fingerprint(graph.containers[name].data)), []).append(name)
        rename: dict[str, str] = {}
        for names in candidates.values():
            if len(names) < 2:
                continue
            by_digest: dict[bytes, list[str]] = {}
            for name in names:
                by_digest.setdefault(_digest(graph.containers[name].data), []).append(name)
            for same in by_digest.values():
                reps: list[str] = []
                for name in same:
                    data = graph.containers[name].data
                    rep = next((r for r in reps if _same_data(graph.containers[r].data, data)), None)
                    if rep is None:
                        reps.append(name)
                    else:
                        rename[name] = rep
        return rename
