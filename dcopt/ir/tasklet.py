"""The two tiny languages inside loop-level nodes: tasklets and index expressions.

Both are restricted Python, parsed with :mod:`ast` and checked against a whitelist, so that a
code generator can paste them verbatim into a loop body (numba compiles them as scalar code)
while the reference executor evaluates them *vectorized* over a whole iteration space.

**Tasklet** (a map's body): one or more statements ``name = expr`` (newline or ``;``
separated). ``expr`` is built from numbers, names, ``+ - * / // % **``, comparisons (chains
allowed), ``and``/``or``/``not`` (on booleans), ``a if c else b``, and calls of
:data:`FUNCTIONS`. Names are the map's input connectors, its iteration parameters (integers),
symbolic dims (integers), locals assigned earlier, and the constants ``inf``, ``nan``, ``pi``.
Every output connector must be assigned. Semantics are those of the scalar Python namespace
:data:`SCALAR_NAMESPACE` (``math`` functions); the vectorized numpy translation agrees with it
except that ``min``/``max`` propagate NaN like ``np.minimum``/``np.maximum``.

**Index expression** (a memlet subset dimension or a range bound): integers, names (map
parameters and symbolic dims), ``+ - * // %``, unary minus, ``min``/``max``. It can be
evaluated on integers or numpy index grids, bounded over a box of parameter values (interval
arithmetic, exact for affine expressions), and linearized (``2*i2 + i4 - 1`` -> coefficients).
"""

from __future__ import annotations

import ast
import functools
import math
import operator
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from dcopt.errors import DcoptError
from dcopt.ir import dtypes


class TaskletError(DcoptError):
    """Code or an index expression outside the restricted language (the message says why)."""


@functools.lru_cache(maxsize=None)
def _erf_ufunc():
    try:
        from scipy.special import erf
    except ImportError:  # scipy is optional: math.erf elementwise (exact, slower)
        erf = np.vectorize(math.erf, otypes=[np.float64])
    return erf


def _erf_numpy(x):
    result = _erf_ufunc()(x)
    dtype = np.asarray(x).dtype
    return result.astype(dtype, copy=False) if dtype.kind == "f" else result


def _variadic(ufunc):
    return lambda first, *rest: functools.reduce(ufunc, rest, first)


def _numpy_cast(dtype: str):
    """``x.astype(dtype)``; the target dtype resolves on first use, so that importing this module
    does not import ml_dtypes (~0.6 s) for bfloat16 before anything casts to it."""
    target = []

    def cast(x):
        if not target:
            target.append(dtypes.to_numpy(dtype))
        return np.asarray(x).astype(target[0])

    return cast


def _scalar_cast(dtype: str):
    cast = _numpy_cast(dtype)
    return lambda x: cast(x)[()]


def _round_half_even(x):
    return np.rint(x)


@dataclass(frozen=True)
class Function:
    """A tasklet function: arity (None: 2 or more), scalar and numpy implementations, FLOPs the
    cost model charges ("t": a transcendental, see dcopt.ir.cost), and its result type rule:
    "float" (the argument's float type: float32 stays float32, integers give float64), "same"
    (the argument's type), "bool", "promote" (numpy's result type of the arguments), or a dtype
    name (the ``as_<dtype>`` conversions)."""

    arity: int | None
    scalar: Any
    numpy: Any
    flops: int | str
    result: str


def _fn(arity, scalar, numpy_fn, flops, result) -> Function:
    return Function(arity, scalar, numpy_fn, flops, result)


#: The functions tasklets may call. Add one here and every consumer (reference executor, cost
#: model, type inference, code generators) knows it.
FUNCTIONS: dict[str, Function] = {
    "exp": _fn(1, math.exp, np.exp, "t", "float"), "log": _fn(1, math.log, np.log, "t", "float"),
    "sqrt": _fn(1, math.sqrt, np.sqrt, 1, "float"), "tanh": _fn(1, math.tanh, np.tanh, "t", "float"),
    "erf": _fn(1, math.erf, _erf_numpy, "t", "float"), "sin": _fn(1, math.sin, np.sin, "t", "float"),
    "cos": _fn(1, math.cos, np.cos, "t", "float"), "tan": _fn(1, math.tan, np.tan, "t", "float"),
    "asin": _fn(1, math.asin, np.arcsin, "t", "float"), "acos": _fn(1, math.acos, np.arccos, "t", "float"),
    "atan": _fn(1, math.atan, np.arctan, "t", "float"), "sinh": _fn(1, math.sinh, np.sinh, "t", "float"),
    "cosh": _fn(1, math.cosh, np.cosh, "t", "float"), "asinh": _fn(1, math.asinh, np.arcsinh, "t", "float"),
    "acosh": _fn(1, math.acosh, np.arccosh, "t", "float"), "atanh": _fn(1, math.atanh, np.arctanh, "t", "float"),
    "log1p": _fn(1, math.log1p, np.log1p, "t", "float"), "expm1": _fn(1, math.expm1, np.expm1, "t", "float"),
    "floor": _fn(1, math.floor, np.floor, 1, "same"), "ceil": _fn(1, math.ceil, np.ceil, 1, "same"),
    "rint": _fn(1, lambda x: float(np.rint(x)), _round_half_even, 1, "same"),
    "trunc": _fn(1, math.trunc, np.trunc, 1, "same"), "sign": _fn(1, lambda x: np.sign(x), np.sign, 1, "same"),
    "fmod": _fn(2, math.fmod, np.fmod, 1, "promote"),
    "isnan": _fn(1, math.isnan, np.isnan, 1, "bool"), "isinf": _fn(1, math.isinf, np.isinf, 1, "bool"),
    "abs": _fn(1, abs, np.abs, 1, "same"), "pow": _fn(2, math.pow, np.power, "t", "promote"),
    "min": _fn(None, min, _variadic(np.minimum), 1, "promote"),
    "max": _fn(None, max, _variadic(np.maximum), 1, "promote"),
}
#: ``as_<dtype>(x)``: numpy's ``astype`` (C conversion: floats truncate toward zero into ints,
#: rounding to nearest even into narrower floats).
CAST_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
               "bfloat16", "float32", "float64")
FUNCTIONS.update({f"as_{d}": _fn(1, _scalar_cast(d), _numpy_cast(d), 1, d) for d in CAST_DTYPES})
CONSTANTS = {"inf": math.inf, "nan": math.nan, "pi": math.pi}

#: What tasklet code runs against as scalar Python (and what a scalar code generator imports).
SCALAR_NAMESPACE: dict[str, Any] = {**{k: f.scalar for k, f in FUNCTIONS.items()}, **CONSTANTS}

_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.BitAnd, ast.BitOr,
           ast.BitXor, ast.LShift, ast.RShift)
_CMPOPS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)


def _check_expr(tree: ast.AST, what: str) -> set:
    """Validate a tasklet expression tree; return the free names it reads."""
    for sub in ast.walk(tree):
        if isinstance(sub, (ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context)):
            continue
        if not isinstance(sub, (ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.Name,
                                ast.Constant)):
            raise TaskletError(f"{what}: {type(sub).__name__} is not allowed here")
        if isinstance(sub, ast.BinOp) and not isinstance(sub.op, _BINOPS):
            raise TaskletError(f"{what}: operator {type(sub.op).__name__} is not allowed")
        if isinstance(sub, ast.Compare) and not all(isinstance(o, _CMPOPS) for o in sub.ops):
            raise TaskletError(f"{what}: only <, <=, >, >=, ==, != comparisons are allowed")
        if isinstance(sub, ast.Constant) and type(sub.value) not in (int, float, bool):
            raise TaskletError(f"{what}: constant {sub.value!r} is not a number")
        if isinstance(sub, ast.Call):
            fname = sub.func.id if isinstance(sub.func, ast.Name) else None
            if fname not in FUNCTIONS or sub.keywords:
                raise TaskletError(f"{what}: call of {ast.unparse(sub.func)} is not allowed "
                                   f"(functions: {', '.join(sorted(FUNCTIONS))})")
            arity = FUNCTIONS[fname].arity
            if (arity is None and len(sub.args) < 2) or (arity is not None and len(sub.args) != arity):
                raise TaskletError(f"{what}: {fname} takes {arity or '2 or more'} argument(s)")
    return _names_outside_calls(tree) - CONSTANTS.keys()


def _names_outside_calls(tree: ast.AST) -> set:
    funcs = {id(s.func) for s in ast.walk(tree) if isinstance(s, ast.Call)}
    return {s.id for s in ast.walk(tree) if isinstance(s, ast.Name) and id(s) not in funcs}


# ---------------------------------------------------------------------------------- tasklets

@dataclass(frozen=True)
class Tasklet:
    """A parsed tasklet: ``reads`` are its free names, ``writes`` the names it assigns (in order)."""

    code: str
    reads: frozenset[str]
    writes: tuple[str, ...]
    numpy_code: Any  # code object of the vectorized translation
    flops: int | None  # per evaluation, transcendentals counted as "t" units in ``transcendentals``
    transcendentals: int


@functools.lru_cache(maxsize=4096)
def parse_tasklet(code: str) -> Tasklet:
    try:
        module = ast.parse(code.strip())
    except SyntaxError as exc:
        raise TaskletError(f"tasklet {code!r} is not valid: {exc.msg}") from None
    if not module.body:
        raise TaskletError("empty tasklet")
    reads, writes, assigned = set(), [], set()
    arith = trans = 0
    for stmt in module.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            raise TaskletError(f"tasklet {code!r}: every statement must be 'name = expression'")
        free = _check_expr(stmt.value, f"tasklet {code!r}")
        reads |= free - assigned
        target = stmt.targets[0].id
        if target in FUNCTIONS or target in CONSTANTS:
            raise TaskletError(f"tasklet {code!r}: cannot assign to {target!r}")
        assigned.add(target)
        if target not in writes:
            writes.append(target)
        a, t = _count_ops(stmt.value)
        arith, trans = arith + a, trans + t
    numpy_tree = ast.fix_missing_locations(_ToNumpy().visit(module))
    return Tasklet(code, frozenset(reads), tuple(writes), compile(numpy_tree, "<tasklet>", "exec"), arith, trans)


def _count_ops(tree: ast.AST) -> tuple[int, int]:
    """(arithmetic operations, transcendental calls) of one evaluation."""
    arith = trans = 0
    for sub in ast.walk(tree):
        if isinstance(sub, (ast.BinOp, ast.IfExp)) or isinstance(sub, ast.UnaryOp) and isinstance(sub.op, ast.USub):
            arith += 1
        elif isinstance(sub, ast.Compare):
            arith += len(sub.ops)
        elif isinstance(sub, ast.Call):
            cost = FUNCTIONS[sub.func.id].flops
            if cost == "t":
                trans += 1
            else:
                arith += cost * max(1, len(sub.args) - 1)
    return arith, trans


class _ToNumpy(ast.NodeTransformer):
    """Rewrite the constructs whose Python meaning is scalar-only into numpy calls."""

    @staticmethod
    def _call(name, args):
        return ast.Call(ast.Name(name, ast.Load()), list(args), [])

    def visit_IfExp(self, node):
        self.generic_visit(node)
        return self._call("__where", [node.test, node.body, node.orelse])

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        return self._call("__and" if isinstance(node.op, ast.And) else "__or", node.values)

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        return self._call("__not", [node.operand]) if isinstance(node.op, ast.Not) else node

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) == 1:
            return node
        lefts = [node.left, *node.comparators[:-1]]
        pairs = [ast.Compare(l, [op], [r]) for l, op, r in zip(lefts, node.ops, node.comparators)]
        return self._call("__and", pairs)

    def visit_Call(self, node):
        self.generic_visit(node)
        node.func = ast.Name("__" + node.func.id, ast.Load())
        return node


_NUMPY_NAMESPACE = {
    **{"__" + k: f.numpy for k, f in FUNCTIONS.items()}, **CONSTANTS,
    "__where": np.where, "__and": _variadic(np.logical_and), "__or": _variadic(np.logical_or),
    "__not": np.logical_not,
}


def run_numpy(tasklet: Tasklet, values: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate a tasklet with numpy arrays (broadcasting) bound to its free names."""
    missing = tasklet.reads - values.keys()
    if missing:
        raise TaskletError(f"tasklet {tasklet.code!r} reads {sorted(missing)}, which are not bound")
    env = {**_NUMPY_NAMESPACE, **values}
    with np.errstate(all="ignore"):
        exec(tasklet.numpy_code, env)  # noqa: S102 (whitelisted AST, see parse_tasklet)
    return {name: env[name] for name in tasklet.writes}


def run_scalar(tasklet: Tasklet, values: Mapping[str, Any]) -> dict[str, Any]:
    """Evaluate a tasklet on Python scalars, as a scalar code generator would."""
    env = {**SCALAR_NAMESPACE, **values}
    exec(compile(tasklet.code.strip(), "<tasklet>", "exec"), env)  # noqa: S102
    return {name: env[name] for name in tasklet.writes}


# ---------------------------------------------------------------------------- index expressions

_INDEX_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


@dataclass(frozen=True)
class IndexExpr:
    """An integer expression over map parameters and symbolic dims."""

    text: str
    tree: ast.expr
    names: frozenset[str]

    def __str__(self) -> str:
        return self.text

    def evaluate(self, env: Mapping[str, Any]):
        """Value with names bound to ints or integer numpy arrays (broadcasting)."""
        return _eval_index(self.tree, env)

    def bounds(self, env: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
        """Inclusive (lo, hi) over names ranging over inclusive intervals (exact when affine)."""
        return _bounds(self.tree, env)

    def linear(self, env: Mapping[str, int], params) -> dict[str | None, int] | None:
        """``{param: coefficient, None: constant}`` when affine in ``params``, else None."""
        return _linear(self.tree, env, frozenset(params))


@functools.lru_cache(maxsize=8192)
def parse_index(text) -> IndexExpr:
    text = str(text).strip()
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise TaskletError(f"index expression {text!r} is not valid: {exc.msg}") from None
    allowed = (ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Call)
    for sub in ast.walk(tree):
        bad = (isinstance(sub, ast.BinOp) and type(sub.op) not in _INDEX_OPS
               or isinstance(sub, ast.UnaryOp) and not isinstance(sub.op, (ast.USub, ast.UAdd))
               or isinstance(sub, ast.Constant) and type(sub.value) is not int
               or isinstance(sub, ast.Call) and (getattr(sub.func, "id", None) not in ("min", "max") or sub.keywords)
               or isinstance(sub, ast.expr) and not isinstance(sub, allowed))
        if bad:
            raise TaskletError(f"index expression {text!r}: {ast.unparse(sub)} is not allowed "
                               "(integers, names, + - * // %, min, max)")
    names = _names_outside_calls(tree)
    return IndexExpr(ast.unparse(tree), tree, frozenset(names))


def _eval_index(t: ast.expr, env):
    if isinstance(t, ast.Constant):
        return t.value
    if isinstance(t, ast.Name):
        try:
            return env[t.id]
        except KeyError:
            raise TaskletError(f"index expression uses {t.id!r}, which is not bound") from None
    if isinstance(t, ast.UnaryOp):
        v = _eval_index(t.operand, env)
        return -v if isinstance(t.op, ast.USub) else v
    if isinstance(t, ast.Call):
        args = [_eval_index(a, env) for a in t.args]
        fn = np.minimum if t.func.id == "min" else np.maximum
        return functools.reduce(fn, args) if any(isinstance(a, np.ndarray) for a in args) else \
            (min if t.func.id == "min" else max)(args)
    return _INDEX_OPS[type(t.op)](_eval_index(t.left, env), _eval_index(t.right, env))


def _bounds(t: ast.expr, env) -> tuple[int, int]:
    if isinstance(t, ast.Constant):
        return t.value, t.value
    if isinstance(t, ast.Name):
        value = env[t.id]
        return value if isinstance(value, tuple) else (value, value)
    if isinstance(t, ast.UnaryOp):
        lo, hi = _bounds(t.operand, env)
        return (-hi, -lo) if isinstance(t.op, ast.USub) else (lo, hi)
    if isinstance(t, ast.Call):
        parts = [_bounds(a, env) for a in t.args]
        pick = min if t.func.id == "min" else max
        return pick(p[0] for p in parts), pick(p[1] for p in parts)
    (alo, ahi), (blo, bhi) = _bounds(t.left, env), _bounds(t.right, env)
    op = type(t.op)
    if op in (ast.Add, ast.Sub):
        return (alo + blo, ahi + bhi) if op is ast.Add else (alo - bhi, ahi - blo)
    if op is ast.Mult:
        corners = [alo * blo, alo * bhi, ahi * blo, ahi * bhi]
        return min(corners), max(corners)
    if blo != bhi or blo <= 0:
        raise TaskletError(f"cannot bound {ast.unparse(t)}: divisor must be a positive constant")
    if op is ast.FloorDiv:
        return alo // blo, ahi // blo
    if ahi - alo < blo and alo % blo <= ahi % blo:  # ast.Mod within one period: no wrap-around
        return alo % blo, ahi % blo
    return 0, blo - 1


def _linear(t: ast.expr, env, params) -> dict | None:
    if isinstance(t, ast.Constant):
        return {None: t.value}
    if isinstance(t, ast.Name):
        return {t.id: 1, None: 0} if t.id in params else {None: int(env[t.id])}
    if isinstance(t, ast.UnaryOp):
        inner = _linear(t.operand, env, params)
        return None if inner is None else {k: (-v if isinstance(t.op, ast.USub) else v) for k, v in inner.items()}
    if isinstance(t, ast.Call):
        return None
    a, b = _linear(t.left, env, params), _linear(t.right, env, params)
    if a is None or b is None:
        return None
    op = type(t.op)
    if op in (ast.Add, ast.Sub):
        sign = 1 if op is ast.Add else -1
        return {k: a.get(k, 0) + sign * b.get(k, 0) for k in a.keys() | b.keys()}
    a_const, b_const = a.keys() == {None}, b.keys() == {None}
    if op is ast.Mult and (a_const or b_const):
        scale, other = (a[None], b) if a_const else (b[None], a)
        return {k: scale * v for k, v in other.items()}
    if a_const and b_const and b[None] != 0:
        return {None: _INDEX_OPS[op](a[None], b[None])}
    return None


# ---------------------------------------------------------------------------------- types

#: Types of Python literals in tasklets: *weak*, as numpy (NEP 50) treats Python scalars -- they
#: take the type of the array they meet (``a * 0.5`` stays float32 for a float32 ``a``).
WEAK_INT, WEAK_FLOAT = "<int>", "<float>"


def is_weak(t: str) -> bool:
    return t in (WEAK_INT, WEAK_FLOAT)


def promote(a: str, b: str) -> str:
    """numpy's result type of a binary arithmetic op on operand types ``a``, ``b`` (dtype names
    or the weak literal types)."""
    if is_weak(a) and is_weak(b):
        return WEAK_FLOAT if WEAK_FLOAT in (a, b) else WEAK_INT
    if is_weak(b):
        a, b = b, a
    if is_weak(a):
        if a == WEAK_INT:
            return "int64" if b == "bool" else b
        return b if b in ("float16", "bfloat16", "float32", "float64") else "float64"
    if "bfloat16" in (a, b):
        other = b if a == "bfloat16" else a
        return "bfloat16" if other in ("bfloat16", "bool", "int8", "uint8") else promote("float32", other)
    return np.result_type(np.dtype(a), np.dtype(b)).name


def concrete(t: str) -> str:
    """A weak type as the type numpy gives a lone Python scalar."""
    return {WEAK_INT: "int64", WEAK_FLOAT: "float64"}.get(t, t)


def float_of(t: str) -> str:
    """The float type a math function returns for an argument of type ``t``."""
    t = concrete(t)
    return t if t in ("float16", "bfloat16", "float32", "float64") else "float64"


class _TypeInference(ast.NodeVisitor):
    def __init__(self, types: Mapping[str, str]):
        self.types = dict(types)

    def type_of(self, node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            return "bool" if isinstance(node.value, bool) else WEAK_FLOAT if isinstance(node.value, float) else WEAK_INT
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return WEAK_FLOAT
            return self.types[node.id]
        if isinstance(node, ast.BinOp):
            t = promote(self.type_of(node.left), self.type_of(node.right))
            if isinstance(node.op, ast.Div) and not is_weak(t) and t not in ("float16", "bfloat16", "float32",
                                                                              "float64"):
                return "float64"
            return WEAK_FLOAT if isinstance(node.op, ast.Div) and t == WEAK_INT else t
        if isinstance(node, ast.UnaryOp):
            return "bool" if isinstance(node.op, ast.Not) else self.type_of(node.operand)
        if isinstance(node, (ast.BoolOp, ast.Compare)):
            return "bool"
        if isinstance(node, ast.IfExp):
            return promote(self.type_of(node.body), self.type_of(node.orelse))
        if isinstance(node, ast.Call):
            fn = FUNCTIONS[node.func.id]
            args = [self.type_of(a) for a in node.args]
            if fn.result == "float":
                return float_of(args[0])
            if fn.result == "same":
                return args[0]
            if fn.result == "promote":
                return functools.reduce(promote, args)
            return fn.result
        raise TaskletError(f"cannot type {ast.unparse(node)}")


def infer_types(tasklet: Tasklet, types: Mapping[str, str]) -> dict[str, str]:
    """dtype of every name a tasklet assigns, given the dtypes of the names it reads (connectors
    as their containers' dtypes, params and symbols int64), under numpy's rules."""
    inference = _TypeInference(types)
    result = {}
    for stmt in ast.parse(tasklet.code.strip()).body:
        t = concrete(inference.type_of(stmt.value))
        inference.types[stmt.targets[0].id] = t
        result[stmt.targets[0].id] = t
    return result
