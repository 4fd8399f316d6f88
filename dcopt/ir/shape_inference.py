"""Type every container of a graph with dcopt's own shape rules (:mod:`dcopt.ops.shapes`).

Why not run the model, or ask ONNX: running the reference executor on random inputs is slow on
real models and silently specializes any size that depends on a *value* (a Reshape target, Resize
scales) to the random data; exporting to ONNX for its shape inference costs a serialization per
call and cannot see dcopt's own ops. Here each node's rule runs once, in topological order, on
the types (and known values) of its inputs.

Shape arithmetic folds as it goes: a node whose inputs are all known constants and small (Shape,
Gather/Concat/Slice of shape vectors, arithmetic on them, Cast, Unsqueeze...) is evaluated with
its reference implementation -- a few elements, not a model run -- so a downstream Reshape sees a
constant target. Where the vectors hold symbolic sizes, :mod:`dcopt.ops.shapes.values` folds them
element by element, so symbolic graphs (bindings are optional) keep exact symbolic types.

Subgraphs (If/Loop/Scan bodies, FusedGroup bodies) are typed in place too, in a scope that sees
the enclosing graph's types and values. The graph's structure and parameters never change: this
only writes ``Container.type``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from dcopt.errors import InputError
from dcopt.ir.graph import Graph, Node
from dcopt.ir.types import OptionalType, SequenceType, TensorType, ValueType
from dcopt.ops import registry as reference_ops
from dcopt.ops.misc import RANDOM_OPS
from dcopt.ops.shapes import dims
from dcopt.ops.shapes.registry import (
    SequenceOf, ShapeContext, ShapeInferenceError, Valued, common_type, lookup, run_rule,
)
from dcopt.ops.shapes.values import SymbolicValue, propagate

#: Constant folding during inference: a node folds when each input and output has at most this
#: many elements (shape vectors, scalars, small index tables; never weights).
FOLD_LIMIT = 4096

#: Ops never evaluated during inference (their results change from run to run).
_NONDETERMINISTIC = RANDOM_OPS | {"Dropout"}


@dataclass
class Inference:
    """What :func:`infer` learned besides the types it wrote."""

    values: dict[str, Any] = field(default_factory=dict)  # container -> constant value (top-level scope)
    symbolic: dict[str, SymbolicValue] = field(default_factory=dict)  # int vectors holding symbols
    sequences: dict[str, tuple] = field(default_factory=dict)  # sequence -> its items' types
    missing_rules: dict[str, int] = field(default_factory=dict)  # op -> nodes left untyped
    folded: int = 0


@dataclass
class BodyResult:
    """A subgraph's outputs after typing: types, constant values and sequence items (None = unknown)."""

    types: list
    values: list
    sequences: list


def infer_types(graph: Graph, bindings: Mapping[str, int] | None = None,
                values: Mapping[str, Any] | None = None, *, strict: bool = False) -> None:
    """Type every container of ``graph`` in place, in topological order.

    ``bindings`` gives sizes to symbolic input dims (``{"N": 1}``); ``values`` gives values to
    graph inputs (value specialization: an input that is a Reshape target); both optional.
    ``strict`` checks each rule against the reference where a node folds (for tests)."""
    infer(graph, bindings, values, strict=strict)


def infer(graph: Graph, bindings: Mapping[str, int] | None = None, values: Mapping[str, Any] | None = None,
          *, strict: bool = False) -> Inference:
    """:func:`infer_types`, returning what was learned (constant values, ops without rules)."""
    report = Inference()
    scope = _Scope(graph, None, report, strict)
    for name in graph.inputs:
        c = graph.containers[name]
        if bindings and isinstance(c.type, TensorType) and c.type.shape is not None:
            _retype(c, TensorType(c.type.dtype, tuple(dims.substitute(d, bindings) for d in c.type.shape)))
        if values and name in values:
            scope.set_input_value(name, values[name])
    scope.run()
    report.values = dict(scope.values)
    report.symbolic = dict(scope.symbolic)
    report.sequences = dict(scope.sequences)
    return report


#: Ops whose output values depend only on their input's *type*: walking back from a shape input,
#: the values behind them do not matter.
_TYPE_ONLY = frozenset({"Shape", "Size"})


def shape_determining_inputs(graph: Graph) -> set[str]:
    """Graph inputs whose *values* decide some container's shape: the inputs from which a shape
    input (:func:`dcopt.ops.shapes.shape_inputs`: Reshape's target, Slice's bounds...) of any node,
    subgraphs included, is computed. Value specialization makes these compile-time constants."""
    from dcopt.ops.shapes import shape_inputs

    producers: dict[str, Node] = {}
    wanted: list[str] = []

    def scan(g: Graph) -> None:
        for node in g.nodes:
            producers.update((o, node) for o in node.outputs if o)
            for i in shape_inputs(node.op, node.domain, g.opset_of(node.domain)):
                if i < len(node.inputs) and node.inputs[i]:
                    wanted.append(node.inputs[i])
            for body in node.subgraphs:
                scan(body)

    scan(graph)
    seen: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in seen:
            continue
        seen.add(name)
        node = producers.get(name)
        if node is not None and not (node.op in _TYPE_ONLY and not node.domain):
            wanted.extend(n for n in node.inputs if n)
            wanted.extend(node.outer_reads())
    return {name for name in seen if name in graph.inputs}


class _Scope:
    """One graph being typed; ``parent`` is the enclosing graph's scope (subgraphs read outer names)."""

    def __init__(self, graph: Graph, parent: "_Scope | None", report: Inference, strict: bool):
        self.graph = graph
        self.parent = parent
        self.report = report
        self.strict = strict
        self.values: dict[str, Any] = {}
        self.symbolic: dict[str, SymbolicValue] = {}
        self.sequences: dict[str, tuple] = {}

    # -- the env interface of ShapeContext ------------------------------------------------------
    def _owner(self, name: str) -> "_Scope | None":
        scope = self
        while scope is not None:
            if name in scope.graph.containers or name in scope.values:
                return scope
            scope = scope.parent
        return None

    def type_of(self, name: str) -> ValueType | None:
        scope = self._owner(name)
        if scope is None:
            return None
        c = scope.graph.containers.get(name)
        return c.type if c is not None else _type_of_value(scope.values[name])

    def value_of(self, name: str):
        scope = self._owner(name)
        return None if scope is None else scope.values.get(name)

    def symbolic_of(self, name: str) -> SymbolicValue | None:
        scope = self._owner(name)
        return None if scope is None else scope.symbolic.get(name)

    def dims_value_of(self, name: str) -> tuple | None:
        scope = self._owner(name)
        if scope is None:
            return None
        value = scope.values.get(name)
        if isinstance(value, np.ndarray):
            if value.ndim > 1 or value.dtype.kind not in "iu":
                return None
            return tuple(int(x) for x in value.reshape(-1))
        known = scope.symbolic.get(name)
        if known is not None and len(known.shape) <= 1:
            return known.items
        return None

    def sequence_of(self, name: str) -> tuple | None:
        scope = self._owner(name)
        return None if scope is None else scope.sequences.get(name)

    def infer_body(self, body: Graph, types: list, values: list) -> BodyResult:
        child = _Scope(body, self, self.report, self.strict)
        for name, t, v in zip(body.inputs, types, values):
            c = body.containers.get(name)
            if c is not None and t is not None:
                _retype(c, t)
            if v is not None:
                child.values[name] = v
        child.run()
        return BodyResult([child.type_of(o) for o in body.outputs], [child.value_of(o) for o in body.outputs],
                          [child.sequence_of(o) for o in body.outputs])

    # -- typing ---------------------------------------------------------------------------------
    def set_input_value(self, name: str, value) -> None:
        c = self.graph.containers[name]
        if isinstance(value, list):
            arrays = [np.asarray(v) for v in value]
            self.values[name] = arrays
            self.sequences[name] = tuple(TensorType.of(a) for a in arrays)
            return
        array = np.asarray(value)
        problem = c.type.matches(array) if isinstance(c.type, TensorType) else None
        if problem:
            raise InputError(f"value given for shape inference does not fit: {problem}", input=name)
        self.values[name] = array
        _retype(c, TensorType.of(array))

    def run(self) -> None:
        graph = self.graph
        for name, c in graph.containers.items():
            if c.data is not None and name not in graph.inputs:
                _retype(c, TensorType.of(c.data))
                self.values[name] = c.data
        for node in self._ordered():
            self.infer_node(node)

    def _ordered(self) -> list[Node]:
        """The graph's nodes, re-sorted only if some node reads a value produced after it."""
        position = {o: i for i, n in enumerate(self.graph.nodes) for o in n.outputs if o}
        for i, node in enumerate(self.graph.nodes):
            if any(position.get(name, -1) > i for name in node.inputs if name):
                from dcopt.ir.verify import topological_order

                return topological_order(self.graph)
        return self.graph.nodes

    def infer_node(self, node: Node) -> None:
        rule = lookup(node.op, node.domain)
        opset = self.graph.opset_of(node.domain)
        if rule is None:
            if self._untyped_by_rule(node):
                return
            key = f"{node.domain}.{node.op}" if node.domain else node.op
            self.report.missing_rules[key] = self.report.missing_rules.get(key, 0) + 1
            return
        ctx = ShapeContext(node.op, node.domain, opset, node.attrs, node.inputs, node.outputs, self)
        try:
            results = run_rule(rule, ctx)
            folded = self._fold(node, ctx, results)
        except ShapeInferenceError as exc:
            raise exc.at(node=node.label, op=node.op, opset=opset)
        for k, name in enumerate(node.outputs):
            if name:
                self._record(ctx, k, name, results[k], folded[k] if folded else None)

    def _untyped_by_rule(self, node: Node) -> bool:
        """An op dcopt can run (a reference implementation) but not size (no shape rule: ML-domain
        ops a user registers): when the model declares each output's element type, compiled code
        runs the op as a reference step instead of refusing the model -- a *fallback* step where the
        model declares a static shape (the run checks the result against it), else a *dynamic* one
        (data-sized dims: fresh symbols; an unknown rank stays unknown)."""
        if reference_ops.lookup(node.op, node.domain) is None:
            return False
        declared = [self.graph.containers.get(o) for o in node.outputs if o]
        if not all(c is not None and isinstance(c.type, TensorType) and c.type.dtype for c in declared):
            return False
        for c in declared:
            shape = c.type.shape
            if c.type.is_static:
                continue
            fresh = None if shape is None else tuple(f"?{c.name}_{axis}" for axis in range(len(shape)))
            _retype(c, TensorType(c.type.dtype, fresh))
        return True

    def _record(self, ctx: ShapeContext, k: int, name: str, result, value) -> None:
        if isinstance(result, Valued):
            result, value = result.type, result.value if value is None else value
        if isinstance(value, SymbolicValue):
            constant = value.constant()
            if constant is None:
                self.symbolic[name] = value
            value = constant
        if value is not None:
            self.values[name] = value
        if isinstance(result, OptionalType):  # an optional's value is its element: the rule's type stays
            if isinstance(value, list):
                self.sequences[name] = tuple(TensorType.of(np.asarray(a)) for a in value)
        elif isinstance(value, np.ndarray):
            if self.strict:
                _check(result, value, ctx, k)
            result = TensorType.of(value)
        elif isinstance(value, list):
            dtype = result.dtype if isinstance(result, (SequenceOf, SequenceType)) else \
                TensorType.of(np.asarray(value[0])).dtype if value else "float32"
            result = SequenceOf(tuple(TensorType.of(np.asarray(a)) for a in value), dtype)
        if isinstance(result, SequenceOf):
            self.sequences[name] = result.items
            result = SequenceType(common_type(ctx, k, result.items, result.dtype, "e"))
        c = self.graph.containers.get(name)
        if c is None:
            return
        if result is None and isinstance(c.type, TensorType):  # an input of unknown rank: the shape is unknown
            result = TensorType(c.type.dtype, None)
        _retype(c, result)

    # -- folding --------------------------------------------------------------------------------
    def _fold(self, node: Node, ctx: ShapeContext, results: list) -> list | None:
        """Output values of a node whose inputs are known: constants (run the reference op) or
        symbolic values (dims arithmetic); None when it does not fold."""
        if node.domain not in ("", "ai.onnx") and node.domain != "dcopt.loop" or node.op in _NONDETERMINISTIC:
            return None
        if node.subgraphs:
            return None
        inputs = [self.value_of(n) if n else None for n in node.inputs]
        present = [v for n, v in zip(node.inputs, inputs) if n]
        if all(v is not None for v in present) and (node.op == "Constant" or _small(present, results)):
            return self._evaluate(node, ctx, inputs)
        if node.domain or node.op == "Constant":
            return None
        symbolic = [self.symbolic_of(n) if n and v is None else v for n, v in zip(node.inputs, inputs)]
        return propagate(node.op, node.attrs, ctx.opset, symbolic, ctx.types, results)

    def _evaluate(self, node: Node, ctx: ShapeContext, inputs: list) -> list | None:
        opdef = reference_ops.lookup(node.op, node.domain)
        if opdef is None:
            return None
        try:
            with np.errstate(all="ignore"):
                out = reference_ops.call(opdef, inputs, dict(node.attrs), ctx.opset, n_outputs=len(node.outputs))
        except Exception:  # the reference refuses these constants: the op fails at run time too
            return None
        self.report.folded += 1
        return list(out) + [None] * (len(node.outputs) - len(out))


def _retype(container, new) -> None:
    """Set a container's type, keeping the very object when nothing changed (passes detect edits
    by identity)."""
    if new is not None and new != container.type:
        container.type = new


def _small(values: list, results: list) -> bool:
    size = 0
    for v in values:
        size += sum(np.size(a) for a in v) if isinstance(v, list) else np.size(v)
        if size > FOLD_LIMIT:
            return False
    for r in results:
        if isinstance(r, TensorType) and r.is_static and r.numel > FOLD_LIMIT:
            return False
    return True


def _type_of_value(value) -> ValueType | None:
    if isinstance(value, np.ndarray):
        return TensorType.of(value)
    return None


def _check(rule_type, value: np.ndarray, ctx: ShapeContext, k: int) -> None:
    """Strict mode: the rule must agree with the value the reference computed."""
    actual = TensorType.of(value)
    if not isinstance(rule_type, TensorType):
        return
    same_rank = rule_type.shape is None or len(rule_type.shape) == len(actual.shape)
    dims_agree = same_rank and (rule_type.shape is None or all(
        not isinstance(d, int) or d == a for d, a in zip(rule_type.shape, actual.shape)))
    if rule_type.dtype != actual.dtype or not dims_agree:
        raise ShapeInferenceError(f"shape rule gives output {k} type {rule_type}, the reference computes {actual}")
