"""Shape rules of the channels-last (NHWC) variants in domain "dcopt" (mirrors
:mod:`dcopt.ops.layout_ops`): the ONNX op's rule, at the opset whose semantics the variants follow,
on the data input transposed to channels-first, with the first output transposed back."""

from __future__ import annotations

from dcopt.ir.types import TensorType
from dcopt.ops.layout_ops import CHANNELS_LAST, SEMANTICS_OPSET, to_channels_first, to_channels_last
from dcopt.ops.shapes.registry import lookup, shape_rule


def _permuted(t: TensorType, perm) -> TensorType:
    return TensorType(t.dtype, tuple(t.shape[p] for p in perm))


def _channels_last(onnx_op: str):
    def rule(ctx):
        x = TensorType(ctx.dtype(0), ctx.shape(0))
        types = (_permuted(x, to_channels_first(len(x.shape))), *ctx.types[1:])
        inner = ctx.derive(onnx_op, "", SEMANTICS_OPSET, types)
        results = lookup(onnx_op).fn(inner)
        results = list(results) if isinstance(results, (list, tuple)) else [results]
        first = results[0]
        if first.shape is not None:
            results[0] = _permuted(first, to_channels_last(len(first.shape)))
        return results

    rule.__name__ = f"{onnx_op.lower()}_nhwc"
    return rule


for _op, _variant in CHANNELS_LAST.items():
    shape_rule(_variant, domain="dcopt")(_channels_last(_op))
