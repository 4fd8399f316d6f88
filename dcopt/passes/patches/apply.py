"""Apply a chain of patches, show what each one changed, and record it in the model.

    report = apply_patches(graph, ["fold_batchnorm", "swap_activation?from=Relu&to=Gelu"], explain=True)
    print(report.format(explain=True))
    save_graph(report.graph, "out.onnx")   # metadata["dcopt.patches"] holds the history

Every URI is parsed and checked before the first patch runs, so a typo in the third one costs
nothing. Each patch then works on a copy of the previous result (the input graph is never
changed), is validated by its kind's validator when it changed something, and is recorded:
the step keeps where the patch matched, where and why it refused (the near misses), notes, and
a :class:`StructuralDiff` — nodes added, removed and rewired, parameters and FLOPs before and
after (from :func:`dcopt.ir.cost.graph_cost`). A patch that changed nothing leaves the graph
as it was and is not added to the history.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from dcopt.errors import DcoptError
from dcopt.ir.graph import Graph, Node
from dcopt.passes.patches.registry import Patch, PatchError, PatchOutcome
from dcopt.passes.patches.uri import PatchCall, make_call, parse_uri
from dcopt.passes.patches.validate import ValidationSkipped, default_validator
from dcopt.passes.user_files import where_raised

__all__ = ["HISTORY_KEY", "PatchReport", "PatchStep", "PatchValidationError", "StructuralDiff", "apply_patches",
           "patch_history"]

#: Metadata key of the patch history: applied URIs, ``;``-joined, oldest first.
HISTORY_KEY = "dcopt.patches"


class PatchValidationError(PatchError):
    """A patch produced a graph its validator rejects; nothing is written."""


# -- structural diff ----------------------------------------------------------------------------


def _keyed(graph: Graph) -> dict[tuple[str, int], Node]:
    """Nodes keyed by (label, occurrence): labels are how users know nodes, and may repeat."""
    seen: Counter = Counter()
    keyed = {}
    for node in graph.nodes:
        keyed[(node.label, seen[node.label])] = node
        seen[node.label] += 1
    return keyed


def node_changes(before: Graph, after: Graph) -> tuple[list[str], list[str], list[str]]:
    """(added, removed, rewired) node labels from ``before`` to ``after``; rewired: the same label
    with another op, inputs, outputs or attributes. In node order (removed: in ``before``'s)."""
    old, new = _keyed(before), _keyed(after)
    order = {k: i for i, k in enumerate(new)}
    rewired = [k[0] for k in old.keys() & new.keys() if (old[k].key, old[k].outputs) != (new[k].key, new[k].outputs)]
    return ([k[0] for k in new if k not in old], [k[0] for k in old if k not in new],
            sorted(rewired, key=lambda label: order.get((label, 0), 0)))


def _totals(graph: Graph) -> tuple[int, int, int, int]:
    """Parameter count and bytes, FLOPs, and how many nodes have sizes too unknown to cost."""
    from dcopt.ir.cost import graph_cost

    symbols = {d for c in graph.containers.values() for d in (getattr(c.type, "symbols", None) or ())}
    cost = graph_cost(graph, {s: 1 for s in symbols})  # symbolic dims costed at 1, like `dcopt inspect`
    return cost.parameter_count, cost.parameter_bytes, cost.total_flops, cost.unknown_nodes


@dataclass
class StructuralDiff:
    """How one graph differs from another, by node label, with size and work totals."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rewired: list[str] = field(default_factory=list)  # same label, different op/inputs/outputs/attributes
    nodes_before: int = 0
    nodes_after: int = 0
    params_before: int = 0
    params_after: int = 0
    param_bytes_before: int = 0
    param_bytes_after: int = 0
    flops_before: int = 0
    flops_after: int = 0
    uncosted_nodes: int = 0  # nodes of unknown size, left out of the FLOPs (after the patch)
    opset_before: int = 0
    opset_after: int = 0
    ops_delta: dict[str, int] = field(default_factory=dict)

    @classmethod
    def between(cls, before: Graph, after: Graph) -> "StructuralDiff":
        added, removed, rewired = node_changes(before, after)
        hist_old, hist_new = Counter(before.op_histogram()), Counter(after.op_histogram())
        delta = {op: hist_new[op] - hist_old[op] for op in sorted(hist_old.keys() | hist_new.keys())
                 if hist_new[op] != hist_old[op]}
        p0, b0, f0, _ = _totals(before)
        p1, b1, f1, u1 = _totals(after) if after is not before else _totals(before)
        return cls(added, removed, rewired, len(before.nodes), len(after.nodes),
                   p0, p1, b0, b1, f0, f1, u1, before.opset_of(""), after.opset_of(""), delta)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.rewired) and self.params_before == self.params_after

    def format(self, limit: int = 8) -> list[str]:
        lines = [f"nodes {self.nodes_before} -> {self.nodes_after} (+{len(self.added)} added, "
                 f"-{len(self.removed)} removed, ~{len(self.rewired)} rewired)",
                 f"parameters {self.params_before:,} -> {self.params_after:,} ({_signed(self.params_after - self.params_before)}), "
                 f"{_human(self.param_bytes_before)}B -> {_human(self.param_bytes_after)}B",
                 f"FLOPs {_human(self.flops_before)} -> {_human(self.flops_after)}"
                 + (f" ({_pct(self.flops_before, self.flops_after)})" if self.flops_before else "")
                 + (f" (partial: {self.uncosted_nodes} node(s) of unknown size)" if self.uncosted_nodes else "")]
        if self.opset_before != self.opset_after:
            lines.append(f"opset {self.opset_before} -> {self.opset_after}")
        if self.ops_delta:
            lines.append("ops: " + ", ".join(f"{op} {_signed(d)}" for op, d in self.ops_delta.items()))
        for what, names in (("added", self.added), ("removed", self.removed), ("rewired", self.rewired)):
            if names:
                shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
                lines.append(f"{what}: {shown}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _human(n: int) -> str:
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {prefix}"
    return f"{n} "


def _signed(n: int) -> str:
    return f"+{n:,}" if n > 0 else f"{n:,}"


def _pct(before: int, after: int) -> str:
    return f"{100.0 * (after - before) / before:+.2f}%"


# -- the report ---------------------------------------------------------------------------------


@dataclass
class PatchStep:
    """One patch of a chain: the call, what it did, the diff, and how it was validated."""

    call: PatchCall
    outcome: PatchOutcome
    diff: StructuralDiff
    validation: str

    @property
    def uri(self) -> str:
        return self.call.uri

    @property
    def modified(self) -> bool:
        return self.outcome.modified

    def format(self, *, explain: bool = False, max_lines: int = 20) -> list[str]:
        o = self.outcome
        lines = [f"{self.uri} ({self.call.patch.kind}): "
                 + (f"applied at {len(o.applications)} site(s)" if o.modified else "changed nothing")]
        lines += [f"  matched {a.rule} at '{a.root}' ({', '.join(a.nodes)})" for a in o.applications[:max_lines]]
        if len(o.applications) > max_lines:
            lines.append(f"  ... and {len(o.applications) - max_lines} more site(s)")
        lines += [f"  note: {n}" for n in o.notes]
        if explain:
            ranked = sorted(o.refusals, key=lambda r: -r.depth)
            lines += [f"  refused {r.rule} at '{r.root}' (depth {r.depth}): {r.reason}" for r in ranked[:max_lines]]
            if len(ranked) > max_lines:
                lines.append(f"  ... and {len(ranked) - max_lines} more refusal(s)")
            if not ranked:
                lines.append("  no near misses")
        elif o.refusals:
            lines.append(f"  {len(o.refusals)} candidate site(s) refused (--explain says why)")
        if o.modified:
            lines += ["  " + line for line in self.diff.format()]
            lines.append(f"  validated: {self.validation}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        o = self.outcome
        return {"uri": self.uri, "patch": self.call.patch.name, "kind": self.call.patch.kind,
                "args": dict(self.call.args), "modified": self.modified, "validation": self.validation,
                "applications": [a.__dict__ for a in o.applications], "refusals": [r.__dict__ for r in o.refusals],
                "notes": list(o.notes), "diff": self.diff.to_dict()}


@dataclass
class PatchReport:
    """What :func:`apply_patches` did; ``graph`` is the patched graph."""

    graph: Graph
    steps: list[PatchStep] = field(default_factory=list)

    @property
    def modified(self) -> bool:
        return any(s.modified for s in self.steps)

    @property
    def history(self) -> list[str]:
        return patch_history(self.graph)

    def format(self, *, explain: bool = False, max_lines: int = 20) -> str:
        lines = []
        for i, step in enumerate(self.steps, 1):
            lines += [f"[{i}] " + "\n".join(step.format(explain=explain, max_lines=max_lines))]
        if self.history:
            lines.append(f"patch history: {'; '.join(self.history)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps], "history": self.history}


def patch_history(graph: Graph) -> list[str]:
    """The URIs recorded in ``graph.metadata["dcopt.patches"]``, oldest first."""
    return [u for u in graph.metadata.get(HISTORY_KEY, "").split(";") if u]


def _record(graph: Graph, uri: str) -> None:
    graph.metadata[HISTORY_KEY] = ";".join(patch_history(graph) + [uri])


# -- applying -----------------------------------------------------------------------------------

def _as_call(spec: Any) -> PatchCall:
    if isinstance(spec, PatchCall):
        return spec
    if isinstance(spec, str):
        return parse_uri(spec)
    if isinstance(spec, Patch):
        return make_call(spec)
    if isinstance(spec, tuple) and len(spec) == 2:
        return make_call(spec[0], spec[1])
    raise TypeError(f"cannot apply {spec!r}: give a URI string, a PatchCall, a Patch or (name, args)")


def apply_patches(graph: Graph, patches: Iterable[Any], *, explain: bool = False, validate: bool = True,
                  seed: int = 0) -> PatchReport:
    """Apply ``patches`` (URIs like ``"swap_activation?from=Relu&to=Gelu"``, :class:`PatchCall`,
    or ``(name, {param: value})``) in order; returns a :class:`PatchReport` whose ``graph`` is the
    result. ``graph`` itself is not changed. Raises :class:`PatchURIError` for a bad URI (before
    anything runs) and :class:`PatchValidationError` when a patch's result fails its validator.
    ``explain`` keeps the refusals of rewrite rules (custom patches always keep theirs)."""
    calls = [_as_call(spec) for spec in patches]
    current = graph
    steps = []
    for call in calls:
        outcome = _run(call, current.copy(), explain)
        after = outcome.graph
        if not outcome.modified:
            after, validation = current, "nothing changed"
        elif validate:
            validation = _validate(call, current, after)
        else:
            validation = "skipped (validate=False)"
        if outcome.modified:
            _record(after, call.uri)
        steps.append(PatchStep(call, outcome, StructuralDiff.between(current, after), validation))
        current = after
    return PatchReport(current, steps)


def _validate(call: PatchCall, before: Graph, after: Graph) -> str:
    """Run the patch's validator; what was checked, or PatchValidationError."""
    validator = call.patch.validator or default_validator(call.patch.kind)
    try:
        problems = validator(before, after, call.args)
    except ValidationSkipped as exc:
        return f"structure only ({exc})"
    if problems:
        raise PatchValidationError(f"patch '{call.uri}' produced a graph that fails validation "
                                   f"({validator.describe(call.args)}): " + "; ".join(problems))
    return validator.describe(call.args)


def _run(call: PatchCall, graph: Graph, explain: bool) -> PatchOutcome:
    """Apply ``call`` to ``graph`` (in place). A patch that matches weights as constants and finds
    no site is tried once more with computed constants folded (weights built by
    ``ConstantOfShape``/``Reshape`` of constants, as the ONNX zoo emits them): folding only when
    it is what stands between the patch and its sites keeps every other graph as it was."""
    original = graph.copy() if call.patch.needs_constants else None
    outcome = _call(call, graph, explain)
    if original is not None and not outcome.applications:
        from dcopt.passes.base import get_pass

        folded = get_pass("fold-constants")(original)
        if folded.modified:
            retry = _call(call, folded.graph, explain)
            if retry.applications:
                retry.notes.append("computed constants were folded first: its sites need constant weights")
                return retry
    return outcome


def _call(call: PatchCall, graph: Graph, explain: bool) -> PatchOutcome:
    try:
        return call.patch.run(graph, call.args, explain=explain)
    except PatchError:
        raise
    except DcoptError as exc:
        raise PatchError(f"patch '{call.uri}' failed: {exc}") from exc
    except SystemExit as exc:  # a patch must not end the caller's process: name the file and line
        raise PatchError(f"patch '{call.uri}' called sys.exit({exc.code!r}){where_raised(exc)}") from exc
    except Exception as exc:  # a bug in the patch: name it, keep the traceback as the cause
        raise PatchError(f"patch '{call.uri}' failed: {type(exc).__name__}: {exc}") from exc
