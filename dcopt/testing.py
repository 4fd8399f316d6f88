"""Helpers for testing dcopt against onnxruntime on real models.

The ONNX light zoo ships model topologies whose weights are ``ConstantOfShape`` nodes (to keep
the files small). :func:`with_random_weights` turns every such node into an initializer holding
seeded random values scaled like a real initialization, so the networks produce non-trivial,
numerically well-behaved outputs that two runtimes can be compared on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_ZOO_NAMES = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                   "shufflenet", "squeezenet", "vgg19", "zfnet512")


def light_zoo_dir() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_zoo_path(name: str) -> Path:
    return light_zoo_dir() / f"light_{name}.onnx"


def _random_like(shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return np.zeros(shape, dtype)  # integer constants (shapes, indices) are not weights
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 2 else int(shape[0])
        return (rng.standard_normal(shape) * np.sqrt(1.0 / max(fan_in, 1))).astype(dtype)
    # 1-D: biases and BatchNorm statistics; positive so variances stay valid.
    return rng.uniform(0.5, 1.5, shape).astype(dtype)


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace every ConstantOfShape whose shape is an initializer by a random initializer."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    # IR v3 shape inference ignores initializers that are not graph inputs: the new weights are not.
    model.ir_version = max(model.ir_version, 4)
    rng = np.random.default_rng(seed)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    keep = []
    new_inits = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in inits:
            shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]))
            dtype = np.float32
            for attr in node.attribute:
                if attr.name == "value":
                    dtype = numpy_helper.to_array(attr.t).dtype
            new_inits.append(numpy_helper.from_array(_random_like(shape, dtype, rng), node.output[0]))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(new_inits)
    used = {i for n in keep for i in n.input}
    unused = [t for t in graph.initializer if t.name not in used and t.name not in {o.name for o in graph.output}]
    for t in unused:
        graph.initializer.remove(t)
    inputs_to_drop = [vi for vi in graph.input if vi.name in {t.name for t in unused}]
    for vi in inputs_to_drop:
        graph.input.remove(vi)
    return model


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for a model's true inputs (not initializers); symbolic dims -> 1."""
    from dcopt.frontends.onnx_import import import_model
    from dcopt.api import random_inputs

    return random_inputs(import_model(model, shape_inference=False), seed=seed)


def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int = 1) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def export_transformer(kind: str, path: str | Path, *, hidden: int = 64, layers: int = 2, heads: int = 4,
                       seq: int = 16, vocab: int = 100, opset: int = 17, attention: str = "eager",
                       seed: int = 0) -> Path:
    """Export a BERT-style encoder (``kind="bert"``) or GPT-2-style decoder (``"gpt2"``) built from a
    transformers config with random weights to ONNX, returning ``last_hidden_state`` only.

    Weights are random (1-D "weight" vectors in [0.5, 1.5], so no LayerNorm scale is all ones and no
    rewrite can hide behind a Mul by one). Inputs: ``input_ids`` (and ``attention_mask`` for BERT),
    shape [1, seq]. Needs torch and transformers.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    if kind == "bert":
        config = transformers.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                         intermediate_size=4 * hidden, vocab_size=vocab,
                                         max_position_embeddings=max(2 * seq, 32), attn_implementation=attention)
        model = transformers.BertModel(config)
    elif kind == "gpt2":
        config = transformers.GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, vocab_size=vocab,
                                         n_positions=max(2 * seq, 32), attn_implementation=attention,
                                         bos_token_id=0, eos_token_id=0)
        model = transformers.GPT2Model(config)
    else:
        raise ValueError(f"unknown transformer kind {kind!r} (bert or gpt2)")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "weight" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)

    class LastHidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args).last_hidden_state

    wrapper = LastHidden(model).eval()  # export restores the wrapper's training flag: keep it in eval
    ids = torch.randint(0, vocab, (1, seq))
    args, names = ((ids, torch.ones(1, seq, dtype=torch.long)), ["input_ids", "attention_mask"]) \
        if kind == "bert" else ((ids,), ["input_ids"])
    path = Path(path)
    torch.onnx.export(wrapper, args, str(path), opset_version=opset, dynamo=False, input_names=names,
                      output_names=["hidden"])
    return path


def transformer_feeds(kind: str, seq: int = 16, seed: int = 0, vocab: int = 100) -> dict[str, np.ndarray]:
    """Inputs for :func:`export_transformer` models (BERT gets a mask with some padding)."""
    rng = np.random.default_rng(seed)
    feeds = {"input_ids": rng.integers(0, vocab, (1, seq)).astype(np.int64)}
    if kind == "bert":
        mask = (rng.random((1, seq)) < 0.75).astype(np.int64)
        mask[:, 0] = 1
        feeds["attention_mask"] = mask
    return feeds


# -- the three ways every op runs ---------------------------------------------------------------

#: Inputs every elementwise-ish op is checked on besides random normals: large magnitudes, signed
#: zeros, NaN, infinities and subnormals (float32 edge values).
EDGE_VALUES_F32 = np.array([0.0, -0.0, 1.0, -1.0, 100.0, -100.0, 1e30, -1e30, 3.0e38, -3.0e38, np.nan, np.inf,
                            -np.inf, 1e-40, -1e-40, 1e-7, 88.5, -88.5, 89.0, -104.0], np.float32)


def assert_close(actual, expected, rtol: float, atol: float, what: str = "") -> None:
    """allclose with NaN == NaN, same shape and dtype, infinities equal; message names ``what``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if expected.dtype.kind in "fcV":
        np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=rtol, atol=atol,
                                   equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=what)


def run_three_ways(model, feeds, *, rtol: float = 1e-4, atol: float = 1e-6, cache_dir=None, pipeline="O3"):
    """Run ``model`` (ONNX ModelProto or dcopt Graph) on ``feeds`` three ways and check they agree:
    the reference executor on the imported graph (the definition), the reference executor on the
    lowered graph (every op expanded to maps and library calls, kernels formed: the IR the
    backend renders), and the compiled session (``dcopt.compile(...).run``). Returns
    ``(reference outputs, lowered outputs, compiled outputs, compiled manifest)``."""
    import dcopt
    from dcopt import driver
    from dcopt.frontends.onnx_import import import_model
    from dcopt.ir.executor import run_graph
    from dcopt.ir.graph import Graph

    graph = model if isinstance(model, Graph) else import_model(model)
    ref = run_graph(graph, feeds)
    lowered = driver.lower(graph, bindings={}, pipeline=pipeline, example_feeds=feeds).graph
    low = run_graph(lowered, feeds)
    sess = dcopt.compile(model, pipeline=pipeline, cache_dir=cache_dir, example_feeds=feeds)
    got = sess.run(None, feeds)
    for name, value in zip(graph.outputs, got):
        assert_close(low[name], ref[name], rtol, atol, f"{name} (lowered IR vs reference)")
        assert_close(value, ref[name], rtol, atol, f"{name} (compiled vs reference)")
    return ref, low, dict(zip(graph.outputs, got)), sess.manifest
