"""Shape rules of the loop-level nodes (mirrors :mod:`dcopt.ops.loops`): a Map or LibraryCall
output is exactly what its out memlet writes (:func:`dcopt.ir.loops.written_shape`), or its init
container's shape for indirect writes; the dtype is the memlet's ``out_dtypes`` entry.

Loop-level IR is normally built after sizes are known; when a symbolic dim reaches it, an output
dim is still exact where its subset is a parameter ranging from 0 (or a range from 0) to an
expression of + - * over symbols, and unknown otherwise.
"""

from __future__ import annotations

import ast

from dcopt.ir.loops import LIBRARY_CALL, LOOP_DOMAIN, MAP, Range, spec_from_attrs, written_shape
from dcopt.ops.shapes import dims
from dcopt.ops.shapes.registry import ShapeInferenceError, shape_rule


def _extent_expr(expr, env):
    """A + - * index expression over dims (None when it uses anything else or an unknown name)."""
    tree = expr.tree
    return _eval(tree, env)


def _eval(t, env):
    if isinstance(t, ast.Constant):
        return int(t.value)
    if isinstance(t, ast.Name):
        return env.get(t.id)
    if isinstance(t, ast.UnaryOp) and isinstance(t.op, ast.USub):
        return dims.mul(-1, _eval(t.operand, env))
    if isinstance(t, ast.BinOp) and isinstance(t.op, (ast.Add, ast.Sub, ast.Mult)):
        fn = {ast.Add: dims.add, ast.Sub: dims.sub, ast.Mult: dims.mul}[type(t.op)]
        return fn(_eval(t.left, env), _eval(t.right, env))
    return None


def _symbolic_written_shape(spec, memlet, bindings) -> tuple:
    ranges = {p: r for p, r in zip(spec.params, spec.ranges)}
    shape = []
    for d in memlet.subset:
        if isinstance(d, Range):
            shape.append(_extent_expr(d.end, bindings) if str(d.begin) == "0" else None)
        elif str(d) in ranges and str(ranges[str(d)][0]) == "0":
            shape.append(_extent_expr(ranges[str(d)][1], bindings))
        elif not d.names:
            value = d.evaluate({})
            shape.append(int(value) + 1)
        else:
            shape.append(None)
    return tuple(shape)


@shape_rule(MAP, LIBRARY_CALL, domain=LOOP_DOMAIN)
def loop_node(ctx):
    spec = spec_from_attrs(ctx.op, ctx.raw_attrs)
    shapes = {name: t.shape for name, t in zip(ctx.inputs, ctx.types) if t is not None}
    bindings = {}
    for symbol, container, axis in spec.symbols:
        shape = shapes.get(container)
        if shape is None:
            raise ShapeInferenceError(f"symbol {symbol!r} is read from '{container}', which has no known shape")
        bindings[symbol] = shape[axis]
    static = all(isinstance(v, int) for v in bindings.values())
    results = []
    for m, dtype in zip(spec.outputs, spec.out_dtypes):
        if m.init:
            results.append(ctx.tensor(dtype, shapes.get(m.init)))
        elif static:
            results.append(ctx.tensor(dtype, written_shape(spec, m, bindings)))
        else:
            results.append(ctx.tensor(dtype, _symbolic_written_shape(spec, m, bindings)))
    return results
