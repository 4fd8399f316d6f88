"""The built-in instruments: IR verification, executor equivalence, IR dumps.

The :class:`~dcopt.passes.manager.PassManager` installs the ones its context asks for; each is
an ordinary :class:`~dcopt.passes.context.Instrument`, so a user hook sees passes exactly the
way these do. Failures raise :class:`~dcopt.errors.PassError` naming the pass at fault.
"""

from __future__ import annotations

import re
from pathlib import Path

from dcopt.errors import DcoptError, PassError, VerificationError
from dcopt.ir.executor import run_graph
from dcopt.ir.graph import Graph
from dcopt.ir.verify import verify
from dcopt.passes.common import is_nondeterministic
from dcopt.passes.context import Instrument, PassContext
from dcopt.passes.equivalence import compare_outputs, random_feeds


class _GraphState:
    """Identity snapshot of a graph's structure: tells whether a cached result is still valid."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes = tuple(graph.nodes)
        self.data = tuple((k, c.data) for k, c in graph.containers.items())
        self.io = (tuple(graph.inputs), tuple(graph.outputs))

    def same(self, graph: Graph) -> bool:
        return (graph is self.graph and len(graph.nodes) == len(self.nodes)
                and all(a is b for a, b in zip(graph.nodes, self.nodes))
                and self.io == (tuple(graph.inputs), tuple(graph.outputs))
                and len(self.data) == len(graph.containers)
                and all(k == n and d is c.data for (k, d), (n, c) in zip(self.data, graph.containers.items())))


class VerifyInstrument(Instrument):
    """Verify the input graph once, then the graph after every pass."""

    def __init__(self):
        self._input_checked = False

    def before_pass(self, pass_, graph, ctx):
        if not self._input_checked:
            self._input_checked = True
            verify(graph)  # a broken input is the model's fault, not the first pass's

    def after_pass(self, pass_, result, record, ctx):
        try:
            verify(result.graph)
        except VerificationError as exc:
            raise PassError(f"pass '{pass_.name}' left an invalid graph:\n  " + "\n  ".join(exc.problems)) from exc
        record.checks.append("verified")


class EquivalenceInstrument(Instrument):
    """Compare every output before and after each modifying pass on the reference executor.

    The outputs of the latest graph are cached, so a pipeline of N modifying passes costs N+1
    executor runs, not 2N. Inputs are drawn once (see :func:`random_feeds`) unless the context
    gives ``feeds``; if random inputs with symbolic dims of ``ctx.dim_size`` cannot run, dims of
    1 are tried before giving up. A graph with nondeterministic nodes (random ops, training
    Dropout) cannot be compared run against run; the check is skipped and the record says so.
    """

    def __init__(self):
        self.feeds = None
        self.state: _GraphState | None = None
        self.outputs = None
        self.skip = ""

    def _reference(self, graph: Graph, ctx: PassContext):
        if self.state is not None and self.state.same(graph):
            return self.outputs
        if self.feeds is None and ctx.feeds is not None:
            self.feeds = dict(ctx.feeds)
        if self.feeds is None:
            sizes = [ctx.dim_size] + ([1] if ctx.dim_size != 1 and _has_symbolic_inputs(graph) else [])
            for i, size in enumerate(sizes):
                feeds = random_feeds(graph, dim_size=size, seed=ctx.seed)
                try:
                    outputs = run_graph(graph, feeds)
                except DcoptError:
                    if i == len(sizes) - 1:
                        raise
                    continue
                self.feeds = feeds
                break
        else:
            outputs = run_graph(graph, self.feeds)
        self._remember(graph, outputs)
        return outputs

    def _remember(self, graph, outputs):
        self.state = _GraphState(graph)
        self.outputs = outputs

    def before_pass(self, pass_, graph, ctx):
        node = next((n for n in graph.nodes if is_nondeterministic(graph, n)), None)
        self.skip = f"equivalence skipped: '{node.label}' ({node.op}) is nondeterministic" if node else ""
        if not self.skip:
            self._reference(graph, ctx)

    def after_pass(self, pass_, result, record, ctx):
        if self.skip:
            record.checks.append(self.skip)
            return
        if not result.modified:
            return
        expected = self.outputs
        graph = result.graph
        if list(graph.outputs) != list(expected):
            raise PassError(f"pass '{pass_.name}' changed the graph outputs from {list(expected)} to {graph.outputs}")
        try:
            actual = run_graph(graph, {k: v for k, v in self.feeds.items() if k in graph.inputs})
        except DcoptError as exc:
            raise PassError(f"pass '{pass_.name}' produced a graph the reference executor cannot run: {exc}") from exc
        problems = compare_outputs(expected, actual, rtol=ctx.rtol, atol=ctx.atol)
        if problems:
            raise PassError(f"pass '{pass_.name}' changed the model's numerics: "
                            + "; ".join(p.describe() for p in problems))
        self._remember(graph, actual)
        record.checks.append("equivalent")


def _has_symbolic_inputs(graph: Graph) -> bool:
    return any(not isinstance(d, int) for n in graph.inputs for d in (graph.containers[n].type.shape or ()))


def format_ir(graph: Graph) -> str:
    """The IR as text: the printer's format when it exists, else one line per node."""
    try:
        from dcopt.ir.printer import format_graph
    except ImportError:
        return _fallback_format(graph)
    return format_graph(graph)


def _fallback_format(graph: Graph) -> str:
    c = graph.containers
    lines = [f"graph {graph.name}("
             + ", ".join(f"{n}: {c[n].type}" for n in graph.inputs) + ") -> ("
             + ", ".join(f"{n}: {c[n].type}" if n in c else n for n in graph.outputs) + ")"]
    for name, p in graph.parameters.items():
        lines.append(f"  param {name}: {p.type}")
    for node in graph.nodes:
        attrs = ", ".join(f"{k}={v!r}" for k, v in node.attrs.items() if not hasattr(v, "nodes"))
        outs = ", ".join(f"{o}: {c[o].type}" if o in c else o for o in node.outputs)
        lines.append(f"  {outs} = {node.op}({', '.join(node.inputs)}){' {' + attrs + '}' if attrs else ''}")
    return "\n".join(lines) + "\n"


class DumpInstrument(Instrument):
    """Write ``000-input.txt`` before the first pass and ``NNN-<pass>.txt`` after each modifying one.

    The graph a pass saw is the latest earlier dump, so unchanged states are never written twice.
    """

    def __init__(self, directory):
        self.dir = Path(directory)
        self.count = 0
        self.started = False

    def _write(self, label: str, graph: Graph) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{self.count:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.txt"
        path.write_text(format_ir(graph))
        self.count += 1
        return path

    def before_pass(self, pass_, graph, ctx):
        if not self.started:
            self.started = True
            self._write("input", graph)

    def after_pass(self, pass_, result, record, ctx):
        if result.modified:
            record.dump = str(self._write(record.name, result.graph))
