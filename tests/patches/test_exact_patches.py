"""Semantics-preserving built-in patches on real models they were not written for: each matches
where it should, refuses near misses with a reason, and its output passes onnx.checker, runs in
onnxruntime and agrees with the original there (besides the validator's reference-executor check)."""

import numpy as np
import pytest

from dcopt.passes.patches import apply_patches
from tests.passes.conftest import graph_from_text
from tests.patches.conftest import patched, refusals


def ops(graph):
    return graph.op_histogram()


# -- fold_batchnorm -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, sites", [("tiny_resnet", 4), ("shufflenet", 49)])
def test_fold_batchnorm_folds_every_conv_batchnorm(zoo, name, sites):
    graph = zoo(name)
    report = patched(graph, "fold_batchnorm", exact=True)
    step = report.steps[0]
    assert len(step.outcome.applications) == sites and "BatchNormalization" not in ops(report.graph)
    assert step.diff.ops_delta == {"BatchNormalization": -sites}
    assert step.diff.params_after < step.diff.params_before  # scale, bias, mean, var -> one conv bias


def test_fold_batchnorm_refuses_batchnorm_after_concat_on_densenet(zoo):
    report = patched(zoo("densenet121"), "fold_batchnorm", exact=True)
    assert ops(report.graph)["BatchNormalization"] == 62  # the pre-activation BNs that read a Concat stay
    assert any("expected op Conv, got Concat" in r for r in refusals(report))


GEMM_BN = """
    agraph (float[2, 4] x) => (float[2, 3] y, float[2, 3] z, float[2, 3, 3] w)
    <float[4, 3] W = {%s}, float[3] b = {0.1, -0.2, 0.3}, float[3] s = {1.5, 0.5, 2.0}, float[3] t = {0.1, 0.2, 0.3},
     float[3] mu = {0.3, -0.1, 0.2}, float[3] var = {0.5, 1.0, 2.0}, float[2, 3, 4] x3 = {%s}> {
        g = Gemm(x, W, b)
        y = BatchNormalization(g, s, t, mu, var)
        m = MatMul(x, W)
        mb = Add(m, b)
        z = BatchNormalization(mb, s, t, mu, var)
        m3 = MatMul(x3, W)
        w = BatchNormalization(m3, s, t, mu, var)
    }""" % (", ".join(str(v) for v in np.linspace(-1, 1, 12).round(3)),
            ", ".join(str(v) for v in np.linspace(-2, 2, 24).round(3)))


def test_fold_batchnorm_into_gemm_and_matmul_but_not_rank3_matmul():
    graph = graph_from_text(GEMM_BN, opset=17)
    report = patched(graph, "fold_batchnorm", exact=True, min_sites=2)
    assert len(report.steps[0].outcome.applications) == 2
    assert report.graph.producer("y").op == "Gemm" and report.graph.producer("z").op == "Add"
    assert report.graph.producer("w").op == "BatchNormalization"  # after the rank-3 MatMul: kept
    assert any("result rank 3; they coincide only for rank 2" in r for r in refusals(report))


def test_fold_batchnorm_refuses_when_the_conv_output_is_read_elsewhere():
    graph = graph_from_text("""
        agraph (float[1, 2, 4, 4] x) => (float[1, 2, 4, 4] y, float[1, 2, 4, 4] c)
        <float[2, 2, 1, 1] W = {1.0, 0.5, -0.5, 2.0}, float[2] s = {1.0, 2.0}, float[2] t = {0.0, 1.0},
         float[2] mu = {0.5, 0.5}, float[2] var = {1.0, 4.0}> {
            c = Conv(x, W)
            y = BatchNormalization(c, s, t, mu, var)
        }""")
    report = apply_patches(graph, ["fold_batchnorm"], explain=True)
    assert not report.modified
    assert any("is a graph output" in r for r in refusals(report))


# -- fuse_gelu ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, approximate", [("bert", "none"), ("gpt2", "tanh"), ("block", "none"),
                                               ("block_tanh", "tanh")])
def test_fuse_gelu_on_transformers(transformer, name, approximate):
    graph = transformer(name)
    report = patched(graph, "fuse_gelu", exact=True)
    gelus = [n for n in report.graph.nodes if n.op == "Gelu"]
    assert gelus and {n.attrs["approximate"] for n in gelus} == {approximate}
    assert "Erf" not in ops(report.graph) and "Tanh" not in ops(report.graph)
    assert report.graph.opset_of("") == 20 and "raised the opset from 14 to 20" in report.steps[0].outcome.notes[0]


def test_fuse_gelu_refuses_without_an_opset_bump_and_leaves_the_model_alone(transformer):
    graph = transformer("bert")
    report = apply_patches(graph, ["fuse_gelu?bump_opset=false"], explain=True)
    assert not report.modified and report.graph is graph and graph.opset_of("") == 14
    assert any("Gelu needs opset 20 but the model is opset 14 and bump_opset=false" in r for r in refusals(report))


def test_fuse_gelu_near_miss_names_the_wrong_constant():
    graph = graph_from_text("""
        agraph (float[2, 4] x) => (float[2, 4] y)
        <float half = {0.6}, float one = {1.0}, float s = {1.4142135}> {
            d = Div(x, s)
            e = Erf(d)
            a = Add(one, e)
            h = Mul(x, half)
            y = Mul(h, a)
        }""", opset=20)
    report = apply_patches(graph, ["fuse_gelu"], explain=True)
    assert not report.modified
    assert any("expected 0.5, got 0.6" in r for r in refusals(report))


# -- fuse_layernorm -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, sites", [("bert", 5), ("gpt2", 5), ("block", 2)])
def test_fuse_layernorm_on_transformers(transformer, name, sites):
    report = patched(transformer(name), "fuse_layernorm", exact=True)
    assert ops(report.graph)["LayerNormalization"] == sites and "Sqrt" not in ops(report.graph)
    assert report.graph.opset_of("") == 17
    diff = report.steps[0].diff
    assert diff.flops_after < diff.flops_before or diff.uncosted_nodes  # (unless sizes are unknown)


def test_fuse_layernorm_then_fuse_gelu_chain(transformer):
    report = patched(transformer("bert"), "fuse_layernorm", "fuse_gelu", exact=True)
    assert report.graph.opset_of("") == 20 and {"LayerNormalization", "Gelu"} <= set(ops(report.graph))
    assert report.history == ["fuse_layernorm", "fuse_gelu"]


def test_fuse_layernorm_refuses_a_non_trailing_reduction():
    graph = graph_from_text("""
        agraph (float[2, 3, 4] x) => (float[2, 3, 4] y)
        <float two = {2.0}, float eps = {1e-5}, float[3, 1] g = {1.0, 2.0, 3.0}, float[3, 1] b = {0.0, 1.0, 0.0}> {
            m = ReduceMean<axes = [1]>(x)
            d = Sub(x, m)
            p = Pow(d, two)
            v = ReduceMean<axes = [1]>(p)
            ve = Add(v, eps)
            s = Sqrt(ve)
            n = Div(d, s)
            gn = Mul(n, g)
            y = Add(gn, b)
        }""")
    report = apply_patches(graph, ["fuse_layernorm"], explain=True)
    assert not report.modified
    assert any("axes [1] are not the trailing axes of a rank-3 input" in r for r in refusals(report))


# -- remove_dropout_identity ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["squeezenet", "inception_v1"])
def test_remove_dropout_identity_on_cnns(zoo, name):
    report = patched(zoo(name), "remove_dropout_identity", exact=True)
    assert "Dropout" not in ops(report.graph)


def test_remove_dropout_identity_keeps_training_dropout_and_output_identities():
    graph = graph_from_text("""
        agraph (float[2, 4] x) => (float[2, 4] y, float[2, 4] z)
        <float r = {0.5}, bool train = {1}> {
            i = Identity(x)
            d = Dropout(i, r, train)
            y = Relu(d)
            z = Identity(y)
        }""")
    report = apply_patches(graph, ["remove_dropout_identity"], explain=True, validate=False)
    assert [a.root for a in report.steps[0].outcome.applications] == ["Identity_0"]
    why = refusals(report)
    assert any("runs in training mode" in r for r in why) and any("is a graph output" in r for r in why)


# -- fold_transpose_into_matmul -------------------------------------------------------------------


def test_fold_transpose_into_matmul_on_unfolded_bert(transformer):
    graph = transformer("bert_unfolded")
    report = patched(graph, "fold_transpose_into_matmul", exact=True, min_sites=12)
    assert ops(graph)["Transpose"] - ops(report.graph)["Transpose"] == 12
    assert any("does not swap just the last two axes" in r for r in refusals(report))  # attention's head transposes


def test_fold_transpose_into_matmul_on_gpt2_tied_lm_head(transformer):
    report = patched(transformer("gpt2_lm_unfolded"), "fold_transpose_into_matmul", exact=True)
    assert [a.root for a in report.steps[0].outcome.applications] == ["/model/lm_head/MatMul"]


def test_fold_transpose_into_matmul_gemm_for_2d_and_refusal_for_batched():
    graph = graph_from_text("""
        agraph (float[3, 4] a, float[5, 4] b, float[2, 3, 4] p, float[2, 5, 4] q) => (float[3, 5] y, float[2, 3, 5] z) {
            bt = Transpose<perm = [1, 0]>(b)
            y = MatMul(a, bt)
            qt = Transpose<perm = [0, 2, 1]>(q)
            z = MatMul(p, qt)
        }""")
    report = patched(graph, "fold_transpose_into_matmul", exact=True)
    gemm = next(n for n in report.graph.nodes if n.op == "Gemm")
    assert gemm.attrs["transB"] == 1 and gemm.inputs[:2] == ("a", "b")
    assert any("Gemm, which could absorb the Transpose, takes 2-D operands only" in r for r in refusals(report))
