"""ONNX -> dcopt IR.

Imports the default domain at any opset from 7 up, opset-aware: nodes keep the model's opset
and the reference implementations honour the opset's semantics (attribute-vs-input forms).
Shape inference fills in transient types; symbolic dims (``dim_param``) stay symbolic.
Model-local functions are inlined. Old-style models (IR version 3, where initializers are also
listed as graph inputs) get those initializers as parameters, not inputs.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
from onnx import external_data_helper, helper, numpy_helper, shape_inference

from dcopt.errors import ArgumentError, DcoptError, ModelLoadError, UnsupportedError
from dcopt.frontends.onnx_load import load_onnx
from dcopt.frontends.onnx_mapped import tensor_array
from dcopt.ir.file_maps import FileMaps
from dcopt.ir import dtypes
from dcopt.ir.graph import Graph, Node
from dcopt.ir.types import OptionalType, SequenceType, TensorType, ValueType
from dcopt.limits import check_tensor_size

MIN_OPSET = 7


def _tensor_type(type_proto: onnx.TypeProto, what: str, file: str | None) -> ValueType:
    """ONNX TypeProto -> TensorType (or SequenceType / OptionalType around one)."""
    kind = type_proto.WhichOneof("value")
    if kind == "sequence_type":
        return SequenceType(_tensor_type(type_proto.sequence_type.elem_type, what, file))
    if kind == "optional_type":
        return OptionalType(_tensor_type(type_proto.optional_type.elem_type, what, file))
    if kind != "tensor_type":
        raise UnsupportedError(f"{what} has type {kind or 'none'}; tensors, sequences and optionals are supported",
                               file=file)
    tt = type_proto.tensor_type
    dtype = dtypes.from_onnx(tt.elem_type) if tt.elem_type else "float32"
    if not tt.HasField("shape"):
        return TensorType(dtype, None)
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param and not d.dim_param.startswith("unk__"):
            dims.append(d.dim_param)  # ("unk__N" are onnx shape inference's placeholders: unknown)
        else:
            dims.append(None)
    return TensorType(dtype, tuple(dims))


def _attr_value(attr: onnx.AttributeProto, convert_graph):
    if attr.ref_attr_name:
        raise UnsupportedError(f"attribute '{attr.name}' refers to a function attribute")
    value = helper.get_attribute_value(attr)
    t = attr.type
    if t == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(value)
    if t == onnx.AttributeProto.TENSORS:
        return tuple(numpy_helper.to_array(v) for v in value)
    if t == onnx.AttributeProto.SPARSE_TENSOR:
        return _sparse_to_dense(value)
    if t == onnx.AttributeProto.GRAPH:
        return convert_graph(value)
    if t == onnx.AttributeProto.GRAPHS:
        return tuple(convert_graph(g) for g in value)
    if t == onnx.AttributeProto.STRING:
        return value.decode("utf-8", errors="surrogateescape")
    if t == onnx.AttributeProto.STRINGS:
        return tuple(v.decode("utf-8", errors="surrogateescape") for v in value)
    if t == onnx.AttributeProto.TYPE_PROTO:
        return _tensor_type(value, f"attribute '{attr.name}'", None)
    if t == onnx.AttributeProto.TYPE_PROTOS:
        return tuple(_tensor_type(v, f"attribute '{attr.name}'", None) for v in value)
    if isinstance(value, list):
        return tuple(value)
    return value


def _sparse_to_dense(sparse: onnx.SparseTensorProto) -> np.ndarray:
    """The dense array of a sparse tensor; ModelLoadError (sizes checked first) when its parts do not fit."""
    name = sparse.values.name or "sparse tensor"
    try:
        values = numpy_helper.to_array(sparse.values)
        indices = numpy_helper.to_array(sparse.indices)
        dims = tuple(int(d) for d in sparse.dims)
        check_tensor_size(name, dims, values.dtype, where="sparse tensor")
        dense = np.zeros(int(np.prod(dims, dtype=np.int64)), dtype=values.dtype)
        if indices.ndim == 2:
            flat = np.ravel_multi_index(tuple(indices.T), dims)
        else:
            flat = indices
        dense[flat] = values
        return dense.reshape(dims)
    except DcoptError:
        raise
    except Exception as exc:  # indices out of range, values/indices of different lengths...
        raise ModelLoadError(f"sparse tensor '{name}' cannot be read: {type(exc).__name__}: {exc}") from None


class _Importer:
    """Walks a model's graphs into dcopt Graphs. ``weights``: the full model whose top-level
    initializers ``model`` (a shape-inferred :func:`~dcopt.frontends.validate.skeleton`) lists
    as typed inputs instead: those become parameters with the full model's data."""

    def __init__(self, model: onnx.ModelProto, file: str | None, weights: onnx.ModelProto | None = None,
                 base_dir: Path | None = None):
        self.model = model
        self.file = file
        self.base_dir = base_dir
        self.maps = None if base_dir is None else FileMaps(base_dir)
        self.opset = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
        self.moved = {} if weights is None else {t.name: t for t in weights.graph.initializer}

    def array(self, tensor: onnx.TensorProto) -> np.ndarray:
        """A tensor's value; one whose data lives in a file (external data, or a weight
        :func:`~dcopt.frontends.onnx_load.load_onnx` left in the model file) is mapped, not read."""
        if self.maps is not None and external_data_helper.uses_external_data(tensor):
            mapped = tensor_array(self.maps, tensor)
            if mapped is not None:
                return mapped
            tensor = copy.deepcopy(tensor)  # an element type numpy cannot view: read it
            external_data_helper.load_external_data_for_tensor(tensor, str(self.base_dir))
        return numpy_helper.to_array(tensor)

    def graph(self, gp: onnx.GraphProto, value_types: dict[str, TensorType], top: bool) -> Graph:
        g = Graph(gp.name or "graph", self.opset)
        g.doc = gp.doc_string
        init_names = set()
        moved = [self.moved[vi.name] for vi in gp.input if vi.name in self.moved] if top else []
        for init in list(gp.initializer) + moved:
            if init.name in init_names:
                continue
            try:
                data = self.array(init)
            except Exception as exc:
                raise ModelLoadError(f"initializer '{init.name}' cannot be read: {exc}", file=self.file) from None
            g.add_parameter(init.name, data)
            init_names.add(init.name)
        for sp in gp.sparse_initializer:
            try:
                g.add_parameter(sp.values.name, _sparse_to_dense(sp))
            except DcoptError as exc:
                raise exc.at(file=self.file)
            init_names.add(sp.values.name)
        for vi in gp.input:
            if vi.name in init_names:
                continue  # IR v3 style: initializer also listed as an input -> a parameter
            g.add_input(vi.name, _tensor_type(vi.type, f"input '{vi.name}'", self.file))
        for vi in list(gp.value_info) + list(gp.output):
            if vi.name not in g.containers and vi.type.WhichOneof("value"):
                value_types[vi.name] = _tensor_type(vi.type, f"value '{vi.name}'", self.file)
        for i, np_ in enumerate(gp.node):
            label = np_.name or f"{np_.op_type}_{i}"
            try:
                attrs = {a.name: _attr_value(a, lambda sub: self.graph(sub, dict(value_types), False)) for a in np_.attribute}
            except DcoptError as exc:
                raise exc.at(file=self.file, node=label, op=np_.op_type)
            except Exception as exc:  # a tensor attribute whose data does not match its dims...
                raise ModelLoadError(f"an attribute cannot be read: {type(exc).__name__}: {exc}", file=self.file,
                                     node=label, op=np_.op_type) from None
            domain = "" if np_.domain == "ai.onnx" else np_.domain
            g.add_node(Node(np_.op_type, tuple(np_.input), tuple(np_.output), attrs, np_.name or label, domain))
        for node in g.nodes:
            for out in node.outputs:
                if out and out not in g.containers:
                    g.add_container(out, value_types.get(out) or TensorType("float32", None))
        for vi in gp.output:
            g.outputs.append(vi.name)
            if vi.name not in g.containers:  # an output that is directly an input/initializer elsewhere
                g.add_container(vi.name, _tensor_type(vi.type, f"output '{vi.name}'", self.file))
            elif vi.type.WhichOneof("value") and vi.name not in g.inputs and g.containers[vi.name].data is None:
                g.containers[vi.name].type = _tensor_type(vi.type, f"output '{vi.name}'", self.file)
        # Names used but defined nowhere here come from an outer scope (subgraphs) or are dangling.
        if top:
            for node in g.nodes:
                for name in node.present_inputs:
                    if name not in g.containers:
                        raise ModelLoadError(f"input '{name}' is not produced by any node, initializer or graph input",
                                             file=self.file, node=node.label, op=node.op)
        return g


def infer_shapes(model: onnx.ModelProto, file: str | None = None, opsets: dict[str, int] | None = None
                 ) -> onnx.ModelProto:
    """Run ONNX shape inference with data propagation.

    Strict mode first. If it refuses because the model is wrong (an impossible Reshape, an axis out
    of range, an output typed against its op: :func:`validate.inference_error`, when ``opsets`` --
    the validated model's -- are given), a ModelLoadError names the node. If it refuses because
    onnx's inference has a gap (function ops whose bodies it cannot type), lenient mode types what
    it can; a model whose shapes are really inconsistent then fails at run time naming the node.
    """
    try:
        return shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        if opsets is not None:
            from dcopt.frontends.validate import inference_error

            error = inference_error(exc, model, opsets, file)
            if error is not None:
                raise error from None
        try:
            return shape_inference.infer_shapes(model, data_prop=True)
        except Exception as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.warn(f"ONNX shape inference failed ({message}); transient shapes are unknown", stacklevel=2)
            return model


def upgrade_opset(model: onnx.ModelProto, version: int, file: str | None) -> onnx.ModelProto:
    """Convert a model older than MIN_OPSET with onnx's version converter."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, version)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedError(f"opset {model_opset(model)} is older than the oldest supported ({MIN_OPSET}) and "
                               f"onnx's version converter could not upgrade it: {message}", file=file,
                               opset=model_opset(model)) from None


def model_opset(model: onnx.ModelProto) -> int | None:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return None


def import_model(model: onnx.ModelProto | str | os.PathLike, file: str | None = None, *,
                 shape_inference: bool = True, validate: bool = True, check_memory: bool = True,
                 base_dir: str | os.PathLike | None = None) -> Graph:
    """Convert an ONNX model (proto or path) into a dcopt :class:`Graph`.

    A path is read with its weights left in the file (``load_onnx(mapped=True)``): the graph's
    parameters are read-only maps of the file. ``base_dir``: the folder a proto's external data
    lives in, mapped the same way (else external data must already be loaded into the proto).

    ``validate``: refuse invalid or unsupported models first (:mod:`dcopt.frontends.validate`);
    ``check_memory=False`` skips the memory cap on static sizes (the int64 limits always hold), for
    commands that only describe a model."""
    if not isinstance(model, onnx.ModelProto):
        if not isinstance(model, (str, os.PathLike)):
            raise ArgumentError(f"expected a path or an onnx.ModelProto, got {type(model).__name__}",
                                argument="model")
        file, base_dir = str(model), Path(model).parent
        model = load_onnx(model, mapped=True)
    opsets = None
    if validate:
        from dcopt.frontends.validate import run_checker, validate_model

        opsets = validate_model(model, file, check_memory=check_memory, checker=False)
    default = model_opset(model)
    if default is None and any(n.domain in ("", "ai.onnx") for n in model.graph.node):
        raise ModelLoadError("model declares no default-domain opset import", file=file)
    if default is not None and default < MIN_OPSET:
        model = upgrade_opset(model, MIN_OPSET, file)
        opsets = None if opsets is None else {**opsets, "": model_opset(model)}
    if validate:
        run_checker(model, file)
    if model.functions:
        try:
            model = onnx.inliner.inline_local_functions(model)
        except Exception as exc:
            raise UnsupportedError(f"could not inline model-local functions: {exc}", file=file) from None
    weights = None
    if shape_inference:  # on the skeleton: the weights are not copied through onnx's C++ again
        from dcopt.frontends.validate import skeleton

        weights, model = model, infer_shapes(skeleton(model, placeholder_shapes=False), file, opsets)
        if validate:
            from dcopt.frontends.validate import check_inference, check_reshapes

            check_inference(model, file, check_memory)
            check_reshapes(model, opsets, file)
    importer = _Importer(model, file, weights, None if base_dir is None else Path(base_dir))
    graph = importer.graph(model.graph, {}, top=True)
    for prop in model.metadata_props:
        graph.metadata[prop.key] = prop.value
    from dcopt.ir.verify import verify

    verify(graph, file=file)
    return graph
