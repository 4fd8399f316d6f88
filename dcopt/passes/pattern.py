"""Patterns over the op-level IR and the matcher that finds them.

A pattern describes one *value* (a container name) by how it was computed::

    x = Var("x")
    gelu = Op("Mul", Op("Mul", x, Const("half", 0.5)),
                     Op("Add", 1.0, Op("Erf", Op("Div", x, Const("sqrt2", math.sqrt(2))))), name="out")

``Var`` matches any value, ``Const`` a constant (a parameter or a ``Constant`` node's output),
``Op`` a value written by a node, ``Alt`` the first of several patterns that matches and
``Optional`` a node that may or may not be there. Plain Python values are shorthand: a ``str``
is ``Var(str)`` and a number is ``Const(value=number)``. A name that repeats must bind the same
container every time (``x`` above is one value, read twice).

Matching backtracks: commutative ops try their operand orders and ``Alt`` tries its branches
until the whole pattern, the single-consumer rule and the caller's own check all agree. Captures
live in an immutable :class:`Match`, so a branch that fails leaves nothing to undo.

A match that fails says why ("why didn't my rule fire?" is the question users ask most). Every
refused step is a :class:`~dcopt.passes.match.MatchFailure` naming the node, the expected and
the actual; the search keeps the *deepest* one (the branch that got furthest into the pattern),
which is the near miss a user wants to hear about.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import itertools
import math
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from dcopt.ir.graph import Graph, Node
from dcopt.ops import registry
from dcopt.passes.common import known_dtype
from dcopt.passes.match import (GraphIndex, Match, MatchFailure, Predicate, Search, describe_check,
                                escaping_intermediate, norm_domain, short)

__all__ = [
    "COMMUTATIVE_OPS", "Alt", "Const", "GraphIndex", "Match", "MatchFailure", "Op", "Optional", "Pattern",
    "Predicate", "Var", "as_pattern", "match_value",
]

#: Ops whose operands may be swapped; ``Op`` tries every operand order for these.
COMMUTATIVE_OPS = frozenset({
    "Add", "Mul", "Max", "Min", "Sum", "Mean", "And", "Or", "Xor", "Equal",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor",
})
_MAX_PERMUTED = 4  # variadic commutative ops with more operands try only the given order


# -- the pattern language ---------------------------------------------------------------------


class Pattern(ABC):
    """A pattern for one value. ``name`` captures the value; ``dtype`` (a name or a set of names),
    ``rank`` and ``shape`` (a tuple with ``None`` for "any dim", or a predicate on the shape)
    constrain its type. A dtype constraint only holds when the dtype is trustworthy
    (see :func:`~dcopt.passes.common.known_dtype`)."""

    def __init__(self, name: str | None = None, *, dtype: str | Iterable[str] | None = None,
                 rank: int | None = None, shape: tuple | Callable | None = None):
        self.name = name
        self.dtype = None if dtype is None else frozenset([dtype] if isinstance(dtype, str) else dtype)
        self.rank = rank
        self.shape = shape

    def root_ops(self) -> frozenset[str] | None:
        """Ops a node must have to be the root of a match (None: any), used to skip candidates."""
        return None

    def match(self, graph: Graph | GraphIndex, value: str) -> Match | MatchFailure:
        """Match at ``value``: a :class:`Match`, or the deepest :class:`MatchFailure`."""
        index = graph if isinstance(graph, GraphIndex) else GraphIndex(graph)
        return match_value(self, index, value)

    def matches(self, s: Search, value: str, m: Match) -> Iterator[Match]:
        """Every way this pattern matches ``value`` given the captures in ``m``."""
        blame = m.at or s.index.producer(value)
        if not value:
            return s.fail(m, "the input is omitted", m.at)
        if self.name is not None and m.values.get(self.name, value) != value:
            return s.fail(m, f"'{self.name}' must be one value: it is '{m.values[self.name]}' elsewhere "
                             f"but '{value}' here", blame)
        problem = self._type_problem(s.index.graph, value)
        if problem:
            return s.fail(m, problem, blame)
        for found in self._match(s, value, m):
            yield found if self.name is None else found._copy(values={**found.values, self.name: value})

    @abstractmethod
    def _match(self, s: Search, value: str, m: Match) -> Iterator[Match]:
        """Every way this pattern matches ``value`` extending ``m`` (after the type checks)."""

    def _type_problem(self, graph: Graph, value: str) -> str:
        if self.dtype is None and self.rank is None and self.shape is None:
            return ""
        t = graph.type_of(value)
        if self.dtype is not None:
            dtype = known_dtype(graph, value)
            if dtype not in self.dtype:
                return f"dtype of '{value}': expected {'/'.join(sorted(self.dtype))}, got {dtype or 'unknown'}"
        shape = None if t is None else t.shape
        if self.rank is not None and (shape is None or len(shape) != self.rank):
            return f"rank of '{value}': expected {self.rank}, got {'unknown' if shape is None else len(shape)}"
        if callable(self.shape):
            if shape is None or not self.shape(shape):
                return f"shape of '{value}' {t.shape_str() if t else '[?]'} fails {describe_check(self.shape)}"
        elif self.shape is not None:
            want = tuple(self.shape)
            if shape is None or len(shape) != len(want) or any(w is not None and w != d for w, d in zip(want, shape)):
                return f"shape of '{value}': expected {list(want)}, got {t.shape_str() if t else '[?]'}"
        return ""

    def _what(self, value: str) -> str:
        """How messages name the value: the capture name, and the container's if it differs."""
        return f"'{value}'" if self.name in (None, value) else f"'{self.name}' ('{value}')"


def as_pattern(p: Any) -> Pattern:
    """Shorthand: a str is ``Var(str)``, a number ``Const(value=number)``."""
    if isinstance(p, Pattern):
        return p
    if isinstance(p, str):
        return Var(p)
    if isinstance(p, (int, float, np.number, np.ndarray)):
        return Const(value=p)
    raise TypeError(f"cannot use {p!r} as a pattern")


class Var(Pattern):
    """Any value. ``Var()`` is a wildcard; ``const=True``/``False`` requires it (not) to be constant."""

    def __init__(self, name: str | None = None, *, const: bool | None = None, **type_constraints):
        super().__init__(name, **type_constraints)
        self.const = const

    def _match(self, s, value, m):
        if self.const is not None and (s.index.constant(value) is not None) != self.const:
            return s.fail(m, f"{self._what(value)} must {'' if self.const else 'not '}be a constant", m.at)
        yield m._copy(depth=m.depth + 1)

    def __repr__(self) -> str:
        return f"Var({self.name!r})" if self.name else "Var()"


class Const(Pattern):
    """A constant value. ``value`` must equal the data elementwise (after broadcasting, within
    ``rtol``/``atol``); ``check`` is a predicate on the array (wrap it in :class:`Predicate` to
    give it a readable description)."""

    def __init__(self, name: str | None = None, value: Any = None, *, check: Callable | None = None,
                 rtol: float = 1e-6, atol: float = 0.0, **type_constraints):
        super().__init__(name, **type_constraints)
        self.value, self.check, self.rtol, self.atol = value, check, rtol, atol

    def _match(self, s, value, m):
        data = s.index.constant(value)
        what = self._what(value)
        if data is None:
            producer = s.index.producer(value)
            by = f" by '{producer.label}' ({producer.op})" if producer is not None else " (a graph input)"
            return s.fail(m, f"expected a constant for {what}, but it is computed{by}", m.at)
        m = m._copy(depth=m.depth + 1)  # being a constant is progress: a wrong value is a nearer miss
        if self.value is not None and not self._equal(data):
            return s.fail(m, f"constant {what}: expected {short(np.asarray(self.value))}, got {short(data)}", m.at)
        if self.check is not None and not self.check(data):
            return s.fail(m, f"constant {what} = {short(data)} fails {describe_check(self.check)}", m.at)
        yield m._copy(depth=m.depth + 1)

    def _equal(self, data: np.ndarray) -> bool:
        want = np.asarray(self.value)
        try:
            if data.dtype.kind in "fciub" and want.dtype.kind in "fciub":
                return bool(np.allclose(data, want, rtol=self.rtol, atol=self.atol))
            return bool(np.all(data == want))
        except ValueError:  # shapes do not broadcast
            return False

    def __repr__(self) -> str:
        return f"Const({self.name!r}, {self.value!r})"


class Op(Pattern):
    """A value written by a node with op ``op`` (a name or several) whose inputs match ``inputs``.

    A trailing ``...`` in ``inputs`` accepts any further inputs. ``attrs`` maps attribute names
    to an exact value or a predicate (absent attributes take their ONNX schema default).
    ``output`` is which output of the node the value must be. ``commute`` (default: the op is in
    :data:`COMMUTATIVE_OPS`) tries every operand order. Unless ``shared=True``, a node matched
    below the root must have no readers outside the match, since the rewrite deletes it.
    ``name`` captures both the value and the node (``match.node(name)``).
    """

    def __init__(self, op: str | Iterable[str], *inputs: Any, name: str | None = None, domain: str = "",
                 attrs: dict[str, Any] | None = None, output: int = 0, commute: bool | None = None,
                 shared: bool = False, **type_constraints):
        super().__init__(name, **type_constraints)
        self.ops = frozenset([op] if isinstance(op, str) else op)
        self.open = bool(inputs) and inputs[-1] is Ellipsis
        self.inputs = tuple(as_pattern(p) for p in (inputs[:-1] if self.open else inputs))
        self.domain = norm_domain(domain)
        self.attrs = dict(attrs or {})
        self.output = output
        self.commute = (self.ops <= COMMUTATIVE_OPS) if commute is None else commute
        self.shared = shared

    def root_ops(self) -> frozenset[str]:
        return self.ops

    def _match(self, s, value, m):
        node = s.index.producer(value)
        wanted = "/".join(sorted(self.ops))
        if node is None:
            return s.fail(m, f"expected {wanted} to compute {self._what(value)}, but it is not computed by a node", m.at)
        if node.op not in self.ops or norm_domain(node.domain) != self.domain:
            dom = f"{node.domain}." if node.domain else ""
            return s.fail(m, f"{self._what(value)}: expected op {wanted}, got {dom}{node.op}", node)
        m = m._copy(depth=m.depth + 1)  # the right op is progress: a wrong attribute is a nearer miss
        if node.outputs.index(value) != self.output:
            return s.fail(m, f"'{value}' is output {node.outputs.index(value)} of the node, not {self.output}", node)
        problem = self._attr_problem(s.index.graph, node)
        if problem:
            return s.fail(m, problem, node)
        inputs = list(node.inputs)
        while inputs and not inputs[-1]:
            inputs.pop()
        if len(inputs) < len(self.inputs) or (not self.open and len(inputs) > len(self.inputs)):
            return s.fail(m, f"expected {len(self.inputs)}{'+' if self.open else ''} inputs, got {len(inputs)}", node)
        m = m._copy(
            named_nodes=m.named_nodes if self.name is None else {**m.named_nodes, self.name: node},
            nodes=m.nodes if any(n is node for n in m.nodes) else m.nodes + (node,),
            private=m.private if self.shared else m.private + (node,),
            depth=m.depth + 1,
        )
        for order in self._orders(tuple(inputs[:len(self.inputs)])):
            yield from _match_all(s, self.inputs, order, m, node)

    def _attr_problem(self, graph: Graph, node: Node) -> str:
        if not self.attrs:
            return ""
        defaults = registry.schema_defaults(node.op, node.domain, graph.opset_of(node.domain))
        for key, want in self.attrs.items():
            have = node.attrs.get(key, defaults.get(key))
            if callable(want):
                if have is None or not want(have):
                    return f"attribute {key}={short(have)} fails {describe_check(want)}"
            elif not _attr_equal(have, want):
                return f"attribute {key}: expected {short(want)}, got {short(have)}"
        return ""

    def _orders(self, inputs: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        if not self.commute or self.open or len(inputs) < 2 or len(inputs) > _MAX_PERMUTED:
            yield inputs
            return
        yield from dict.fromkeys(itertools.permutations(inputs))  # x*x has one order, not two

    def __repr__(self) -> str:
        args = ", ".join([repr(p) for p in self.inputs] + (["..."] if self.open else []))
        return f"Op({'/'.join(sorted(self.ops))}({args}){'' if self.name is None else f', name={self.name!r}'})"


def _attr_equal(have: Any, want: Any) -> bool:
    if isinstance(want, (list, tuple)):
        return isinstance(have, tuple) and len(have) == len(want) and all(map(_attr_equal, have, want))
    if isinstance(want, float) and isinstance(have, (int, float)):
        return math.isclose(have, want, rel_tol=1e-6, abs_tol=1e-12)  # float attributes are float32
    if isinstance(want, np.ndarray) or isinstance(have, np.ndarray):
        return np.array_equal(np.asarray(have), np.asarray(want))
    return have == want


def _match_all(s: Search, patterns: tuple[Pattern, ...], values: tuple[str, ...], m: Match,
               parent: Node) -> Iterator[Match]:
    """Match ``patterns`` against ``values`` pairwise (the inputs of ``parent``), backtracking."""
    if not patterns:
        yield m
        return
    for found in patterns[0].matches(s, values[0], m._copy(at=parent)):
        yield from _match_all(s, patterns[1:], values[1:], found, parent)


class Alt(Pattern):
    """The first of ``alternatives`` that matches (later ones are tried when a match fails later)."""

    def __init__(self, *alternatives: Any, name: str | None = None, **type_constraints):
        super().__init__(name, **type_constraints)
        self.alternatives = tuple(as_pattern(p) for p in alternatives)

    def root_ops(self) -> frozenset[str] | None:
        ops = [p.root_ops() for p in self.alternatives]
        return None if any(o is None for o in ops) else frozenset().union(*ops)

    def _match(self, s, value, m):
        for p in self.alternatives:
            yield from p.matches(s, value, m)

    def __repr__(self) -> str:
        return f"Alt({', '.join(map(repr, self.alternatives))})"


class Optional(Alt):
    """``pattern`` (an ``Op``) if the node is there, else ``or_else`` — by default the op's only
    input, so ``Optional(Op("Cast", "x"))`` matches both ``Cast(x)`` and ``x`` itself."""

    def __init__(self, pattern: Op, *, or_else: Any = None, name: str | None = None, **type_constraints):
        if or_else is None:
            if not isinstance(pattern, Op) or len(pattern.inputs) != 1 or pattern.open:
                raise ValueError("Optional needs or_else= unless its pattern is an Op with exactly one input")
            or_else = pattern.inputs[0]
        super().__init__(pattern, or_else, name=name, **type_constraints)


# -- matching at a value -----------------------------------------------------------------------


def match_value(pattern: Pattern, index: GraphIndex, value: str,
                accept: Callable[[Match], MatchFailure | None] | None = None) -> Match | MatchFailure:
    """The first match of ``pattern`` at ``value`` whose intermediates are private and that
    ``accept`` (a rule's check) does not refuse; else the deepest failure seen."""
    s = Search(index)
    root = index.producer(value)
    for m in pattern.matches(s, value, Match(index)):
        m = m._copy(root=root if any(n is root for n in m.nodes) else None, root_value=value, at=None)
        failure = escaping_intermediate(index, m)
        if failure is None and accept is not None:
            failure = accept(m)
        if failure is None:
            return m
        s.record(MatchFailure(failure.reason, failure.node, m.depth) if failure.depth < m.depth else failure)
    return MatchFailure(f"nothing matched at '{value}'") if s.deepest is None else s.deepest
