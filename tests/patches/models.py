"""Transformer models for the patch tests, made here so the patches meet models they were not
written for.

With torch and transformers installed, :func:`export_transformers` exports small random-weight
models from transformers configs with ``torch.onnx.export`` (the TorchScript exporter, opset 14,
which spells out LayerNorm and GELU in primitive ops):

* ``bert``: a 2-layer BERT encoder, eager attention (MatMul(Q, K^T) / sqrt(d), Softmax, MatMul V);
* ``bert_unfolded``: the same exported without constant folding, so every Linear's weight
  reaches its MatMul through a ``Transpose`` node;
* ``gpt2``: a 2-layer GPT-2 decoder, SDPA attention, tanh GELU, fused QKV ``Gemm`` + ``Split``;
* ``gpt2_lm_unfolded``: GPT-2 with its tied LM head, unfolded: ``MatMul(x, Transpose(wte))``.

Run as ``python -m tests.patches.models OUT_DIR`` (the test session does this in a subprocess so
torch never loads into the test process). :func:`build_transformer_block` hand-builds a block with
the same idioms (decomposed LayerNorm, erf or tanh GELU, head-reshaped attention) with onnx.helper;
the tests use it beside the exports, and alone where torch is missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEQ = 8
HIDDEN = 32
HEADS = 4


def export_transformers(out_dir: Path) -> dict[str, Path]:
    import warnings

    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, GPT2Model

    warnings.simplefilter("ignore")
    torch.manual_seed(0)

    class LastHidden(torch.nn.Module):
        def __init__(self, model, field):
            super().__init__()
            self.model, self.field = model, field

        def forward(self, ids):  # an explicit all-ones mask keeps transformers off untraceable paths
            out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            return getattr(out, self.field)

    def randomize(model):
        for name, p in model.named_parameters():
            is_norm_scale = name.endswith("weight") and p.dim() == 1
            p.data = (1.0 + 0.1 * torch.randn_like(p)) if is_norm_scale else 0.2 * torch.randn_like(p)
        return model.eval()

    bert_cfg = BertConfig(vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                          intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
    gpt_cfg = GPT2Config(vocab_size=100, n_embd=HIDDEN, n_layer=2, n_head=HEADS, n_positions=64, bos_token_id=0,
                         eos_token_id=0)
    bert = randomize(BertModel(bert_cfg, add_pooling_layer=False))
    models = {
        "bert": (LastHidden(bert, "last_hidden_state"), True),
        "bert_unfolded": (LastHidden(bert, "last_hidden_state"), False),
        "gpt2": (LastHidden(randomize(GPT2Model(gpt_cfg)), "last_hidden_state"), True),
        "gpt2_lm_unfolded": (LastHidden(randomize(GPT2LMHeadModel(gpt_cfg)), "logits"), False),
    }
    ids = torch.randint(0, 100, (1, SEQ))
    paths = {}
    for name, (module, fold) in models.items():
        path = out_dir / f"{name}.onnx"
        with torch.no_grad():
            torch.onnx.export(module, (ids,), str(path), input_names=["input_ids"], output_names=["output"],
                              opset_version=14, do_constant_folding=fold, dynamo=False)
        paths[name] = path
    return paths


# -- the fallback: a hand-built transformer block ------------------------------------------------


def build_transformer_block(seed: int = 0, gelu: str = "erf") -> onnx.ModelProto:
    """x[1, SEQ, HIDDEN] -> LayerNorm -> multi-head self-attention -> + x -> LayerNorm -> MLP with GELU
    -> + residual, every op spelled out the way the TorchScript exporter writes it (opset 14)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    head_dim = HIDDEN // HEADS

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(name, shape, scale=0.2):
        return const(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def layernorm(x, p):
        mean = node("ReduceMean", [x], f"{p}/mean", axes=[-1])
        d = node("Sub", [x, mean], f"{p}/sub")
        var = node("ReduceMean", [node("Pow", [d, const(f"{p}.two", np.float32(2))], f"{p}/pow")], f"{p}/var", axes=[-1])
        std = node("Sqrt", [node("Add", [var, const(f"{p}.eps", np.float32(1e-5))], f"{p}/add_eps")], f"{p}/sqrt")
        scaled = node("Mul", [node("Div", [d, std], f"{p}/div"),
                              const(f"{p}.weight", (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))],
                      f"{p}/mul")
        return node("Add", [scaled, weight(f"{p}.bias", (HIDDEN,), 0.1)], f"{p}/out")

    def linear(x, p, n_in, n_out):
        mm = node("MatMul", [x, weight(f"{p}.weight", (n_in, n_out))], f"{p}/matmul")
        return node("Add", [weight(f"{p}.bias", (n_out,), 0.1), mm], f"{p}/out")

    def heads(x, p, perm):
        r = node("Reshape", [x, const(f"{p}.shape", np.array([1, SEQ, HEADS, head_dim]))], f"{p}/reshape")
        return node("Transpose", [r], f"{p}/transpose", perm=perm)

    h = layernorm("x", "ln1")
    q = heads(linear(h, "q", HIDDEN, HIDDEN), "qh", [0, 2, 1, 3])
    kt = heads(linear(h, "k", HIDDEN, HIDDEN), "kh", [0, 2, 3, 1])
    v = heads(linear(h, "v", HIDDEN, HIDDEN), "vh", [0, 2, 1, 3])
    scores = node("Div", [node("MatMul", [q, kt], "attn/qk"), const("attn.scale", np.float32(np.sqrt(head_dim)))],
                  "attn/scale")
    ctx = node("MatMul", [node("Softmax", [scores], "attn/softmax", axis=-1), v], "attn/ctx")
    merged = node("Reshape", [node("Transpose", [ctx], "attn/merge_t", perm=[0, 2, 1, 3]),
                              const("attn.merged", np.array([1, SEQ, HIDDEN]))], "attn/merge")
    x1 = node("Add", ["x", linear(merged, "o", HIDDEN, HIDDEN)], "res1")
    up = linear(layernorm(x1, "ln2"), "fc1", HIDDEN, 2 * HIDDEN)
    half = const("gelu.half", np.float32(0.5))
    if gelu == "erf":
        erf = node("Erf", [node("Div", [up, const("gelu.sqrt2", np.float32(np.sqrt(2)))], "gelu/div")], "gelu/erf")
        act = node("Mul", [node("Mul", [up, node("Add", [erf, const("gelu.one", np.float32(1))], "gelu/add")],
                                "gelu/mul"), half], "gelu/out")
    else:
        cube = node("Pow", [up, const("gelu.three", np.float32(3))], "gelu/pow")
        inner = node("Add", [up, node("Mul", [const("gelu.c", np.float32(0.044715)), cube], "gelu/mulc")], "gelu/inner")
        t = node("Tanh", [node("Mul", [const("gelu.k", np.float32(np.sqrt(2 / np.pi))), inner], "gelu/scale")],
                 "gelu/tanh")
        act = node("Mul", [node("Mul", [half, up], "gelu/half_x"), node("Add", [const("gelu.one", np.float32(1)), t],
                                                                         "gelu/add")], "gelu/out")
    node("Add", [x1, linear(act, "fc2", 2 * HIDDEN, HIDDEN)], "y")
    graph = helper.make_graph(nodes, "transformer_block",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, HIDDEN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, HIDDEN])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], producer_name="tests.patches")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    for name, path in export_transformers(Path(sys.argv[1])).items():
        print(name, path)
