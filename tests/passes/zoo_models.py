"""Light-zoo CNNs with random weights *and* transient shapes, for the level 3/4 pass tests.

``dcopt.testing.with_random_weights`` turns ConstantOfShape weights into initializers, but the
light-zoo files are IR version 3, where ONNX shape inference only trusts initializers that are
also declared graph inputs -- so every transient came back with an unknown shape and no byte
could be counted. Declaring the new initializers as inputs (what IR 3 expects) fixes that; the
importer still makes them parameters.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from onnx import helper

from dcopt.frontends.onnx_import import import_model
from dcopt.ir.graph import Graph
from dcopt.passes import build_pipeline
from dcopt.testing import light_zoo_path, with_random_weights

CNNS = ("resnet50", "squeezenet", "inception_v1", "densenet121")


@functools.lru_cache(maxsize=None)
def _model(name: str) -> bytes:
    path = light_zoo_path(name)
    if not path.exists():
        pytest.skip(f"light-zoo model {name} is not installed with this onnx")
    model = with_random_weights(onnx.load(path), seed=0)
    if model.ir_version < 4:
        declared = {i.name for i in model.graph.input}
        model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                                 for t in model.graph.initializer if t.name not in declared)
    return model.SerializeToString()


def load_model(name: str) -> onnx.ModelProto:
    return onnx.ModelProto.FromString(_model(name))


def canonical_graph(name: str) -> Graph:
    """The model imported and canonicalized (weights are parameters, shapes known)."""
    graph = import_model(load_model(name))
    build_pipeline("canonicalize")(graph)
    return graph


def image_feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal([d if isinstance(d, int) else 1 for d in graph.type_of(n).shape])
            .astype(np.float32) for n in graph.inputs}


def transformer_block(seq: int = 128, dim: int = 256, n_heads: int = 4) -> onnx.ModelProto:
    """A BERT-style encoder layer as exporters write it: attention with Softmax, residual Adds,
    layer norms decomposed into ReduceMean/Sub/Pow/Sqrt/Div/Mul/Add, a GELU from Erf."""
    from tests.conftest import make_model

    rng = np.random.default_rng(0)
    nodes, inits = [], {}

    def node(op, inputs, out, **attrs):
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def const(name, value):
        inits[name] = np.asarray(value, np.float32 if isinstance(value, float) else None)
        return name

    def weight(name, *shape):
        return const(name, (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32))

    def linear(x, name, d_in, d_out):
        mm = node("MatMul", [x, weight(f"{name}.w", d_in, d_out)], f"{name}.mm")
        return node("Add", [mm, weight(f"{name}.b", d_out)], name)

    def layer_norm(x, name):
        d = node("Sub", [x, node("ReduceMean", [x], f"{name}.mean", axes=[-1])], f"{name}.d")
        var = node("ReduceMean", [node("Pow", [d, const("two", 2.0)], f"{name}.sq")], f"{name}.var", axes=[-1])
        sd = node("Sqrt", [node("Add", [var, const("eps", 1e-5)], f"{name}.ve")], f"{name}.sd")
        n = node("Div", [d, sd], f"{name}.n")
        return node("Add", [node("Mul", [n, weight(f"{name}.g", dim)], f"{name}.s"), weight(f"{name}.b", dim)], name)

    def heads(x, name):
        r = node("Reshape", [x, const("split_heads", np.array([1, seq, n_heads, dim // n_heads]))], f"{name}.r")
        return node("Transpose", [r], f"{name}.t", perm=[0, 2, 1, 3])

    q, k, v = (heads(linear("x", name, dim, dim), f"{name}h") for name in "qkv")
    scores = node("MatMul", [q, node("Transpose", [k], "kt", perm=[0, 1, 3, 2])], "qk")
    masked = node("Add", [node("Div", [scores, const("scale", 8.0)], "qks"), weight("mask", 1, 1, 1, seq)], "qkm")
    attn = node("MatMul", [node("Softmax", [masked], "p", axis=-1), v], "pv")
    ctx = node("Reshape", [node("Transpose", [attn], "pvt", perm=[0, 2, 1, 3]), const("merge", np.array([1, seq, dim]))],
               "ctx")
    h1 = layer_norm(node("Add", [linear(ctx, "o", dim, dim), "x"], "res1"), "ln1")
    f = linear(h1, "f1", dim, 4 * dim)
    erf = node("Erf", [node("Div", [f, const("sqrt2", 1.4142135)], "gd")], "ge")
    gelu = node("Mul", [node("Mul", [f, node("Add", [erf, const("one", 1.0)], "ga")], "gm"), const("half", 0.5)],
                "gelu")
    layer_norm(node("Add", [linear(gelu, "f2", 4 * dim, dim), h1], "res2"), "y")
    return make_model(nodes, [("x", onnx.TensorProto.FLOAT, [1, seq, dim])],
                      [("y", onnx.TensorProto.FLOAT, [1, seq, dim])], inits)
