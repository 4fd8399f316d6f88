"""ATen -> ONNX-style lowerings, one small function per ATen op (or family of overloads).

A lowering is registered for the ATen overloads it handles::

    @lower("aten.addmm.default")
    def addmm(ctx, bias, mat1, mat2, *, beta=1, alpha=1):
        return ctx.emit("Gemm", [ctx.tensor(mat1), ctx.tensor(mat2), ctx.tensor(bias)], alpha=..., beta=...)

It receives the FX node's arguments as they are (FX nodes for tensors and sizes, Python values
for the rest; ATen's keyword-only arguments arrive as keywords, device/layout/pin_memory are
swallowed by ``**_``) and returns the container name of its result, or a tuple for multi-output
ops (``None`` for an output it does not compute, e.g. max-pool indices). The importer types the
result from the node's FakeTensor, so lowerings only type the helper values they create.

The emitted ops follow the ONNX default domain at ``ctx.opset`` (17 unless asked otherwise):
e.g. ReduceMean takes ``axes`` as an attribute before 18 and ReduceSum as an input from 13,
Gelu exists from 20. Dtypes follow torch's type promotion: a lowering casts its operands to the
result dtype the FakeTensor reports, so ONNX's same-type rule always holds.

A lowering raises :class:`LoweringError` for a form it cannot express (training-mode batch norm,
dropout with p > 0 in SDPA...); the importer collects those with the unknown ops.

This package is the registry (:func:`lower`, :data:`LOWERINGS`, :func:`supported_ops`); the
rules live in one module per op family, imported at the bottom so they register themselves:
:mod:`.elementwise` (unary, binary, comparisons), :mod:`.linalg` (matrix products, attention),
:mod:`.nn` (normalization, convolution, pooling), :mod:`.reductions` (softmax, reductions,
scans) and :mod:`.tensor` (views, layout, identity-like ops, factories); shared helpers are in
:mod:`._helpers`.
"""

from __future__ import annotations

from typing import Any, Callable

from dcopt.frontends.torch_context import LoweringContext, LoweringError  # noqa: F401 (re-exported)

LOWERINGS: dict[str, Callable[..., Any]] = {}


def lower(*names: str):
    """Register a lowering for one or more ATen overloads ("aten.<op>.<overload>")."""

    def register(fn):
        for name in names:
            LOWERINGS[name] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    return sorted(LOWERINGS)


# The families register their lowerings on import (they need ``lower`` above, hence the late import).
from dcopt.frontends.torch_lowering import elementwise, linalg, nn, reductions, tensor  # noqa: E402,F401
