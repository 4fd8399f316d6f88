"""Recurrent expansions (dcopt/passes/expansions/recurrent.py) run three ways: the reference
executor, the lowered IR on it, and the compiled kernels -- agreeing at fp32 rtol 1e-4 with no
op left to a fallback step.

RNN, GRU and LSTM: directions, layouts, initial states, biases, activation lists with
alpha/beta, clip, linear_before_reset, input_forget, peepholes, sequence_lens (run-time for the
forward direction, constant otherwise). LinearAttention: every update rule, caches, grouped
heads. CausalConvWithState: states, bias, SiLU, float16.
"""

import numpy as np
import pytest
from onnx import helper

from dcopt.testing import run_three_ways
from tests.conftest import make_model
from tests.passes.one_op_model import assert_loops_verify, elem

RTOL = {"float16": 3e-3, "float32": 1e-4, "float64": 1e-9}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def normal(shape, dtype="float32", seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def run(cache, op, inputs: dict, params: dict, outputs, *, opset=22, rtol=None, **attrs):
    """``op`` on graph inputs and initializers, in the node's input order given by the dicts'
    order (None omits an optional input); ``outputs`` names the wired outputs ("" skips one)."""
    names = [*inputs, *params]
    order = [n if {**inputs, **params}[n] is not None else "" for n in names]
    while order and order[-1] == "":
        order.pop()
    inputs = {k: v for k, v in inputs.items() if v is not None}
    params = {k: v for k, v in params.items() if v is not None}
    first = next(iter(inputs.values()))
    rtol = rtol or RTOL[str(first.dtype)]
    node = helper.make_node(op, order, list(outputs), **attrs)
    model = make_model([node], [(k, elem(v.dtype), list(v.shape)) for k, v in inputs.items()],
                       [(o, elem(first.dtype), None) for o in outputs if o], params, opset=opset)
    _, _, got, manifest = run_three_ways(model, inputs, rtol=rtol, atol=rtol * 1e-2, cache_dir=cache)
    assert "fallback" not in manifest["steps"], manifest.get("not_native")
    assert_loops_verify(model)
    return got


def weights(gates, hidden, inputs, dirs, dtype="float32", seed=0):
    return {"W": normal((dirs, gates * hidden, inputs), dtype, seed, 0.5),
            "R": normal((dirs, gates * hidden, hidden), dtype, seed + 1, 0.5),
            "B": normal((dirs, 2 * gates * hidden), dtype, seed + 2, 0.5)}


GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


@pytest.mark.parametrize("op,direction,layout,bias,initial", [
    ("RNN", "forward", 0, True, False), ("GRU", "reverse", 1, False, True), ("LSTM", "bidirectional", 0, True, True),
    ("GRU", "bidirectional", 1, True, False), ("LSTM", "reverse", 1, False, False)])
def test_recurrent(cache, op, direction, layout, bias, initial):
    dirs, seq, batch, hidden = (2 if direction == "bidirectional" else 1), 3, 2, 4
    x = normal((seq, batch, 2) if layout == 0 else (batch, seq, 2))
    w = weights(GATES[op], hidden, 2, dirs)
    state = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)
    inputs = {"x": x}
    params = {"W": w["W"], "R": w["R"], "B": w["B"] if bias else None, "lens": None,
              "h0": normal(state, seed=5) if initial else None}
    outputs = ["y", "yh"]
    if op == "LSTM":
        params["c0"] = normal(state, seed=6) if initial else None
        outputs.append("yc")
    got = run(cache, op, inputs, params, outputs, direction=direction, layout=layout, hidden_size=hidden)
    assert got["y"].shape == ((seq, dirs, batch, hidden) if layout == 0 else (batch, seq, dirs, hidden))


def test_rnn_activations_and_clip(cache):
    """Per-direction activation lists consume alpha/beta in order; clip bounds the gate inputs."""
    w = weights(1, 4, 3, 2)
    run(cache, "RNN", {"x": normal((2, 2, 3), scale=3)}, {"W": w["W"], "R": w["R"], "B": w["B"]}, ["y", "yh"],
        direction="bidirectional", hidden_size=4, activations=["LeakyRelu", "ScaledTanh"],
        activation_alpha=[0.2, 0.7], activation_beta=[1.5], clip=1.5)


@pytest.mark.parametrize("before_reset", [0, 1])
def test_gru_linear_before_reset(cache, before_reset):
    w = weights(3, 4, 3, 1)
    run(cache, "GRU", {"x": normal((2, 2, 3)), "W": w["W"], "R": w["R"]}, {"B": w["B"]}, ["y", "yh"],
        hidden_size=4, linear_before_reset=before_reset, activations=["HardSigmoid", "Softsign"],
        activation_alpha=[0.3], activation_beta=[0.4])


def test_lstm_peepholes_input_forget_lengths(cache):
    """Peepholes, input_forget, and run-time sequence_lens: an entry past its length keeps its
    state and outputs zeros (one entry of length 0)."""
    w = weights(4, 3, 2, 1)
    inputs = {"x": normal((3, 3, 2)), "lens": np.array([3, 1, 0], np.int32)}
    params = {"W": w["W"], "R": w["R"], "B": w["B"]}
    node_inputs = {"x": inputs["x"]}
    got = run(cache, "LSTM", {**node_inputs, **params, "lens": inputs["lens"]},
              {"h0": normal((1, 3, 3), seed=7), "c0": normal((1, 3, 3), seed=8), "P": normal((1, 9), seed=9)},
              ["y", "yh", "yc"], hidden_size=3, input_forget=1, clip=2.0)
    assert (got["y"][1:, 0, 1] == 0).all() and (got["y"][:, 0, 2] == 0).all()


def test_reverse_with_constant_full_lengths(cache):
    w = weights(1, 3, 2, 2)
    run(cache, "RNN", {"x": normal((2, 2, 2))}, {"W": w["W"], "R": w["R"], "B": None,
                                                 "lens": np.array([2, 2], np.int32)},
        ["y", "yh"], direction="bidirectional", hidden_size=3)


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_recurrent_other_dtypes(cache, dtype):
    """float16 follows the reference's rounding after every operation; kernels' exp and tanh
    differ from numpy's in the last float32 bit, which can move a float16 result by an ulp."""
    w = weights(4, 3, 2, 1, dtype)
    run(cache, "LSTM", {"x": normal((2, 2, 2), dtype)}, w, ["y", "yh", "yc"], hidden_size=3,
        rtol=RTOL[dtype] if dtype != "float16" else 1e-2)


# ------------------------------------------------------------------------------------ LinearAttention

@pytest.mark.parametrize("rule,heads,per_key", [("linear", (2, 2), False), ("gated", (2, 2), False),
                                                ("delta", (4, 2), False), ("gated_delta", (4, 1), True)])
def test_linear_attention(cache, rule, heads, per_key):
    hq, hkv = heads
    b, t, dk, dv = 2, 2, 4, 3
    inputs = {"q": normal((b, t, hq * dk)), "k": normal((b, t, hkv * dk), seed=1) * 0.5,
              "v": normal((b, t, hkv * dv), seed=2)}
    extra = {"past": normal((b, hkv, dk, dv), seed=3) if rule != "linear" else None,
             "decay": -np.abs(normal((b, t, hkv * dk if per_key else hkv), seed=4)) if "gated" in rule else None,
             "beta": np.abs(normal((b, t, 1 if hkv == 1 else hkv), seed=5)) if "delta" in rule else None}
    got = run(cache, "LinearAttention", {**inputs, **extra}, {}, ["y", "state"], opset=27, q_num_heads=hq,
              kv_num_heads=hkv, update_rule=rule)
    assert got["state"].shape == (b, hkv, dk, dv)


def test_linear_attention_float16_one_step(cache):
    inputs = {"q": normal((1, 1, 8), "float16"), "k": normal((1, 1, 8), "float16", 1),
              "v": normal((1, 1, 8), "float16", 2)}
    run(cache, "LinearAttention", inputs, {}, ["y", "state"], opset=27, q_num_heads=2, kv_num_heads=2,
        update_rule="linear", scale=0.5)


# ------------------------------------------------------------------------------------ CausalConvWithState

@pytest.mark.parametrize("dtype,kernel,bias,past,activation", [
    ("float32", 4, True, True, "silu"), ("float32", 4, False, False, "none"), ("float32", 1, True, False, "swish"),
    ("float16", 3, True, True, "silu"), ("float32", 5, False, False, "none")])
def test_causal_conv_with_state(cache, dtype, kernel, bias, past, activation):
    n, c, length = 2, 3, 2 if kernel == 5 else 6
    inputs = {"x": normal((n, c, length), dtype), "w": normal((c, 1, kernel), dtype, 1),
              "b": normal((c,), dtype, 2) if bias else None,
              "past": normal((n, c, kernel - 1), dtype, 3) if past else None}
    got = run(cache, "CausalConvWithState", inputs, {}, ["y", "state"], opset=27, activation=activation)
    assert got["state"].shape == (n, c, kernel - 1)
