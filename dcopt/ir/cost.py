"""Data-movement cost model: FLOPs and bytes moved, per node and per graph.

Why: dcopt's optimizations (fusion, memory planning, layout changes) do not change how much
arithmetic a model does; they change how many bytes travel between kernels and memory. To
show what a pass bought, and to point at what to optimize next, we need the same two numbers
for every node before and after: the work it does (FLOPs) and the data it moves (bytes). Their
ratio, the arithmetic intensity, says whether a kernel is bound by compute or by memory.

The model is deliberately simple and reproducible, computed from the container types only:

* **Bytes.** A node reads each distinct input container once, in full, and writes each live
  output once (an output nobody reads, like an unused Dropout mask, is not materialized).
  Parameter (and constant) inputs count: weights have to be read too; ``param_bytes`` says how
  much of the read is weights. Subgraph ops (If/Loop/Scan) count their inputs, the outer values
  their bodies capture, and their outputs, not the traffic inside the body.
* **FLOPs.** One formula per op in a registry (``@flops("Conv")``, the table lives in
  :mod:`dcopt.ir.cost_formulas`). A multiply-add is 2 FLOPs.
  Elementwise ops cost a per-element constant times the output elements; transcendental
  functions (Exp, Tanh, Erf, ...) cost :data:`TRANSCENDENTAL` each. Pure data movement
  (Reshape, Gather, Concat, ...) is 0 FLOPs. An op with no formula gets the elementwise default
  (1 per output element) and ``modelled=False`` so a report can flag it.
* **Fusion groups** (``dcopt.FusedGroup``) do the arithmetic of their members: their FLOPs are the
  sum of their body's nodes' FLOPs. Their bytes are what crosses the group's boundary (inputs
  read once, live outputs written once); ``fusion_bytes_saved`` says how many bytes the members
  would have moved on their own beyond that -- what fusing them saved.
* **Symbolic dims.** ``bindings`` specializes named dims (``{"N": 1}``). A node whose sizes are
  still not static gets ``known=False``; it is left out of the totals and counted in
  ``GraphCost.unknown_nodes``.
* **Constant-producing nodes.** Some models build their weights at run time from constants
  (the ONNX "light" model zoo makes every weight with ``ConstantOfShape``). A node that is
  deterministic and reads only constants is *constant-producing*: constant folding removes it,
  so it is excluded from the run-time totals (counted in ``GraphCost.constant_nodes``) and its
  outputs count as weights, like parameters.

``GraphCost.transient_bytes`` -- the bytes moved *between kernels*, each transient written once
and read once per reading node -- is the quantity fusion and memory planning reduce.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping

import numpy as np

from dcopt.ir.cost_formulas import (  # noqa: F401 (the formula API is re-exported from here)
    BATCHNORM_PER_ELEMENT, NORMALIZATION_PER_ELEMENT, SOFTMAX_PER_ELEMENT, TRANSCENDENTAL, FlopFormula, _FORMULAS,
    _Unknown, _View, flops, has_formula, per_input_element, per_output_element,
)
from dcopt.ir.graph import Graph, Kind, Node
from dcopt.ir.groups import is_group
from dcopt.ir.types import TensorType

#: Ops whose outputs are not constant even when their inputs are.
NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                              "Multinomial", "Bernoulli"})


# -- result types -------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpCost:
    """Cost of one node. Size fields are None when the node's sizes are not static."""

    node: str
    op: str
    flops: int | None
    bytes_read: int | None
    bytes_written: int | None
    param_bytes: int | None
    known: bool
    modelled: bool = True  # False: no formula for this op, the elementwise default was used
    constant: bool = False  # constant-producing: folded away at compile time
    fusion_bytes_saved: int | None = None  # fusion groups: members' own bytes moved minus the group's

    @property
    def bytes_moved(self) -> int | None:
        if self.bytes_read is None or self.bytes_written is None:
            return None
        return self.bytes_read + self.bytes_written

    @property
    def arithmetic_intensity(self) -> float | None:
        """FLOPs per byte moved (None if unknown or nothing is moved)."""
        moved = self.bytes_moved
        if self.flops is None or not moved:
            return None
        return self.flops / moved

    def to_dict(self) -> dict:
        return {**asdict(self), "bytes_moved": self.bytes_moved, "arithmetic_intensity": self.arithmetic_intensity}


@dataclass
class OpTypeCost:
    """Aggregate over all (run-time) nodes of one op type."""

    count: int = 0
    flops: int = 0
    bytes: int = 0
    unknown: int = 0


@dataclass
class GraphCost:
    """Whole-graph cost. Totals cover run-time nodes with known cost only (see module doc)."""

    nodes: list[OpCost]
    total_flops: int
    total_bytes_read: int
    total_bytes_written: int
    unknown_nodes: int
    constant_nodes: int
    parameter_count: int  # elements in graph.parameters
    parameter_bytes: int
    weight_count: int  # elements of constant data read at run time (parameters + constant-produced)
    weight_bytes: int
    input_bytes: int | None
    output_bytes: int | None
    transient_bytes: int  # bytes moved between kernels: sum of size x (1 write + readers)
    by_op: dict[str, OpTypeCost] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.total_bytes_read + self.total_bytes_written

    @property
    def total_macs(self) -> int:
        return self.total_flops // 2

    @property
    def arithmetic_intensity(self) -> float | None:
        return self.total_flops / self.total_bytes if self.total_bytes else None

    @property
    def complete(self) -> bool:
        """True when every run-time node's cost is known (the totals are not partial)."""
        return self.unknown_nodes == 0

    def to_dict(self, include_nodes: bool = True) -> dict:
        result = {
            "total_flops": self.total_flops,
            "total_macs": self.total_macs,
            "total_bytes": self.total_bytes,
            "total_bytes_read": self.total_bytes_read,
            "total_bytes_written": self.total_bytes_written,
            "arithmetic_intensity": self.arithmetic_intensity,
            "transient_bytes": self.transient_bytes,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "parameter_count": self.parameter_count,
            "parameter_bytes": self.parameter_bytes,
            "weight_count": self.weight_count,
            "weight_bytes": self.weight_bytes,
            "unknown_nodes": self.unknown_nodes,
            "constant_nodes": self.constant_nodes,
            "complete": self.complete,
            "by_op": {op: asdict(agg) for op, agg in self.by_op.items()},
        }
        if include_nodes:
            result["nodes"] = [c.to_dict() for c in self.nodes]
        return result


# -- computing costs ----------------------------------------------------------------------------

def constant_containers(graph: Graph) -> set[str]:
    """Names of parameters and of outputs of constant-producing nodes (deterministic default-
    domain nodes without subgraphs that read only constants)."""
    constant = set(graph.parameters)
    for node in graph.nodes:
        if _is_constant_node(node, constant):
            constant.update(o for o in node.outputs if o)
    return constant


def _is_constant_node(node: Node, constant: set[str]) -> bool:
    return (node.domain == "" and node.op not in NONDETERMINISTIC
            and not node.subgraphs
            and all(i in constant for i in node.present_inputs))


def captured_names(graph: Graph) -> set[str]:
    """Names a (sub)graph reads from enclosing scopes: used in it, defined nowhere in it."""
    used = set().union(*(reads(n) for n in graph.nodes), graph.outputs)
    return used - set(graph.containers)


def reads(node: Node) -> tuple[str, ...]:
    """Distinct containers a node reads: its inputs plus what its subgraphs capture."""
    captured = (name for body in node.subgraphs for name in sorted(captured_names(body)))
    return tuple(dict.fromkeys((*node.present_inputs, *captured)))


class _Costing:
    """Cost computation for one graph (and, through ``outer``, the scopes around a subgraph)."""

    def __init__(self, graph: Graph, bindings: Mapping[str, int] | None, outer: "_Costing | None" = None):
        self.graph = graph
        self.bindings = dict(bindings or {})
        self.outer = outer
        self.constants = constant_containers(graph)
        self.readers = self._count_readers()

    def type_of(self, name: str) -> TensorType | None:
        t = self.graph.type_of(name)
        if t is None:
            return self.outer.type_of(name) if self.outer else None
        return t.specialize(self.bindings)

    def is_constant(self, name: str) -> bool:
        if name in self.graph.containers:
            return name in self.constants
        return bool(self.outer) and self.outer.is_constant(name)

    def constant_value(self, name: str) -> np.ndarray | None:
        c = self.graph.containers.get(name)
        if c is None:
            return self.outer.constant_value(name) if self.outer else None
        return c.data

    def nbytes(self, names: Iterable[str]) -> int | None:
        sizes = [self.type_of(n) for n in dict.fromkeys(n for n in names if n)]
        if any(t is None or t.nbytes is None for t in sizes):
            return None
        return sum(t.nbytes for t in sizes)

    def subgraph_flops(self, body: Graph) -> int:
        cost = _Costing(body, self.bindings, outer=self).graph_cost()
        if not cost.complete:
            raise _Unknown(f"subgraph {body.name}")
        return cost.total_flops

    def flops_of(self, node: Node) -> tuple[int | None, bool]:
        formula = _FORMULAS.get(node.op) if node.domain == "" else None
        try:  # a malformed node (say, a required attribute missing) is unknown, not a crash
            return (formula or per_output_element(1))(_View(node, self)), formula is not None
        except (_Unknown, KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
            return None, formula is not None

    def node_cost(self, node: Node) -> OpCost:
        if node.domain == "dcopt.loop":
            return self._loop_node_cost(node)
        if is_group(node):
            return self._group_cost(node)
        flop_count, modelled = self.flops_of(node)
        read = self.nbytes(reads(node))
        written = self.nbytes(o for o in node.outputs if self.is_live(o))
        params = self.nbytes(i for i in reads(node) if self.is_constant(i))
        known = None not in (flop_count, read, written)
        constant = _is_constant_node(node, self.constants)
        return OpCost(node.label, node.op if not node.domain else f"{node.domain}.{node.op}", flop_count, read,
                      written, params, known, modelled, constant)

    def _loop_node_cost(self, node: Node) -> OpCost:
        """Loop-level nodes: bytes from their memlets (exactly the elements they touch)."""
        from dcopt.ir import loops

        moved = loops.memlet_cost(self.graph, node, self.bindings)
        flop_count = loops.loop_flops(self.graph, node, self.bindings, TRANSCENDENTAL)
        read = None if moved is None else moved.bytes_read
        written = None if moved is None else moved.bytes_written
        params = self.nbytes(i for i in reads(node) if self.is_constant(i))
        known = None not in (flop_count, read, written)
        return OpCost(node.label, f"{node.domain}.{node.op}", flop_count, read, written, params, known, True,
                      _is_constant_node(node, self.constants))

    def _group_cost(self, node: Node) -> OpCost:
        """A fusion group: its members' FLOPs, the bytes crossing its boundary, and what the members
        would have moved beyond that on their own (their intermediate results, re-read inputs)."""
        members = _Costing(node.attrs["body"], self.bindings, outer=self).graph_cost()
        flop_count = members.total_flops if members.complete else None
        read = self.nbytes(reads(node))
        written = self.nbytes(o for o in node.outputs if self.is_live(o))
        params = self.nbytes(i for i in reads(node) if self.is_constant(i))
        known = None not in (flop_count, read, written)
        saved = members.total_bytes - read - written if known and members.complete else None
        return OpCost(node.label, f"{node.domain}.{node.op}", flop_count, read, written, params, known, True,
                      _is_constant_node(node, self.constants), saved)

    def graph_cost(self) -> GraphCost:
        costs = [self.node_cost(n) for n in self.graph.nodes]
        runtime = [c for c in costs if not c.constant]
        known = [c for c in runtime if c.known]
        weights = self._weights_read_at_runtime()
        return GraphCost(
            nodes=costs,
            total_flops=sum(c.flops for c in known),
            total_bytes_read=sum(c.bytes_read for c in known),
            total_bytes_written=sum(c.bytes_written for c in known),
            unknown_nodes=len(runtime) - len(known),
            constant_nodes=len(costs) - len(runtime),
            parameter_count=sum(c.data.size for c in self.graph.parameters.values()),
            parameter_bytes=sum(c.data.nbytes for c in self.graph.parameters.values()),
            weight_count=sum(self.type_of(n).numel or 0 for n in weights),
            weight_bytes=sum(self.type_of(n).nbytes or 0 for n in weights),
            input_bytes=self.nbytes(self.graph.inputs),
            output_bytes=self.nbytes(self.graph.outputs),
            transient_bytes=self._transient_bytes(),
            by_op=_aggregate(runtime),
        )

    def _count_readers(self) -> dict[str, int]:
        """Container name -> number of run-time (not constant-producing) nodes reading it."""
        readers: dict[str, int] = {}
        for node in self.graph.nodes:
            if not _is_constant_node(node, self.constants):
                for name in reads(node):
                    readers[name] = readers.get(name, 0) + 1
        return readers

    def is_live(self, name: str) -> bool:
        """Whether an output is used at all (read by a node or a graph output). Dead outputs
        (e.g. an unused Dropout mask) are not materialized, so they cost no bytes."""
        return bool(name) and (name in self.readers or name in self.graph.outputs or name in self.constants)

    def _weights_read_at_runtime(self) -> list[str]:
        return [n for n in self.graph.containers if n in self.constants
                and (n in self.readers or n in self.graph.outputs) and self.type_of(n) is not None]

    def _transient_bytes(self) -> int:
        total = 0
        for name, readers in self.readers.items():
            t = self.type_of(name)
            if (name in self.graph.containers and self.graph.kind(name) is Kind.TRANSIENT
                    and name not in self.constants and t is not None and t.nbytes is not None):
                total += t.nbytes * (1 + readers)
        return total


def _aggregate(costs: Iterable[OpCost]) -> dict[str, OpTypeCost]:
    by_op: dict[str, OpTypeCost] = {}
    for c in costs:
        agg = by_op.setdefault(c.op, OpTypeCost())
        agg.count += 1
        if c.known:
            agg.flops += c.flops
            agg.bytes += c.bytes_moved
        else:
            agg.unknown += 1
    return dict(sorted(by_op.items(), key=lambda kv: (-kv[1].flops, -kv[1].count, kv[0])))


def node_cost(graph: Graph, node: Node, bindings: Mapping[str, int] | None = None) -> OpCost:
    """Cost of one node of ``graph`` (symbolic dims specialized by ``bindings``)."""
    return _Costing(graph, bindings).node_cost(node)


def graph_cost(graph: Graph, bindings: Mapping[str, int] | None = None) -> GraphCost:
    """Per-node costs, run-time totals and a per-op-type aggregation for ``graph``."""
    return _Costing(graph, bindings).graph_cost()
