"""Helpers shared by the lowering families (axes, dtype promotion, operand casts, truthiness)."""

from __future__ import annotations

from typing import Any

import torch
from dcopt.frontends.torch_context import LoweringContext, dtype_name

INT64_MAX = 2**63 - 1


def _axis(dim: int, rank: int) -> int:
    """A non-negative axis (ONNX accepts negatives too, but normalized ones read better)."""
    return dim + rank if dim < 0 else dim


def _promoted(ctx: LoweringContext, a: Any, b: Any) -> str:
    """torch's result dtype for a binary op on ``a`` and ``b`` (tensors, sizes or Python scalars),
    asked of torch itself on tiny stand-ins of the same rank class (0-d behaves like a scalar)."""

    def probe(arg):
        val = ctx.val(arg)
        if isinstance(val, torch.Tensor):
            return torch.empty((1,) * val.dim(), dtype=val.dtype)
        return torch.tensor(int(val) if isinstance(val, torch.SymInt) else val)

    return dtype_name(torch.result_type(probe(a), probe(b)))


def _operands(ctx: LoweringContext, dtype: str, *args: Any) -> list[str]:
    return [ctx.tensor(a, dtype) for a in args]


def _scaled(ctx: LoweringContext, name: str, factor: Any, dtype: str) -> str:
    """``name * factor``, skipping the multiply when factor is 1."""
    if not isinstance(factor, torch.fx.Node) and factor == 1:
        return name
    return ctx.emit("Mul", [name, ctx.tensor(factor, dtype)])


def _ints_list(value: Any, n: int) -> list[int]:
    """ATen int-list arguments may be given as one int (or a shorter list) meaning 'for every dim'."""
    values = [value] if isinstance(value, int) else list(value)
    return values * n if len(values) == 1 and n > 1 else values


def _truth(ctx, x) -> str:
    """``x != 0`` as bool (torch's logical ops accept any dtype and Python scalars)."""
    if not isinstance(x, torch.fx.Node):
        return ctx.const(bool(x), "bool")
    if ctx.dtype(x) == "bool":
        return ctx.tensor(x)
    xs = ctx.tensor(x)
    return ctx.emit("Not", [ctx.emit("Equal", [xs, ctx.const(0, ctx.dtype(x))], dtype="bool")])
