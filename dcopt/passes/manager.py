"""Run a list of passes, optionally to a fixed point, with checks, timing and a report.

    pm = PassManager(["fold-constants", "cse", "dce"], verify=True, check_equivalence=True)
    result = pm(graph)
    print(result.report.format())

A PassManager is itself a :class:`~dcopt.passes.base.Pass`, so pipelines nest (the named
``canonicalize`` pipeline is one step of a larger one). Nested managers share the outer
context: instruments see every leaf pass and records carry a ``parent/child`` name.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from dcopt import progress
from dcopt.ir.graph import Graph
from dcopt.passes.base import Pass, PassResult
from dcopt.passes.context import Instrument, PassContext
from dcopt.passes.instruments import DumpInstrument, EquivalenceInstrument, VerifyInstrument

__all__ = ["PassContext", "PassManager", "PassRecord", "PipelineResult", "Report"]


@dataclass
class PassRecord:
    """One run of one leaf pass."""

    name: str
    iteration: int
    modified: bool
    time_s: float
    nodes_before: int
    nodes_after: int
    stats: dict[str, Any] = field(default_factory=dict)
    refusals: list[tuple[str, str]] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    dump: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Report:
    """Per-pass records of a pipeline run, printable by the CLI."""

    records: list[PassRecord] = field(default_factory=list)
    converged: bool = True

    @property
    def total_time_s(self) -> float:
        return sum(r.time_s for r in self.records)

    def format(self, refusals: bool = False) -> str:
        rows = [("pass", "iter", "modified", "nodes", "time ms", "stats")]
        for r in self.records:
            stats = ", ".join(f"{k}={v}" for k, v in r.stats.items() if not isinstance(v, (list, dict)))
            rows.append((r.name, str(r.iteration), "yes" if r.modified else "no",
                         f"{r.nodes_before}->{r.nodes_after}", f"{r.time_s * 1e3:.1f}", stats))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row[:5], widths)) + "  " + row[5] for row in rows]
        lines.append(f"total {self.total_time_s * 1e3:.1f} ms" + ("" if self.converged else
                                                                  " (stopped at max_iterations before a fixed point)"))
        if refusals:
            for r in self.records:
                lines.extend(f"  {r.name}: kept '{node}': {why}" for node, why in r.refusals)
        return "\n".join(lines)

    def checks_summary(self, verify: bool, equivalence: bool, rtol: float, atol: float) -> list[str]:
        """What ``--verify``/``--check`` checked and what they found, one line each (a failed
        check raises, so reaching here means every check made passed)."""
        lines = []
        if verify:
            n = sum("verified" in r.checks for r in self.records)
            lines.append(f"verify: the IR is valid after all {n} of {len(self.records)} passes (and before the first)")
        if equivalence:
            modified = [r for r in self.records if r.modified]
            same = sum("equivalent" in r.checks for r in modified)
            skipped = sorted({c for r in self.records for c in r.checks if c.startswith("equivalence skipped")})
            lines.append(f"check: outputs on the reference executor equal before and after each of the {same} "
                         f"modifying passes (rtol {rtol:g}, atol {atol:g}; same random inputs)" if not skipped else
                         f"check: {'; '.join(skipped)}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"converged": self.converged, "records": [r.to_dict() for r in self.records]}


@dataclass
class PipelineResult(PassResult):
    report: Report = field(default_factory=Report)


class PassManager(Pass):
    """Runs ``steps`` (passes, registered names, or nested managers) in order.

    The manager is in place when every step is; otherwise it works on a copy of its input (parameter
    arrays are shared, never written), so a mixed pipeline still leaves its input untouched.
    With ``fixed_point=True`` the whole list repeats until no step modifies the graph, at most
    ``max_iterations`` times (the report says whether it converged). The keyword settings build
    the :class:`PassContext` used when the manager is called without one; called with an explicit
    context (``pm(graph, ctx)``, or as a step of another manager), that context's settings apply.
    """

    def __init__(self, steps: Iterable[Pass | str], *, name: str = "pipeline", verify: bool = False,
                 check_equivalence: bool = False, rtol: float = 1e-4, atol: float = 1e-5,
                 dump_dir=None, fixed_point: bool = False, max_iterations: int = 10,
                 instruments: Sequence[Instrument] = (), context: PassContext | None = None):
        from dcopt.passes.pipelines import build_steps  # names may be aliases or pipelines

        self.steps: list[Pass] = [p for s in steps for p in (build_steps([s]) if isinstance(s, str) else [s])]
        self.name = name
        self.in_place = all(s.in_place for s in self.steps)
        self._copy_input = not self.in_place and any(s.in_place for s in self.steps)
        self.fixed_point = fixed_point
        self.max_iterations = max_iterations
        self.context = context or PassContext(verify=verify, check_equivalence=check_equivalence, rtol=rtol,
                                              atol=atol, dump_dir=dump_dir, instruments=list(instruments))

    def __call__(self, graph: Graph, ctx: PassContext | None = None) -> PipelineResult:
        return super().__call__(graph, ctx or self.context)

    def run(self, graph: Graph, ctx: PassContext) -> PipelineResult:
        with progress.step(self.name):
            return self._run(graph, ctx, _instruments_for(ctx))

    def _run(self, graph: Graph, ctx: PassContext, hooks: list[Instrument]) -> PipelineResult:
        if self._copy_input:  # mixed steps: never let an in-place step touch the input
            graph = graph.copy()
        report = Report()
        modified_any = False
        iterations = self.max_iterations if self.fixed_point else 1
        for iteration in range(iterations):
            modified = False
            for step in self.steps:
                result = self._run_step(step, graph, ctx, hooks, iteration, report)
                graph = result.graph
                modified |= result.modified
            modified_any |= modified
            if not modified:
                break
        else:
            report.converged = not (self.fixed_point and modified)
        return PipelineResult(graph, modified_any, {"iterations": iteration + 1}, report=report)

    def _run_step(self, step: Pass, graph: Graph, ctx, hooks, iteration: int, report: Report) -> PassResult:
        if isinstance(step, PassManager):  # shares this run's instruments (and their caches)
            with progress.step(step.name):
                result = step._run(graph, ctx, hooks)
            for r in result.report.records:
                r.name = f"{step.name}/{r.name}"
            report.records.extend(result.report.records)
            report.converged &= result.report.converged
            return result
        nodes_before = len(graph.nodes)
        for hook in hooks:
            hook.before_pass(step, graph, ctx)
        source = user_source(step)
        start = time.perf_counter()
        with progress.step(step.name):
            result = step(graph, ctx) if source is None else run_user_pass(step, graph, ctx, source)
        elapsed = time.perf_counter() - start
        record = PassRecord(step.name, iteration, result.modified, elapsed, nodes_before, len(result.graph.nodes),
                            dict(result.stats), list(result.refusals))
        for hook in hooks:
            hook.after_pass(step, result, record, ctx)
        report.records.append(record)
        return result


def user_source(step: Pass) -> str | None:
    """The file defining ``step`` when it is user code (a pipeline file's pass, one registered with
    ``register_pass`` from outside dcopt); None for dcopt's own passes."""
    from dcopt.passes.base import FunctionPass

    obj = step.fn if isinstance(step, FunctionPass) else type(step)
    module = getattr(obj, "__module__", None) or ""
    if module == "dcopt" or module.startswith("dcopt."):
        return None
    try:
        return inspect.getsourcefile(obj) or inspect.getfile(obj)
    except (TypeError, OSError):
        return module or "<unknown file>"


def run_user_pass(step: Pass, graph: Graph, ctx: PassContext, source: str) -> PassResult:
    """Run a user pass so that whatever it does is reported naming it and its file: an exception
    or ``sys.exit`` becomes a :class:`UserCodeError`, and the graph it returns is verified (a pass
    that corrupts the graph is a :class:`PassError` here, not a KeyError three stages later). An
    input that is already invalid is not blamed on the pass."""
    from dcopt.errors import DcoptError, PassError, UserCodeError, VerificationError
    from dcopt.ir.verify import find_problems
    from dcopt.passes.user_files import where_raised

    def problems(g) -> list[str] | None:
        try:
            return find_problems(g)
        except VerificationError as exc:
            return exc.problems
        except Exception as exc:  # a graph so broken the verifier cannot walk it
            return [f"the graph cannot be read ({type(exc).__name__}: {exc})"]

    valid_before = not problems(graph)
    try:
        result = step(graph, ctx)
    except PassError as exc:  # dcopt's contract checks of the pass: already name it
        raise exc.at(file=source)
    except DcoptError as exc:
        raise UserCodeError(f"pass '{step.name}' failed: {exc}", file=source) from exc
    except (Exception, SystemExit) as exc:
        what = f"called sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else \
            f"raised {type(exc).__name__}: {exc}"
        raise UserCodeError(f"pass '{step.name}' {what}{where_raised(exc, source)}", file=source) from (
            None if isinstance(exc, SystemExit) else exc)
    if not isinstance(result.graph, Graph):
        raise PassError(f"pass '{step.name}' returned {type(result.graph).__name__} as its graph, not a Graph",
                        file=source)
    found = problems(result.graph) if valid_before else None
    if found:
        raise PassError(f"pass '{step.name}' left an invalid graph:\n  " + "\n  ".join(found), file=source)
    return result


def _instruments_for(ctx: PassContext) -> list[Instrument]:
    hooks: list[Instrument] = []
    if ctx.verify:
        hooks.append(VerifyInstrument())
    if ctx.check_equivalence:
        hooks.append(EquivalenceInstrument())
    if ctx.dump_dir is not None:
        hooks.append(DumpInstrument(ctx.dump_dir))
    return hooks + list(ctx.instruments)


def run_passes(graph: Graph, steps: Iterable[Pass | str], **settings) -> PipelineResult:
    """One-call form: ``run_passes(g, ["cse", "dce"], verify=True)``."""
    return PassManager(steps, **settings)(graph)

