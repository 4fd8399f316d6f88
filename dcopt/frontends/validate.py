"""Model validation at the ONNX frontend: a model dcopt cannot trust is refused with the element
at fault named, before anything reads it further.

Every command loads models through :func:`dcopt.frontends.onnx_import.import_model`, which runs
:func:`validate_model` first and :func:`check_inference` on the shapes onnx infers. Checks:

* **Opsets**: every imported domain at a version dcopt knows (``opset 99`` names the domain and the
  highest supported); a domain imported twice; a node whose domain is not imported.
* **Ops**: every node's op exists in its domain at the model's opset (onnx's schemas, or dcopt's own
  ops for dcopt's domains, or a model-local function); an unknown domain is named as such
  (``op Relu of domain 'com.foo' (opset 1) is not supported``), not blamed on the op. All offenders
  are listed at once.
* **Types and sizes**: graph inputs, outputs and initializers have a defined element type; no
  output name is listed twice; every dim non-negative and every tensor within int64 and, unless
  ``check_memory=False`` (``dcopt inspect``, which only describes), the memory cap of
  :mod:`dcopt.limits`; initializer data the size its dims say.
* **onnx.checker**: the full structural check (attributes against the op schemas, SSA,
  topological order...) on a *skeleton* of the model -- large initializers become typed inputs, so
  checking costs no copy of the weights -- and strict shape inference (:func:`check_inference`),
  whose errors name the node (an impossible Reshape, an axis out of range, a mistyped output).
"""

from __future__ import annotations

import functools
import re

import onnx
import onnx.defs
from onnx import checker, helper

from dcopt.errors import ModelLoadError, UnsupportedError
from dcopt.limits import INT64_MAX, SizeLimitError, check_tensor_size, max_tensor_bytes

#: Initializers with more bytes than this are replaced by typed graph inputs in the skeleton the
#: checker sees (small ones -- shapes, axes -- stay: shape inference reads their values).
SKELETON_INLINE_BYTES = 4096


def _norm(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _domain_label(domain: str) -> str:
    return domain or "ai.onnx"


@functools.lru_cache(maxsize=None)
def onnx_domain_versions() -> dict[str, int]:
    """Highest opset of each domain the installed onnx defines ('' is ai.onnx)."""
    highest: dict[str, int] = {"": onnx.defs.onnx_opset_version()}
    for schema in onnx.defs.get_all_schemas_with_history():
        domain = _norm(schema.domain)
        if domain:
            highest[domain] = max(highest.get(domain, 1), schema.since_version)
    return highest


def dcopt_domains() -> frozenset[str]:
    """Domains of dcopt's own ops (fused groups, loop-level nodes, layout variants, ops users
    register later): version 1. Not cached: the registry can grow."""
    from dcopt.frontends.onnx_export import FUNCTION_DOMAIN
    from dcopt.ops import registry

    ops = {d for d, _ in registry.registered_ops() if d and d not in onnx_domain_versions()}
    return frozenset(ops | {FUNCTION_DOMAIN})


def known_versions() -> dict[str, int]:
    return {**{d: 1 for d in dcopt_domains()}, **onnx_domain_versions()}


# -- text --------------------------------------------------------------------------------------
def _all_graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_graphs(sub)


def _texts(model: onnx.ModelProto):
    """(what, value) of every name the importer reads as text."""
    for entry in model.opset_import:
        yield "opset domain", entry.domain
    for prop in model.metadata_props:
        yield "metadata key", prop.key
        yield f"metadata value of '{prop.key}'", prop.value
    for fn in model.functions:
        yield "function name", fn.name
        yield "function domain", fn.domain
    for g in _all_graphs(model.graph):
        yield "graph name", g.name
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            yield "value name", vi.name
            if vi.type.WhichOneof("value") == "tensor_type":
                for d in vi.type.tensor_type.shape.dim:
                    yield f"dim of '{vi.name}'", d.dim_param
        for t in g.initializer:
            yield "initializer name", t.name
        for node in g.node:
            for what in ("name", "op_type", "domain"):
                yield f"node {what}", getattr(node, what)
            for name in list(node.input) + list(node.output):
                yield f"input/output of node '{node.name}'", name
            for attr in node.attribute:
                yield f"attribute name of node '{node.name}'", attr.name


def check_text(model: onnx.ModelProto, file: str | None) -> None:
    """ONNX names are UTF-8 text; protobuf hands a name that is not as bytes, which nothing
    downstream expects. Refuse it naming the field."""
    for what, value in _texts(model):
        if isinstance(value, bytes):
            raise ModelLoadError(f"{what} {value[:40]!r} is not valid UTF-8 text", file=file)


# -- opsets and ops ----------------------------------------------------------------------------
def _model_opsets(model: onnx.ModelProto, file: str | None) -> dict[str, int]:
    """{domain: version} of the model's opset imports; UnsupportedError for versions dcopt does not
    know, ModelLoadError for a domain imported twice or a version below 1."""
    known = known_versions()
    opsets: dict[str, int] = {}
    for entry in model.opset_import:
        domain = _norm(entry.domain)
        if domain in opsets:
            raise ModelLoadError(f"domain '{_domain_label(domain)}' is imported twice (opsets {opsets[domain]} and "
                                 f"{entry.version})", file=file)
        if entry.version < 1:
            raise ModelLoadError(f"domain '{_domain_label(domain)}' is imported at opset {entry.version}; "
                                 "opset versions start at 1", file=file)
        highest = known.get(domain)
        if highest is not None and entry.version > highest:
            raise UnsupportedError(f"domain '{_domain_label(domain)}' at opset {entry.version} is newer than dcopt "
                                   f"supports (highest: {highest})", file=file, opset=entry.version)
        opsets[domain] = entry.version
    return opsets


def _all_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_nodes(sub)


def _label(node: onnx.NodeProto, index: int | None = None) -> str:
    return node.name or (f"{node.op_type}_{index}" if index is not None else node.op_type)


def _op_problem(node: onnx.NodeProto, opsets: dict[str, int], known: dict[str, int],
                functions: set[tuple[str, str]]) -> str | None:
    """Why ``node``'s op does not exist where the model says it is, or None."""
    domain = _norm(node.domain)
    label = _domain_label(domain)
    if (node.domain, node.op_type) in functions:
        return None
    version = opsets.get(domain)
    if version is None:
        return f"op {node.op_type} of domain '{label}': the model imports no opset for domain '{label}'"
    if domain not in known:
        return f"op {node.op_type} of domain '{label}' (opset {version}) is not supported: '{label}' is not a domain dcopt knows"
    if domain in onnx_domain_versions():
        try:
            exists_here, exists = onnx.defs.has(node.op_type, version, domain), onnx.defs.has(node.op_type, domain)
        except (TypeError, ValueError, UnicodeError):  # a name onnx cannot even look up (not UTF-8...)
            return f"op {node.op_type!r} is not an op of domain '{label}' (opset {version})"
        if exists_here:
            return None
        if exists:
            since = onnx.defs.get_schema(node.op_type, onnx.defs.onnx_opset_version() + 100, domain).since_version
            first = min(s.since_version for s in onnx.defs.get_all_schemas_with_history()
                        if s.name == node.op_type and _norm(s.domain) == domain)
            return (f"op {node.op_type} does not exist at opset {version} of domain '{label}' (it exists from opset "
                    f"{first}; latest version {since})")
        from dcopt.ops import registry

        if registry.lookup(node.op_type, domain) is not None:  # dcopt implements a preview op onnx lacks
            return None
        return f"op {node.op_type} is not an op of domain '{label}' (opset {version})"
    from dcopt.ops import registry

    if registry.lookup(node.op_type, domain) is None:
        return f"op {node.op_type} is not an op of dcopt's domain '{label}'"
    return None


def check_ops(model: onnx.ModelProto, opsets: dict[str, int], file: str | None) -> None:
    """Every node (subgraphs included) names an op that exists; one UnsupportedError lists all."""
    known = known_versions()
    functions = {(f.domain, f.name) for f in model.functions}
    offenders, names, first = [], [], None
    for i, node in enumerate(_all_nodes(model.graph)):
        problem = _op_problem(node, opsets, known, functions)
        if problem is not None:
            offenders.append(f"node '{_label(node, i)}': {problem}")
            names.append(f"{_domain_label(_norm(node.domain))}.{node.op_type}" if _norm(node.domain) else node.op_type)
            first = first or (_label(node, i), problem)
    if not offenders:
        return
    domains = ""
    if any("not a domain dcopt knows" in o for o in offenders):
        domains = f"; known domains: {', '.join(sorted(_domain_label(d) for d in known))}"
    if len(offenders) == 1:
        raise UnsupportedError(first[1] + domains, file=file, node=first[0])
    raise UnsupportedError(f"{len(offenders)} node(s) use op(s) dcopt does not know "
                           f"({', '.join(sorted(set(names)))}){domains}", offenders, file=file)


# -- types and sizes ---------------------------------------------------------------------------
def memory_limit(check_memory: bool) -> int:
    """The byte limit per tensor: the memory cap, or only int64 when ``check_memory`` is off."""
    return max_tensor_bytes() if check_memory else INT64_MAX


def _check_type(type_proto: onnx.TypeProto, what: str, name: str, file: str | None, limit: int) -> None:
    kind = type_proto.WhichOneof("value")
    if kind in ("sequence_type", "optional_type"):
        inner = type_proto.sequence_type.elem_type if kind == "sequence_type" else type_proto.optional_type.elem_type
        if inner.WhichOneof("value"):
            _check_type(inner, what, name, file, limit)
        return
    if kind != "tensor_type":
        return
    tt = type_proto.tensor_type
    if tt.elem_type == onnx.TensorProto.UNDEFINED:
        raise ModelLoadError(f"{what} '{name}' has element type UNDEFINED; give it a real type", file=file,
                             input=name if what == "input" else None)
    if tt.elem_type not in onnx.TensorProto.DataType.values():
        raise ModelLoadError(f"{what} '{name}' has an unknown element type {tt.elem_type}", file=file)
    if not tt.HasField("shape"):
        return
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    _check_size(name, shape, tt.elem_type, what, file, limit)


def _check_size(name, shape, elem_type, what, file, limit: int) -> None:
    try:
        dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    except Exception:  # a type numpy cannot hold: the dims are still checked
        dtype = "uint8"
    try:
        check_tensor_size(name, shape, dtype, where=what, limit=limit)
    except SizeLimitError as exc:
        raise exc.at(file=file)


def _element_count(tensor: onnx.TensorProto) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count


def check_initializer(tensor: onnx.TensorProto, file: str | None, limit: int) -> None:
    """Type defined, dims valid and within the limits, data as long as the dims say."""
    where = "initializer"
    if tensor.data_type == onnx.TensorProto.UNDEFINED:
        raise ModelLoadError(f"initializer '{tensor.name}' has element type UNDEFINED", file=file)
    _check_size(tensor.name, list(tensor.dims), tensor.data_type, where, file, limit)
    if tensor.data_location == onnx.TensorProto.EXTERNAL and not tensor.HasField("raw_data"):
        return  # not loaded (a proto given without its data folder): its reader checks it
    count = _element_count(tensor)
    if tensor.HasField("raw_data") and tensor.data_type != onnx.TensorProto.STRING:
        from dcopt.frontends.onnx_load import SUB_BYTE_BITS

        bits = SUB_BYTE_BITS.get(tensor.data_type)
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except Exception:
            return
        need = (count * bits + 7) // 8 if bits else count * itemsize
        if len(tensor.raw_data) != need:
            raise ModelLoadError(f"initializer '{tensor.name}' holds {len(tensor.raw_data)} bytes of data, but its dims "
                                 f"{list(tensor.dims)} need {need}", file=file)


def check_graph_io(graph: onnx.GraphProto, file: str | None, limit: int) -> None:
    """Element types defined, sizes valid, output names unique (the top graph)."""
    initializers = {t.name for t in graph.initializer}
    for vi in graph.input:
        if vi.name in initializers:
            continue
        _check_type(vi.type, "input", vi.name, file, limit)
    seen: set[str] = set()
    for vi in graph.output:
        if vi.name in seen:
            raise ModelLoadError(f"output '{vi.name}' is listed twice among the graph outputs", file=file)
        seen.add(vi.name)
        _check_type(vi.type, "output", vi.name, file, limit)
    for tensor in graph.initializer:
        check_initializer(tensor, file, limit)


# -- onnx.checker on a skeleton ----------------------------------------------------------------
def skeleton(model: onnx.ModelProto, placeholder_shapes: bool = True) -> onnx.ModelProto:
    """The model without its large weights (typed graph inputs instead): what onnx.checker and
    shape inference need, at a fraction of the copy (both serialize the model they are given;
    on BERT-base that was two more copies of 435 MB each). With ``placeholder_shapes``, unranked
    top-level inputs/outputs get a placeholder shape (the checker insists on shapes for them;
    dcopt accepts unranked ones); shape inference needs them as they are."""
    skel = onnx.ModelProto(ir_version=model.ir_version, producer_name=model.producer_name,
                           producer_version=model.producer_version, domain=model.domain,
                           model_version=model.model_version)
    skel.opset_import.extend(model.opset_import)
    skel.metadata_props.extend(model.metadata_props)
    skel.functions.extend(model.functions)
    src, dst = model.graph, skel.graph
    dst.name = src.name
    dst.doc_string = src.doc_string
    dst.node.extend(src.node)
    dst.input.extend(src.input)
    dst.output.extend(src.output)
    dst.value_info.extend(src.value_info)
    dst.sparse_initializer.extend(src.sparse_initializer)
    listed = {vi.name for vi in src.input}
    for tensor in src.initializer:
        if _element_count(tensor) <= SKELETON_INLINE_BYTES // 8:
            dst.initializer.add().CopyFrom(tensor)
        elif tensor.name not in listed:
            dst.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    if placeholder_shapes:
        for vi in list(dst.input) + list(dst.output):
            if vi.type.WhichOneof("value") == "tensor_type" and not vi.type.tensor_type.HasField("shape"):
                vi.type.tensor_type.shape.SetInParent()
    return skel


_NODE_CONTEXT = re.compile(r"name:\s*(\S*)\s+OpType:\s*(\S+)", re.IGNORECASE)


def run_checker(model: onnx.ModelProto, file: str | None) -> None:
    """onnx.checker (structure, attributes against schemas) on :func:`skeleton`; ModelLoadError
    with the node named from the checker's context line. Node order is left to dcopt's verifier,
    which names the nodes of a cycle (the checker stops at the first node out of order)."""
    try:
        checker.check_model(skeleton(model), full_check=False)
    except Exception as exc:  # ValidationError, or onnx refusing something odder
        text = " ".join(str(exc).split()) or type(exc).__name__
        if text.startswith("Nodes in a graph must be topologically sorted"):
            return
        match = _NODE_CONTEXT.search(text)
        where = {"node": match.group(1) or None, "op": match.group(2)} if match else {}
        detail = text.split("==> Context:")[0].strip()
        raise ModelLoadError(f"invalid ONNX model (onnx.checker): {detail}", file=file, **where) from None


# -- shape inference ---------------------------------------------------------------------------
_INFERENCE_ERROR = re.compile(r"\(op_type:([^,)]+)(?:, node name: ([^)]*))?\):\s*(.*)")


def inference_error(exc: Exception, model: onnx.ModelProto, opsets: dict[str, int],
                    file: str | None) -> ModelLoadError | None:
    """A strict shape-inference failure as a located ModelLoadError, or None when it is a gap in
    onnx's inference rather than a fault of the model: an error inside the expansion of an op that
    onnx defines as a function (e.g. MeanVarianceNormalization's body), or in a custom domain."""
    text = str(exc).strip()
    for line in text.splitlines():
        match = _INFERENCE_ERROR.search(line)
        if not match:
            continue
        op, node_name, detail = match.group(1).strip(), (match.group(2) or "").strip() or None, match.group(3)
        node = next((n for n in _all_nodes(model.graph) if n.op_type == op and (node_name is None or n.name == node_name)),
                    None)
        domain = _norm(node.domain) if node is not None else ""
        if domain not in onnx_domain_versions():
            return None
        try:
            schema = onnx.defs.get_schema(op, opsets.get(domain, 1), domain)
        except Exception:
            return None
        if (schema.has_function or schema.has_context_dependent_function) and "Inference error(s)" in detail:
            return None
        detail = re.sub(r"^\[\w+\]\s*", "", detail.strip())
        return ModelLoadError(f"invalid model (onnx shape inference): {detail}", file=file, node=node_name,
                              op=op, opset=opsets.get(domain))
    return None


def check_inference(inferred: onnx.ModelProto, file: str | None, check_memory: bool) -> None:
    """Sizes of the values shape inference made static (a ConstantOfShape of [2**20, 2**20]...):
    int64 always, the memory cap unless ``check_memory=False``; the producing node is named."""
    limit = memory_limit(check_memory)
    producer = {}
    for i, node in enumerate(inferred.graph.node):
        for out in node.output:
            producer[out] = (node, i)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.WhichOneof("value") != "tensor_type" or not vi.type.tensor_type.HasField("shape"):
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
        node, i = producer.get(vi.name, (None, None))
        try:
            _check_size(vi.name, shape, tt.elem_type, "value", file, limit)
        except SizeLimitError as exc:
            if node is not None:
                raise exc.at(node=_label(node, i), op=node.op_type)
            raise


def _static_shapes(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        tt = vi.type.tensor_type if vi.type.WhichOneof("value") == "tensor_type" else None
        if tt is not None and tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes.setdefault(vi.name, tuple(d.dim_value for d in tt.shape.dim))
    return shapes


def _constant_ints(graph: onnx.GraphProto, name: str) -> list[int] | None:
    """The values of a small constant int64 vector (initializer or Constant node), or None."""
    from onnx import numpy_helper

    tensor = None
    for t in graph.initializer:
        if t.name == name:
            tensor = t
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and list(node.output) == [name]:
            for attr in node.attribute:
                if attr.name == "value":
                    tensor = attr.t
                elif attr.name == "value_ints":
                    return list(attr.ints)
    if tensor is None or tensor.data_type != onnx.TensorProto.INT64 or len(tensor.dims) != 1 or tensor.dims[0] > 64:
        return None
    try:
        return [int(v) for v in numpy_helper.to_array(tensor)]
    except Exception:  # data that does not match its dims: the importer names that tensor
        return None


def reshape_problem(data_shape: tuple[int, ...], target: list[int], allowzero: bool) -> str | None:
    """Why ONNX Reshape cannot turn ``data_shape`` into ``target`` (0 copies a dim unless
    ``allowzero``, one -1 is inferred), or None."""
    if sum(1 for d in target if d == -1) > 1:
        return f"target shape {target} has more than one -1"
    if any(d < -1 for d in target):
        return f"target shape {target} has a negative dim other than -1"
    if allowzero and 0 in target and -1 in target:
        return f"target shape {target} has both 0 and -1 with allowzero=1"
    dims = []
    for axis, d in enumerate(target):
        if d == 0 and not allowzero:
            if axis >= len(data_shape):
                return f"target shape {target} copies dim {axis} (0), but the input has rank {len(data_shape)}"
            d = data_shape[axis]
        dims.append(d)
    total = 1
    for d in data_shape:
        total *= d
    known = 1
    for d in dims:
        if d != -1:
            known *= d
    if -1 in dims:
        if known == 0 or total % known:
            return f"cannot reshape {total} elements (shape {list(data_shape)}) into {target}"
    elif known != total:
        return f"cannot reshape {total} elements (shape {list(data_shape)}) into {target} ({known} elements)"
    return None


def check_reshapes(inferred: onnx.ModelProto, opsets: dict[str, int], file: str | None) -> None:
    """dcopt's own shape rule for what onnx's inference lets through: a Reshape whose input shape and
    target are both known must keep the element count."""
    graph = inferred.graph
    shapes = None
    for i, node in enumerate(graph.node):
        if node.op_type != "Reshape" or _norm(node.domain) or len(node.input) < 2:
            continue
        shapes = _static_shapes(graph) if shapes is None else shapes
        data_shape, target = shapes.get(node.input[0]), _constant_ints(graph, node.input[1])
        if data_shape is None or target is None:
            continue
        allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
        problem = reshape_problem(data_shape, target, allowzero)
        if problem:
            raise ModelLoadError(f"impossible Reshape: {problem}", file=file, node=_label(node, i), op="Reshape",
                                 opset=opsets.get(""))


# -- everything --------------------------------------------------------------------------------
def validate_model(model: onnx.ModelProto, file: str | None = None, *, check_memory: bool = True,
                   checker: bool = True) -> dict[str, int]:
    """Every check above but shape inference; returns the model's opsets ({domain: version}).
    ``checker=False`` leaves out onnx.checker (the importer runs it after upgrading a model older
    than dcopt's oldest opset, so that the upgrade's own error speaks first)."""
    check_text(model, file)
    opsets = _model_opsets(model, file)
    check_graph_io(model.graph, file, memory_limit(check_memory))
    check_ops(model, opsets, file)
    if checker:
        run_checker(model, file)
    return opsets
