"""dcopt IR -> ONNX.

Writes a model that passes ``onnx.checker`` and runs in onnxruntime: parameters become
initializers (not graph inputs), transients get value_info with their (possibly symbolic)
shapes, attributes go back to their ONNX types, and the IR version is the lowest one that
supports the graph's opsets (so onnxruntime accepts it).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from dcopt.errors import DcoptError
from dcopt.ir import dtypes
from dcopt.ir.graph import Graph
from dcopt.frontends.onnx_lowering import lower
from dcopt.ir.groups import GROUP_DOMAIN, is_group
from dcopt.ir.types import OptionalType, SequenceType, TensorType

# Attribute types by name for attributes whose Python value alone is ambiguous
# (an empty tuple could be ints, floats or strings).
_EMPTY_LIST_TYPES = {"pads": onnx.AttributeProto.INTS, "strides": onnx.AttributeProto.INTS}


def _type_proto(t) -> onnx.TypeProto:
    if isinstance(t, SequenceType):
        return helper.make_sequence_type_proto(_type_proto(t.elem))
    if isinstance(t, OptionalType):
        return helper.make_optional_type_proto(_type_proto(t.elem))
    return _value_info("", t).type


def _value_info(name: str, t) -> onnx.ValueInfoProto:
    if not isinstance(t, TensorType):
        return helper.make_value_info(name, _type_proto(t))
    shape = None if t.shape is None else [d if d is not None else None for d in t.shape]
    if shape is not None:
        shape = [d if not isinstance(d, int) or d >= 0 else None for d in shape]
    return helper.make_tensor_value_info(name, dtypes.to_onnx(t.dtype), shape)


def _tensor(name: str, array: np.ndarray) -> onnx.TensorProto:
    array = np.asarray(array)
    if array.dtype == object:
        return helper.make_tensor(name, onnx.TensorProto.STRING, array.shape,
                                  [s.encode() if isinstance(s, str) else s for s in array.ravel()])
    return numpy_helper.from_array(array, name)


def _attribute(name: str, value, export_graph) -> onnx.AttributeProto:
    if isinstance(value, (TensorType, SequenceType, OptionalType)):
        return helper.make_attribute(name, _type_proto(value))
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, _tensor("", value))
    if isinstance(value, Graph):
        return helper.make_attribute(name, export_graph(value))
    if isinstance(value, tuple):
        if not value:
            return helper.make_attribute(name, [], attr_type=_EMPTY_LIST_TYPES.get(name, onnx.AttributeProto.INTS))
        if isinstance(value[0], np.ndarray):
            return helper.make_attribute(name, [_tensor("", v) for v in value])
        if isinstance(value[0], Graph):
            return helper.make_attribute(name, [export_graph(v) for v in value])
        if any(isinstance(v, float) for v in value) and all(isinstance(v, (int, float)) for v in value):
            return helper.make_attribute(name, [float(v) for v in value])
        return helper.make_attribute(name, list(value))
    return helper.make_attribute(name, value)


FUNCTION_DOMAIN = "dcopt.fused"


def _node_protos(graph: Graph, functions: dict[str, onnx.FunctionProto]) -> list[onnx.NodeProto]:
    """Nodes of ``graph`` as NodeProtos; fusion groups become calls of model-local functions
    (collected in ``functions``) whose bodies are the group's original ops."""
    protos = []
    for node in graph.nodes:
        if node.domain == GROUP_DOMAIN and not is_group(node):  # dcopt's own ops: a function of ONNX ops
            fname = _function_name(node, functions)
            default_opset = graph.opset.get("", 17)
            functions[fname] = helper.make_function(
                FUNCTION_DOMAIN, fname, [i for i in node.inputs if i], list(node.outputs), lower(graph, node),
                [helper.make_opsetid("", default_opset)], doc_string=f"dcopt.{node.op}, written in ONNX ops")
            protos.append(helper.make_node(fname, [i for i in node.inputs if i], list(node.outputs),
                                           name=node.name or None, domain=FUNCTION_DOMAIN))
            continue
        if is_group(node):
            body = node.attrs["body"]
            fname = _function_name(node, functions)
            functions[fname] = helper.make_function(
                FUNCTION_DOMAIN, fname, list(body.inputs), list(body.outputs), _node_protos(body, functions),
                [helper.make_opsetid(d, v) for d, v in sorted(graph.opset.items()) if d != GROUP_DOMAIN]
                + [helper.make_opsetid(FUNCTION_DOMAIN, 1)],
                doc_string=f"dcopt fusion group ({node.attrs.get('kind', '?')} kernel)")
            protos.append(helper.make_node(fname, list(node.inputs), list(node.outputs), name=node.name or None,
                                           domain=FUNCTION_DOMAIN))
            continue
        proto = helper.make_node(node.op, list(node.inputs), list(node.outputs), name=node.name or None,
                                 domain=node.domain or None)
        for key, value in node.attrs.items():
            if key.startswith("dcopt."):  # schedule properties (dcopt.ir.schedule) are not ONNX attributes
                continue
            proto.attribute.append(_attribute(key, value, lambda g: export_graph(g, functions, top=False)))
        protos.append(proto)
    return protos


def _function_name(node, functions) -> str:
    base = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in (node.name or "group")) or "group"
    name, i = base, 1
    while name in functions:
        name, i = f"{base}_{i}", i + 1
    return name


def export_graph(graph: Graph, functions: dict[str, onnx.FunctionProto] | None = None, *,
                 top: bool = True, weight_limit: int | None = None) -> onnx.GraphProto:
    """Convert a Graph (or subgraph) into an onnx.GraphProto (functions collects group bodies)."""
    nodes = _node_protos(graph, {} if functions is None else functions)
    params = graph.parameters
    as_inputs = [] if weight_limit is None else [n for n, c in params.items() if c.data.size > weight_limit]
    inputs = [_value_info(n, graph.containers[n].type) for n in [*graph.inputs, *as_inputs]]
    outputs = [_value_info(n, graph.containers[n].type) for n in graph.outputs]
    initializers = [_tensor(n, c.data) for n, c in params.items() if n not in set(as_inputs)]
    boundary = set(graph.inputs) | set(graph.outputs) | set(graph.parameters)
    value_info = [
        _value_info(n, c.type) for n, c in graph.containers.items()
        if n not in boundary and (c.type.shape is not None or not isinstance(c.type, TensorType))
    ]
    return helper.make_graph(nodes, graph.name, inputs, outputs, initializers, doc_string=graph.doc or None,
                             value_info=value_info)


def export_model(graph: Graph, *, check: bool = True, weight_limit: int | None = None) -> onnx.ModelProto:
    """Convert a Graph into an ONNX ModelProto (checked with onnx.checker by default).
    ``weight_limit``: parameters with more elements become typed graph inputs instead of initializers
    (for analyses such as shape inference that need types and small constants, not the weights).
    """
    functions: dict[str, onnx.FunctionProto] = {}
    onnx_graph = export_graph(graph, functions, weight_limit=weight_limit)
    opset_imports = [helper.make_opsetid(domain, version) for domain, version in sorted(graph.opset.items())
                     if domain != GROUP_DOMAIN]
    if functions:
        opset_imports.append(helper.make_opsetid(FUNCTION_DOMAIN, 1))
    model = helper.make_model(onnx_graph, opset_imports=opset_imports, producer_name="dcopt",
                              functions=list(functions.values()))
    model.ir_version = max(8 if functions else 4, helper.find_min_ir_version_for(opset_imports, ignore_unknown=True))
    for key, value in graph.metadata.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    if check:
        try:
            onnx.checker.check_model(model, full_check=False)
        except onnx.checker.ValidationError as exc:
            raise DcoptError(f"exported model fails onnx.checker: {str(exc).strip().splitlines()[0]}") from exc
    return model


def save_onnx(graph: Graph, path: str | os.PathLike, *, check: bool = True) -> None:
    """Export and write atomically (temp file then rename), so no half-written model is left.
    Models over 2 GB are written with external data next to the model."""
    model = export_model(graph, check=check)
    from dcopt.outputs import staged_file

    path = Path(path)
    with staged_file(path) as tmp:
        large = model.ByteSize() > 2**31 - 2**20 if hasattr(model, "ByteSize") else False
        onnx.save_model(model, str(tmp), save_as_external_data=large,
                        location=f"{path.name}.data" if large else None)
