"""Elementwise ops -> one map over the result's index space, inputs read through broadcasting memlets.

The ops of :data:`dcopt.ops.elementwise.TABLE` need no rule of their own: :func:`tasklet_op`
puts the op's tasklet (the same text its reference evaluates with numpy) into a map, for the
dtypes its table line allows. :func:`define_elementwise` adds an op -- reference and expansion --
from one line. The hand-written rules here are the ops whose reference is not one tasklet:
Clip (bounds as attributes, constant inputs or run-time inputs), Cast/CastLike, Identity and
Dropout; the quantization ops are in :mod:`.quantize`.

Every tasklet goes through :func:`~dcopt.passes.expansions.conversions.exact_conversions`
(float -> integer and float64 -> half conversions as numpy makes them), and reads float16/bfloat16
inputs as float32 (:func:`widened`): the reference computes them in float32 and rounds once, as
a kernel does.

Pow of a float by an integer of 32 bits or fewer is refused: fast-math ``afn`` makes LLVM rewrite
it into ``powi``, whose runtime routine numba's JIT does not link (compiling it aborts).
"""

from __future__ import annotations

import ast
import re
from typing import Mapping

from dcopt.ops.elementwise import (ALL, CONNECTORS, FLOATS, HALF, INTS, NUMBERS, TABLE, Elementwise, define)
from dcopt.passes.common import dropout_is_training
from dcopt.passes.expand import LoopBuilder, Refused, expansion, fmt, index, params_of
from dcopt.passes.expansions.conversions import exact_conversions

# ------------------------------------------------------------------------- the table's ops

def _inputs(b: LoopBuilder) -> dict[str, str]:
    present = [name for name in b.node.inputs if name]
    if len(present) != len(b.node.inputs):
        raise Refused("an input is omitted")
    return dict(zip(CONNECTORS, present))


def tasklet_op(graph, node):
    """Any op of the table: its tasklet in a map over the output, inputs broadcast."""
    b = LoopBuilder(graph, node)
    domain = "" if node.domain == "ai.onnx" else node.domain
    entry: Elementwise = TABLE[(domain, node.op)]
    inputs = _inputs(b)
    for conn, name in inputs.items():
        b.require_dtype(name, allowed=entry.allowed(conn))
    out = b.output()
    dtypes = {conn: b.dtype(name) for conn, name in inputs.items()}

    def attr(name):
        value = b.attr(name, entry.defaults.get(name))
        if value is None:
            raise Refused(f"attribute '{name}' is not set")
        return value

    try:
        code = entry.expression(attr, list(dtypes.values()), result=b.dtype(out))
    except KeyError as why:
        raise Refused(str(why)) from None
    shape = b.shape(out)
    reads = [(conn, name, b.broadcast(name, shape)) for conn, name in inputs.items()]
    code = exact_conversions(f"out = {widened(code, dtypes)}", dtypes, b.dtype(out))
    b.map("map", shape, code, reads, [("out", out, index(params_of(len(shape))))])
    return b.nodes


def widened(expression: str, dtypes: Mapping[str, str]) -> str:
    """``expression`` reading its float16/bfloat16 connectors as float32 (``as_float32(a)``), so
    that numpy, running the lowered map, computes in float32 like the reference and the kernel."""
    halves = {c for c, d in dtypes.items() if d in HALF}
    if not halves:
        return expression
    tree = ast.parse(expression, mode="eval").body

    class Widen(ast.NodeTransformer):
        def visit_Name(self, node):
            return ast.Call(ast.Name("as_float32", ast.Load()), [node], []) if node.id in halves else node

    return ast.unparse(Widen().visit(tree))


for _domain, _op in TABLE:
    expansion(_op, domain=_domain)(tasklet_op)


#: Tasklet expressions of the one-input float ops (the table's, for tests/ir/test_loops.py, which
#: checks that numpy's evaluation of a tasklet means what scalar Python's does).
UNARY = {op: e.code for (domain, op), e in TABLE.items()
         if not domain and isinstance(e.code, str) and tuple(e.allowed("a")) == FLOATS and not e.variadic
         and not re.search(r"\bb\b", e.code)
         and {p.split("}")[0] for p in e.code.split("{")[1:]} <= {"alpha", "beta", "gamma", "bias", "lambd"}}
GELU = dict(TABLE[("", "Gelu")].code)


def define_elementwise(op: str, code, dtypes, *, domain: str = "", **options) -> Elementwise:
    """Define an elementwise op from its tasklet, in one line: its reference (numpy evaluates
    the tasklet) and its expansion (a map of it). ``options``: the other fields of
    :class:`~dcopt.ops.elementwise.Elementwise` (result, by, variadic, defaults)::

        define_elementwise("Softsign2", "a / (2.0 + abs(a))", FLOATS, domain="my.ops")
    """
    entry = define(op, Elementwise(code, dtypes, **options), domain)
    expansion(op, domain=domain)(tasklet_op)
    return entry


# ------------------------------------------------------------------------- hand-written rules

@expansion("Clip")
def clip(graph, node):
    """``min(max(x, lo), hi)`` (so min > max gives max everywhere, as ONNX says); bounds that are
    constants are written into the tasklet in x's dtype, run-time bounds are read (rank 0)."""
    b = LoopBuilder(graph, node)
    x = b.input(0)
    b.require_dtype(x, allowed=NUMBERS)
    integral = b.dtype(x) in INTS
    inputs, code = {"a": x}, "a"
    for i, (attr, fn) in enumerate((("min", "max"), ("max", "min")), start=1):
        name = b.input(i, optional=True) if b.opset >= 11 else None
        value = b.constant(name) if name else b.attr(attr) if b.opset < 11 else None
        if name and value is None:
            conn = "lo" if attr == "min" else "hi"
            b.require_dtype(name, allowed=(b.dtype(x),))
            inputs[conn] = name
            code = f"{fn}({code}, {conn})"
        elif value is not None:
            number = value.reshape(-1)[0] if hasattr(value, "reshape") else value
            code = f"{fn}({code}, {int(number) if integral else fmt(float(number))})"
    b.elementwise(code, inputs, b.output())
    return b.nodes


@expansion("Cast", "CastLike")
def cast(graph, node):
    """``as_<target>(x)`` with numpy's conversions (see :func:`exact_conversions`); strings and
    float8 are not kernel dtypes, so their casts stay ops (the reference is hand-written for them:
    string parsing, float8 saturation)."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, y, allowed=ALL)
    code = exact_conversions(f"out = as_{b.dtype(y)}(a)", {"a": b.dtype(x)}, b.dtype(y))
    shape = b.shape(y)
    b.map("map", shape, code, [("a", x, b.broadcast(x, shape))], [("out", y, index(params_of(len(shape))))])
    return b.nodes


@expansion("Identity")
def identity(graph, node):
    """A copy (sequences and optionals have no kernel dtype and stay ops)."""
    b = LoopBuilder(graph, node)
    x = b.input(0)
    b.require_dtype(x, allowed=ALL)
    b.elementwise("a", {"a": x}, b.output())
    return b.nodes


@expansion("Dropout")
def dropout(graph, node):
    """Dropout at inference is a copy (and its mask, when read, all true); possible training mode
    keeps the op."""
    b = LoopBuilder(graph, node)
    if dropout_is_training(graph, node) is not False:
        raise Refused("Dropout may be in training mode")
    x = b.input(0)
    b.require_dtype(x, allowed=ALL)
    b.elementwise("a", {"a": x}, b.output())
    mask = b.output(1)
    if mask and (mask in graph.outputs or graph.consumers(mask)):
        b.elementwise("True", {}, mask, what="mask")
    return b.nodes
