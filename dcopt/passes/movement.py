"""An instrument that tracks data movement through a pipeline.

After every pass that changed the graph it records the cost model's totals (FLOPs, bytes moved
by all kernels, bytes moved between kernels, number of kernels), so ``dcopt report`` can show how
each pass changed them. Kernels are run-time nodes (constant-producing nodes, which folding
removes, are not counted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from dcopt.ir.cost import graph_cost
from dcopt.ir.graph import Graph
from dcopt.passes.context import Instrument, PassContext


@dataclass(frozen=True)
class MovementSnapshot:
    after: str  # "input" or the pass name
    kernels: int
    flops: int
    bytes_moved: int
    transient_bytes: int
    unknown_nodes: int

    def to_dict(self) -> dict:
        return asdict(self)


def snapshot(graph: Graph, after: str, bindings: Mapping[str, int] | None = None) -> MovementSnapshot:
    cost = graph_cost(graph, bindings)
    kernels = sum(1 for c in cost.nodes if not c.constant)
    return MovementSnapshot(after, kernels, cost.total_flops, cost.total_bytes, cost.transient_bytes,
                            cost.unknown_nodes)


class MovementInstrument(Instrument):
    """Records a :class:`MovementSnapshot` of the input and after each modifying pass."""

    def __init__(self, bindings: Mapping[str, int] | None = None):
        self.bindings = dict(bindings or {})
        self.snapshots: list[MovementSnapshot] = []

    def before_pass(self, pass_, graph, ctx: PassContext) -> None:
        if not self.snapshots:
            self.snapshots.append(snapshot(graph, "input", self.bindings))

    def after_pass(self, pass_, result, record, ctx: PassContext) -> None:
        if result.modified:
            self.snapshots.append(snapshot(result.graph, record.name, self.bindings))
