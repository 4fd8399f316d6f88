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


#: name -> (number of arguments or None for 2+, scalar implementation, numpy implementation,
#: FLOPs charged by the cost model: "t" = a transcendental, see dcopt.ir.cost.TRANSCENDENTAL)
FUNCTIONS: dict[str, tuple[int | None, Any, Any, int | str]] = {
    "exp": (1, math.exp, np.exp, "t"), "log": (1, math.log, np.log, "t"),
    "sqrt": (1, math.sqrt, np.sqrt, 1), "tanh": (1, math.tanh, np.tanh, "t"),
    "erf": (1, math.erf, _erf_numpy, "t"), "sin": (1, math.sin, np.sin, "t"), "cos": (1, math.cos, np.cos, "t"),
    "log1p": (1, math.log1p, np.log1p, "t"), "expm1": (1, math.expm1, np.expm1, "t"),
    "floor": (1, math.floor, np.floor, 1), "ceil": (1, math.ceil, np.ceil, 1),
    "isnan": (1, math.isnan, np.isnan, 1), "isinf": (1, math.isinf, np.isinf, 1),
    "abs": (1, abs, np.abs, 1), "pow": (2, math.pow, np.power, "t"),
    "min": (None, min, _variadic(np.minimum), 1), "max": (None, max, _variadic(np.maximum), 1),
}
CONSTANTS = {"inf": math.inf, "nan": math.nan, "pi": math.pi}

#: What tasklet code runs against as scalar Python (and what a scalar code generator imports).
SCALAR_NAMESPACE: dict[str, Any] = {**{k: v[1] for k, v in FUNCTIONS.items()}, **CONSTANTS}

_BINOPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
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
            arity = FUNCTIONS[fname][0]
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
            cost = FUNCTIONS[sub.func.id][3]
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
    **{"__" + k: v[2] for k, v in FUNCTIONS.items()}, **CONSTANTS,
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
