"""The data-centric IR: data containers, op nodes, and the graph that holds them.

* A :class:`Container` is a named piece of data with a :class:`TensorType`. Its *kind*
  (input, parameter, transient, output) follows from the graph: parameters carry data,
  inputs/outputs are listed by the graph, everything else is a transient.
* A :class:`Node` is an immutable op application: op name, domain, input and output container
  names, and typed attributes. ``node.replace(...)`` makes a changed copy; ``node.key`` is a
  structural key used by CSE and caches.
* A :class:`Graph` owns the containers and a topologically ordered node list. Producer and
  consumer edges are explicit and derived from node inputs/outputs (``graph.producer(name)``,
  ``graph.consumers(name)``), so they can never go stale.

Loop-level nodes (maps, reductions, library calls with memlets) from op expansion reuse the
same containers; a node's ``op`` names what it is and its attributes carry the rest.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType
from typing import Any, Iterator, Mapping

import numpy as np

from dcopt.ir.types import TensorType


class Kind(str, Enum):
    INPUT = "input"
    PARAMETER = "parameter"
    TRANSIENT = "transient"
    OUTPUT = "output"


@dataclass
class Container:
    """A named data container. ``data`` is set for parameters (weights, constants)."""

    name: str
    type: TensorType
    data: np.ndarray | None = None

    @property
    def is_parameter(self) -> bool:
        return self.data is not None


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _attr_key(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ("tensor", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, tuple):
        return tuple(_attr_key(v) for v in value)
    if isinstance(value, Graph):
        return ("graph", id(value))
    if isinstance(value, float) and value != value:
        return ("nan",)
    return value


@dataclass(frozen=True, eq=False)
class Node:
    """One op application. Attributes are named Python values: int, float, str, bytes,
    tuples of those, numpy arrays (tensor attributes) or :class:`Graph` (subgraphs)."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "attrs", MappingProxyType({k: _freeze(v) for k, v in dict(self.attrs).items()}))

    def replace(self, **changes) -> "Node":
        return replace(self, **changes)

    @property
    def key(self) -> tuple:
        """Structural key: two nodes with equal keys compute the same values."""
        return (self.domain, self.op, self.inputs, tuple(sorted((k, _attr_key(v)) for k, v in self.attrs.items())))

    @property
    def present_inputs(self) -> tuple[str, ...]:
        """Inputs that are actually wired ('' marks an omitted optional input)."""
        return tuple(i for i in self.inputs if i)

    @property
    def subgraphs(self) -> list["Graph"]:
        """Graph-valued attributes (If branches, Loop/Scan bodies, fusion-group bodies)."""
        found = []
        for value in self.attrs.values():
            for item in value if isinstance(value, tuple) else (value,):
                if isinstance(item, Graph):
                    found.append(item)
        return found

    def outer_reads(self) -> set[str]:
        """Names this node's subgraphs read from enclosing scopes (implicit inputs)."""
        names: set[str] = set()
        for body in self.subgraphs:
            local = set(body.inputs) | set(body.containers)
            for inner in body.nodes:
                names.update(n for n in inner.present_inputs if n not in local)
                names.update(n for n in inner.outer_reads() if n not in local)
            names.update(o for o in body.outputs if o not in local)
        return names

    @property
    def label(self) -> str:
        return self.name or f"{self.op}->{','.join(self.outputs)}"

    def __repr__(self) -> str:
        return f"Node({self.op}, {list(self.inputs)} -> {list(self.outputs)}, name={self.name!r})"


def _rename_input(node: Node, old: str, new: str) -> Node:
    """The node reading ``new`` where it read ``old`` (loop nodes also name it in their memlets)."""
    if node.domain == "dcopt.loop":
        from dcopt.ir.loops import rename_container

        return rename_container(node, old, new)
    return node.replace(inputs=tuple(new if i == old else i for i in node.inputs))


class Graph:
    """A dataflow graph over named containers.

    ``nodes`` is kept in topological order by every method here; passes that rebuild the list
    call :meth:`toposort` (or rely on the verifier to tell them they broke the order).
    """

    def __init__(self, name: str = "graph", opset: Mapping[str, int] | None = None):
        self.name = name
        self.containers: dict[str, Container] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.opset: dict[str, int] = dict(opset or {"": 17})
        self.metadata: dict[str, str] = {}
        self.doc: str = ""
        self.memory_plan = None  # dcopt.passes.memory_plan.MemoryPlan, once plan-memory ran
        #: (dim, dim, node label): sizes an expansion relied on being equal where shape inference
        #: could not prove it (``min(512,S)`` read as ``S``); a run at sizes breaking one is refused
        self.size_checks: list[tuple[str, str, str]] = []
        self._names = itertools.count()

    # -- containers -------------------------------------------------------------------------
    def add_container(self, name: str, type: TensorType, data: np.ndarray | None = None) -> Container:
        c = Container(name, type, data)
        self.containers[name] = c
        return c

    def add_input(self, name: str, type: TensorType) -> Container:
        c = self.add_container(name, type)
        self.inputs.append(name)
        return c

    def add_parameter(self, name: str, data: np.ndarray) -> Container:
        data = np.asarray(data)
        return self.add_container(name, TensorType.of(data), data)

    def kind(self, name: str) -> Kind:
        if name in self.inputs:
            return Kind.INPUT
        if name in self.outputs:
            return Kind.OUTPUT
        c = self.containers.get(name)
        if c is not None and c.data is not None:
            return Kind.PARAMETER
        return Kind.TRANSIENT

    @property
    def parameters(self) -> dict[str, Container]:
        return {n: c for n, c in self.containers.items() if c.data is not None and n not in self.inputs}

    def type_of(self, name: str) -> TensorType | None:
        c = self.containers.get(name)
        return None if c is None else c.type

    def constant(self, name: str | None) -> np.ndarray | None:
        """The data of ``name`` when it is a parameter (a container with data, not a graph input)."""
        if not name or name in self.inputs:
            return None
        c = self.containers.get(name)
        return None if c is None else c.data

    def attr(self, node: Node, name: str, default: Any = None) -> Any:
        """``node``'s attribute ``name``, else the ONNX schema's default at this graph's opset for
        the node's domain, else ``default``."""
        if name in node.attrs:
            return node.attrs[name]
        from dcopt.ops.registry import schema_defaults

        return schema_defaults(node.op, node.domain, self.opset_of(node.domain)).get(name, default)

    def fresh_name(self, base: str) -> str:
        """A container name not used in the graph yet (O(1): rewrites call this a lot).

        Node names are labels, not identifiers, so only containers must be unique; new nodes are
        named after their fresh output container."""
        while True:
            candidate = f"{base}__{next(self._names)}"
            if candidate not in self.containers:
                return candidate

    # -- nodes and edges --------------------------------------------------------------------
    def add_node(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def producers(self) -> dict[str, Node]:
        """Map container name -> the node that writes it."""
        return {out: node for node in self.nodes for out in node.outputs if out}

    def producer(self, name: str) -> Node | None:
        return self.producers().get(name)

    def consumer_map(self) -> dict[str, list[Node]]:
        """Map container name -> nodes that read it (in node order, one entry per node)."""
        result: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in dict.fromkeys(node.present_inputs):
                result.setdefault(name, []).append(node)
        return result

    def consumers(self, name: str) -> list[Node]:
        return self.consumer_map().get(name, [])

    def replace_uses(self, old: str, new: str) -> None:
        """Rewire every reader of ``old`` (nodes and graph outputs) to read ``new``."""
        self.nodes = [_rename_input(n, old, new) if old in n.inputs else n for n in self.nodes]
        self.outputs = [new if o == old else o for o in self.outputs]

    def toposort(self) -> None:
        """Reorder nodes topologically (stable); raises VerificationError on a cycle."""
        from dcopt.ir.verify import topological_order

        self.nodes = topological_order(self)

    def remove_unused_containers(self) -> None:
        """Drop containers nothing reads or writes; a value only an If/Loop/Scan body reads from
        this scope (an implicit input) is used."""
        used = set(self.inputs) | set(self.outputs)
        for node in self.nodes:
            used.update(node.present_inputs)
            used.update(o for o in node.outputs if o)
            if node.subgraphs:
                used.update(node.outer_reads())
        self.containers = {k: v for k, v in self.containers.items() if k in used}

    def to_networkx(self):
        """Node-level dependency graph (networkx.DiGraph over node indices)."""
        import networkx as nx

        g = nx.DiGraph()
        prod = {out: i for i, node in enumerate(self.nodes) for out in node.outputs if out}
        for i, node in enumerate(self.nodes):
            g.add_node(i, node=node)
            for name in node.present_inputs:
                if name in prod:
                    g.add_edge(prod[name], i, container=name)
        return g

    # -- whole-graph helpers ----------------------------------------------------------------
    def copy(self) -> "Graph":
        """Deep copy of structure; parameter arrays are shared (they are treated as immutable)."""
        g = Graph(self.name, self.opset)
        g.containers = {k: Container(c.name, c.type, c.data) for k, c in self.containers.items()}
        g.nodes = list(self.nodes)
        g.inputs = list(self.inputs)
        g.outputs = list(self.outputs)
        g.metadata = dict(self.metadata)
        g.doc = self.doc
        g.memory_plan = self.memory_plan
        g.size_checks = list(self.size_checks)
        # the copy continues the fresh-name sequence without advancing the original's: copying
        # must not change the names later rewrites of the original pick (seeded patches rely on it)
        g._names = copy.copy(self._names)
        return g

    def opset_of(self, domain: str = "") -> int:
        if domain in ("", "ai.onnx"):
            return self.opset.get("", self.opset.get("ai.onnx", 1))
        return self.opset.get(domain, 1)

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.nodes:
            key = n.op if not n.domain else f"{n.domain}.{n.op}"
            hist[key] = hist.get(key, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __str__(self) -> str:
        from dcopt.ir.printer import format_graph

        return format_graph(self)
