"""Idea patches (and the approximate cast_weights) on real models they were not written for: they
match where they should, refuse near misses with a reason, and the result passes onnx.checker,
runs in onnxruntime with the original's output shapes, and was validated structurally."""

import json

import numpy as np
import onnx
import pytest

from dcopt.frontends.onnx_export import export_model
from dcopt.ir.executor import run_graph
from dcopt.passes.patches import PatchURIError, apply_patches
from dcopt.passes.patches.cast_weights import TOLERANCES
from tests.passes.conftest import graph_from_text
from tests.patches.conftest import patched, refusals, run_both


def ops(graph):
    return graph.op_histogram()


# -- swap_activation ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, sites", [("tiny_resnet", 4), ("squeezenet", 26)])
def test_swap_relu_for_gelu_builds_primitive_gelu_below_opset_20(zoo, name, sites):
    report = patched(zoo(name), "swap_activation?from=Relu&to=Gelu")
    assert len(report.steps[0].outcome.applications) == sites and "Relu" not in ops(report.graph)
    assert ops(report.graph)["Erf"] == sites  # opset < 20: x * 0.5 * (1 + erf(x / sqrt 2))
    assert "structural" in report.steps[0].validation


def test_swap_activation_uses_the_native_op_when_the_opset_has_it():
    graph = graph_from_text("agraph (float[2, 4] x) => (float[2, 4] y) { h = Relu(x)\n y = Relu(h) }", opset=20)
    report = patched(graph, "swap_activation?to=Gelu")
    assert ops(report.graph) == {"Gelu": 2}


def test_swap_activation_refuses_integer_inputs_and_identical_from_to():
    graph = graph_from_text("agraph (int32[2, 4] x) => (int32[2, 4] y) { y = Relu(x) }", opset=17)
    report = apply_patches(graph, ["swap_activation"], explain=True)
    assert not report.modified and any("not known to be floating point" in r for r in refusals(report))
    with pytest.raises(PatchURIError, match="from and to are both Relu"):
        apply_patches(graph, ["swap_activation?from=Relu&to=Relu"])


# -- add_skip_connections -------------------------------------------------------------------------


def test_add_skip_connections_around_tiny_resnet_block(zoo):
    report = patched(zoo("tiny_resnet"), "add_skip_connections")
    assert [a.root for a in report.steps[0].outcome.applications] == ["block1a/relu"]
    skip = next(n for n in report.graph.nodes if n.name == "block1a/relu/skip")
    assert skip.op == "Add" and skip.inputs[1] == "stem.out"
    why = refusals(report)
    assert any("already has a skip connection from 'stem.out'" in r for r in why)
    assert any("not shape-preserving" in r for r in why)


def test_add_skip_connections_gives_squeezenet_its_simple_bypass(zoo):
    report = patched(zoo("squeezenet"), "add_skip_connections?ends=Concat&scale=0.5")
    # fire3, fire5, fire7 and fire9 keep their width: exactly the bypasses of the SqueezeNet paper
    assert len(report.steps[0].outcome.applications) == 4 and report.steps[0].diff.ops_delta == {"Add": 4, "Mul": 4}


def test_add_skip_connections_respects_existing_residuals_on_resnet50(zoo):
    report = patched(zoo("resnet50"), "add_skip_connections")
    assert len(report.steps[0].outcome.applications) == 14  # the stride-1 3x3 convs
    # the 12 identity-shortcut blocks already have one; the 4 with projection shortcuts change shape
    assert sum("already has a skip connection" in r for r in refusals(report)) == 12


# -- layernorm_to_rmsnorm -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_layernorm_to_rmsnorm_on_decomposed_and_fused_layernorm(transformer, name):
    direct = patched(transformer(name), "layernorm_to_rmsnorm")
    fused = patched(transformer(name), "fuse_layernorm", "layernorm_to_rmsnorm?keep_bias=false")
    for report in (direct, fused):
        assert len(report.steps[-1].outcome.applications) == 5
        assert "Sub" not in ops(report.graph) and ops(report.graph)["ReduceMean"] == 5  # no mean-centering left
        assert "LayerNormalization" not in ops(report.graph)
    assert fused.steps[-1].diff.params_after < fused.steps[-1].diff.params_before  # the betas went


def test_layernorm_to_rmsnorm_fused_form_needs_opset_23():
    text = """agraph (float[2, 8] x) => (float[2, 8] y) <float[8] g = {1, 2, 3, 4, 5, 6, 7, 8}> {
        y = LayerNormalization<axis = -1>(x, g) }"""
    refused = apply_patches(graph_from_text(text, opset=17), ["layernorm_to_rmsnorm?form=fused"], explain=True)
    assert not refused.modified and any("needs RMSNormalization (opset 23)" in r for r in refused.steps[0].format(
        explain=True))
    report = patched(graph_from_text(text, opset=23), "layernorm_to_rmsnorm")
    assert ops(report.graph) == {"RMSNormalization": 1}


# -- insert_squeeze_excitation --------------------------------------------------------------------


def test_insert_squeeze_excitation_after_resnet50_stages(zoo):
    report = patched(zoo("resnet50"), "insert_squeeze_excitation?ratio=16&seed=3")
    step = report.steps[0]
    assert len(step.outcome.applications) == 5  # 112x112 stem, then the 256/512/1024/2048-wide stage outputs
    # per site 2*C*C/16 weights + C/16 + C biases, for C = 64, 256, 512, 1024, 2048
    assert step.diff.params_after - step.diff.params_before == 700_980
    assert step.diff.ops_delta == {"Conv": 10, "GlobalAveragePool": 5, "Mul": 5, "Relu": 5, "Sigmoid": 5}
    assert any("not the output of its 56x56 stage" in r for r in refusals(report))


def test_insert_squeeze_excitation_everywhere_on_squeezenet_is_seeded(zoo):
    a = patched(zoo("squeezenet"), "insert_squeeze_excitation?placement=every&ratio=4&seed=7", min_sites=26)
    b = apply_patches(zoo("squeezenet"), ["insert_squeeze_excitation?placement=every&ratio=4&seed=7"])
    w = [n for n in a.graph.nodes if n.name.endswith("se_reduce")][0].inputs[1]
    np.testing.assert_array_equal(a.graph.containers[w].data, b.graph.containers[w].data)
    again = apply_patches(a.graph, ["insert_squeeze_excitation?placement=every"], explain=True)
    assert not again.modified and any("already followed by a squeeze-excitation" in r for r in refusals(again))


# -- cast_weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, dtype", [("squeezenet", "bf16"), ("resnet50", "fp16")])
def test_cast_weights_on_cnns(zoo, name, dtype):
    graph = zoo(name)
    report = patched(graph, f"cast_weights?dtype={dtype}")
    step = report.steps[0]
    assert step.diff.param_bytes_after < 0.52 * step.diff.param_bytes_before and step.diff.params_after == step.diff.params_before
    if graph.opset_of("") < 13 and dtype == "bf16":
        assert report.graph.opset_of("") == 13  # Cast takes bfloat16 from opset 13
    assert any("fewer than min_elements=1024" in r for r in refusals(report))  # biases stay fp32
    want, got = run_both(graph, report.graph)
    rtol, atol = TOLERANCES[dtype]
    np.testing.assert_allclose(got[0], want[0], rtol=rtol, atol=atol)


def test_cast_weights_on_bert_keeps_compute_in_fp32(transformer):
    report = patched(transformer("bert"), "cast_weights?dtype=fp16&min_elements=512")
    casts = [n for n in report.graph.nodes if n.op == "Cast" and n.name.endswith("/to_float32")]
    assert len(casts) == len(report.steps[0].outcome.applications) >= 12
    assert {report.graph.type_of(c.outputs[0]).dtype for c in casts} == {"float32"}
    assert "rtol=0.01" in report.steps[0].validation


# -- prune_attention_heads ------------------------------------------------------------------------


def _context_per_head(graph, context: str, feeds):
    probe = graph.copy()
    probe.outputs = [context]
    return run_graph(probe, feeds)[context]  # [B, H, S, D]


@pytest.mark.parametrize("name, sites", [("bert", 2), ("gpt2", 2), ("block", 1)])
def test_prune_attention_heads_silences_the_weakest_heads(transformer, name, sites):
    graph = transformer(name)
    report = patched(graph, "prune_attention_heads?ratio=0.5")
    step = report.steps[0]
    assert len(step.outcome.applications) == sites and step.diff.params_after == step.diff.params_before
    feeds = {n: np.random.default_rng(0).integers(0, 50, (1, 8)) if graph.type_of(n).dtype == "int64"
             else np.random.default_rng(0).standard_normal((1, 8, 32)).astype(np.float32) for n in graph.inputs}
    for app, note in zip(step.outcome.applications, step.outcome.notes):
        pruned = json.loads(note.split("zeroed head(s) ")[1].split(" of")[0])
        assert len(pruned) == 2
        context = report.graph.producer(next(n.outputs[0] for n in report.graph.nodes if n.label == app.root))
        ctx = _context_per_head(report.graph, context.outputs[0], feeds)
        assert np.all(ctx[:, pruned] == 0) and np.any(ctx[:, [h for h in range(4) if h not in pruned]] != 0)


def test_prune_attention_heads_refuses_with_reasons(transformer, zoo):
    cnn = apply_patches(zoo("tiny_resnet"), ["prune_attention_heads"], explain=True)
    assert not cnn.modified
    report = apply_patches(transformer("block"), ["prune_attention_heads?ratio=0.2"], explain=True)
    assert not report.modified and any("rounds to no head to prune" in r for r in refusals(report))
    assert any("expected op Softmax" in r for r in refusals(report))  # the projection MatMuls


def test_exported_idea_patch_model_records_history(zoo, tmp_path):
    report = apply_patches(zoo("tiny_resnet"), ["insert_squeeze_excitation", "add_skip_connections?scale=0.5"])
    path = tmp_path / "patched.onnx"
    onnx.save(export_model(report.graph), path)
    meta = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert meta["dcopt.patches"] == "insert_squeeze_excitation;add_skip_connections?scale=0.5"
