"""Level-1 schedule properties: per-node implementation choice, tiling and vector width.

DaCeML's first level of transformations is *local*: for one operator, pick how it is
implemented (a convolution as direct loops, as im2col + GEMM, or as a library call) and with
which tiling and vectorization parameters. None of that changes what the node computes, so it
is recorded as *properties* on the op node, not as different ops: every pass, the reference
executor and the exporters keep treating the node as the same ONNX op, and only the passes and
backends that lower it (``expand``, code generators) read the properties.

**Convention.** A schedule property is a node attribute whose name starts with ``dcopt.``:

=================  =========================================  ===================================
attribute          value                                       meaning
=================  =========================================  ===================================
``dcopt.impl``     str, one of :data:`IMPLS` for the op        how to implement the node
``dcopt.tile``     tuple of positive ints                      GEMM-like ops: ``(MC, KC, NC)``
                                                               cache blocking of the product
                                                               (:mod:`dcopt.passes.select_impl`
                                                               documents the cache model)
``dcopt.vector``   positive int (power of two)                 SIMD lanes of the element type the
                                                               innermost loop is vectorized by
=================  =========================================  ===================================

Implementations per op family (the first is the default, used when ``dcopt.impl`` is absent).
Two kinds, as DaCe's library nodes have them: *expansions* that lower the op to maps (pure,
any target can render them) and *library implementations* that keep one ``LibraryCall`` whose
``impl`` names the routine a backend runs (:data:`LIBRARY_IMPLS`).

* ``Conv``: ``library`` (a library call, the backend's default routine), ``loops`` (one map over
  output positions and kernel taps accumulating with wcr sum), ``im2col`` (a copy map unfolds
  the input into a column buffer, then one batched GEMM library call), and the CPU routines
  ``direct`` (a generated register-blocked kernel), ``pointwise`` (1x1 convs as a generated
  pixel-vector GEMM), ``depthwise`` (one filter per channel, bias and clamp fused) and ``blas``
  (OpenBLAS: shifted GEMMs, im2col).
* ``MatMul``, ``Gemm``: ``library`` (the backend's default), ``loops`` (a map with wcr sum), and
  the CPU routines ``generated`` (the conv kernel's GEMM form, constant weights packed),
  ``matvec`` (batch-1 layers) and ``blas`` (OpenBLAS sgemm tasks).

Why attributes and not a side table: they travel with the node through every rewrite that
keeps it (``node.replace``), through the JSON serializer, and into fusion-group bodies, for
free. They must be *invisible to semantics*, which two places enforce: the reference executor
drops ``dcopt.*`` attributes before calling an op's implementation
(:func:`dcopt.ops.registry.call`), and the ONNX exporter does not write them (ONNX's checker
rejects attributes an op's schema does not declare). A rewrite that builds a *new* node for an
op (instead of replacing one) starts without a schedule -- the backend default -- which is
always correct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dcopt.errors import DcoptError
from dcopt.ir.graph import Graph, Node

PREFIX = "dcopt."
IMPL = PREFIX + "impl"
TILE = PREFIX + "tile"
VECTOR = PREFIX + "vector"
PROPERTIES = (IMPL, TILE, VECTOR)

#: Allowed ``dcopt.impl`` values per (default-domain) op; the first is the default.
IMPLS: dict[str, tuple[str, ...]] = {
    "Conv": ("library", "loops", "im2col", "direct", "pointwise", "depthwise", "blas"),
    "MatMul": ("library", "loops", "generated", "matvec", "blas"),
    "Gemm": ("library", "loops", "generated", "matvec", "blas"),
}
DEFAULT_IMPL = "library"
#: Implementations that stay one LibraryCall (the others are expansions into maps).
LIBRARY_IMPLS = frozenset({"library", "direct", "pointwise", "depthwise", "blas", "generated", "matvec"})


class ScheduleError(DcoptError, ValueError):
    """A schedule property with an unknown name or a value not allowed for the node's op."""


def is_schedule_attr(name: str) -> bool:
    """Whether an attribute name is a schedule property (never part of an op's semantics)."""
    return name.startswith(PREFIX)


def semantic_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """``attrs`` without the schedule properties: what an op's semantics depend on."""
    return {k: v for k, v in attrs.items() if not is_schedule_attr(k)}


@dataclass(frozen=True)
class Schedule:
    """The schedule properties of one node; ``None`` means "not chosen" (backend default)."""

    impl: str | None = None
    tile: tuple[int, ...] | None = None
    vector: int | None = None

    @property
    def empty(self) -> bool:
        return self.impl is None and self.tile is None and self.vector is None

    def attrs(self) -> dict[str, Any]:
        """The attributes that encode this schedule (unset properties omitted)."""
        values = {IMPL: self.impl, TILE: self.tile, VECTOR: self.vector}
        return {k: v for k, v in values.items() if v is not None}


def _check(op: str, name: str, value: Any) -> Any:
    """The normalized value of one property, or ScheduleError saying what is wrong."""
    if name == IMPL:
        allowed = IMPLS.get(op)
        if allowed is None:
            raise ScheduleError(f"{op} has no implementation choices (ops that have: {', '.join(IMPLS)})")
        if value not in allowed:
            raise ScheduleError(f"{IMPL}={value!r} is not an implementation of {op} (allowed: {', '.join(allowed)})")
        return value
    if name == TILE:
        tile = tuple(value) if isinstance(value, (tuple, list)) else None
        if not tile or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in tile):
            raise ScheduleError(f"{TILE}={value!r}: expected a tuple of positive ints")
        return tile
    if name == VECTOR:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value & (value - 1):
            raise ScheduleError(f"{VECTOR}={value!r}: expected a positive power of two")
        return value
    raise ScheduleError(f"unknown schedule property {name!r} (known: {', '.join(PROPERTIES)})")


def schedule_of(node: Node) -> Schedule:
    """The node's schedule (validated; ScheduleError on a malformed property)."""
    values = {name: _check(node.op, name, value) for name, value in node.attrs.items() if is_schedule_attr(name)}
    return Schedule(values.get(IMPL), values.get(TILE), values.get(VECTOR))


def with_schedule(node: Node, **props) -> Node:
    """A copy of ``node`` with schedule properties set (``impl=``, ``tile=``, ``vector=``);
    a property given as ``None`` is removed. Values are validated against the node's op."""
    attrs = dict(node.attrs)
    for key, value in props.items():
        name = PREFIX + key
        if value is None:
            if name not in PROPERTIES:
                raise ScheduleError(f"unknown schedule property {name!r} (known: {', '.join(PROPERTIES)})")
            attrs.pop(name, None)
        else:
            attrs[name] = _check(node.op, name, value)
    return node.replace(attrs=attrs)


def strip_schedule(node: Node) -> Node:
    """``node`` without schedule properties (the same object when it has none)."""
    if not any(is_schedule_attr(k) for k in node.attrs):
        return node
    return node.replace(attrs=semantic_attrs(node.attrs))


def strip_schedules(graph: Graph) -> int:
    """Remove every schedule property in ``graph`` (fusion-group bodies included, in place);
    returns how many nodes changed."""
    changed, nodes = 0, []
    for node in graph.nodes:
        bare = strip_schedule(node)
        bodies = {k: v for k, v in bare.attrs.items() if isinstance(v, Graph)}
        for key, body in bodies.items():
            body = body.copy()
            if strip_schedules(body):
                bare = bare.replace(attrs={**bare.attrs, key: body})
        changed += bare is not node
        nodes.append(bare)
    graph.nodes = nodes
    return changed


def schedule_problems(graph: Graph) -> list[str]:
    """Malformed schedule properties in ``graph`` (one sentence each), for verifiers and tests."""
    problems = []
    for node in graph.nodes:
        try:
            schedule_of(node)
        except ScheduleError as exc:
            problems.append(f"node '{node.label}': {exc}")
        for body in node.subgraphs:
            problems.extend(schedule_problems(body))
    return problems
