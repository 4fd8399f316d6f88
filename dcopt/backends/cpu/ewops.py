"""Elementwise ops as scalar expression templates, the vocabulary of fused kernels.

One line per op (STYLE point 7): a function from the node, its operand expressions and a small
context to a Python/numba scalar expression, or ``None`` when this node's attributes are not
supported (the node then runs on its own). Operands are already-loaded float32 scalars, so a
chain of ops becomes one expression per node inside a single loop nest. Constants are written
as ``f32(<repr>)`` so the arithmetic stays float32 (a Python float literal would promote the
whole expression to float64 and halve the vector width).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from dcopt.ir.graph import Node


def lit(value: float) -> str:
    """A float32 literal that round-trips exactly (inf/nan spelled for numba)."""
    v = float(np.float32(value))
    if math.isnan(v):
        return "f32(np.nan)"
    if math.isinf(v):
        return "f32(np.inf)" if v > 0 else "f32(-np.inf)"
    return f"f32({v!r})"


class Operands:
    """What a template sees: operand expressions plus access to constant inputs."""

    def __init__(self, node: Node, exprs: list[str | None], consts: list[np.ndarray | None], add_param):
        self.node, self.x, self.consts, self.add_param = node, exprs, consts, add_param

    def scalar(self, i: int) -> float | None:
        """Input ``i`` as a Python float when it is a constant holding one value."""
        c = self.consts[i] if i < len(self.consts) else None
        return None if c is None or c.size != 1 else float(c.reshape(-1)[0])

    def attr(self, name: str, default=None):
        return self.node.attrs.get(name, default)


def _pow(o: Operands) -> str | None:
    e = o.scalar(1)
    if e == 2.0:
        return f"({o.x[0]} * {o.x[0]})"
    if e == 3.0:
        return f"({o.x[0]} * {o.x[0]} * {o.x[0]})"
    if e == 0.5:
        return f"np.sqrt({o.x[0]})"
    if e == 1.0:
        return o.x[0]
    return f"({o.x[0]} ** {o.x[1]})"


def _clip(o: Operands) -> str | None:
    lo = o.attr("min") if len(o.x) < 2 else o.scalar(1) if o.x[1] is not None else None
    hi = o.attr("max") if len(o.x) < 3 else o.scalar(2) if o.x[2] is not None else None
    if (len(o.x) > 1 and o.x[1] is not None and lo is None) or (len(o.x) > 2 and o.x[2] is not None and hi is None):
        return None  # non-constant bounds
    e = o.x[0]
    if lo is not None:
        e = f"max({e}, {lit(lo)})"
    if hi is not None:
        e = f"min({e}, {lit(hi)})"
    return e


def _batchnorm(o: Operands) -> str | None:
    """Inference BatchNormalization with constant statistics: x * a + b, per channel."""
    scale, bias, mean, var = o.consts[1:5] if len(o.consts) >= 5 else (None,) * 4
    if any(c is None for c in (scale, bias, mean, var)) or o.attr("training_mode", 0) or len(o.node.outputs) > 1:
        return None
    eps = o.attr("epsilon", 1e-5)
    a = (scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps))
    b = bias.astype(np.float64) - mean.astype(np.float64) * a
    pa, pb = o.add_param(a.astype(np.float32), "bn_a"), o.add_param(b.astype(np.float32), "bn_b")
    return f"({o.x[0]} * {pa} + {pb})"


def _variadic(fn: str) -> Callable[[Operands], str]:
    def template(o: Operands) -> str:
        e = o.x[0]
        for y in o.x[1:]:
            e = f"{fn}({e}, {y})"
        return e
    return template


def _sum(o: Operands) -> str:
    return "(" + " + ".join(o.x) + ")"


def _mean(o: Operands) -> str:
    return f"({_sum(o)} * {lit(1.0 / len(o.x))})"


def _gelu(o: Operands) -> str:
    return f"fgelu_tanh({o.x[0]})" if o.attr("approximate", "none") == "tanh" else f"fgelu({o.x[0]})"


TEMPLATES: dict[str, Callable[[Operands], str | None]] = {
    "Add": lambda o: f"({o.x[0]} + {o.x[1]})",
    "Sub": lambda o: f"({o.x[0]} - {o.x[1]})",
    "Mul": lambda o: f"({o.x[0]} * {o.x[1]})",
    "Div": lambda o: f"({o.x[0]} / {o.x[1]})",
    "Neg": lambda o: f"(-{o.x[0]})",
    "Abs": lambda o: f"abs({o.x[0]})",
    "Relu": lambda o: f"max({o.x[0]}, f32(0.0))",
    "LeakyRelu": lambda o: f"({o.x[0]} if {o.x[0]} >= f32(0.0) else {o.x[0]} * {lit(o.attr('alpha', 0.01))})",
    "Sigmoid": lambda o: f"fsigmoid({o.x[0]})",
    "HardSigmoid": lambda o: f"max(f32(0.0), min(f32(1.0), {lit(o.attr('alpha', 0.2))} * {o.x[0]} + "
                             f"{lit(o.attr('beta', 0.5))}))",
    "HardSwish": lambda o: f"({o.x[0]} * max(f32(0.0), min(f32(1.0), {o.x[0]} * {lit(1 / 6)} + f32(0.5))))",
    "Swish": lambda o: f"({o.x[0]} * fsigmoid({lit(o.attr('alpha', 1.0))} * {o.x[0]}))",
    "Tanh": lambda o: f"ftanh({o.x[0]})",
    "Exp": lambda o: f"fexp({o.x[0]})",
    "Log": lambda o: f"np.log({o.x[0]})",
    "Sqrt": lambda o: f"np.sqrt({o.x[0]})",
    "Reciprocal": lambda o: f"(f32(1.0) / {o.x[0]})",
    "Erf": lambda o: f"ferf({o.x[0]})",
    "Gelu": _gelu,
    "Elu": lambda o: f"({o.x[0]} if {o.x[0]} >= f32(0.0) else "
                     f"{lit(o.attr('alpha', 1.0))} * (fexp({o.x[0]}) - f32(1.0)))",
    "Softplus": lambda o: f"np.log(f32(1.0) + fexp({o.x[0]}))",
    "Pow": _pow,
    "Clip": _clip,
    "Max": _variadic("max"),
    "Min": _variadic("min"),
    "Sum": _sum,
    "Mean": _mean,
    "Where": lambda o: f"({o.x[1]} if {o.x[0]} else {o.x[2]})",
    "Identity": lambda o: o.x[0],
    "BatchNormalization": _batchnorm,
}

TEMPLATES.update({
    "IsNaN": lambda o: f"np.isnan({o.x[0]})",
    "Not": lambda o: f"(not {o.x[0]})",
    "And": lambda o: f"({o.x[0]} and {o.x[1]})",
    "Or": lambda o: f"({o.x[0]} or {o.x[1]})",
    "Xor": lambda o: f"({o.x[0]} != {o.x[1]})",
    "Equal": lambda o: f"({o.x[0]} == {o.x[1]})",
    "Less": lambda o: f"({o.x[0]} < {o.x[1]})",
    "LessOrEqual": lambda o: f"({o.x[0]} <= {o.x[1]})",
    "Greater": lambda o: f"({o.x[0]} > {o.x[1]})",
    "GreaterOrEqual": lambda o: f"({o.x[0]} >= {o.x[1]})",
})

#: Element types fused kernels read and write (masks and conditions are bool).
DTYPES = ("float32", "bool")
