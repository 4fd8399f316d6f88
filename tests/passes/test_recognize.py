"""recognize-ops: LayerNorm, Gelu, Softmax and attention recognized (checked numerically), their
near misses refused with reasons, opset upgrades allowed or refused, and the rules on a hand-built
transformer block."""

import math

import numpy as np
import pytest

from dcopt.ir.executor import run_graph
from dcopt.passes import PassManager, get_pass
from dcopt.passes.opset_upgrade import upgrade_problem
from dcopt.passes.recognize import RECOGNIZE_RULES
from tests.passes.conftest import graph_from_text
from tests.passes.rule_checks import O2_STEPS, apply_and_check, refusal
from tests.passes.transformer_graphs import transformer_block

RNG = np.random.default_rng(0)


def _floats(n: int, low: float = -1.0, high: float = 1.0) -> str:
    return ", ".join(f"{v:.6f}" for v in RNG.uniform(low, high, n))


def parse(body, inputs="float[N, 5, 8] x", outputs="float[N, 5, 8] y", inits="", opset=17):
    return graph_from_text(f"agraph ({inputs}) => ({outputs}) <{inits}> {{ {body} }}", opset=opset)


# -- LayerNormalization ---------------------------------------------------------------------------


def layer_norm(square="pow", divide="div", affine=True, eps_after_sqrt=False, axes=(-1,), opset=17):
    """A decomposed layer norm over ``axes`` of x[N, 5, 8] in one of the exporters' spellings."""
    reduce_axes = f"ReduceMean<axes=[{', '.join(map(str, axes))}]>" if opset < 18 else "ReduceMean"
    extra = "" if opset < 18 else ", ax"
    body = [f"m = {reduce_axes}(x{extra})", "d = Sub(x, m)",
            "p = Pow(d, two)" if square == "pow" else "p = Mul(d, d)", f"v = {reduce_axes}(p{extra})"]
    body += ["r = Sqrt(v)", "s = Add(r, eps)"] if eps_after_sqrt else ["ve = Add(v, eps)", "s = Sqrt(ve)"]
    body += ["n = Div(d, s)"] if divide == "div" else ["i = Reciprocal(s)", "n = Mul(i, d)"]
    body += ["sc = Mul(g, n)", "y = Add(sc, b)"] if affine else ["y = Identity(n)"]
    inits = (f"float two = {{2.0}}, float eps = {{1e-5}}, float[8] g = {{{_floats(8, 0.5, 1.5)}}}, "
             f"float[8] b = {{{_floats(8)}}}, int64[{len(axes)}] ax = {{{', '.join(map(str, axes))}}}")
    return parse("\n".join(body), inits=inits, opset=opset)


LAYER_NORMS = {
    "pow-div-affine": {}, "mul-reciprocal": {"square": "mul", "divide": "reciprocal"},
    "no-affine": {"affine": False}, "two-axes": {"axes": (-2, -1)}, "opset-18-axes-input": {"opset": 18},
    "opset-14-raised": {"opset": 14},
}


@pytest.mark.parametrize("case", list(LAYER_NORMS))
def test_layer_norm_is_recognized(case):
    graph = layer_norm(**LAYER_NORMS[case])
    report = apply_and_check(graph, RECOGNIZE_RULES)
    assert report.counts() == {"layer-norm": 1}, report.format()
    assert set(graph.op_histogram()) <= {"LayerNormalization", "Identity"}
    assert graph.opset_of("") >= 17


LAYER_NORM_MISSES = {
    "eps after sqrt": ({"eps_after_sqrt": True}, "expected op Sqrt, got Add"),
    "not the trailing axes": ({"axes": (1,)}, "not the trailing axes"),
}


@pytest.mark.parametrize("case", list(LAYER_NORM_MISSES))
def test_layer_norm_near_miss(case):
    kwargs, reason = LAYER_NORM_MISSES[case]
    graph = layer_norm(**kwargs)
    report = apply_and_check(graph, RECOGNIZE_RULES)
    assert "layer-norm" not in report.counts()
    assert reason in refusal(report, "layer-norm"), report.format()


def test_opset_upgrade_is_refused_when_another_op_changed_meaning():
    graph = parse("m = ReduceMean<axes=[-1]>(x)\n d = Sub(x, m)\n p = Mul(d, d)\n v = ReduceMean<axes=[-1]>(p)\n"
                  "ve = Add(v, eps)\n s = Sqrt(ve)\n n = Div(d, s)\n y = Relu(n)",
                  inits="float eps = {1e-5}", opset=12)
    report = apply_and_check(graph, RECOGNIZE_RULES)
    assert not report.modified and graph.opset_of("") == 12
    assert "needs opset 17 but the graph is at 12, and Relu changed at opset 13" in refusal(report, "layer-norm")


# -- Gelu ------------------------------------------------------------------------------------------

ERF = "e = Erf(dv)\n a = Add(e, one)"
GELUS = {
    "erf half-on-x": ("dv = Div(x, s2)\n" + ERF + "\n h = Mul(x, half)\n y = Mul(h, a)", "gelu-erf"),
    "erf half-on-bracket": ("dv = Mul(r2, x)\n" + ERF + "\n h = Mul(half, a)\n y = Mul(x, h)", "gelu-erf"),
    "erf torch order": ("dv = Div(x, s2)\n" + ERF + "\n h = Mul(x, a)\n y = Mul(h, half)", "gelu-erf"),
    "tanh pow": ("c = Pow(x, three)\n k = Mul(c, k1)\n i = Add(x, k)\n t0 = Mul(i, kc)\n t = Tanh(t0)\n"
                 " a = Add(one, t)\n h = Mul(half, x)\n y = Mul(h, a)", "gelu-tanh"),
    "tanh cube": ("c0 = Mul(x, x)\n c = Mul(c0, x)\n k = Mul(k1, c)\n i = Add(k, x)\n t0 = Mul(kc, i)\n"
                  " t = Tanh(t0)\n a = Add(t, one)\n h = Mul(x, a)\n y = Mul(half, h)", "gelu-tanh"),
}
GELU_INITS = (f"float half = {{0.5}}, float one = {{1.0}}, float s2 = {{{math.sqrt(2):.7f}}}, "
              f"float r2 = {{{1 / math.sqrt(2):.7f}}}, float three = {{3.0}}, float k1 = {{0.044715}}, "
              f"float kc = {{{math.sqrt(2 / math.pi):.7f}}}")


@pytest.mark.parametrize("case", list(GELUS))
@pytest.mark.parametrize("opset", [17, 20])
def test_gelu_is_recognized(case, opset):
    body, rule = GELUS[case]
    graph = parse(body, inits=GELU_INITS, opset=opset)
    report = apply_and_check(graph, RECOGNIZE_RULES)
    assert report.counts() == {rule: 1}, report.format()
    assert graph.op_histogram() == {"Gelu": 1} and graph.opset_of("") == 20


@pytest.mark.parametrize("case, old, new, reason", [
    ("erf half-on-x", "half = {0.5}", "half = {0.6}", "constant 'half': expected 0.5, got 0.6"),
    ("tanh pow", "k1 = {0.044715}", "k1 = {0.05}", "constant 'k' ('k1'): expected 0.044715, got 0.05"),
])
def test_gelu_near_miss(case, old, new, reason):
    body, rule = GELUS[case]
    graph = parse(body, inits=GELU_INITS.replace(old, new), opset=20)
    report = apply_and_check(graph, RECOGNIZE_RULES)
    assert not report.modified and reason in refusal(report, rule), report.format()


def test_gelu_refuses_to_raise_the_opset_past_a_reduce_with_axes_attribute():
    body = GELUS["erf half-on-x"][0].replace("y = Mul(h, a)", "g = Mul(h, a)\n y = ReduceMean<axes=[-1]>(g)")
    graph = parse(body, outputs="float[N, 5, 1] y", inits=GELU_INITS, opset=17)
    report = apply_and_check(graph, RECOGNIZE_RULES)
    assert not report.modified
    assert "ReduceMean changed at opset 18 (node 'ReduceMean_5' uses an axes attribute" in refusal(report, "gelu-erf")
    assert upgrade_problem(graph, 20, ignore=[graph.producer("y")]) == ""


# -- Softmax ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shifted", [True, False])
def test_softmax_is_recognized(shifted):
    body = ("m = ReduceMax<axes=[1]>(x)\n d = Sub(x, m)\n e = Exp(d)\n" if shifted else "e = Exp(x)\n")
    graph = parse(body + "s = ReduceSum(e, ax)\n y = Div(e, s)", inits="int64[1] ax = {-2}")
    report = apply_and_check(graph, RECOGNIZE_RULES)
    assert report.counts() == {"softmax": 1} and graph.op_histogram() == {"Softmax": 1}
    assert graph.producer("y").attrs["axis"] == 1


def test_softmax_near_miss_over_two_axes():
    graph = parse("e = Exp(x)\n s = ReduceSum(e, ax)\n y = Div(e, s)", inits="int64[2] ax = {1, 2}")
    report = apply_and_check(graph, RECOGNIZE_RULES)
    assert not report.modified and "the sum runs over 2 axes [1, 2]" in refusal(report, "softmax")


def test_softmax_with_a_shift_over_another_axis_is_still_a_softmax():
    # exp(x - max_2(x)) / sum_1(...) is softmax over axis 1 of d = x - max_2(x): the Sub stays
    graph = parse("m = ReduceMax<axes=[-1]>(x)\n d = Sub(x, m)\n e = Exp(d)\n s = ReduceSum(e, ax)\n y = Div(e, s)",
                  inits="int64[1] ax = {1}")
    report = apply_and_check(graph, RECOGNIZE_RULES)
    assert report.counts() == {"softmax": 1} and graph.op_histogram()["Sub"] == 1


# -- attention --------------------------------------------------------------------------------------

QKV = "float[2, 4, 6, 8] q, float[2, 4, 6, 8] k, float[2, 4, 6, 8] v"
ATTENTIONS = {
    "eager scale and mask": (QKV + ", float[2, 1, 1, 6] mask", "kt = Transpose<perm=[0, 1, 3, 2]>(k)\n"
                             " s = MatMul(q, kt)\n ss = Mul(s, c)\n l = Add(mask, ss)\n p = Softmax<axis=-1>(l)\n"
                             " y = MatMul(p, v)", 0.35355339),
    "divided, no mask": (QKV, "kt = Transpose<perm=[0, 1, 3, 2]>(k)\n s = MatMul(q, kt)\n l = Div(s, c)\n"
                         " p = Softmax<axis=3>(l)\n y = MatMul(p, v)", 1 / 2.828427),
    "sdpa split scale and guard": (QKV + ", float[2, 1, 6, 6] mask",
                                   "kt = Transpose<perm=[0, 1, 3, 2]>(k)\n qs = Mul(q, c)\n ks = Mul(kt, c)\n"
                                   " s = MatMul(qs, ks)\n l = Add(s, mask)\n p = Softmax<axis=-1>(l)\n n = IsNaN(p)\n"
                                   " g = Where(n, zero, p)\n y = MatMul(g, v)", 0.59460356**2),
    "key from head split": ("float[2, 4, 6, 8] q, float[2, 6, 4, 8] k, float[2, 4, 6, 8] v",
                            "kt = Transpose<perm=[0, 2, 3, 1]>(k)\n s = MatMul(q, kt)\n p = Softmax<axis=-1>(s)\n"
                            " y = MatMul(p, v)", 1.0),
}


@pytest.mark.parametrize("case", list(ATTENTIONS))
def test_attention_is_recognized(case):
    inputs, body, scale = ATTENTIONS[case]
    constant = scale ** 0.5 if "sdpa" in case else 1 / scale if "divided" in case else scale
    inits = f"float c = {{{constant:.8f}}}, float[1] zero = {{0.0}}"
    graph = parse(body, inputs=inputs, outputs="float[2, 4, 6, 8] y", inits=inits)
    report = apply_and_check(graph, RECOGNIZE_RULES)
    assert report.counts() == {"attention": 1}, report.format()
    node = graph.producer("y")
    assert (node.domain, node.op) == ("dcopt", "Attention") and math.isclose(node.attrs["scale"], scale, rel_tol=1e-5)
    assert node.attrs["has_mask"] == ("mask" in inputs) and node.attrs["zero_nan_probs"] == ("guard" in case)
    # K^T's transpose is composed with the swap of the last two axes: nothing is left unless K^T
    # came straight from the head split (B, L, H, D) -> (B, H, D, L), which leaves (0, 2, 1, 3)
    transposes = [n.attrs["perm"] for n in graph.nodes if n.op == "Transpose"]
    assert transposes == ([(0, 2, 1, 3)] if "head split" in case else [])


def test_attention_uses_the_onnx_op_at_opset_23_and_onnxruntime_agrees():
    from dcopt.frontends.onnx_export import export_model
    from dcopt.testing import run_onnxruntime

    inputs, body, scale = ATTENTIONS["sdpa split scale and guard"]
    graph = parse(body, inputs=inputs, outputs="float[2, 4, 6, 8] y",
                  inits=f"float c = {{{scale ** 0.5:.8f}}}, float[1] zero = {{0.0}}", opset=23)
    feeds = {n: RNG.standard_normal(graph.type_of(n).shape).astype(np.float32) for n in graph.inputs}
    expected = run_onnxruntime(export_model(graph), feeds)[0]
    report = apply_and_check(graph, RECOGNIZE_RULES, feeds)
    node = graph.producer("y")
    assert report.counts() == {"attention": 1} and (node.domain, node.op) == ("", "Attention")
    np.testing.assert_allclose(run_onnxruntime(export_model(graph), feeds)[0], expected, rtol=1e-4, atol=1e-5)


def test_attention_keeps_the_dcopt_op_at_opset_23_for_a_broadcast_mask():
    inputs, body, scale = ATTENTIONS["eager scale and mask"]  # mask [2, 1, 1, 6]: q_len broadcast
    graph = parse(body, inputs=inputs, outputs="float[2, 4, 6, 8] y", inits=f"float c = {{{scale}}}", opset=23)
    apply_and_check(graph, RECOGNIZE_RULES)
    assert graph.producer("y").domain == "dcopt"


@pytest.mark.parametrize("edit, reason", [
    (("Softmax<axis=-1>", "Softmax<axis=2>"), "Softmax normalizes axis 2, not the key axis"),
    (("y = MatMul(p, v)", "y = MatMul(p, v)\n z = Identity(ss)"), "intermediate 'ss' is also read by"),
])
def test_attention_near_miss(edit, reason):
    inputs, body, scale = ATTENTIONS["eager scale and mask"]
    outputs = "float[2, 4, 6, 8] y" + (", float[2, 4, 6, 6] z" if "z =" in edit[1] else "")
    graph = parse(body.replace(*edit), inputs=inputs, outputs=outputs, inits=f"float c = {{{scale}}}")
    report = apply_and_check(graph, RECOGNIZE_RULES)
    assert "attention" not in report.counts() and reason in refusal(report, "attention"), report.format()


# -- a whole transformer block ------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [14, 17])
def test_hand_built_transformer_block(opset):
    graph = transformer_block(opset=opset)
    feeds = {"x": RNG.standard_normal((2, 16, 64)).astype(np.float32),
             "mask": np.where(RNG.random((2, 1, 1, 16)) < 0.2, -1e4, 0).astype(np.float32)}
    report = apply_and_check(graph, RECOGNIZE_RULES, feeds)
    assert report.counts() == {"layer-norm": 2, "gelu-erf": 1, "attention": 1}, report.format()
    assert graph.opset_of("") == 20


def test_o2_order_on_the_transformer_block():
    graph = transformer_block(opset=17)
    original = graph.copy()
    result = PassManager(O2_STEPS, verify=True, check_equivalence=True)(graph)
    ops = graph.op_histogram()
    assert ops["LayerNormalization"] == 2 and ops["Gelu"] == 1 and ops["dcopt.Attention"] == 1, ops
    # the head split/merge transposes stay; K^T's (0, 2, 3, 1) became K's (0, 2, 1, 3)
    assert [n.attrs["perm"] for n in graph.nodes if n.op == "Transpose"] == [(0, 2, 1, 3)] * 4
    assert len(graph.nodes) < len(original.nodes) and result.report.converged
    feeds = {"x": RNG.standard_normal((2, 16, 64)).astype(np.float32), "mask": np.zeros((2, 1, 1, 16), np.float32)}
    np.testing.assert_allclose(run_graph(graph, feeds)["y"], run_graph(original, feeds)["y"], rtol=1e-4, atol=1e-5)


def test_pass_is_registered():
    assert get_pass("recognize").name == "recognize-ops"


# -- exported transformers ------------------------------------------------------------------------

#: (model, export opset) -> recognitions expected from the O2 order. At opset 17 torch already
#: writes LayerNormalization itself, so only the opset-14 exports exercise the layer-norm rule.
HF_COUNTS = {
    ("bert", 17): {"gelu-erf": 2, "attention": 2},
    ("bert", 14): {"layer-norm": 5, "gelu-erf": 2, "attention": 2},
    ("gpt2", 17): {"gelu-tanh": 2, "attention": 2},
    ("gpt2", 14): {"layer-norm": 5, "gelu-tanh": 2, "attention": 2},
}


@pytest.fixture(scope="module")
def hf_export(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tests.passes.transformer_graphs import export_hf_model

    directory = tmp_path_factory.mktemp("hf")
    cache = {}

    def get(kind, opset, attention="eager"):
        if (kind, opset, attention) not in cache:
            cache[kind, opset, attention] = export_hf_model(kind, opset, directory, attention)
        return cache[kind, opset, attention]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("kind, opset", list(HF_COUNTS))
def test_exported_transformer_is_recognized(hf_export, kind, opset):
    from dcopt.frontends.onnx_import import import_model
    from tests.passes.transformer_graphs import hf_feeds

    graph = import_model(str(hf_export(kind, opset)))
    original = graph.copy()
    result = PassManager(O2_STEPS, verify=True)(graph)
    counts = {k: v for r in result.report.records if r.name == "recognize-ops" for k, v in r.stats.items()
              if k != "applied"}
    assert counts == HF_COUNTS[kind, opset], counts
    ops = graph.op_histogram()
    assert ops["LayerNormalization"] == 5 and ops["Gelu"] == 2 and ops["dcopt.Attention"] == 2, ops
    assert not {"Softmax", "Erf", "Tanh", "ReduceMean", "Sqrt"} & set(ops), ops
    feeds = hf_feeds(kind)
    want, got = run_graph(original, feeds), run_graph(graph, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_sdpa_export_is_recognized_with_its_nan_guard(hf_export):
    from dcopt.frontends.onnx_import import import_model
    from tests.passes.transformer_graphs import hf_feeds

    graph = import_model(str(hf_export("bert", 17, "sdpa")))
    original = graph.copy()
    PassManager(O2_STEPS, verify=True)(graph)
    attention = [n for n in graph.nodes if n.op == "Attention"]
    assert len(attention) == 2 and all(n.attrs["zero_nan_probs"] == 1 for n in attention)
    want, got = run_graph(original, hf_feeds("bert")), run_graph(graph, hf_feeds("bert"))
    np.testing.assert_allclose(got["hidden"], want["hidden"], rtol=1e-4, atol=1e-4)


def test_constants_that_raise_the_rank_are_refused():
    body, rule = GELUS["erf half-on-x"]
    graph = parse(body, outputs="float[1, N, 5, 8] y", inits=GELU_INITS.replace("float half = {0.5}",
                                                                               "float[1, 1, 1, 1] half = {0.5}"))
    report = apply_and_check(graph, RECOGNIZE_RULES)
    assert not report.modified
    assert "the constants broadcast the rank-3 input to rank 4" in refusal(report, rule), report.format()
