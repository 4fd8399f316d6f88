"""The shape-rule registry: one rule per op, giving output types from input types.

A rule is a function of a :class:`ShapeContext` returning the output types::

    @shape_rule("Tile", shape_inputs=(1,))
    def tile(ctx):
        reps = ctx.dims_value(1)
        if reps is None:
            return ctx.tensor(ctx.dtype(0), [None] * ctx.rank(0))
        return ctx.tensor(ctx.dtype(0), [dims.mul(d, r) for d, r in zip(ctx.shape(0), reps)])

The context gives the input types (dims are ints or symbol strings), the *values* of inputs that
are known constants (parameters, folded shape arithmetic), the attributes with the ONNX schema
defaults of the node's opset filled in, the opset and how many outputs the node wires. The shared
work lives here, once: numpy broadcasting of symbolic shapes (``ctx.broadcast``), the result of
the common dtype rules, attribute defaults, and the post-processing of every result -- numpy ints
become ints, polynomial dims their canonical text, and every ``None`` dim a rule returns becomes a
*fresh symbol* named after the output and axis (``"?y_1"``): rules say "unknown", never guess, and
the graph still records that two uses of one unknown size are the same size.

``shape_inputs`` declares which inputs decide output *shapes* by their values (Reshape's shape,
Slice's starts/ends/axes/steps); ``data_dependent`` marks ops whose output sizes depend on the
*content* of their data (NonZero, Unique). :func:`shape_inputs` and :func:`is_data_dependent`
answer for any op.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from dcopt.errors import DcoptError
from dcopt.ir.types import OptionalType, SequenceType, TensorType, ValueType
from dcopt.ops.registry import schema_defaults
from dcopt.ops.shapes import dims


class ShapeInferenceError(DcoptError):
    """A node's input types are inconsistent (shapes that do not broadcast, a bad reshape...)."""


class UnknownRank(Exception):
    """Raised by :meth:`ShapeContext.shape` for an input whose rank is not known: the wrapper then
    gives the node's outputs unknown shapes (a rule never has to test for it)."""


@dataclass(frozen=True)
class SequenceOf:
    """A rule's result for a sequence output whose elements are known one by one.

    The engine records the items (so SequenceAt/ConcatFromSequence downstream are exact) and the
    container gets ``SequenceType(elem)`` with ``elem`` the items' common type."""

    items: tuple[TensorType, ...]
    dtype: str


@dataclass(frozen=True)
class Valued:
    """A rule's result whose value is known too (an If with a constant condition passes its branch's
    constant outputs on, so shape arithmetic keeps folding past it)."""

    type: Any
    value: Any


@dataclass(frozen=True)
class ShapeRule:
    name: str
    domain: str
    fn: Callable[["ShapeContext"], Any]
    shape_inputs: Callable[[int], tuple[int, ...]]
    data_dependent: bool


_RULES: dict[tuple[str, str], ShapeRule] = {}


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def shape_rule(*names: str, domain: str = "", shape_inputs: Sequence[int] | Callable[[int], Sequence[int]] = (),
               data_dependent: bool = False):
    """Register ``fn(ctx) -> type | list[type]`` as the shape rule of ``names``.

    ``shape_inputs`` is a tuple of input positions, or a function of the opset returning one (an
    input that was an attribute in older opsets)."""
    if callable(shape_inputs):
        positions = lambda opset, f=shape_inputs: tuple(f(opset))  # noqa: E731
    else:
        fixed = tuple(shape_inputs)
        positions = lambda opset: fixed  # noqa: E731

    def register(fn):
        for name in names:
            _RULES[(_norm_domain(domain), name)] = ShapeRule(name, _norm_domain(domain), fn, positions, data_dependent)
        return fn

    return register


@functools.lru_cache(maxsize=None)
def _ensure_loaded() -> bool:
    from dcopt.ops.shapes import catalog  # noqa: F401  (imports the rule modules)

    return True


def lookup(op: str, domain: str = "") -> ShapeRule | None:
    _ensure_loaded()
    return _RULES.get((_norm_domain(domain), op))


def ops_with_rules() -> list[tuple[str, str]]:
    _ensure_loaded()
    return sorted(_RULES)


def shape_inputs(op: str, domain: str = "", opset: int = 17) -> tuple[int, ...]:
    """Input positions whose *values* determine the op's output shapes (empty for unknown ops)."""
    rule = lookup(op, domain)
    return rule.shape_inputs(opset) if rule else ()


def is_data_dependent(op: str, domain: str = "") -> bool:
    """Whether the op's output sizes may depend on the content of its data inputs."""
    rule = lookup(op, domain)
    return bool(rule and rule.data_dependent)


# ------------------------------------------------------------------------------ dtypes

def onnx_dtype(code) -> str | None:
    """An ONNX element type (enum int, or a name as in Cast-1) as a dcopt dtype; None if dcopt has none."""
    from onnx import TensorProto

    from dcopt.ir import dtypes

    try:
        if isinstance(code, str):
            code = TensorProto.DataType.Value(code.upper())
        return dtypes.from_onnx(int(code))
    except (DcoptError, ValueError):
        return None


# ------------------------------------------------------------------------------ the context

class ShapeContext:
    """What a shape rule sees of one node. ``env`` is the inference engine's view of the scope:
    ``type_of(name)``, ``value_of(name)``, ``dims_value_of(name)``, ``sequence_of(name)``,
    ``infer_body(graph, types, values)``."""

    def __init__(self, op: str, domain: str, opset: int, attrs, inputs: Sequence[str], outputs: Sequence[str],
                 env, types: Sequence[ValueType | None] | None = None):
        self.op = op
        self.domain = domain
        self.opset = opset
        self.raw_attrs = attrs
        self.attrs = {**schema_defaults(op, domain, opset), **{k: v for k, v in attrs.items()
                                                                if not k.startswith("dcopt.")}}
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.n_outputs = len(self.outputs)
        self.env = env
        self.types = tuple(types) if types is not None else tuple(env.type_of(n) if n else None for n in inputs)

    # -- inputs ---------------------------------------------------------------------------
    def has(self, i: int) -> bool:
        return i < len(self.inputs) and bool(self.inputs[i])

    def type(self, i: int) -> ValueType | None:
        return self.types[i] if self.has(i) else None

    def dtype(self, i: int) -> str:
        t = self.type(i)
        if t is None:
            raise ShapeInferenceError(f"input {i} of {self.op} is required but not wired")
        return t.dtype

    def shape(self, i: int) -> tuple:
        """Input i's shape; raises UnknownRank when its rank is not known (handled by the wrapper)."""
        t = self.type(i)
        if t is None:
            raise ShapeInferenceError(f"input {i} of {self.op} is required but not wired")
        if t.shape is None:
            raise UnknownRank(i)
        return tuple(t.shape)

    def rank(self, i: int) -> int:
        return len(self.shape(i))

    def value(self, i: int) -> np.ndarray | None:
        """Input i's value when it is a known constant."""
        return self.env.value_of(self.inputs[i]) if self.has(i) else None

    def ints(self, i: int) -> list[int] | None:
        v = self.value(i)
        return None if v is None or isinstance(v, list) else [int(x) for x in np.asarray(v).reshape(-1)]

    def scalar(self, i: int):
        """A one-element constant input as a Python number; None when not known."""
        v = self.value(i)
        if v is None or isinstance(v, list) or np.size(v) != 1:
            return None
        return np.asarray(v).reshape(-1)[0].item()

    def dims_value(self, i: int) -> tuple | None:
        """An integer vector input (a shape, axes, pads...) as dims: ints, symbols where its elements are
        sizes of symbolic dims (``Shape`` of a symbolic tensor), None per unknown element; None when
        nothing is known, not even its length."""
        if not self.has(i):
            return None
        known = self.env.dims_value_of(self.inputs[i])
        if known is not None:
            return known
        t = self.type(i)
        if isinstance(t, TensorType) and t.shape is not None and len(t.shape) <= 1 and t.is_static:
            return (None,) * (t.shape[0] if t.shape else 1)  # length known, elements not
        return None

    def sequence(self, i: int) -> tuple[TensorType, ...] | None:
        """The element types of a sequence input, one by one, when its structure is known."""
        return self.env.sequence_of(self.inputs[i]) if self.has(i) else None

    def infer_body(self, body, input_types: Sequence[ValueType], input_values: Sequence | None = None):
        """Type a subgraph (in place) given its input types (and known input values); returns the
        engine's BodyResult: the body outputs' ``types``, constant ``values`` and ``sequences`` items."""
        return self.env.infer_body(body, list(input_types), list(input_values or [None] * len(input_types)))

    # -- helpers for results --------------------------------------------------------------
    @staticmethod
    def tensor(dtype: str, shape) -> TensorType:
        return TensorType(dtype, None if shape is None else tuple(shape))

    def broadcast(self, *indices: int) -> tuple:
        """numpy broadcasting of the shapes of the given inputs (all wired inputs when none given)."""
        indices = indices or tuple(i for i in range(len(self.inputs)) if self.has(i))
        try:
            return dims.broadcast_shapes(*(self.shape(i) for i in indices))
        except ValueError as exc:
            shapes = ", ".join(self.type(i).shape_str() for i in indices)
            raise ShapeInferenceError(f"input shapes {shapes} do not broadcast: {exc}") from None

    def axis(self, axis: int, rank: int) -> int:
        """An ONNX axis in [-rank, rank-1] as a non-negative axis."""
        axis = int(axis)
        if not -rank <= axis < max(rank, 1):
            raise ShapeInferenceError(f"axis {axis} is out of range for rank {rank}")
        return axis + rank if axis < 0 else axis

    def derive(self, op: str, domain: str, opset: int, types: Sequence[ValueType | None]) -> "ShapeContext":
        """The same node seen as another op over other input types (channels-last variants reuse
        the ONNX rules this way)."""
        return ShapeContext(op, domain, opset, self.raw_attrs, self.inputs, self.outputs, self.env, types)

    def fresh(self, output: int, axis: int | str) -> str:
        """The fresh symbol for an unknown dim of one output (stable: re-inference gives the same name)."""
        name = self.outputs[output] if output < len(self.outputs) and self.outputs[output] else f"{self.op}_out{output}"
        return f"?{name}_{axis}"


# ------------------------------------------------------------------------------ running a rule

def run_rule(rule: ShapeRule, ctx: ShapeContext) -> list:
    """Apply ``rule``; one entry per wired output: a ValueType, a SequenceOf, or None (not known)."""
    try:
        result = rule.fn(ctx)
    except UnknownRank:
        return [None] * ctx.n_outputs
    except ShapeInferenceError:
        raise
    except (ValueError, IndexError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise ShapeInferenceError(f"shape rule failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, (list, tuple)):
        result = [result]
    result = list(result)[:ctx.n_outputs] + [None] * max(0, ctx.n_outputs - len(result))
    return [_finish(ctx, k, r) for k, r in enumerate(result)]


def _finish(ctx: ShapeContext, output: int, result):
    if result is None or not ctx.outputs[output]:
        return None
    if isinstance(result, Valued):
        return Valued(_finish(ctx, output, result.type), result.value)
    if isinstance(result, SequenceOf):
        items = tuple(finish_tensor(ctx, output, t, f"i{k}") for k, t in enumerate(result.items))
        return SequenceOf(items, result.dtype)
    return finish_type(ctx, output, result, "")


def finish_type(ctx: ShapeContext, output: int, t: ValueType, tag: str) -> ValueType:
    if isinstance(t, SequenceType):
        return SequenceType(finish_type(ctx, output, t.elem, tag + "e"))
    if isinstance(t, OptionalType):
        return OptionalType(finish_type(ctx, output, t.elem, tag + "o"))
    return finish_tensor(ctx, output, t, tag)


def finish_tensor(ctx: ShapeContext, output: int, t: TensorType, tag: str) -> TensorType:
    if t.shape is None:
        return t
    shape = []
    for axis, d in enumerate(t.shape):
        d = dims.normalize(d)
        if d is None:
            d = ctx.fresh(output, f"{tag}{axis}")
        elif isinstance(d, int) and d < 0:
            raise ShapeInferenceError(f"output {output} would have a negative dim ({list(t.shape)})")
        shape.append(d)
    return TensorType(t.dtype, tuple(shape))


def common_type(ctx: ShapeContext, output: int, types: Sequence[TensorType], dtype: str, tag: str) -> TensorType:
    """The type every item of a sequence has: dims where all agree, fresh symbols elsewhere."""
    shapes = [t.shape for t in types]
    if not types or any(s is None for s in shapes) or len({len(s) for s in shapes}) != 1:
        return TensorType(dtype, None)
    merged = list(shapes[0])
    for s in shapes[1:]:
        merged = [dims.merge(a, b) for a, b in zip(merged, s)]
    return finish_tensor(ctx, output, TensorType(dtype, tuple(merged)), tag)


def merge_types(ctx: ShapeContext, output: int, a: ValueType | None, b: ValueType | None,
                tag: str = "") -> ValueType | None:
    """The type two values of one container share (If branches, loop iterations, sequence
    elements): equal dims stay, differing dims become the output's fresh symbols, differing
    ranks an unknown shape."""
    if a is None or b is None:
        return a or b
    if isinstance(a, SequenceType) and isinstance(b, SequenceType):
        return SequenceType(merge_types(ctx, output, a.elem, b.elem, tag + "e"))
    if isinstance(a, OptionalType) and isinstance(b, OptionalType):
        return OptionalType(merge_types(ctx, output, a.elem, b.elem, tag + "o"))
    if not isinstance(a, TensorType) or not isinstance(b, TensorType):
        return a
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return TensorType(a.dtype, None)
    return finish_tensor(ctx, output, TensorType(a.dtype, tuple(dims.merge(x, y) for x, y in zip(a.shape, b.shape))),
                         tag)
