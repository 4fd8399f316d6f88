"""Transformer graphs for the recognition tests: one block hand-built with onnx.helper in the
shape exporters write (so the rules are tested on a realistic graph without torch), and BERT /
GPT-2 encoders exported from transformers configs with random weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from dcopt.frontends.onnx_import import import_model
from dcopt.ir.graph import Graph
from tests.conftest import make_model

HIDDEN, HEADS, SEQ = 64, 4, 16


class _Builder:
    """Collects nodes and initializers; each method returns the name of the value it adds."""

    def __init__(self, opset: int, seed: int = 0):
        self.opset, self.nodes, self.inits = opset, [], {}
        self.rng = np.random.default_rng(seed)

    def const(self, name: str, value) -> str:
        self.inits[name] = np.asarray(value, dtype=np.int64 if isinstance(value, list) else np.float32)
        return name

    def weight(self, name: str, shape, scale=None) -> str:
        scale = 1 / math.sqrt(shape[0]) if scale is None else scale
        return self.const(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def op(self, op: str, *inputs: str, name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name

    def reduce_mean(self, x: str, name: str) -> str:
        if self.opset >= 18:
            return self.op("ReduceMean", x, self.const(f"{name}_axes", [-1]), name=name)
        return self.op("ReduceMean", x, name=name, axes=[-1])

    def layer_norm(self, x: str, p: str, reciprocal: bool) -> str:
        mean = self.reduce_mean(x, f"{p}_mean")
        d = self.op("Sub", x, mean, name=f"{p}_d")
        if reciprocal:
            sq = self.op("Mul", d, d, name=f"{p}_sq")
        else:
            sq = self.op("Pow", d, self.const(f"{p}_two", 2.0), name=f"{p}_sq")
        var = self.reduce_mean(sq, f"{p}_var")
        std = self.op("Sqrt", self.op("Add", var, self.const(f"{p}_eps", 1e-5), name=f"{p}_ve"), name=f"{p}_std")
        if reciprocal:
            n = self.op("Mul", d, self.op("Reciprocal", std, name=f"{p}_inv"), name=f"{p}_n")
        else:
            n = self.op("Div", d, std, name=f"{p}_n")
        gamma = self.const(f"{p}_g", self.rng.uniform(0.5, 1.5, HIDDEN))
        return self.op("Add", self.op("Mul", n, gamma, name=f"{p}_gn"), self.weight(f"{p}_b", [HIDDEN], 0.1),
                       name=f"{p}_out")

    def linear(self, x: str, p: str, n_in: int, n_out: int) -> str:
        y = self.op("MatMul", x, self.weight(f"{p}_w", [n_in, n_out]), name=f"{p}_mm")
        return self.op("Add", y, self.weight(f"{p}_bias", [n_out], 0.1), name=f"{p}_out")

    def heads(self, x: str, p: str, perm) -> str:
        shape = self.const(f"{p}_split", [0, 0, HEADS, HIDDEN // HEADS])
        return self.op("Transpose", self.op("Reshape", x, shape, name=f"{p}_rs"), name=f"{p}_t", perm=perm)


def transformer_block(opset: int = 17) -> Graph:
    """One pre-LN encoder block with the decomposed ops exporters write: two layer norms (Pow/Div
    and Mul/Reciprocal spellings), attention with K^T from a (0, 2, 3, 1) transpose, a scale
    division and an additive mask, and an erf Gelu in torch's factor order."""
    b = _Builder(opset)
    h = b.layer_norm("x", "ln1", reciprocal=False)
    q = b.heads(b.linear(h, "q", HIDDEN, HIDDEN), "q", (0, 2, 1, 3))
    kt = b.heads(b.linear(h, "k", HIDDEN, HIDDEN), "k", (0, 2, 3, 1))
    v = b.heads(b.linear(h, "v", HIDDEN, HIDDEN), "v", (0, 2, 1, 3))
    scores = b.op("Div", b.op("MatMul", q, kt, name="qk"), b.const("sqrt_d", 4.0), name="scaled")
    probs = b.op("Softmax", b.op("Add", scores, "mask", name="masked"), name="probs", axis=-1)
    ctx = b.op("Transpose", b.op("MatMul", probs, v, name="ctx"), name="ctx_t", perm=(0, 2, 1, 3))
    ctx = b.op("Reshape", ctx, b.const("merge", [0, 0, HIDDEN]), name="ctx_rs")
    r1 = b.op("Add", "x", b.linear(ctx, "o", HIDDEN, HIDDEN), name="res1")
    f = b.linear(b.layer_norm(r1, "ln2", reciprocal=True), "fc1", HIDDEN, 4 * HIDDEN)
    erf = b.op("Erf", b.op("Div", f, b.const("sqrt2", math.sqrt(2)), name="gelu_div"), name="gelu_erf")
    gelu = b.op("Mul", b.op("Mul", f, b.op("Add", erf, b.const("one", 1.0), name="gelu_add"), name="gelu_m1"),
                b.const("half", 0.5), name="gelu")
    b.op("Add", r1, b.linear(gelu, "fc2", 4 * HIDDEN, HIDDEN), name="y")
    f32 = TensorProto.FLOAT
    model = make_model(b.nodes, [("x", f32, ["B", SEQ, HIDDEN]), ("mask", f32, ["B", 1, 1, SEQ])],
                       [("y", f32, ["B", SEQ, HIDDEN])], b.inits, opset=opset)
    return import_model(model)


def export_hf_model(kind: str, opset: int, directory: Path, attention: str = "eager") -> Path:
    """A 2-layer, hidden-64, 4-head model (see dcopt.testing.export_transformer) at ``opset``."""
    from dcopt.testing import export_transformer

    return export_transformer(kind, directory / f"{kind}_{attention}_{opset}.onnx", hidden=HIDDEN, heads=HEADS,
                              seq=SEQ, opset=opset, attention=attention)


def hf_feeds(kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    from dcopt.testing import transformer_feeds

    return transformer_feeds(kind, SEQ, seed)
