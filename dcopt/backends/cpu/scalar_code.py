"""Tasklets -> numba scalar statements, typed the way numpy types the reference.

A tasklet (:mod:`dcopt.ir.tasklet`) is Python-like scalar code over connectors, params and
symbols. The reference executor runs it through numpy on whole arrays, so its meaning includes
numpy's type rules (NEP 50): a Python literal is *weak* and takes the type of the array it meets
(``a * 0.5`` stays float32 for a float32 ``a``), ``int / int`` is float64, ``int64 + uint64`` is
float64. numba, given the same text on scalars, would type ``0.5`` as float64 and compute the
whole expression in double precision: the right values rounded differently, at half the vector
width. So this module infers every sub-expression's type first and writes literals as typed
constants (``f32(0.5)``, ``np.int32(3)``), inserting explicit conversions where numpy promotes.

Functions map to :mod:`mathlib` where numba's own lowering would be a scalar libm call that
stops vectorization (``exp``, ``tanh``, ``erf`` on float32) or has other NaN rules than numpy
(``min``/``max`` -> ``fminp``/``fmaxp`` for floats); float64 keeps the accurate libm versions.

Storage types numba cannot compute in (float16, bfloat16) are computed in float32: the kernel
loads through :func:`~dcopt.backends.cpu.mathlib.h2f` / ``bf2f`` and stores through ``f2h`` /
``f2bf`` (see :func:`compute_dtype`).
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Mapping


from dcopt.errors import UnsupportedError
from dcopt.ir.tasklet import (FUNCTIONS, WEAK_FLOAT, WEAK_INT, Tasklet, concrete, float_of,
                               promote)

#: dtype -> how a typed constant of it is spelled in generated code
_CONSTRUCTORS = {"float32": "f32", "float64": "np.float64", "bool": "np.bool_"}
#: storage dtypes computed in another type: stored as uint16 bits, computed in float32
HALF_TYPES = {"float16": ("h2f", "f2h"), "bfloat16": ("bf2f", "f2bf")}
#: dtypes a generated kernel can hold (numba arrays)
KERNEL_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64", "bool", "int8", "int16", "int32",
                           "int64", "uint8", "uint16", "uint32", "uint64"})


def compute_dtype(dtype: str) -> str:
    """The type a kernel computes values of storage type ``dtype`` in."""
    if dtype not in KERNEL_DTYPES:
        raise UnsupportedError(f"generated kernels do not handle {dtype} values")
    return "float32" if dtype in HALF_TYPES else dtype


def storage_dtype(dtype: str) -> str:
    """The numpy dtype a kernel sees an array of ``dtype`` as (half types as uint16 bits)."""
    return "uint16" if dtype in HALF_TYPES else dtype


def literal(value, dtype: str) -> str:
    """``value`` as a constant of ``dtype`` in generated code (inf/nan spelled for numba)."""
    if dtype == "bool":
        return "True" if bool(value) else "False"
    if dtype in ("float32", "float64"):
        v = float(value)
        text = "np.nan" if math.isnan(v) else ("np.inf" if v > 0 else "-np.inf") if math.isinf(v) else repr(v)
        return f"{_CONSTRUCTORS[dtype]}({text})"
    return f"np.{dtype}({int(value)})"


#: tasklet function -> (float32 spelling, float64 spelling); ints are converted to float64 first
_FLOAT_FUNCS = {
    "exp": ("fexp", "np.exp"), "tanh": ("ftanh", "np.tanh"), "erf": ("ferf", "math.erf"), "log": ("flog", "np.log"),
    "log1p": ("flog1p", "np.log1p"),
    **{f: (f"np.{n}", f"np.{n}") for f, n in (
        ("sqrt", "sqrt"), ("sin", "sin"), ("cos", "cos"), ("tan", "tan"), ("asin", "arcsin"),
        ("acos", "arccos"), ("atan", "arctan"), ("sinh", "sinh"), ("cosh", "cosh"), ("asinh", "arcsinh"),
        ("acosh", "arccosh"), ("atanh", "arctanh"), ("expm1", "expm1"))},
}
#: functions whose result has the argument's type (floats keep theirs; integers pass through)
_SAME_FUNCS = {"floor": "np.floor", "ceil": "np.ceil", "rint": "np.rint", "trunc": "np.trunc"}
_BINOP_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
                  ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.LShift: "<<",
                  ast.RShift: ">>"}


@dataclass
class _Value:
    text: str
    type: str  # a dtype name, or WEAK_INT / WEAK_FLOAT for literals
    const: object = None  # the Python value of a literal (weak types only)


def _weak(value) -> _Value:
    return _Value(repr(value), WEAK_FLOAT if isinstance(value, float) else WEAK_INT, value)


class ScalarTranslator:
    """Translate one tasklet into numba statements.

    ``types`` gives the compute dtype of every free name the tasklet reads (connectors, params,
    symbols); ``rename`` maps tasklet names to the generated variable names (so several tasklets
    can share one loop body). After :meth:`translate`, :attr:`types` also holds the type of every
    name the tasklet assigned."""

    def __init__(self, types: Mapping[str, str], rename: Mapping[str, str]):
        self.types = dict(types)
        self.rename = dict(rename)

    def translate(self, tasklet: Tasklet) -> list[str]:
        lines = []
        for stmt in ast.parse(tasklet.code.strip()).body:
            target = stmt.targets[0].id
            value = self._expr(stmt.value)
            var = self.rename.get(target, target)
            self.types[target] = concrete(value.type)
            lines.append(f"{var} = {self._as(value, concrete(value.type))}")
        return lines

    # -- expressions ------------------------------------------------------------------------
    def _as(self, v: _Value, t: str) -> str:
        """``v`` converted to type ``t`` (literals typed, others cast when the types differ)."""
        if v.const is not None:
            return literal(v.const, t)
        if v.type == t:
            return v.text
        if t == "bool":
            return f"({v.text} != 0)"
        return f"{_CONSTRUCTORS.get(t, 'np.' + t)}({v.text})"

    def _expr(self, node: ast.expr) -> _Value:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise UnsupportedError(f"tasklet construct {type(node).__name__} has no code generator")
        return method(node)

    def _Constant(self, node: ast.Constant) -> _Value:
        if isinstance(node.value, bool):
            return _Value(repr(node.value), "bool")
        return _weak(node.value)

    def _Name(self, node: ast.Name) -> _Value:
        if node.id in ("inf", "nan", "pi") and node.id not in self.types:
            return _weak({"inf": math.inf, "nan": math.nan, "pi": math.pi}[node.id])
        if node.id not in self.types:
            raise UnsupportedError(f"tasklet reads {node.id!r}, which has no type")
        return _Value(self.rename.get(node.id, node.id), self.types[node.id])

    def _BinOp(self, node: ast.BinOp) -> _Value:
        left, right = self._expr(node.left), self._expr(node.right)
        op = type(node.op)
        if left.const is not None and right.const is not None:
            import operator

            fn = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
                  ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
                  ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
                  ast.LShift: operator.lshift, ast.RShift: operator.rshift}[op]
            try:
                return _weak(fn(left.const, right.const))
            except (ZeroDivisionError, OverflowError):
                pass
        t = promote(left.type, right.type)
        if op is ast.Div and t not in ("float32", "float64", WEAK_FLOAT):
            t = "float64"  # numpy: true division of integers is float64
        t = concrete(t)
        a, b = self._as(left, t), self._as(right, t)
        if op is ast.Pow:
            return _Value(f"({a} ** {b})", t)
        sym = _BINOP_SYMBOLS[op]
        if t == "bool" and op in (ast.Add, ast.Mult):  # numpy: bool + bool is logical or, * is and
            return _Value(f"({a} {'or' if op is ast.Add else 'and'} {b})", "bool")
        return _Value(f"({a} {sym} {b})", t)

    def _UnaryOp(self, node: ast.UnaryOp) -> _Value:
        v = self._expr(node.operand)
        if isinstance(node.op, ast.Not):
            return _Value(f"(not {self._as(v, 'bool')})", "bool")
        if isinstance(node.op, ast.Invert):
            return _Value(f"(not {v.text})" if v.type == "bool" else f"(~{v.text})", v.type)
        if isinstance(node.op, ast.USub):
            if v.const is not None:
                return _weak(-v.const)
            return _Value(f"(-{v.text})", v.type)
        return v

    def _BoolOp(self, node: ast.BoolOp) -> _Value:
        op = " and " if isinstance(node.op, ast.And) else " or "
        return _Value("(" + op.join(self._as(self._expr(v), "bool") for v in node.values) + ")", "bool")

    def _Compare(self, node: ast.Compare) -> _Value:
        parts = []
        operands = [self._expr(node.left)] + [self._expr(c) for c in node.comparators]
        syms = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
        for (a, b), op in zip(zip(operands, operands[1:]), node.ops):
            t = concrete(promote(a.type, b.type))
            parts.append(f"({self._as(a, t)} {syms[type(op)]} {self._as(b, t)})")
        return _Value(parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")", "bool")

    def _IfExp(self, node: ast.IfExp) -> _Value:
        test = self._as(self._expr(node.test), "bool")
        body, orelse = self._expr(node.body), self._expr(node.orelse)
        t = concrete(promote(body.type, orelse.type))
        return _Value(f"({self._as(body, t)} if {test} else {self._as(orelse, t)})", t)

    def _Call(self, node: ast.Call) -> _Value:
        name = node.func.id
        args = [self._expr(a) for a in node.args]
        if name in _FLOAT_FUNCS:
            t = float_of(args[0].type)
            fn = _FLOAT_FUNCS[name][0 if t == "float32" else 1]
            return _Value(f"{fn}({self._as(args[0], t)})", t)
        if name in _SAME_FUNCS:
            t = concrete(args[0].type)
            if t not in ("float32", "float64"):
                return _Value(args[0].text, t)
            return _Value(f"{_SAME_FUNCS[name]}({args[0].text})", t)
        if name == "sign":
            t = concrete(args[0].type)
            return _Value(f"np.sign({args[0].text})" if t != "bool" else args[0].text, t)
        if name == "fmod":
            t = concrete(promote(args[0].type, args[1].type))
            return _Value(f"np.fmod({self._as(args[0], t)}, {self._as(args[1], t)})", t)
        if name.startswith("as_"):
            target = FUNCTIONS[name].result
            t = compute_dtype(target)
            value = self._as(args[0], t) if args[0].const is None or target != "bool" else literal(args[0].const, "bool")
            if target in HALF_TYPES:  # round to the narrow type, keep computing in float32
                to_bits, from_bits = HALF_TYPES[target][1], HALF_TYPES[target][0]
                value = f"{from_bits}({to_bits}({value}))"
            return _Value(value, t)
        if name in ("isnan", "isinf"):
            t = concrete(args[0].type)
            if t not in ("float32", "float64"):
                return _Value("False", "bool")
            return _Value(f"np.{name}({args[0].text})", "bool")
        if name == "abs":
            t = concrete(args[0].type)
            return _Value(f"abs({args[0].text})", t)
        if name == "pow":
            t = concrete(promote(args[0].type, args[1].type))
            return _Value(f"({self._as(args[0], t)} ** {self._as(args[1], t)})", t)
        if name in ("min", "max"):
            t = args[0].type
            for a in args[1:]:
                t = promote(t, a.type)
            t = concrete(t)
            if t in ("float32", "float64"):
                fn = "fminp" if name == "min" else "fmaxp"
                text = self._as(args[0], t)
                for a in args[1:]:
                    text = f"{fn}({text}, {self._as(a, t)})"
                return _Value(text, t)
            return _Value(f"{name}({', '.join(self._as(a, t) for a in args)})", t)
        raise UnsupportedError(f"tasklet function {name} has no code generator")
