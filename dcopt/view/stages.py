"""Steps and the stages they produce: the graph after every step of a pipeline.

A *step* is what one line of a pipeline file names: a registered pass, a pipeline name, or an idea
patch (a :class:`~dcopt.passes.patches.as_pass.PatchPass`). Named pipelines are flattened into their
steps so each pass is its own stage, except fixed-point pipelines (``canonicalize``): they repeat
as a unit, so they stay one step and their report lists the passes inside.

A *stage* is the graph after a step (stage 0 is the imported model), with the step's pass records.
Graphs are copies, so the stages never change once computed; copies share parameter arrays and
immutable nodes, so a stage costs little more than its node list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from dcopt.errors import DcoptError
from dcopt.ir.graph import Graph

#: Where a step came from: the chosen pipeline, the user (inserted in the viewer), or the
#: loop-level lowering ``dcopt compile`` runs after the pipeline (shown, not editable).
PIPELINE, USER, LOWERING = "pipeline", "user", "lowering"


@dataclass(frozen=True)
class Step:
    """One step: ``kind`` "pass" (a pass or pipeline name) or "patch" (a patch URI, its
    parameters inside). A pass's ``options`` are (name, value) pairs given to the pass's factory
    (``get_pass("fuse", min_saving=4096)``), the form a pipeline file replays."""

    kind: str
    spec: str
    origin: str = PIPELINE
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        if self.kind == "patch":
            return f"patch:{self.spec}"
        return self.spec + (f"({', '.join(f'{k}={v!r}' for k, v in self.options)})" if self.options else "")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "spec": self.spec, "origin": self.origin, "label": self.label,
                "options": dict(self.options)}

    def as_pass(self, validate: bool = True):
        """The pass object that runs this step (``validate``: a patch's result is checked by its
        validator, as ``dcopt patch`` does; trials that only look for matches skip it)."""
        if self.kind == "patch":
            from dcopt.passes.patches.as_pass import PatchPass

            return PatchPass(self.spec, validate=validate)
        if self.options:
            from dcopt.passes.base import get_pass

            return get_pass(self.spec, **dict(self.options))
        from dcopt.passes.pipelines import build_steps

        built = build_steps([self.spec])
        return built[0]


@dataclass
class Stage:
    """The graph after ``step`` (None for the input) and what the step's passes reported."""

    index: int
    step: Step | None
    graph: Graph
    modified: bool = False
    records: list[dict] = field(default_factory=list)
    time_s: float = 0.0
    error: str | None = None
    _totals: dict | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return "input" if self.step is None else self.step.label

    def totals(self, bindings: dict[str, int]) -> dict[str, int]:
        """FLOPs, bytes moved by all kernels and between kernels (computed once: the graph is fixed)."""
        if self._totals is None:
            from dcopt.ir.cost import graph_cost

            cost = graph_cost(self.graph, bindings)
            self._totals = {"flops": cost.total_flops, "bytes": cost.total_bytes,
                            "transient_bytes": cost.transient_bytes, "unknown_nodes": cost.unknown_nodes}
        return self._totals

    def summary(self, bindings: dict[str, int]) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "step": None if self.step is None else self.step.to_dict(),
                "modified": self.modified, "nodes": len(self.graph.nodes), "time_s": round(self.time_s, 4),
                "error": self.error, **self.totals(bindings)}


def flatten(spec) -> list[Step]:
    """Steps of a pipeline spec (names, or a pipeline file's list of names and Pass objects):
    pipelines other than fixed-point ones are expanded into their steps."""
    from dcopt.passes.base import Pass, available_passes
    from dcopt.passes.patches.as_pass import PatchPass
    from dcopt.passes.pipelines import PIPELINES, parse_spec

    steps: list[Step] = []
    for item in spec:
        if isinstance(item, PatchPass):
            steps.append(Step("patch", item.uri))
        elif isinstance(item, Pass):
            if item.name not in available_passes():
                raise DcoptError(f"pipeline step {item!r} is a pass object that is not registered by name; "
                                 "dcopt view can show only registered passes, pipelines and patches")
            from dcopt.view.step_params import options_of

            steps.append(Step("pass", item.name, options=options_of(item)))
        else:
            for name in parse_spec([item]):
                pipeline = PIPELINES.get(name)
                if pipeline is not None and not pipeline.fixed_point:
                    steps.extend(flatten(list(pipeline.steps)))
                else:
                    steps.append(Step("pass", name))
    return steps


def run_step(step: Step, graph: Graph, index: int, validate: bool = True) -> Stage:
    """The stage after running ``step`` on a copy of ``graph``."""
    from dcopt.passes.manager import PassManager

    start = time.perf_counter()
    result = PassManager([step.as_pass(validate)], name=step.label)(graph.copy())
    records = [_record(r) for r in result.report.records]
    return Stage(index, step, result.graph, result.modified, records, time.perf_counter() - start)


def lowering_stages(graph: Graph, first_index: int, bindings: dict[str, int]) -> list[Stage]:
    """The loop-level stages ``dcopt compile`` runs after the pipeline (driver.LOWERING), each
    its own stage; a failure ends the list with a stage that says why."""
    from dcopt.backends.cpu.specialize import specialize
    from dcopt.driver import lowering_passes
    from dcopt.passes.manager import PassManager

    stages: list[Stage] = []
    try:
        current = specialize(graph, bindings)
    except DcoptError as exc:
        return [Stage(first_index, Step("pass", "specialize", LOWERING), graph, error=str(exc))]
    for i, pass_ in enumerate(lowering_passes("cpu")):
        step = Step("pass", pass_.name, LOWERING)
        start = time.perf_counter()
        try:
            result = PassManager([pass_], name=pass_.name)(current.copy())
        except DcoptError as exc:
            stages.append(Stage(first_index + i, step, current, error=str(exc)))
            break
        current = result.graph
        stages.append(Stage(first_index + i, step, current, result.modified,
                            [_record(r) for r in result.report.records], time.perf_counter() - start))
    return stages


def _record(r) -> dict:
    """A pass record as JSON-able data (stats values that are not plain are shown as text)."""
    stats = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in r.stats.items()}
    return {"name": r.name, "iteration": r.iteration, "modified": r.modified, "time_s": round(r.time_s, 4),
            "nodes_before": r.nodes_before, "nodes_after": r.nodes_after, "stats": stats,
            "refusals": [[str(node), str(why)] for node, why in r.refusals]}
