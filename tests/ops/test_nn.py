"""Convolution, pooling, matrix products, recurrent layers and resampling: hand-checked values.

Ops are called through the registry (so schema defaults and opset handling are exercised), with
the op modules imported directly so the tests do not depend on the catalog listing them.
"""

import itertools
import time

import numpy as np
import pytest

import dcopt.ops.nn  # noqa: F401  (registers the ops)
import dcopt.ops.recurrent  # noqa: F401
import dcopt.ops.sampling  # noqa: F401
from dcopt.ops import registry

F32 = np.float32
rng = np.random.default_rng(0)


def run(op, *inputs, opset=22, n_outputs=3, **attrs):
    out = registry.call(registry.lookup(op), list(inputs), attrs, opset, n_outputs=n_outputs)
    return out if len(out) > 1 else out[0]


def randn(*shape):
    return rng.standard_normal(shape).astype(F32)


def naive_conv2d(x, w, b, stride, pad, dil, group):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x, [(0, 0), (0, 0), (pad[0], pad[2]), (pad[1], pad[3])])
    oh = (h + pad[0] + pad[2] - (kh - 1) * dil[0] - 1) // stride[0] + 1
    ow = (wd + pad[1] + pad[3] - (kw - 1) * dil[1] - 1) // stride[1] + 1
    y = np.zeros((n, m, oh, ow))
    for b_, o, i, j in itertools.product(range(n), range(m), range(oh), range(ow)):
        g = o // (m // group)
        for ci, p, q in itertools.product(range(cg), range(kh), range(kw)):
            row, col = i * stride[0] + p * dil[0], j * stride[1] + q * dil[1]
            y[b_, o, i, j] += w[o, ci, p, q] * xp[b_, g * cg + ci, row, col]
    return y + (0 if b is None else b.reshape(-1, 1, 1))


# --- Conv family -----------------------------------------------------------------------------

@pytest.mark.parametrize("group,stride,dil,pads", [(1, (1, 1), (1, 1), (1, 1, 1, 1)), (2, (2, 1), (1, 2), (0, 1, 2, 0)),
                                                   (4, (1, 2), (2, 1), (1, 0, 0, 1))])
def test_conv_matches_naive_loop(group, stride, dil, pads):
    x, w, b = randn(2, 4, 7, 6), randn(4, 4 // group, 3, 2), randn(4)
    y = run("Conv", x, w, b, group=group, strides=stride, dilations=dil, pads=pads)
    assert y.dtype == F32
    np.testing.assert_allclose(y, naive_conv2d(x, w, b, stride, pads, dil, group), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("auto_pad,shape,first",
                         [("SAME_UPPER", (3,), 3.0), ("SAME_LOWER", (3,), 1.0), ("VALID", (2,), 3.0)])
def test_conv_auto_pad_1d(auto_pad, shape, first):
    # x = 1..5, kernel [1, 1] stride 2: SAME pads one zero (at the end for UPPER, the start for LOWER).
    x = np.arange(1, 6, dtype=F32).reshape(1, 1, 5)
    y = run("Conv", x, np.ones((1, 1, 2), F32), auto_pad=auto_pad, strides=(2,))
    assert y.shape[2:] == shape and y[0, 0, 0] == first


def test_conv_3d_and_float16_keep_dtype():
    y = run("Conv", randn(1, 2, 4, 4, 4), randn(3, 2, 3, 3, 3), auto_pad="SAME_UPPER")
    assert y.shape == (1, 3, 4, 4, 4) and y.dtype == F32
    assert run("Conv", randn(1, 2, 5).astype(np.float16), randn(3, 2, 3).astype(np.float16)).dtype == np.float16


def test_depthwise_conv_is_per_channel():
    x, w = randn(1, 3, 5, 5), randn(3, 1, 3, 3)
    y = run("Conv", x, w, group=3, pads=(1, 1, 1, 1))
    for c in range(3):
        np.testing.assert_allclose(y[:, c:c + 1], run("Conv", x[:, c:c + 1], w[c:c + 1], pads=(1, 1, 1, 1)), rtol=1e-5)


def test_conv_transpose_is_the_adjoint_of_conv():
    x, w = randn(1, 4, 7, 8), randn(6, 2, 3, 3)  # conv: 4 -> 6 channels, group 2
    attrs = dict(strides=(2, 2), pads=(1, 0, 1, 1), group=2)
    y = run("Conv", x, w, **attrs)
    g = randn(*y.shape)
    back = run("ConvTranspose", g, w, **attrs)
    assert back.shape == x.shape
    np.testing.assert_allclose(np.vdot(y, g), np.vdot(x, back), rtol=1e-4)


def test_conv_transpose_output_shape_and_padding():
    x, w = randn(1, 1, 3), np.ones((1, 1, 3), F32)
    assert run("ConvTranspose", x, w, strides=(2,)).shape == (1, 1, 7)
    assert run("ConvTranspose", x, w, strides=(2,), output_padding=(1,)).shape == (1, 1, 8)
    y = run("ConvTranspose", np.array([[[1, 2, 3]]], F32), w, strides=(2,), output_shape=(8,))
    np.testing.assert_array_equal(y[0, 0], [1, 1, 3, 2, 5, 3, 3, 0])
    assert run("ConvTranspose", x, w, strides=(2,), auto_pad="SAME_UPPER").shape == (1, 1, 6)
    y = run("ConvTranspose", np.ones((1, 1, 2), F32), w, strides=(2,))
    np.testing.assert_array_equal(y[0, 0], [1, 1, 2, 1, 1])


def test_col2im_counts_overlaps():
    ones = np.ones((1, 4, 4), F32)  # 2x2 blocks, stride 1, over a 3x3 image: 4 blocks
    y = run("Col2Im", ones, np.array([3, 3]), np.array([2, 2]))
    np.testing.assert_array_equal(y[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


def test_integer_convs():
    x = np.array([[[[1, 2], [3, 4]]]], np.uint8)
    y = run("ConvInteger", x, np.ones((1, 1, 2, 2), np.uint8), np.array(1, np.uint8))
    assert y.dtype == np.int32 and y.item() == 6
    q = run("QLinearConv", x, F32(0.5), np.uint8(0), np.ones((1, 1, 2, 2), np.int8), F32(1.0), np.int8(0),
            F32(2.0), np.uint8(10))
    assert q.dtype == np.uint8 and q.item() == 12  # round(10 * 0.5 / 2) + 10; 2.5 rounds to even


def test_deform_conv_with_zero_offsets_is_conv():
    x, w = randn(1, 2, 5, 5), randn(3, 2, 3, 3)
    off = np.zeros((1, 2 * 9, 3, 3), F32)
    np.testing.assert_allclose(run("DeformConv", x, w, off), run("Conv", x, w), rtol=1e-5, atol=1e-6)
    # Shifting every tap by exactly one row samples the next row of the input.
    shift = np.zeros((1, 9, 2, 3, 3), F32)
    shift[:, :, 0] = 1
    np.testing.assert_allclose(run("DeformConv", x, w, shift.reshape(1, 18, 3, 3))[..., :2, :],
                               run("Conv", x, w)[..., 1:, :], rtol=1e-5, atol=1e-6)


def test_causal_conv_with_state_streams():
    x, w, b = randn(1, 3, 8), randn(3, 1, 4), randn(3)
    whole, _ = run("CausalConvWithState", x, w, b, opset=27)
    first, state = run("CausalConvWithState", x[..., :5], w, b, opset=27)
    second, _ = run("CausalConvWithState", x[..., 5:], w, b, state, opset=27)
    np.testing.assert_allclose(np.concatenate([first, second], -1), whole, rtol=1e-5)


def test_conv_resnet_layer_is_fast():
    x, w = randn(1, 64, 56, 56), randn(64, 64, 3, 3)
    run("Conv", x, w, pads=(1, 1, 1, 1))
    start = time.perf_counter()
    run("Conv", x, w, pads=(1, 1, 1, 1))
    assert time.perf_counter() - start < 0.5


# --- Pooling -------------------------------------------------------------------------------------

X44 = np.arange(16, dtype=F32).reshape(1, 1, 4, 4)


def test_max_pool_values_and_indices():
    y, idx = run("MaxPool", X44, kernel_shape=(2, 2), strides=(2, 2))
    np.testing.assert_array_equal(y[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(idx[0, 0], [[5, 7], [13, 15]])
    _, col = run("MaxPool", X44, kernel_shape=(2, 2), strides=(2, 2), storage_order=1)
    np.testing.assert_array_equal(col[0, 0], [[5, 13], [7, 15]])  # h + w * H
    _, batched = run("MaxPool", np.stack([X44[0], X44[0]]), kernel_shape=(2, 2), strides=(2, 2))
    assert batched[1, 0, 0, 0] == 16 + 5  # indices count across batch and channel


def test_pool_ceil_mode_and_padding():
    y, _ = run("MaxPool", X44, kernel_shape=(3, 3), strides=(2, 2), ceil_mode=1)
    np.testing.assert_array_equal(y[0, 0], [[10, 11], [14, 15]])
    assert run("MaxPool", X44, kernel_shape=(3, 3), strides=(2, 2), n_outputs=1).shape == (1, 1, 1, 1)
    y, _ = run("MaxPool", -X44, kernel_shape=(2, 2), pads=(1, 1, 0, 0))
    assert y[0, 0, 0, 0] == 0  # the padding never wins a max


def test_average_pool_count_include_pad():
    ones = np.ones((1, 1, 2, 2), F32)
    excl = run("AveragePool", ones, kernel_shape=(2, 2), pads=(1, 1, 1, 1))
    incl = run("AveragePool", ones, kernel_shape=(2, 2), pads=(1, 1, 1, 1), count_include_pad=1)
    np.testing.assert_array_equal(excl[0, 0], np.ones((3, 3)))
    np.testing.assert_array_equal(incl[0, 0], [[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]])
    assert excl.dtype == F32


def test_lp_and_global_pools():
    x = np.array([[[3, 4, 0]]], F32)
    np.testing.assert_allclose(run("LpPool", x, kernel_shape=(2,))[0, 0], [5, 4])
    np.testing.assert_allclose(run("GlobalLpPool", x)[0, 0], [5])
    assert run("GlobalAveragePool", X44).item() == 7.5 and run("GlobalMaxPool", X44).item() == 15


def test_max_unpool_inverts_max_pool():
    y, idx = run("MaxPool", X44, kernel_shape=(2, 2), strides=(2, 2))
    up = run("MaxUnpool", y, idx, kernel_shape=(2, 2), strides=(2, 2))
    np.testing.assert_array_equal(up, np.where(np.isin(X44, y), X44, 0))
    assert run("MaxUnpool", y, idx, np.array([1, 1, 5, 5]), kernel_shape=(2, 2), strides=(2, 2)).shape == (1, 1, 5, 5)


# --- Matrix products ---------------------------------------------------------------------------

def test_gemm_transposes_scales_and_broadcasts_c():
    a, b = randn(4, 3), randn(5, 4)
    y = run("Gemm", a, b, np.array([1, 2, 3, 4, 5], F32), transA=1, transB=1, alpha=2.0, beta=0.5)
    np.testing.assert_allclose(y, 2 * a.T @ b.T + 0.5 * np.arange(1, 6), rtol=1e-5)
    assert run("Gemm", a.T, b.T).dtype == F32
    ints = run("Gemm", np.ones((2, 2), np.int32), np.ones((2, 2), np.int32), alpha=3.0)
    assert ints.dtype == np.int32 and ints[0, 0] == 6


def test_matmul_family():
    assert run("MatMul", randn(3), randn(3)).shape == ()
    assert run("MatMul", randn(2, 1, 4, 3), randn(5, 3, 2)).shape == (2, 5, 4, 2)
    a = np.array([[10, 20]], np.uint8)
    y = run("MatMulInteger", a, np.array([[1], [2]], np.int8), np.uint8(10))
    assert y.dtype == np.int32 and y.item() == 20
    q = run("QLinearMatMul", a, F32(0.1), np.uint8(0), np.array([[1], [1]], np.uint8), F32(1.0), np.uint8(0),
            F32(0.5), np.uint8(1))
    assert q.dtype == np.uint8 and q.item() == 7  # (10 + 20) * 0.1 / 0.5 + 1
    np.testing.assert_allclose(run("Einsum", randn(3, 3) * 0 + np.eye(3, dtype=F32), equation="ii"), 3)


def test_dropout_is_identity_at_inference():
    x = randn(3, 4)
    y, mask = run("Dropout", x, opset=7, ratio=0.5)
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == F32  # opset < 10: mask has the input type
    y, mask = run("Dropout", x, F32(0.5), np.bool_(False), opset=13)
    assert mask.dtype == np.bool_ and mask.all()
    y, _ = run("Dropout", x, F32(0.0), np.bool_(True), opset=13)
    np.testing.assert_array_equal(y, x)
    assert run("Dropout", x, opset=13, n_outputs=1) is x
    y, mask = run("Dropout", x, F32(0.5), np.bool_(True), opset=13, seed=3)
    np.testing.assert_allclose(y, np.where(mask, x * 2, 0))


# --- Recurrent ----------------------------------------------------------------------------------

def test_rnn_single_step_by_hand():
    x = np.array([[[1.0, 2.0]]], F32)  # seq 1, batch 1, input 2
    w, r = np.array([[[0.5, -0.25]]], F32), np.array([[[2.0]]], F32)
    b = np.array([[0.1, 0.2]], F32)
    y, h = run("RNN", x, w, r, b, None, np.array([[[0.5]]], F32), hidden_size=1)
    np.testing.assert_allclose(h.item(), np.tanh(0.5 - 0.5 + 1.0 + 0.3), rtol=1e-6)
    assert y.shape == (1, 1, 1, 1)


@pytest.mark.parametrize("op,gates", [("RNN", 1), ("GRU", 3), ("LSTM", 4)])
def test_recurrent_sequence_lens_and_directions(op, gates):
    s, bsz, i, hs = 4, 2, 3, 5
    x, w, r = randn(s, bsz, i), randn(2, gates * hs, i), randn(2, gates * hs, hs)
    lens = np.array([4, 2], np.int32)
    out = run(op, x, w, r, None, lens, hidden_size=hs, direction="bidirectional")
    y, y_h = out[0], out[1]
    assert y.shape == (s, 2, bsz, hs) and y_h.shape == (2, bsz, hs)
    np.testing.assert_array_equal(y[2:, :, 1], 0)  # past its length, batch 1 outputs zeros
    np.testing.assert_allclose(y_h[0, 1], y[1, 0, 1])  # forward: state at the last valid step
    np.testing.assert_allclose(y_h[1, 1], y[0, 1, 1])  # reverse: state after reaching step 0
    # The reverse direction of batch 1 equals a forward run over its reversed valid prefix.
    fwd = run(op, x[1::-1, 1:], w[1:], r[1:], hidden_size=hs)
    np.testing.assert_allclose(y[1::-1, 1, 1], fwd[0][:, 0, 0], rtol=1e-5, atol=1e-6)
    # layout=1 is the batch-major transpose of the same computation.
    lay = run(op, x.swapaxes(0, 1), w, r, None, lens, hidden_size=hs, direction="bidirectional", layout=1)
    np.testing.assert_allclose(lay[0], y.transpose(2, 0, 1, 3), rtol=1e-6)


def test_lstm_peepholes_and_gru_linear_before_reset_change_results():
    x, w, r = randn(3, 1, 2), randn(1, 16, 2), randn(1, 16, 4)
    plain = run("LSTM", x, w, r, hidden_size=4)[0]
    peep = run("LSTM", x, w, r, None, None, None, None, np.ones((1, 12), F32), hidden_size=4)[0]
    assert not np.allclose(plain, peep)
    wg, rg = randn(1, 12, 2), randn(1, 12, 4)
    bg = randn(1, 24)
    assert not np.allclose(run("GRU", x, wg, rg, bg, hidden_size=4)[0],
                           run("GRU", x, wg, rg, bg, hidden_size=4, linear_before_reset=1)[0])
    clipped = run("RNN", x * 100, randn(1, 4, 2), randn(1, 4, 4), hidden_size=4, activations=("Relu",), clip=1.0)[0]
    assert clipped.max() <= 1.0


# --- Resampling ------------------------------------------------------------------------------------

def test_resize_nearest_upsample_repeats():
    x = np.arange(4, dtype=F32).reshape(1, 1, 2, 2)
    y = run("Resize", x, None, np.array([1, 1, 2, 3], F32), mode="nearest", opset=19)
    np.testing.assert_array_equal(y, x.repeat(2, 2).repeat(3, 3))
    np.testing.assert_array_equal(run("Resize", x, np.array([1, 1, 2, 3], F32), opset=10), y)
    np.testing.assert_array_equal(run("Upsample", x, opset=7, scales=(1.0, 1.0, 2.0, 3.0)), y)
    assert run("Resize", x, None, None, np.array([3, 5]), axes=(2, 3), opset=19).shape == (1, 1, 3, 5)


def test_resize_linear_modes():
    x = np.array([[[[0, 3]]]], F32)
    ac = run("Resize", x, None, np.array([1, 1, 1, 2], F32), mode="linear",
             coordinate_transformation_mode="align_corners")
    np.testing.assert_allclose(ac[0, 0, 0], [0, 1, 2, 3])
    hp = run("Resize", x, None, np.array([1, 1, 1, 2], F32), mode="linear")
    np.testing.assert_allclose(hp[0, 0, 0], [0, 0.75, 2.25, 3])
    crop = run("Resize", x, np.array([0, 0, 0, -0.5, 1, 1, 1, 1], F32), np.array([1, 1, 1, 2], F32), mode="linear",
               coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-9.0)
    np.testing.assert_allclose(crop[0, 0, 0], [-9, 0, 1.5, 3])
    u8 = run("Resize", np.array([[[[0, 255]]]], np.uint8), None, np.array([1, 1, 1, 2], F32), mode="linear")
    assert u8.dtype == np.uint8 and u8[0, 0, 0].tolist() == [0, 64, 191, 255]


def test_resize_cubic_and_antialias_keep_constants_constant():
    x = np.full((1, 1, 6, 6), 2.5, F32)
    for mode, aa in (("cubic", 0), ("cubic", 1), ("linear", 1)):
        y = run("Resize", x, None, np.array([1, 1, 0.5, 1.5], F32), mode=mode, antialias=aa)
        assert y.shape == (1, 1, 3, 9)
        np.testing.assert_allclose(y, 2.5, rtol=1e-6)


@pytest.mark.parametrize("align_corners", [0, 1])
def test_identity_affine_grid_samples_the_input(align_corners):
    x = randn(2, 3, 4, 5)
    theta = np.tile(np.array([[1, 0, 0], [0, 1, 0]], F32), (2, 1, 1))
    grid = run("AffineGrid", theta, np.array(x.shape), align_corners=align_corners)
    assert grid.shape == (2, 4, 5, 2) and grid.dtype == F32
    for mode in ("nearest", "linear", "cubic"):
        y = run("GridSample", x, grid, mode=mode, align_corners=align_corners)
        np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-5)


def test_grid_sample_padding_modes():
    x = np.arange(3, dtype=F32).reshape(1, 1, 1, 3)
    grid = np.array([[[[-1.5, 0.0], [1.5, 0.0]]]], F32)  # x = -0.5 and 2.5 on a 1x3 image
    zeros = run("GridSample", x, grid, align_corners=1)
    border = run("GridSample", x, grid, align_corners=1, padding_mode="border")
    reflect = run("GridSample", x, grid, align_corners=1, padding_mode="reflection")
    np.testing.assert_allclose(zeros[0, 0, 0], [0, 1])  # half weight on a zero outside pixel
    np.testing.assert_allclose(border[0, 0, 0], [0, 2])
    np.testing.assert_allclose(reflect[0, 0, 0], [0.5, 1.5])


def test_roi_align_and_max_roi_pool():
    x = np.broadcast_to(np.arange(8, dtype=F32), (1, 2, 8, 8)).copy()  # value = column index
    rois = np.array([[0, 0, 7, 7], [2, 2, 6, 6]], F32)
    y = run("RoiAlign", x, rois, np.array([0, 0]), output_height=2, output_width=2, sampling_ratio=2)
    assert y.shape == (2, 2, 2, 2) and y.dtype == F32
    np.testing.assert_allclose(y[0, 0, 0], [1.25, 4.75])  # half_pixel: columns -0.5..6.5 in two bins
    m = run("MaxRoiPool", x, np.array([[0, 0, 0, 7, 7]], F32), pooled_shape=(2, 2))
    np.testing.assert_array_equal(m[0, 0], [[3, 7], [3, 7]])
