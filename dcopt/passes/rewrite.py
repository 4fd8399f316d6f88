"""Rewrite rules: a pattern plus a function that builds the replacement, applied to a fixed point.

    swish = RewriteRule("swish", Op("Mul", "x", Op("Sigmoid", "x")), fuse_to("Swish", "x"),
                        description="x * sigmoid(x) -> Swish(x)")
    report = apply_rules(graph, swish + other_rules, explain=True)
    print(report.format())

How a rule is applied (:func:`apply_rules`), sweep after sweep until nothing changes:

* Roots are tried from the end of the graph backwards, so a bigger pattern rooted later wins
  over a smaller one inside it; at one root, rules are tried in rule-set order, first wins.
* The rule's ``check`` may refuse a match (``return match.fail(reason, node)``); matching then
  backtracks to other operand orders and alternatives before giving up.
* The rewrite returns a :class:`Replacement`: new nodes, and which new value replaces each
  matched value. Readers are rewired; a replaced graph output (or a value read inside a
  subgraph) keeps its name — the new value is renamed to it, or an Identity is added when the
  new value already exists. Matched nodes left without readers are deleted, and so are the
  producers this leaves dead.
* In explain mode every refused candidate (a node whose op can root a rule) is reported with the
  deepest reason, so ``--explain`` shows the near misses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from dcopt.errors import PassError
from dcopt.ir import dtypes
from dcopt.ir.file_maps import release_pages
from dcopt.ir.graph import Graph, Node
from dcopt.ir.types import TensorType
from dcopt.passes.base import Pass, PassResult
from dcopt.passes.match import GraphIndex, Match, MatchFailure
from dcopt.passes.pattern import Pattern, match_value

__all__ = ["Application", "Refusal", "Replacement", "RewriteBuilder", "RewritePass", "RewriteReport",
           "RewriteRule", "RuleSet", "apply_rules", "fuse_to"]


@dataclass(frozen=True)
class Replacement:
    """What a rewrite produces: ``nodes`` to insert, and ``values`` mapping each matched value
    that changes (usually ``match.root_value``) to the value that replaces it."""

    nodes: tuple[Node, ...]
    values: Mapping[str, str]


class RewriteBuilder:
    """Builds the nodes of a replacement with fresh, typed containers::

        rb = RewriteBuilder(graph)
        y = rb.op("Gelu", [m.value("x")], approximate="none", like=m.root_value)
        return rb.replace({m.root_value: y})
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self.nodes: list[Node] = []

    def op(self, op: str, inputs: Iterable[str], *, like: str | TensorType | None = None, outputs: int = 1,
           domain: str = "", name: str | None = None, attrs: Mapping[str, Any] | None = None, **more_attrs):
        """Add a node; return its output name (a tuple when ``outputs > 1``).

        Outputs take the type of ``like`` (a container name or a TensorType); without it they get
        the first input's dtype and an unknown shape, which passes never trust for shape logic.
        """
        inputs = tuple(inputs)
        if isinstance(like, str):
            like = self.graph.containers[like].type
        out_type = like or TensorType(self.graph.containers[inputs[0]].type.dtype if inputs else "float32")
        names = tuple(self.graph.fresh_name(f"{op.lower()}_out") for _ in range(outputs))
        for n in names:
            self.graph.add_container(n, out_type)
        node_name = name or self.graph.fresh_name(op)
        self.nodes.append(Node(op, inputs, names, {**(attrs or {}), **more_attrs}, node_name, domain))
        return names[0] if outputs == 1 else names

    def const(self, value: Any, *, like: str | None = None, name: str = "const") -> str:
        """A new parameter holding ``value`` (with the dtype of container ``like`` if given)."""
        data = np.asarray(value)
        if like is not None:
            data = data.astype(dtypes.to_numpy(self.graph.containers[like].type.dtype))
        c = self.graph.add_parameter(self.graph.fresh_name(name), data)
        return c.name

    def replace(self, values: Mapping[str, str]) -> Replacement:
        return Replacement(tuple(self.nodes), dict(values))


def fuse_to(op: str, *captures: str, domain: str = "", **attrs) -> Callable[[Graph, Match], Replacement]:
    """The common rewrite "replace the matched root by ``op(captures...)``", typed like the root::

        RewriteRule("gelu", gelu_pattern, fuse_to("Gelu", "x", approximate="none"))
    """

    def rewrite(graph: Graph, m: Match) -> Replacement:
        rb = RewriteBuilder(graph)
        out = rb.op(op, [m.value(c) for c in captures], like=m.root_value, domain=domain, **attrs)
        return rb.replace({m.root_value: out})

    rewrite.__name__ = f"fuse_to_{op}"
    return rewrite


@dataclass(frozen=True)
class RewriteRule:
    """``pattern`` plus ``rewrite(graph, match) -> Replacement | None`` (None declines).

    ``check(graph, match)`` may refuse a match: return False or ``match.fail(reason, node)``;
    None or True accepts. Rules combine into a :class:`RuleSet` with ``+``.
    """

    name: str
    pattern: Pattern
    rewrite: Callable[[Graph, Match], Replacement | None]
    check: Callable[[Graph, Match], Any] | None = None
    description: str = ""

    def __add__(self, other: "RewriteRule | RuleSet") -> "RuleSet":
        return RuleSet([self]) + other

    def accept(self, graph: Graph, m: Match) -> MatchFailure | None:
        """None when the check accepts ``m``, else the failure to report."""
        if self.check is None:
            return None
        verdict = self.check(graph, m)
        if verdict is None or verdict is True:
            return None
        if verdict is False:
            return m.fail(f"the check of rule '{self.name}' refused the match", m.root)
        if isinstance(verdict, MatchFailure):
            return verdict
        raise TypeError(f"check of rule '{self.name}' returned {type(verdict).__name__}; "
                        "expected None/True (accept), False or match.fail(reason, node)")


class RuleSet:
    """An ordered set of rules with unique names; ``+`` appends rules or rule sets."""

    def __init__(self, rules: Iterable[RewriteRule] = ()):
        self.rules = tuple(rules)
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rule names must be unique in a rule set; repeated: {dup}")
        self._by_op: dict[str, tuple[RewriteRule, ...]] = {}

    def __add__(self, other: "RewriteRule | RuleSet") -> "RuleSet":
        return RuleSet(self.rules + (other.rules if isinstance(other, RuleSet) else (other,)))

    def __iter__(self):
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def for_op(self, op: str) -> tuple[RewriteRule, ...]:
        """Rules whose pattern can be rooted at a node with op ``op``, in order."""
        if op not in self._by_op:
            self._by_op[op] = tuple(r for r in self.rules if (ops := r.pattern.root_ops()) is None or op in ops)
        return self._by_op[op]

    def __repr__(self) -> str:
        return f"RuleSet({[r.name for r in self.rules]})"


@dataclass(frozen=True)
class Application:
    rule: str
    root: str
    nodes: tuple[str, ...]
    iteration: int


@dataclass(frozen=True)
class Refusal:
    rule: str
    root: str
    reason: str
    depth: int


@dataclass
class RewriteReport:
    """What :func:`apply_rules` did. ``refusals`` (explain mode) are from the last sweep, so they
    describe the final graph."""

    applications: list[Application] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    iterations: int = 0
    converged: bool = False

    @property
    def modified(self) -> bool:
        return bool(self.applications)

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for a in self.applications:
            result[a.rule] = result.get(a.rule, 0) + 1
        return result

    def format(self, max_refusals: int = 20) -> str:
        """Applications in order, then refusals nearest-miss first."""
        lines = [f"applied {a.rule} at '{a.root}' (matched {', '.join(a.nodes)})" for a in self.applications]
        lines.append(f"{len(self.applications)} rewrite(s) in {self.iterations} sweep(s)"
                     + ("" if self.converged else ", stopped at max_iterations before a fixed point"))
        ranked = sorted(self.refusals, key=lambda r: -r.depth)
        lines += [f"refused {r.rule} at '{r.root}' (depth {r.depth}): {r.reason}" for r in ranked[:max_refusals]]
        if len(ranked) > max_refusals:
            lines.append(f"... and {len(ranked) - max_refusals} more refusal(s)")
        return "\n".join(lines)


def apply_rules(graph: Graph, rules: RewriteRule | RuleSet | Iterable[RewriteRule], *, max_iterations: int = 10,
                explain: bool = False) -> RewriteReport:
    """Apply ``rules`` to ``graph`` in place until no rule fires (at most ``max_iterations``
    sweeps). The graph stays topologically sorted and keeps its output names."""
    ruleset = rules if isinstance(rules, RuleSet) else RuleSet([rules] if isinstance(rules, RewriteRule) else rules)
    report = RewriteReport()
    orphans: set[str] = set()
    for iteration in range(max_iterations):
        sweep = _Sweep(graph, ruleset, iteration, explain, orphans)
        applied = sweep.run()
        report.iterations = iteration + 1
        report.applications += applied
        report.refusals = sweep.refusals
        if not applied:
            report.converged = True
            break
        graph.nodes = [n for slot in sweep.slots for n in slot]
    if report.applications:
        graph.toposort()
        used = set(graph.inputs) | set(graph.outputs)
        for node in graph.nodes:
            used.update(node.inputs + node.outputs)
        for name in orphans - used:
            graph.containers.pop(name, None)
    return report


class _Sweep:
    """One pass over the graph. Nodes live in ``slots`` (one per original node, in order) so that
    a replacement can be inserted where its root was without reindexing the node list."""

    def __init__(self, graph: Graph, rules: RuleSet, iteration: int, explain: bool, orphans: set[str]):
        self.graph, self.rules, self.iteration, self.explain, self.orphans = graph, rules, iteration, explain, orphans
        self.index = GraphIndex(graph)
        self.slots: list[list[Node]] = [[n] for n in graph.nodes]
        self.slot_of: dict[int, int] = {id(n): i for i, n in enumerate(graph.nodes)}
        self.refusals: list[Refusal] = []

    def run(self) -> list[Application]:
        applied = []
        for i in reversed(range(len(self.slots))):
            for node in list(self.slots[i]):
                if self.index.alive(node):
                    app = self._try(node)
                    if app is not None:
                        applied.append(app)
        return applied

    def _try(self, node: Node) -> Application | None:
        for rule in self.rules.for_op(node.op):
            best: MatchFailure | None = None
            for value in filter(None, node.outputs):
                result = match_value(rule.pattern, self.index, value, lambda m: rule.accept(self.graph, m))
                if isinstance(result, Match):
                    failure = self._apply(rule, result)
                    if failure is None:
                        return Application(rule.name, node.label, tuple(n.label for n in result.nodes), self.iteration)
                    result = failure
                if best is None or result.depth > best.depth:
                    best = result
            if self.explain and best is not None:
                self.refusals.append(Refusal(rule.name, node.label, str(best), best.depth))
        return None

    # -- editing (keeps index and slots current) -------------------------------------------------
    def _swap(self, old: Node, new: Node) -> None:
        slot = self.slots[self.slot_of[id(old)]]
        slot[next(i for i, n in enumerate(slot) if n is old)] = new
        self.slot_of[id(new)] = self.slot_of.pop(id(old))
        self.index.remove(old)
        self.index.add(new)

    def _remove(self, node: Node) -> None:
        slot = self.slots[self.slot_of.pop(id(node))]
        slot[:] = [n for n in slot if n is not node]
        self.index.remove(node)
        self.orphans.update(node.present_inputs + tuple(o for o in node.outputs if o))  # dropped if unreferenced

    def _apply(self, rule: RewriteRule, m: Match) -> MatchFailure | None:
        """Rewrite one match; a failure when the rewrite declines (nothing is changed then)."""
        known = len(self.graph.containers)
        read = [c.data for v in m.values.values() if isinstance(v, str)
                and (c := self.graph.containers.get(v)) is not None and c.data is not None]
        try:
            rep = rule.rewrite(self.graph, m)
        except Exception as exc:
            raise PassError(f"rewrite rule '{rule.name}' failed at '{m.root_value}': {type(exc).__name__}: {exc}") from exc
        if rep is None:
            for name in list(self.graph.containers)[known:]:  # undo what a declining builder added
                del self.graph.containers[name]
            return m.fail(f"the rewrite of rule '{rule.name}' declined", m.root)
        anchor = self.index.producer(m.root_value)  # the node being tried; new nodes go where it is
        slot_no = self.slot_of[id(anchor)]
        at = next(i for i, n in enumerate(self.slots[slot_no]) if n is anchor)
        nodes = list(rep.nodes)
        self._validate(rule, nodes)
        maybe_dead = [o for n in m.nodes for o in n.outputs] + list(rep.values)
        for old, new in rep.values.items():
            if old == new:
                continue
            target = new
            if old in self.index.protected:
                target, renamed = self._keep_name(old, new, nodes)
                maybe_dead += renamed
            if target != old:
                for reader in list(self.index.readers(old)):
                    self._swap(reader, reader.replace(inputs=tuple(target if i == old else i for i in reader.inputs)))
        self.slots[slot_no][at:at] = nodes
        for node in nodes:
            self.slot_of[id(node)] = slot_no
            self.index.add(node)
        self._remove_dead(maybe_dead)
        release_pages(read)  # weights mapped from the model file: consumed, their pages can go
        return None

    def _keep_name(self, old: str, new: str, nodes: list[Node]) -> tuple[str, list[str]]:
        """Make ``old`` (a graph output or subgraph-read name) carry the new value. Returns the
        name its node readers should read, and the name the old producer now writes instead."""
        producer = self.index.producer(old)
        renamed = []
        if producer is not None:  # the old producer writes a fresh, soon-dead name instead
            dead = self.graph.fresh_name(old)
            renamed.append(dead)
            self.graph.add_container(dead, self.graph.containers[old].type)
            self._swap(producer, producer.replace(outputs=tuple(dead if o == old else o for o in producer.outputs)))
        if any(new in n.outputs for n in nodes) and new not in self.index.protected:
            nodes[:] = [n.replace(inputs=tuple(old if i == new else i for i in n.inputs),
                                  outputs=tuple(old if o == new else o for o in n.outputs)) for n in nodes]
            self.orphans.add(new)
            return old, renamed
        nodes.append(Node("Identity", (new,), (old,), {}, self.graph.fresh_name("keep_name")))
        return new, renamed

    def _validate(self, rule: RewriteRule, nodes: list[Node]) -> None:
        for node in nodes:
            for out in filter(None, node.outputs):
                if out not in self.graph.containers:
                    raise PassError(f"rewrite rule '{rule.name}' made node '{node.label}' write '{out}', which has "
                                    "no container (create outputs with RewriteBuilder.op)")
                if self.index.producer(out) is not None:
                    raise PassError(f"rewrite rule '{rule.name}' made node '{node.label}' write '{out}', which "
                                    f"'{self.index.producer(out).label}' already writes")

    def _remove_dead(self, values: list[str]) -> None:
        """Delete the producers of ``values`` that no longer have readers, transitively."""
        work = list(values)
        while work:
            node = self.index.producer(work.pop())
            if node is not None and not any(self.index.is_used(o) for o in node.outputs if o):
                self._remove(node)
                work.extend(node.present_inputs)


class RewritePass(Pass):
    """A rule set as a pass of the pass manager (in place). Stats count applications per rule;
    refusals list the near misses (``explain``, on by default: it costs one string per candidate)."""

    in_place = True

    def __init__(self, name: str, rules: RewriteRule | RuleSet | Iterable[RewriteRule], *, max_iterations: int = 10,
                 explain: bool = True, description: str = ""):
        self.name = name
        self.rules = rules if isinstance(rules, RuleSet) else RuleSet([rules] if isinstance(rules, RewriteRule) else rules)
        self.max_iterations = max_iterations
        self.explain = explain
        self.description = description or f"rewrite rules: {', '.join(r.name for r in self.rules)}"

    def run(self, graph: Graph, ctx) -> PassResult:
        report = apply_rules(graph, self.rules, max_iterations=self.max_iterations, explain=self.explain)
        stats: dict[str, Any] = {"applied": len(report.applications), **report.counts()}
        if not report.converged:
            stats["converged"] = False
        refusals = [(r.root, f"{r.rule}: {r.reason}") for r in report.refusals]
        return PassResult(graph, report.modified, stats, refusals)
