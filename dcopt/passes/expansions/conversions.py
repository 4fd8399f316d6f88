"""Conversions in tasklets exactly as numpy makes them, for kernels that would make them otherwise.

A kernel computes float16/bfloat16 in float32 and converts with LLVM's instructions; two kinds of
numpy conversion are not those instructions, so :func:`exact_conversions` rewrites a tasklet's
``as_<dtype>(x)`` calls (and the conversion of its result into the output's dtype) into tasklet
code that means the same on numpy and in a kernel:

* float -> integer: LLVM's ``fptosi`` is undefined (poison) for NaN, infinities and values out
  of range, and numba's vector code saturates them. numpy (on x86) truncates through a 32-bit
  (int8/16, uint8/16, int32) or 64-bit (int64, and uint32 from float16) conversion that yields
  the lowest integer when out of range, then wraps; uint64 -- and uint32 from float32/float64,
  which numpy's 4-lane loop converts that way (its scalar remainder loop goes through int64 like
  float16's: numpy itself is not consistent there) -- shifts values from 2**(bits-1) up down
  first. bfloat16 converts in ml_dtypes: the truncated value when the target holds it, else 0.
* float64 -> float16/bfloat16: the kernel's float32 step would round twice. The rewrite rounds
  to float32, and when that landed on the midpoint of two half neighbours picks the one the
  float64 value is nearer to; around the largest finite value, infinity or that value as numpy.

Rewritten conversions are hoisted into statements of their own (``_x0 = ...``), so the converted
value is computed once. Half-typed values are compared in float32: numpy would round the integer
limits to the half type.
"""

from __future__ import annotations

import ast
import itertools
from typing import Mapping

import numpy as np

from dcopt.ir.tasklet import infer_types, parse_tasklet
from dcopt.ops.elementwise import FLOATS, HALF, INTS

#: (2**(bits-1) as a float literal, the lowest integer) of the truncating conversions
_LIMITS = {32: ("2147483648.0", "-2147483648"), 64: ("9.223372036854775808e18", "-9223372036854775808")}
#: for float16/bfloat16: (the largest finite value, the midpoint above it: rounds to infinity)
_HALF_TOP = {"float16": ("65504.0", "65520.0"),
             "bfloat16": (repr((2 - 2 ** -7) * 2.0 ** 127), repr((2 - 2 ** -8) * 2.0 ** 127))}


def _truncate(x: str, bits: int) -> str:
    """``x`` truncated to a ``bits``-bit signed integer; out of range (NaN included): the lowest."""
    bound, lowest = _LIMITS[bits]
    return f"(as_int{bits}({x}) if ({x} >= -{bound} and {x} < {bound}) else {lowest})"


def _float_to_int(x: str, source: str, dtype: str, fresh) -> tuple[list[str], str]:
    """Statements converting float ``x`` (of dtype ``source``, float32 or float64 -- half types are
    widened to float32 first) to ``dtype`` as numpy's ``astype`` does; the result name.

    numpy on x86: through a truncating 32-bit conversion for 8/16-bit targets and int32, 64-bit for
    int64, the lowest integer when out of range, then wrapped; uint64 (and uint32 from
    float32/float64, which numpy converts 4 lanes at a time that way -- its scalar remainder loop
    goes through int64 instead, as it does for float16) shifts values from 2**(bits-1) up down
    first. bfloat16 converts in ml_dtypes: the truncated value if the target holds it, else 0."""
    r = fresh("c")
    if source == "bfloat16":
        info = np.iinfo(np.dtype(dtype))
        low = f">= {float(info.min)!r}" if abs(info.min) >= 2 ** 24 else f"> {float(info.min - 1)!r}"
        return [f"{r} = as_{dtype}({x}) if ({x} {low} and {x} < {float(info.max + 1)!r}) else 0"], r
    if dtype == "uint64" or (dtype == "uint32" and source != "float16"):
        bits = 64 if dtype == "uint64" else 32
        shifted, top = fresh("s"), 2 ** (bits - 1)
        return [f"{shifted} = {x} - {float(top)!r}",
                f"{r} = as_{dtype}({_truncate(shifted, bits)}) ^ {top} if {x} >= {float(top)!r} "
                f"else as_{dtype}({_truncate(x, bits)})"], r
    bits = 64 if dtype in ("int64", "uint32") else 32
    value = _truncate(x, bits)
    return [f"{r} = {value if dtype == f'int{bits}' else f'as_{dtype}({value})'}"], r


def _float64_to_half(x: str, dtype: str, fresh) -> tuple[list[str], str]:
    """Statements rounding float64 ``x`` to ``dtype`` (float16, bfloat16) once; the result name."""
    m, h, d, o, r0, r = (fresh(p) for p in "mhdorc")
    top, overflow = _HALF_TOP[dtype]
    return [f"{m} = as_float32({x})", f"{h} = as_{dtype}({m})", f"{d} = {m} - {h}", f"{o} = {m} + {d}",
            f"{r0} = (max({h}, {o}) if {x} > {m} else min({h}, {o})) "
            f"if ({d} != 0.0 and {x} != {m} and not isinf({o}) and as_{dtype}({o}) == {o}) else {h}",
            f"{r} = as_{dtype}(({top} if {x} > 0.0 else -{top}) if (abs({m}) == {overflow} and abs({x}) < {overflow}) "
            f"else {r0})"], r


def _needs_exact(source: str, target: str) -> bool:
    return (source in FLOATS and target in INTS) or (source == "float64" and target in HALF)


def _type_of(expr: ast.expr, types: Mapping[str, str]) -> str:
    return infer_types(parse_tasklet(f"_t = {ast.unparse(expr)}"), types)["_t"]


class _ExactCasts(ast.NodeTransformer):
    """Replace each ``as_<T>(x)`` that numba would convert differently from numpy by a hoisted,
    exact conversion (see the module docstring)."""

    def __init__(self, types: dict[str, str], lines: list[str], fresh):
        self.types, self.lines, self.fresh = types, lines, fresh

    def visit_Call(self, node: ast.Call):
        self.generic_visit(node)
        name = node.func.id if isinstance(node.func, ast.Name) else ""
        target = name[3:] if name.startswith("as_") else ""
        if not target or len(node.args) != 1:
            return node
        source = _type_of(node.args[0], self.types)
        if not _needs_exact(source, target):
            return node
        x = self.fresh("x")
        widen = source in HALF  # compare in float32: numpy would round the limits to the half type
        self.lines.append(f"{x} = {'as_float32(' if widen else '('}{ast.unparse(node.args[0])})")
        self.types[x] = "float32" if widen else source
        if target in INTS:
            lines, result = _float_to_int(x, source, target, self.fresh)
        else:
            lines, result = _float64_to_half(x, target, self.fresh)
        for line in lines:
            self.lines.append(line)
            name_, expr = line.split(" = ", 1)
            self.types[name_] = _type_of(ast.parse(expr, mode="eval").body, self.types)
        return ast.Name(result, ast.Load())


def exact_conversions(code: str, types: Mapping[str, str], out_dtype: str | None = None) -> str:
    """``code`` (a tasklet) with its float->int and float64->half conversions made exact, and --
    given the dtype ``out`` is stored as -- the store's conversion too. ``types``: the dtypes of
    the names the tasklet reads."""
    tasklet = parse_tasklet(code)
    statements = ast.parse(code.strip()).body
    if out_dtype and "out" in tasklet.writes:
        result = infer_types(tasklet, types)["out"]
        if _needs_exact(result, out_dtype):
            statements = [_Rename("out", "_r").visit(s) for s in statements]
            statements.append(ast.parse(f"out = as_{out_dtype}(_r)").body[0])
    counter = itertools.count()
    taken = {n.id for s in statements for n in ast.walk(s) if isinstance(n, ast.Name)}

    def fresh(prefix: str) -> str:
        while True:
            name = f"_{prefix}{next(counter)}"
            if name not in taken:
                return name

    known, lines = dict(types), []
    for stmt in statements:
        value = _ExactCasts(known, lines, fresh).visit(stmt.value)
        target = stmt.targets[0].id
        lines.append(f"{target} = {ast.unparse(value)}")
        known[target] = _type_of(value, known)
    return "\n".join(lines)


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def visit_Name(self, node):
        return ast.Name(self.new, node.ctx) if node.id == self.old else node
