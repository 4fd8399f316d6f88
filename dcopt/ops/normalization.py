"""Reference semantics for the normalization ops.

Every op here standardizes ``x`` over some axes -- (x - mean) / sqrt(var + eps) -- and then
applies a per-channel or per-element affine transform. They differ only in which axes are
reduced and how the scale/bias broadcast, so the arithmetic lives once in :func:`_standardize`
and each op picks its axes. Statistics are computed in the ``stash_type`` precision where the
op has one (float32 by default), otherwise in at least float32, and the result is rounded to
the input dtype once at the end.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from dcopt.ops.registry import reference


def _compute_dtype(x: np.ndarray, stash_type: int | None = None) -> np.dtype:
    if stash_type is not None:
        return helper.tensor_dtype_to_np_dtype(stash_type)
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def _standardize(x: np.ndarray, axes: tuple[int, ...], epsilon: float, dtype: np.dtype):
    """(normalized x, mean, 1/std) over ``axes`` (kept as size-1 dims), all in ``dtype``."""
    x = x.astype(dtype)
    mean = np.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    inv_std = 1 / np.sqrt(np.mean(centered * centered, axis=axes, keepdims=True) + dtype.type(epsilon))
    return centered * inv_std, mean, inv_std


def _per_channel(p: np.ndarray, ndim: int) -> np.ndarray:
    """A (C,) parameter reshaped to broadcast along axis 1 of an ``ndim``-D NC... tensor."""
    return p.reshape((-1,) + (1,) * (ndim - 2)) if p.ndim == 1 and ndim > 2 else p


def _trailing_axes(ndim: int, axis: int) -> tuple[int, ...]:
    return tuple(range(axis % ndim, ndim))


@reference("LayerNormalization")
def layer_normalization(x, scale, bias=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    y, mean, inv_std = _standardize(x, _trailing_axes(x.ndim, axis), epsilon, _compute_dtype(x, stash_type))
    y = y * scale if bias is None else y * scale + bias
    return y.astype(x.dtype), mean, inv_std


@reference("RMSNormalization")
def rms_normalization(x, scale, *, axis=-1, epsilon=1e-5, stash_type=1):
    xs = x.astype(_compute_dtype(x, stash_type))
    mean_square = np.mean(xs * xs, axis=_trailing_axes(x.ndim, axis), keepdims=True)
    return (xs / np.sqrt(mean_square + xs.dtype.type(epsilon)) * scale).astype(x.dtype)


@reference("GroupNormalization")
def group_normalization(x, scale, bias, *, num_groups, epsilon=1e-5, stash_type=1, opset):
    n, c = x.shape[:2]
    grouped = x.reshape(n, num_groups, -1)
    y, _, _ = _standardize(grouped, (2,), epsilon, _compute_dtype(x, stash_type))
    if opset < 21:  # opset 18: scale and bias are per group, not per channel
        scale, bias = np.repeat(scale, c // num_groups), np.repeat(bias, c // num_groups)
    y = y.reshape(x.shape) * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)
    return y.astype(x.dtype)


@reference("InstanceNormalization")
def instance_normalization(x, scale, bias, *, epsilon=1e-5, consumed_inputs=None):  # opset 1 legacy attr
    y, _, _ = _standardize(x, tuple(range(2, x.ndim)), epsilon, _compute_dtype(x))
    return (y * _per_channel(scale, x.ndim) + _per_channel(bias, x.ndim)).astype(x.dtype)


@reference("BatchNormalization")
def batch_normalization(x, scale, bias, mean, var, *, epsilon=1e-5, momentum=0.9, training_mode=0,
                        spatial=1, is_test=0, consumed_inputs=None):
    """Inference normalizes with the given running statistics; ``training_mode`` (opset 14+)
    uses the batch statistics and also returns the updated running mean and variance.

    Opsets before 9 had ``spatial`` (0: statistics per activation, i.e. parameters shaped like
    ``x.shape[1:]``) and ``is_test``; the parameter shapes already say which layout is meant.
    """
    dtype = _compute_dtype(x)
    xs = x.astype(dtype)
    scale, bias = _per_channel(scale, x.ndim), _per_channel(bias, x.ndim)
    if not training_mode:
        norm = (xs - _per_channel(mean, x.ndim)) / np.sqrt(_per_channel(var, x.ndim) + dtype.type(epsilon))
        return (norm * scale + bias).astype(x.dtype)
    axes = (0,) + tuple(range(2, x.ndim))
    y, _, _ = _standardize(x, axes, epsilon, dtype)
    batch_mean, batch_var = xs.mean(axis=axes), xs.var(axis=axes)
    running_mean = mean * momentum + batch_mean * (1 - momentum)
    running_var = var * momentum + batch_var * (1 - momentum)
    return (y * scale + bias).astype(x.dtype), running_mean.astype(mean.dtype), running_var.astype(var.dtype)


@reference("LpNormalization")
def lp_normalization(x, *, axis=-1, p=2):
    xs = np.abs(x.astype(_compute_dtype(x)))
    norm = np.sqrt(np.sum(xs * xs, axis=axis, keepdims=True)) if p == 2 else \
        np.sum(xs ** p, axis=axis, keepdims=True) ** (1.0 / p)
    with np.errstate(all="ignore"):
        return np.where(norm == 0, 0, x / norm).astype(x.dtype)


@reference("MeanVarianceNormalization")
def mean_variance_normalization(x, *, axes=(0, 2, 3)):
    # The ONNX function body: (x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9)
    xs = x.astype(_compute_dtype(x))
    axes = tuple(axes)
    mean = np.mean(xs, axis=axes, keepdims=True)
    std = np.sqrt(np.mean(xs * xs, axis=axes, keepdims=True) - mean * mean)
    return ((xs - mean) / (std + xs.dtype.type(1e-9))).astype(x.dtype)


@reference("LRN")
def lrn(x, *, size, alpha=1e-4, beta=0.75, bias=1.0):
    """Local response normalization across channels: a window of ``size`` channels around c."""
    xs = x.astype(_compute_dtype(x))
    before, after = (size - 1) // 2, size // 2  # floor / ceil of (size - 1) / 2
    pad = [(0, 0)] * x.ndim
    pad[1] = (before, after)
    squares = np.pad(xs * xs, pad)
    c = x.shape[1]
    window = sum(squares[:, k:k + c] for k in range(size))
    return (xs / (bias + alpha / size * window) ** beta).astype(x.dtype)
