"""Match results, failure reasons, and the graph index the matcher reads.

Kept apart from the pattern classes (:mod:`dcopt.passes.pattern`) because rewrites, checks and
reports use these without caring how a pattern is written:

* :class:`Match` holds the captures of a match; it is immutable so backtracking is free.
* :class:`MatchFailure` says why a match was refused (reason, node, how deep the match got);
  like onnxscript's ``MatchResult().fail(reason, node)`` a rule's check returns one.
* :class:`GraphIndex` maps values to producers and consumers once per sweep; the rewrite engine
  updates it as it edits, so matching never rescans the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from dcopt.ir.graph import Graph, Node
from dcopt.passes.common import constant, subgraph_reads


def norm_domain(d: str) -> str:
    return "" if d == "ai.onnx" else d


def short(value: Any) -> str:
    """A compact rendering of an actual value for failure messages."""
    if isinstance(value, np.ndarray):
        if value.size == 1:
            return f"{value.reshape(-1)[0].item():.7g}" if value.dtype.kind == "f" else repr(value.reshape(-1)[0].item())
        if value.size <= 6:
            return np.array2string(value.reshape(-1), precision=6, separator=", ")
        return f"array{tuple(value.shape)} of {value.dtype}"
    return repr(value)


def describe_check(check: Callable) -> str:
    """Name a predicate for messages: its ``description``, function name, or lambda location."""
    text = getattr(check, "description", None)
    if text:
        return text
    code = getattr(check, "__code__", None)
    name = getattr(check, "__name__", type(check).__name__)
    if name == "<lambda>" and code is not None:
        return f"<lambda at {code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}>"
    return name


@dataclass(frozen=True)
class Predicate:
    """A check with a readable description: ``Const("eps", check=Predicate(is_tiny, "eps < 1e-3"))``."""

    fn: Callable[[Any], bool]
    description: str

    def __call__(self, value: Any) -> bool:
        return bool(self.fn(value))


@dataclass(frozen=True)
class MatchFailure:
    """Why a match was refused: a reason, the node it concerns, and how far the match got.

    ``depth`` counts the steps satisfied before the failure (each op found, each of its
    constraints met, each leaf bound), so of all the branches a search tried, the failure with
    the greatest depth is the nearest miss. Falsy, so ``if pattern.match(graph, v):`` reads naturally; ``str()`` is the message.
    """

    reason: str
    node: Node | None = None
    depth: int = 0

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return self.reason if self.node is None else f"{self.reason} (at node '{self.node.label}' ({self.node.op}))"


class Match:
    """Captures of a (partial) match: value names, nodes and constants, by capture name.

    Immutable on purpose: each binding returns a new Match, so backtracking is free.
    ``nodes`` lists every matched node (root first); ``root`` is the node that writes the value
    the pattern was matched at (``root_value``), None when the pattern's top is a ``Var``.
    """

    __slots__ = ("index", "values", "named_nodes", "nodes", "private", "depth", "at", "root", "root_value")

    def __init__(self, index: "GraphIndex", values=None, named_nodes=None, nodes=(), private=(), depth=0, at=None,
                 root=None, root_value=""):
        self.index = index
        self.values: dict[str, str] = values or {}
        self.named_nodes: dict[str, Node] = named_nodes or {}
        self.nodes: tuple[Node, ...] = nodes
        self.private: tuple[Node, ...] = private
        self.depth = depth
        self.at: Node | None = at
        self.root: Node | None = root
        self.root_value = root_value

    def _copy(self, **changes) -> "Match":
        fields = {k: getattr(self, k) for k in self.__slots__}
        fields.update(changes)
        return Match(**fields)

    @property
    def graph(self) -> Graph:
        return self.index.graph

    # -- reading captures (for checks and rewrites) ---------------------------------------------
    def value(self, name: str) -> str:
        """The container bound to capture ``name``."""
        if name not in self.values:
            raise KeyError(f"no capture named '{name}' in this match (captures: {sorted(self.values)})")
        return self.values[name]

    def node(self, name: str) -> Node:
        """The node bound to an ``Op(..., name=name)``."""
        if name not in self.named_nodes:
            raise KeyError(f"no node captured as '{name}' (node captures: {sorted(self.named_nodes)})")
        return self.named_nodes[name]

    def const(self, name: str) -> np.ndarray:
        """The data of the constant bound to ``name``."""
        data = self.index.constant(self.value(name))
        if data is None:
            raise KeyError(f"capture '{name}' ('{self.values[name]}') is not a constant")
        return data

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.values.get(name, default)

    def __contains__(self, name: str) -> bool:
        """Whether ``name`` was bound (tells which branch of an ``Alt``/``Optional`` matched)."""
        return name in self.values

    def fail(self, reason: str, node: Node | None = None) -> MatchFailure:
        """A refusal from a rule's ``check``, ranked as a failure of the whole match."""
        return MatchFailure(reason, node, self.depth)

    def __repr__(self) -> str:
        return f"Match(root={self.root.label if self.root else None!r}, values={self.values})"


def constant_value(graph: Graph, name: str, producer: Node | None = None) -> np.ndarray | None:
    """The data of ``name`` if it is a parameter or the output of a ``Constant`` node."""
    data = constant(graph, name)
    if data is not None or producer is None or producer.op != "Constant" or norm_domain(producer.domain):
        return data
    for key, value in producer.attrs.items():
        if key.startswith("value"):
            return value if isinstance(value, np.ndarray) else np.asarray(value)
    return None


class GraphIndex:
    """Producer and consumer maps of a graph, built once per sweep.

    ``protected`` holds names whose every use cannot be seen as a node input: graph outputs and
    values read implicitly inside subgraphs. The rewrite engine keeps the maps current with
    :meth:`add` / :meth:`remove` as it edits, so matching never rescans the graph.
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self.producers: dict[str, Node] = {}
        self.consumers: dict[str, list[Node]] = {}
        self.protected = set(graph.outputs) | subgraph_reads(graph)
        self._alive: set[int] = set()
        for node in graph.nodes:
            self.add(node)

    def add(self, node: Node) -> None:
        self._alive.add(id(node))
        for out in node.outputs:
            if out:
                self.producers[out] = node
        for name in dict.fromkeys(node.present_inputs):
            self.consumers.setdefault(name, []).append(node)

    def remove(self, node: Node) -> None:
        self._alive.discard(id(node))
        for out in node.outputs:
            if self.producers.get(out) is node:
                del self.producers[out]
        for name in dict.fromkeys(node.present_inputs):
            self.consumers[name] = [c for c in self.consumers[name] if c is not node]

    def alive(self, node: Node) -> bool:
        return id(node) in self._alive

    def producer(self, name: str) -> Node | None:
        return self.producers.get(name)

    def readers(self, name: str) -> list[Node]:
        return self.consumers.get(name, [])

    def is_used(self, name: str) -> bool:
        return name in self.protected or bool(self.consumers.get(name))

    def constant(self, name: str) -> np.ndarray | None:
        return constant_value(self.graph, name, self.producers.get(name))


class Search:
    """One matching attempt: the index it reads and the deepest failure seen so far."""

    def __init__(self, index: GraphIndex):
        self.index = index
        self.deepest: MatchFailure | None = None

    def fail(self, m: Match, reason: str, node: Node | None) -> None:
        self.record(MatchFailure(reason, node, m.depth))

    def record(self, failure: MatchFailure) -> None:
        if self.deepest is None or failure.depth > self.deepest.depth:
            self.deepest = failure


def escaping_intermediate(index: GraphIndex, m: Match) -> MatchFailure | None:
    """Refuse a match whose non-root, non-shared nodes are read from outside it: deleting them
    would break those readers, keeping them would compute the values twice."""
    inside = {id(n) for n in m.nodes}
    for node in m.private:
        if node is m.root:
            continue
        for out in node.outputs:
            if out in index.protected:
                where = "a graph output" if out in index.graph.outputs else "read inside a subgraph"
                return m.fail(f"intermediate '{out}' is {where}", node)
            outside = [c for c in index.readers(out) if id(c) not in inside]
            if outside:
                return m.fail(f"intermediate '{out}' is also read by '{outside[0].label}' ({outside[0].op}) "
                              "outside the match", node)
    return None
