"""How dcopt's own ops (domain ``dcopt``) are written to ONNX.

Passes introduce ops ONNX does not have (the recognized ``Attention``, channels-last variants).
The exporter writes each one as a call to a model-local function whose body is the same
computation in standard ONNX ops, so onnxruntime runs the model and Netron shows the block.
One lowering per op: ``(graph, node) -> list of NodeProtos`` reading the node's inputs and
writing its outputs by name.
"""

from __future__ import annotations

from typing import Callable

import onnx
from onnx import helper

from dcopt.errors import UnsupportedError
from dcopt.ir import dtypes
from dcopt.ir.graph import Graph, Node

Lowering = Callable[[Graph, Node], list[onnx.NodeProto]]
LOWERINGS: dict[tuple[str, str], Lowering] = {}


def lowering(op: str, domain: str = "dcopt"):
    def register(fn: Lowering) -> Lowering:
        LOWERINGS[(domain, op)] = fn
        return fn

    return register


def lower(graph: Graph, node: Node) -> list[onnx.NodeProto]:
    fn = LOWERINGS.get((node.domain, node.op))
    if fn is None:
        raise UnsupportedError(f"op {node.domain}.{node.op} has no ONNX lowering, so it cannot be exported",
                               node=node.label, op=node.op)
    return fn(graph, node)


def _rank(graph: Graph, name: str, node: Node) -> int:
    t = graph.type_of(name)
    if t is None or t.rank is None:
        raise UnsupportedError(f"cannot export: rank of '{name}' is unknown", node=node.label, op=node.op)
    return t.rank


def _scalar_like(graph: Graph, name: str, value: float, like: str) -> onnx.NodeProto:
    """A Constant node making ``name`` = the scalar ``value`` in ``like``'s dtype."""
    t = graph.type_of(like)
    dtype = t.dtype if t is not None else "float32"
    return helper.make_node("Constant", [], [name], name=name,
                            value=helper.make_tensor(name, dtypes.to_onnx(dtype), [], [value]))


@lowering("Attention")
def _attention(graph: Graph, node: Node) -> list[onnx.NodeProto]:
    q, k, v, *rest = node.inputs
    mask = rest[0] if rest and rest[0] else None
    (out,) = node.outputs
    tag = node.label.replace("/", "_")
    rank = _rank(graph, k, node)
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    nodes = [helper.make_node("Transpose", [k], [f"{tag}_kT"], perm=perm, name=f"{tag}_kT"),
             helper.make_node("MatMul", [q, f"{tag}_kT"], [f"{tag}_qk"], name=f"{tag}_qk"),
             _scalar_like(graph, f"{tag}_scale", node.attrs.get("scale", 1.0), q),
             helper.make_node("Mul", [f"{tag}_qk", f"{tag}_scale"], [f"{tag}_scores"], name=f"{tag}_scaled")]
    scores = f"{tag}_scores"
    if mask is not None:
        nodes.append(helper.make_node("Add", [scores, mask], [f"{tag}_masked"], name=f"{tag}_mask"))
        scores = f"{tag}_masked"
    nodes.append(helper.make_node("Softmax", [scores], [f"{tag}_probs"], axis=-1, name=f"{tag}_softmax"))
    probs = f"{tag}_probs"
    if node.attrs.get("zero_nan_probs", 0):
        nodes += [helper.make_node("IsNaN", [probs], [f"{tag}_isnan"], name=f"{tag}_isnan"),
                  _scalar_like(graph, f"{tag}_zero", 0.0, q),
                  helper.make_node("Where", [f"{tag}_isnan", f"{tag}_zero", probs], [f"{tag}_probs0"],
                                   name=f"{tag}_nan_to_zero")]
        probs = f"{tag}_probs0"
    nodes.append(helper.make_node("MatMul", [probs, v], [out], name=f"{tag}_pv"))
    return nodes


def _channels_last_lowering(onnx_op: str) -> Lowering:
    """XNHWC(x, ...) = to_channels_last(X(to_channels_first(x), ...)): the definition, in ONNX."""

    def lower_op(graph: Graph, node: Node) -> list[onnx.NodeProto]:
        from dcopt.ops.layout_ops import to_channels_first, to_channels_last

        x, *others = node.inputs
        y, *extra = node.outputs
        if any(extra):
            raise UnsupportedError("exporting a channels-last op with extra outputs", node=node.label, op=node.op)
        tag = node.label.replace("/", "_")
        rank = _rank(graph, x, node)
        attrs = {k: v for k, v in node.attrs.items()}
        return [helper.make_node("Transpose", [x], [f"{tag}_nchw"], perm=list(to_channels_first(rank)),
                                 name=f"{tag}_to_nchw"),
                helper.make_node(onnx_op, [f"{tag}_nchw", *others], [f"{tag}_y"], name=f"{tag}_{onnx_op}", **attrs),
                helper.make_node("Transpose", [f"{tag}_y"], [y], perm=list(to_channels_last(rank)),
                                 name=f"{tag}_to_nhwc")]

    return lower_op


def _register_channels_last() -> None:
    from dcopt.ops.layout_ops import CHANNELS_LAST

    for onnx_op, variant in CHANNELS_LAST.items():
        lowering(variant)(_channels_last_lowering(onnx_op))


_register_channels_last()
