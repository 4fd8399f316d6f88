"""Reductions, scans, softmax family, losses, normalizations and attention: hand-checked values.

Ops are called through the registry (so schema defaults and opset handling are exercised), with
the op modules imported directly so the tests do not depend on the catalog listing them.
"""

import numpy as np
import pytest

import dcopt.ops.attention  # noqa: F401  (registers the ops)
import dcopt.ops.normalization  # noqa: F401
import dcopt.ops.reduce  # noqa: F401
from dcopt.ops import registry

F32 = np.float32


def run(op, *inputs, opset=18, domain="", run_subgraph=None, **attrs):
    out = registry.call(registry.lookup(op, domain), list(inputs), attrs, opset, run_subgraph)
    return out if len(out) > 1 else out[0]


X = np.arange(1, 13, dtype=F32).reshape(2, 3, 2)


# --- Reduce* ---------------------------------------------------------------------------------

def test_reduce_axes_as_input_and_as_attribute_agree():
    by_input = run("ReduceSum", X, np.array([1], np.int64), opset=13, keepdims=0)
    by_attr = run("ReduceSum", X, opset=11, axes=(1,), keepdims=0)
    np.testing.assert_array_equal(by_input, [[9, 12], [27, 30]])
    np.testing.assert_array_equal(by_attr, by_input)
    assert by_input.dtype == F32
    by_attr = run("ReduceMax", X, opset=13, axes=(-1,))
    np.testing.assert_array_equal(by_attr, run("ReduceMax", X, np.array([-1]), opset=18))


def test_reduce_empty_axes_means_all_unless_noop():
    total = run("ReduceSum", X, np.array([], np.int64), opset=13)
    assert total.shape == (1, 1, 1) and total.item() == 78
    assert run("ReduceSum", X, opset=13, keepdims=0).shape == ()
    np.testing.assert_array_equal(run("ReduceSum", X, np.array([], np.int64), opset=13, noop_with_empty_axes=1), X)


@pytest.mark.parametrize("op, expected", [
    ("ReduceMean", [-1.5, 1.5, 4.5]), ("ReduceProd", [-4, -10, 18]), ("ReduceMin", [-4, -2, 3]),
    ("ReduceL1", [5, 7, 9]), ("ReduceSumSquare", [17, 29, 45]),
])
def test_reduce_values(op, expected):
    x = np.array([[1, -2, 3], [-4, 5, 6]], F32)
    np.testing.assert_allclose(run(op, x, np.array([0]), keepdims=0), expected)


def test_reduce_l2_logsum_logsumexp():
    x = np.array([[3, 4], [6, 8]], F32)
    np.testing.assert_allclose(run("ReduceL2", x, np.array([1]), keepdims=0), [5, 10])
    np.testing.assert_allclose(run("ReduceLogSum", x, np.array([1]), keepdims=0), np.log([7, 14]), rtol=1e-6)
    big = np.array([1000, 1000], F32)  # would overflow without the max shift
    np.testing.assert_allclose(run("ReduceLogSumExp", big, keepdims=0), 1000 + np.log(2), rtol=1e-6)


def test_reduce_integer_dtypes_are_kept():
    x = np.array([[1, 2], [3, 5]], np.int32)
    assert run("ReduceSum", x, np.array([0]), opset=13).dtype == np.int32
    mean = run("ReduceMean", x, np.array([1]), keepdims=0)
    assert mean.dtype == np.int32 and mean.tolist() == [1, 4]


def test_reduce_over_empty_set_gives_identity():
    empty = np.zeros((2, 0, 4), F32)
    axes = np.array([1])
    assert run("ReduceSum", empty, axes, opset=13).tolist() == [[[0] * 4]] * 2
    assert np.all(run("ReduceProd", empty, axes) == 1)
    assert np.all(run("ReduceMax", empty, axes) == -np.inf) and np.all(run("ReduceMin", empty, axes) == np.inf)
    assert np.all(run("ReduceLogSumExp", empty, axes) == -np.inf)
    assert np.all(run("ReduceMax", empty.astype(np.int32), axes) == np.iinfo(np.int32).min)
    assert run("ReduceMax", np.zeros((0,), bool), keepdims=0).item() is False


def test_reduce_half_precision_accumulates_wide():
    x = np.full(4096, 1, np.float16)  # float16 alone stops counting at 2048
    s = run("ReduceSum", x, opset=13, keepdims=0)
    assert s.dtype == np.float16 and s == 4096


# --- ArgMax / ArgMin, CumSum / CumProd ------------------------------------------------------

def test_argmax_argmin():
    x = np.array([[2, 1, 2], [0, 5, 5]], F32)
    np.testing.assert_array_equal(run("ArgMax", x, axis=1), [[0], [1]])
    np.testing.assert_array_equal(run("ArgMax", x, axis=1, keepdims=0, select_last_index=1, opset=13), [2, 2])
    out = run("ArgMin", x, axis=-2, keepdims=0)
    assert out.dtype == np.int64 and out.tolist() == [1, 0, 0]


def test_cumsum_cumprod_variants():
    x = np.array([1, 2, 3, 4], np.int32)
    axis = np.array(0, np.int32)
    assert run("CumSum", x, axis, opset=14).tolist() == [1, 3, 6, 10]
    assert run("CumSum", x, axis, opset=14, exclusive=1).tolist() == [0, 1, 3, 6]
    assert run("CumSum", x, axis, opset=14, reverse=1).tolist() == [10, 9, 7, 4]
    assert run("CumSum", x, axis, opset=14, reverse=1, exclusive=1).tolist() == [9, 7, 4, 0]
    assert run("CumProd", x, np.array([0]), opset=26, exclusive=1).tolist() == [1, 1, 2, 6]
    assert run("CumSum", x, axis, opset=14).dtype == np.int32
    m = np.arange(6, dtype=F32).reshape(2, 3)
    np.testing.assert_array_equal(run("CumSum", m, np.array(-1), opset=14), [[0, 1, 3], [3, 7, 12]])


# --- Softmax family -------------------------------------------------------------------------

def test_softmax_axis_semantics_changed_at_opset_13():
    x = np.array([[[0, 0], [0, np.log(3)]]], F32)  # (1, 2, 2)
    per_axis = run("Softmax", x, axis=1, opset=13)  # normalize along axis 1 only
    np.testing.assert_allclose(per_axis[0, :, 1], [0.25, 0.75], rtol=1e-6)
    flat = run("Softmax", x, axis=1, opset=11)  # normalize over the flattened axes 1..
    np.testing.assert_allclose(flat.reshape(-1), [1 / 6, 1 / 6, 1 / 6, 0.5], rtol=1e-6)
    assert run("Softmax", x, opset=11).shape == x.shape  # default axis 1 before 13, -1 after


def test_logsoftmax_and_hardmax():
    x = np.array([[1000, 1000], [1, 3]], F32)
    expected = np.log([[0.5, 0.5], [1 / (1 + np.e ** 2), 1 / (1 + np.e ** -2)]])
    np.testing.assert_allclose(run("LogSoftmax", x, opset=13), expected, rtol=1e-5)
    np.testing.assert_array_equal(run("Hardmax", np.array([[3, 3, 1]], F32), opset=13), [[1, 0, 0]])


# --- Losses ---------------------------------------------------------------------------------

def test_nll_loss_reductions_weights_and_ignore_index():
    logp = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]], F32))
    target = np.array([0, 1, 2], np.int64)
    per = run("NegativeLogLikelihoodLoss", logp, target, reduction="none")
    np.testing.assert_allclose(per, -np.log([0.5, 0.8, 0.6]), rtol=1e-6)
    w = np.array([1, 2, 3], F32)
    np.testing.assert_allclose(run("NegativeLogLikelihoodLoss", logp, target, w), (per * w).sum() / 6, rtol=1e-6)
    ii = run("NegativeLogLikelihoodLoss", logp, target, ignore_index=1, opset=13)
    np.testing.assert_allclose(ii, (per[0] + per[2]) / 2, rtol=1e-6)
    assert ii.dtype == F32 and ii.shape == ()


def test_softmax_cross_entropy_returns_log_prob():
    scores = np.array([[0, 0], [0, np.log(3)]], F32)
    loss, log_prob = run("SoftmaxCrossEntropyLoss", scores, np.array([0, 1]), reduction="sum", opset=13)
    np.testing.assert_allclose(log_prob, np.log([[0.5, 0.5], [0.25, 0.75]]), rtol=1e-6)
    np.testing.assert_allclose(loss, -np.log(0.5) - np.log(0.75), rtol=1e-6)


# --- Normalizations -------------------------------------------------------------------------

def test_layer_normalization_outputs():
    x = np.array([[1, 2, 3], [2, 4, 6]], F32)
    y, mean, inv_std = run("LayerNormalization", x, np.full(3, 2, F32), np.ones(3, F32), opset=17, epsilon=0.0)
    np.testing.assert_allclose(y[0], 2 * np.array([-1, 0, 1]) / np.sqrt(2 / 3) + 1, rtol=1e-6)
    assert mean.shape == (2, 1) and mean[:, 0].tolist() == [2, 4]
    np.testing.assert_allclose(inv_std[0], [np.sqrt(1.5)], rtol=1e-6)
    y_all = run("LayerNormalization", X, np.ones((3, 2), F32), opset=17, axis=1)[0]
    np.testing.assert_allclose(y_all.reshape(2, -1).mean(1), 0, atol=1e-6)


def test_rms_normalization():
    x = np.array([[3, 4]], F32)
    np.testing.assert_allclose(run("RMSNormalization", x, np.array([1, 2], F32), opset=23, epsilon=0.0),
                               [[3 / np.sqrt(12.5), 8 / np.sqrt(12.5)]], rtol=1e-6)


def test_group_normalization_scale_per_group_then_per_channel():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 3)).astype(F32)
    old = run("GroupNormalization", x, np.array([1, 2], F32), np.array([0, 1], F32), opset=18, num_groups=2)
    new = run("GroupNormalization", x, np.array([1, 1, 2, 2], F32), np.array([0, 0, 1, 1], F32), opset=21, num_groups=2)
    np.testing.assert_allclose(old, new, rtol=1e-6)
    np.testing.assert_allclose(new[:, :2].reshape(2, -1).std(1), 1, rtol=1e-3)


def test_instance_and_batch_normalization():
    x = np.arange(8, dtype=F32).reshape(1, 2, 4)
    y = run("InstanceNormalization", x, np.ones(2, F32), np.zeros(2, F32), opset=6)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-6)
    ones, zeros = np.ones(2, F32), np.zeros(2, F32)
    mean, var = np.array([1, 2], F32), np.array([4, 9], F32)
    y = run("BatchNormalization", x, ones, zeros, mean, var, opset=15, epsilon=0.0)
    np.testing.assert_allclose(y[0, 1], (x[0, 1] - 2) / 3, rtol=1e-6)
    old = run("BatchNormalization", x, ones, zeros, mean, var, opset=6, epsilon=0.0, spatial=1, is_test=1)
    np.testing.assert_allclose(old, y)
    y, running_mean, running_var = run("BatchNormalization", x, ones, zeros, mean, var, opset=15, training_mode=1,
                                       momentum=0.5)
    np.testing.assert_allclose(running_mean, 0.5 * mean + 0.5 * x[0].mean(-1))
    np.testing.assert_allclose(running_var, 0.5 * var + 0.5 * x[0].var(-1))


def test_lp_mvn_lrn():
    x = np.array([[3, -4], [0, 0]], F32)
    np.testing.assert_allclose(run("LpNormalization", x, opset=22), [[0.6, -0.8], [0, 0]])
    np.testing.assert_allclose(run("LpNormalization", x, p=1, opset=22), [[3 / 7, -4 / 7], [0, 0]], rtol=1e-6)
    y = run("MeanVarianceNormalization", np.arange(8, dtype=F32).reshape(1, 2, 2, 2), opset=13, axes=(2, 3))
    np.testing.assert_allclose(y[0, 0].reshape(-1), np.array([-3, -1, 1, 3]) / np.sqrt(5), rtol=1e-6)
    c = np.array([1, 2, 3], F32).reshape(1, 3, 1, 1)
    y = run("LRN", c, size=3, alpha=3.0, beta=1.0, bias=1.0, opset=13)  # y = x / (1 + sum of window squares)
    np.testing.assert_allclose(y.reshape(-1), [1 / 6, 2 / 15, 3 / 14], rtol=1e-6)


# --- Attention family -----------------------------------------------------------------------

def naive_attention(q, k, v, bias=0.0):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]) + bias
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


@pytest.fixture
def qkv():
    rng = np.random.default_rng(1)
    return [rng.standard_normal(s).astype(F32) for s in ((2, 4, 3, 8), (2, 2, 5, 8), (2, 2, 5, 6))]


def test_attention_4d_gqa_and_3d_forms(qkv):
    q, k, v = qkv
    expected = naive_attention(q, np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1))
    y, present_k, present_v, qk = run("Attention", q, k, v, opset=23)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert present_k is k or np.array_equal(present_k, k)
    np.testing.assert_allclose(qk, q @ np.swapaxes(np.repeat(k, 2, 1), -1, -2) / np.sqrt(8), rtol=1e-5, atol=1e-6)

    def flat(t):
        return t.transpose(0, 2, 1, 3).reshape(t.shape[0], t.shape[2], -1)
    y3 = run("Attention", flat(q), flat(k), flat(v), opset=23, q_num_heads=4, kv_num_heads=2)[0]
    np.testing.assert_allclose(y3, flat(expected), rtol=1e-5, atol=1e-6)


def test_attention_causal_with_past_and_masks(qkv):
    q, k, v = qkv
    past_k, past_v, new_k, new_v = k[:, :, :2], v[:, :, :2], k[:, :, 2:], v[:, :, 2:]
    y, present_k, _, _ = run("Attention", q, new_k, new_v, None, past_k, past_v, opset=23, is_causal=1)
    np.testing.assert_array_equal(present_k, k)
    # bottom-right causal: query i (of 3) sees keys j <= i + 2 (the cache length)
    allowed = np.arange(5)[None, :] <= np.arange(3)[:, None] + 2
    expected = naive_attention(q, np.repeat(k, 2, 1), np.repeat(v, 2, 1), np.where(allowed, 0, -np.inf))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    y_bool = run("Attention", q, k, v, allowed, opset=23)[0]  # the same pattern as a boolean mask
    np.testing.assert_allclose(y_bool, expected, rtol=1e-5, atol=1e-6)


def test_attention_fully_masked_row_is_zero_and_softmax_mode(qkv):
    q, k, v = qkv
    mask = np.ones((3, 5), bool)
    mask[1] = False
    y, _, _, probs = run("Attention", q, k, v, mask, opset=23, qk_matmul_output_mode=3)
    assert np.all(y[:, :, 1] == 0) and np.all(probs[:, :, 1] == 0) and not np.isnan(y).any()
    np.testing.assert_allclose(probs[:, :, 0].sum(-1), 1, rtol=1e-6)


def test_attention_softcap_and_window(qkv):
    q, k, v = qkv
    _, _, _, capped = run("Attention", q * 10, k, v, opset=23, softcap=2.0, qk_matmul_output_mode=1)
    assert np.abs(capped).max() <= 2.0
    y = run("Attention", q, k[:, :, :3], v[:, :, :3], opset=25, left_window_size=0, right_window_size=0)[0]
    np.testing.assert_allclose(y, np.repeat(v[:, :, :3], 2, 1), rtol=1e-6)  # each query sees only key i


def test_flex_attention_without_mods_matches_attention(qkv):
    q, k, v = qkv
    y = run("FlexAttention", q, k, v, domain="ai.onnx.preview", opset=1)
    np.testing.assert_allclose(y, run("Attention", q, k, v, opset=23)[0], rtol=1e-5, atol=1e-6)
    uniform = run("FlexAttention", q, k, v, domain="ai.onnx.preview", opset=1, score_mod="graph",
                  run_subgraph=lambda g, feeds: [feeds[0] * 0])  # uniform attention
    np.testing.assert_allclose(uniform, np.broadcast_to(np.repeat(v, 2, 1).mean(2, keepdims=True), uniform.shape),
                               rtol=1e-5)


def test_linear_attention_linear_rule_is_causal_unnormalized_attention():
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((1, 4, 6)).astype(F32) for _ in range(3))  # 2 heads of size 3
    out, state = run("LinearAttention", q, k, v, opset=27, q_num_heads=2, kv_num_heads=2, update_rule="linear")

    def heads(t):
        return t.reshape(1, 4, 2, 3).transpose(0, 2, 1, 3)
    scores = heads(q) @ np.swapaxes(heads(k), -1, -2) * np.tril(np.ones((4, 4))) / np.sqrt(3)
    expected = (scores @ heads(v)).transpose(0, 2, 1, 3).reshape(1, 4, 6)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state, np.swapaxes(heads(k), -1, -2) @ heads(v), rtol=1e-5, atol=1e-5)


def test_rotary_embedding_quarter_turn():
    x = np.array([1, 2, 3, 4], F32).reshape(1, 1, 1, 4)  # (batch, heads, seq, size)
    cos, sin = np.zeros((1, 2), F32), np.ones((1, 2), F32)  # angle pi/2 at position 0
    pos = np.zeros((1, 1), np.int64)
    np.testing.assert_allclose(run("RotaryEmbedding", x, cos, sin, pos, opset=23).reshape(-1), [-3, -4, 1, 2])
    inter = run("RotaryEmbedding", x, cos, sin, pos, opset=23, interleaved=1)
    np.testing.assert_allclose(inter.reshape(-1), [-2, 1, -4, 3])
    partial = run("RotaryEmbedding", x.reshape(1, 1, 4), cos[:, :1], sin[:, :1], pos, opset=23, num_heads=1,
                  rotary_embedding_dim=2)
    np.testing.assert_allclose(partial.reshape(-1), [-2, 1, 3, 4])


def test_swiglu():
    a, b = np.array([0, 2], F32), np.array([3, 5], F32)
    np.testing.assert_allclose(run("SwiGLU", a, b, opset=28), [0, 2 / (1 + np.exp(-2)) * 5], rtol=1e-6)
