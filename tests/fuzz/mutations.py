"""Structure-aware mutations of ONNX models: what a corrupt, hostile or careless producer writes.

Random bytes mostly exercise protobuf's parser; these reach the validation and the importer
behind it: dims anywhere in int64 (and beyond what numpy allocates), undefined and unknown element
types, opsets of any version and domain, ops and domains that do not exist, attributes of every
type with hostile values, initializers whose data disagrees with their dims, external data that
points anywhere, duplicated and dangling names, reordered and deleted nodes.
"""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper

INT64_EDGES = [0, 1, -1, 2, 3, 7, 2**20, 2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63 - 1, -(2**63), -(2**31)]
dims = st.one_of(st.sampled_from(INT64_EDGES), st.integers(-(2**63), 2**63 - 1), st.integers(0, 8))
names = st.one_of(st.sampled_from(["x", "y", "w", "b", "h", "s", "r", "", "nowhere", "x/../y", "a\x00b"]),
                  st.text(max_size=8))
OPS = ["Relu", "Add", "MatMul", "Reshape", "Softmax", "Conv", "If", "Loop", "Constant", "ConstantOfShape", "Gelu",
       "Gather", "Concat", "Transpose", "Expand", "Tile", "Range", "Resize", "Attention", "FusedGroup", "Map",
       "LibraryCall", "FooBar", "", "Double"]
DOMAINS = ["", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview", "ai.onnx.preview.training", "dcopt", "dcopt.loop",
           "dcopt.fused", "com.foo", "my.fns", "com.microsoft"]
ELEM_TYPES = st.one_of(st.sampled_from(list(TensorProto.DataType.values())), st.integers(-3, 60))


def _value_infos(model: onnx.ModelProto):
    g = model.graph
    return list(g.input) + list(g.output) + list(g.value_info)


def _tensors(model: onnx.ModelProto):
    out = list(model.graph.initializer)
    for node in model.graph.node:
        out += [a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR]
    return out


def set_dim(model, draw):
    infos = [vi for vi in _value_infos(model) if vi.type.HasField("tensor_type")]
    if not infos:
        return
    vi = draw(st.sampled_from(infos))
    shape = vi.type.tensor_type.shape
    if not shape.dim or draw(st.booleans()):
        shape.dim.add()
    d = shape.dim[draw(st.integers(0, len(shape.dim) - 1))]
    choice = draw(st.integers(0, 3))
    if choice == 0:
        d.dim_value = draw(dims)
    elif choice == 1:
        d.dim_param = draw(st.sampled_from(["N", "", "unk__0", "N+1", "M"]))
    elif choice == 2:
        d.Clear()
    else:
        vi.type.tensor_type.ClearField("shape")


def set_elem_type(model, draw):
    infos = [vi for vi in _value_infos(model) if vi.type.HasField("tensor_type")]
    tensors = _tensors(model)
    if infos and draw(st.booleans()):
        draw(st.sampled_from(infos)).type.tensor_type.elem_type = draw(ELEM_TYPES)
    elif tensors:
        draw(st.sampled_from(tensors)).data_type = draw(ELEM_TYPES)


def set_opset(model, draw):
    if model.opset_import and draw(st.booleans()):
        entry = draw(st.sampled_from(list(model.opset_import)))
    else:
        entry = model.opset_import.add()
        entry.domain = draw(st.sampled_from(DOMAINS))
    entry.version = draw(st.one_of(st.integers(-3, 40), st.sampled_from([99, 2**31, 2**62])))


def set_ir_version(model, draw):
    model.ir_version = draw(st.one_of(st.integers(-1, 14), st.sampled_from([99, 2**62])))


def change_node(model, draw):
    if not model.graph.node:
        return
    node = draw(st.sampled_from(list(model.graph.node)))
    what = draw(st.integers(0, 4))
    if what == 0:
        node.op_type = draw(st.one_of(st.sampled_from(OPS), st.text(max_size=6)))
    elif what == 1:
        node.domain = draw(st.one_of(st.sampled_from(DOMAINS), st.text(max_size=6)))
    elif what == 2:
        node.input.append(draw(names)) if draw(st.booleans()) or not node.input else node.input.pop()
    elif what == 3:
        node.output.append(draw(names)) if draw(st.booleans()) or not node.output else node.output.pop()
    else:
        node.name = draw(names)


def set_attribute(model, draw):
    if not model.graph.node:
        return
    node = draw(st.sampled_from(list(model.graph.node)))
    name = draw(st.sampled_from(["axis", "perm", "pads", "kernel_shape", "strides", "value", "to", "mode", "bogus",
                                 "allowzero", "then_branch", "scales", "axes", "alpha"]))
    kind = draw(st.integers(0, 6))
    if kind == 0:
        value = draw(st.sampled_from(INT64_EDGES))
    elif kind == 1:
        value = draw(st.floats(allow_nan=True, allow_infinity=True, width=32))
    elif kind == 2:
        value = draw(st.lists(st.sampled_from(INT64_EDGES), max_size=6))
    elif kind == 3:
        value = draw(st.text(max_size=6)).encode("utf-8", "surrogatepass")
    elif kind == 4:
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        value = helper.make_tensor("t", TensorProto.INT64, shape, [1] * int(np.prod(shape, dtype=np.int64)))
    elif kind == 5:
        value = helper.make_graph([], "g", [], [])
    else:
        for attr in list(node.attribute):
            if draw(st.booleans()):
                node.attribute.remove(attr)
        return
    for attr in list(node.attribute):
        if attr.name == name:
            node.attribute.remove(attr)
    try:
        node.attribute.append(helper.make_attribute(name, value))
    except (ValueError, TypeError):  # a list helper cannot type (empty): leave the node as it is
        pass


def corrupt_tensor(model, draw):
    tensors = _tensors(model)
    if not tensors:
        return
    t = draw(st.sampled_from(tensors))
    what = draw(st.integers(0, 4))
    if what == 0:
        t.dims[:] = draw(st.lists(dims, max_size=4))
    elif what == 1 and t.HasField("raw_data"):
        raw = t.raw_data
        t.raw_data = raw[: draw(st.integers(0, len(raw)))] + draw(st.binary(max_size=8))
    elif what == 2:
        t.ClearField("raw_data")
        t.float_data[:] = draw(st.lists(st.floats(width=32), max_size=8))
    elif what == 3:
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for key in draw(st.lists(st.sampled_from(["location", "offset", "length", "checksum", "bogus"]), max_size=4)):
            entry = t.external_data.add()
            entry.key = key
            entry.value = draw(st.one_of(st.sampled_from(["w.bin", "../w.bin", "/etc/passwd", "-8", "abc", "1e3",
                                                          "99999999999999999999999", "", "0"]), st.text(max_size=6)))
    else:
        t.name = draw(names)


def duplicate_or_drop(model, draw):
    g = model.graph
    fields = [f for f in (g.input, g.output, g.node, g.initializer, g.value_info) if len(f)]
    if not fields:
        return
    field = draw(st.sampled_from(fields))
    item = field[draw(st.integers(0, len(field) - 1))]
    if draw(st.booleans()):
        field.add().CopyFrom(item)
    else:
        field.remove(item)


def reorder_nodes(model, draw):
    nodes = list(model.graph.node)
    order = draw(st.permutations(range(len(nodes))))
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)


MUTATIONS = [set_dim, set_elem_type, set_opset, set_ir_version, change_node, set_attribute, corrupt_tensor,
             duplicate_or_drop, reorder_nodes]


@st.composite
def mutated_models(draw, seeds: list[onnx.ModelProto], max_mutations: int = 4) -> onnx.ModelProto:
    """A copy of one seed with 1..``max_mutations`` mutations applied."""
    model = onnx.ModelProto()
    model.CopyFrom(draw(st.sampled_from(seeds)))
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=max_mutations)):
        mutation(model, draw)
    return model


@st.composite
def damaged_bytes(draw, seeds: list[onnx.ModelProto]) -> bytes:
    """A serialized seed truncated, with bytes flipped, inserted or deleted -- or plain random bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=256))
    data = bytearray(draw(st.sampled_from(seeds)).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 3))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == 0 and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2 and data:
            del data[at:at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.sampled_from([0, 1, -1, 2**31, 2**63, -(2**63), 1e308]),
                        st.text(max_size=8), st.lists(st.integers(-2, 4), max_size=3),
                        st.dictionaries(st.text(max_size=4), st.integers(-1, 3), max_size=2))


def _paths(doc, prefix=()):
    """Every (path to a value) in a JSON document."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


@st.composite
def json_edit(draw, doc):
    """``doc`` with one value replaced, one key deleted, or one key added."""
    paths = [p for p in _paths(doc) if p]
    if not paths:
        return draw(JSON_VALUES)
    path = draw(st.sampled_from(paths))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    action = draw(st.integers(0, 2))
    if action == 0:
        parent[path[-1]] = draw(JSON_VALUES)
    elif action == 1:
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=5))] = draw(JSON_VALUES)
    return doc
