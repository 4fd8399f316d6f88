"""Reference semantics for reductions, scans, the softmax family and the classification losses.

These ops all collapse or sweep one or more axes, and their ONNX definitions differ mostly in
*how the axes are named*: ``axes`` moved from an attribute to an input (ReduceSum at opset 13,
the other Reduce ops at 18), an empty ``axes`` means "all axes" unless ``noop_with_empty_axes``
is set, and Softmax/LogSoftmax/Hardmax before opset 13 flatten the input to 2-D at ``axis``.
Those rules live once in :func:`_reduce_axes` and :func:`_softmax_op`; each op then is a line.

Dtypes follow ONNX exactly: results keep the input dtype (numpy would widen integer sums and
make means float64), ArgMax/ArgMin return int64. float16/bfloat16 reductions accumulate in
float32 and round once at the end; the softmax family instead computes in the input dtype,
step for step like ONNX's function bodies (and Attention's internal softmax), so a graph
and its decomposition agree to the bit. A reduction over an empty set yields the identity of the
operation (0 for sums, 1 for products, -inf for max and log-sums, +inf for min, NaN for mean).
"""

from __future__ import annotations

import numpy as np

from dcopt.ops.registry import reference

# ---------------------------------------------------------------------------------------------
# Shared helpers


def _wide(x: np.ndarray) -> np.ndarray:
    """Half-precision floats (float16, bfloat16, ...) accumulate in float32; others as they are."""
    if x.dtype.kind == "V" or x.dtype.kind == "f" and x.dtype.itemsize < 4:  # ml_dtypes are kind "V"
        return x.astype(np.float32)
    return x


def _reduce_axes(data: np.ndarray, axes, noop_with_empty_axes: int) -> tuple[int, ...] | None:
    """ONNX ``axes`` (attribute tuple, 1-D int64 input, or absent) -> a numpy ``axis`` value.

    ``None`` reduces every axis; ``()`` reduces none (``noop_with_empty_axes`` with empty axes).
    """
    if axes is not None:
        axes = tuple(sorted({int(a) % max(data.ndim, 1) for a in np.asarray(axes).reshape(-1)}))
    if not axes:
        return () if noop_with_empty_axes else None
    return axes


def _extreme(dtype: np.dtype, sign: int):
    """The largest (sign=+1) or smallest (-1) value of ``dtype``: the identity of min / max."""
    if dtype == np.bool_:
        return sign > 0
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.max if sign > 0 else info.min
    return sign * np.inf


def _count(x: np.ndarray, axis) -> int:
    return int(np.prod([x.shape[a] for a in (range(x.ndim) if axis is None else axis)]))


def _logsumexp(x: np.ndarray, axis, keepdims: bool) -> np.ndarray:
    """log(sum(exp(x))) shifted by the finite maximum so large values do not overflow."""
    peak = np.max(np.where(np.isfinite(x), x, -np.inf), axis=axis, keepdims=True, initial=-np.inf)
    peak = np.where(np.isfinite(peak), peak, 0).astype(x.dtype)
    out = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return out if keepdims else np.squeeze(out, axis=axis)


# name -> f(x, axis, keepdims); x is already widened, the result is cast back by the wrapper
_REDUCTIONS = {
    "ReduceSum": lambda x, a, k: np.sum(x, axis=a, keepdims=k, dtype=x.dtype),
    "ReduceSumSquare": lambda x, a, k: np.sum(x * x, axis=a, keepdims=k, dtype=x.dtype),
    "ReduceL1": lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k, dtype=x.dtype),
    "ReduceL2": lambda x, a, k: np.sqrt(np.sum(x * x, axis=a, keepdims=k, dtype=x.dtype)),
    "ReduceLogSum": lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k, dtype=x.dtype)),
    "ReduceLogSumExp": _logsumexp,
    "ReduceProd": lambda x, a, k: np.prod(x, axis=a, keepdims=k, dtype=x.dtype),
    "ReduceMean": lambda x, a, k: np.sum(x, axis=a, keepdims=k, dtype=x.dtype) / _count(x, a),
    "ReduceMax": lambda x, a, k: np.max(x, axis=a, keepdims=k, initial=_extreme(x.dtype, -1)),
    "ReduceMin": lambda x, a, k: np.min(x, axis=a, keepdims=k, initial=_extreme(x.dtype, +1)),
}


def _register_reduction(name: str, fn) -> None:
    @reference(name)
    def reduce(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
        # ``axes`` arrives positionally as an input (newer opsets) or by keyword as an attribute.
        axis = _reduce_axes(data, axes, noop_with_empty_axes)
        with np.errstate(all="ignore"):
            out = fn(_wide(data), axis, bool(keepdims))
        return np.asarray(out).astype(data.dtype, copy=False)

    reduce.__name__ = reduce.__qualname__ = name


for _name, _fn in _REDUCTIONS.items():
    _register_reduction(_name, _fn)


# ---------------------------------------------------------------------------------------------
# ArgMax / ArgMin


def _register_arg(name: str, pick) -> None:
    @reference(name)
    def arg(data, *, axis=0, keepdims=1, select_last_index=0):
        axis %= max(data.ndim, 1)
        if select_last_index:  # search the flipped axis, then map the index back
            idx = data.shape[axis] - 1 - pick(np.flip(data, axis), axis=axis)
        else:
            idx = pick(data, axis=axis)
        idx = np.asarray(idx, dtype=np.int64)
        return np.expand_dims(idx, axis) if keepdims else idx

    arg.__name__ = arg.__qualname__ = name


_register_arg("ArgMax", np.argmax)
_register_arg("ArgMin", np.argmin)


# ---------------------------------------------------------------------------------------------
# CumSum / CumProd


def _register_cumulative(name: str, accumulate, identity) -> None:
    @reference(name)
    def cumulative(x, axis, *, exclusive=0, reverse=0):
        axis = int(np.asarray(axis).reshape(-1)[0]) % max(x.ndim, 1)
        y = np.flip(x, axis) if reverse else x
        out = accumulate(y, axis=axis, dtype=x.dtype)
        if exclusive:  # shift by one along axis, filling with the identity
            pad = [(0, 0)] * x.ndim
            pad[axis] = (1, 0)
            out = np.take(np.pad(out, pad, constant_values=identity), np.arange(x.shape[axis]), axis=axis)
        return np.ascontiguousarray(np.flip(out, axis) if reverse else out)

    cumulative.__name__ = cumulative.__qualname__ = name


_register_cumulative("CumSum", np.cumsum, 0)
_register_cumulative("CumProd", np.cumprod, 1)


# ---------------------------------------------------------------------------------------------
# Softmax family


def _shifted(x: np.ndarray, axis: int) -> np.ndarray:
    """x minus its (finite) maximum along axis: the numerically safe softmax argument."""
    peak = np.max(x, axis=axis, keepdims=True)
    return x - np.where(np.isfinite(peak), peak, 0)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(_shifted(x, axis))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    s = _shifted(x, axis)
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


def hardmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    out = np.zeros(x.shape, dtype=x.dtype)
    if x.size:
        np.put_along_axis(out, np.expand_dims(np.argmax(x, axis=axis), axis), 1, axis=axis)
    return out


def _softmax_op(name: str, fn) -> None:
    @reference(name)
    def impl(x, *, axis, opset):
        with np.errstate(all="ignore"):
            if opset < 13:  # old semantics: flatten to [prod(shape[:axis]), prod(shape[axis:])]
                a = axis % max(x.ndim, 1)
                flat = x.reshape(int(np.prod(x.shape[:a])), int(np.prod(x.shape[a:])))
                return fn(flat, 1).reshape(x.shape)
            return fn(x, axis)

    impl.__name__ = impl.__qualname__ = name


_softmax_op("Softmax", softmax)
_softmax_op("LogSoftmax", log_softmax)
_softmax_op("Hardmax", hardmax)


# ---------------------------------------------------------------------------------------------
# Losses


def _nll(log_prob: np.ndarray, target: np.ndarray, weight, ignore_index, reduction: str) -> np.ndarray:
    """Negative log-likelihood of ``target`` classes (axis 1 of ``log_prob``), weighted and reduced.

    Ignored targets get weight 0, so ``mean`` divides by the total weight of the counted ones.
    """
    target = target.astype(np.int64)
    ignored = target == ignore_index if ignore_index is not None else np.zeros(target.shape, bool)
    safe = np.where(ignored, 0, target)
    picked = -np.take_along_axis(log_prob, safe[:, None], axis=1)[:, 0]
    w = np.ones(target.shape, log_prob.dtype) if weight is None else weight[safe].astype(log_prob.dtype)
    w = np.where(ignored, log_prob.dtype.type(0), w)
    loss = picked * w
    if reduction == "sum":
        loss = np.sum(loss)
    elif reduction == "mean":
        with np.errstate(all="ignore"):
            loss = np.sum(loss) / np.sum(w)
    return np.asarray(loss).astype(log_prob.dtype)


@reference("NegativeLogLikelihoodLoss")
def negative_log_likelihood_loss(input, target, weight=None, *, reduction="mean", ignore_index=None):
    return _nll(input, target, weight, ignore_index, reduction)


@reference("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy_loss(scores, labels, weights=None, *, reduction="mean", ignore_index=None):
    with np.errstate(all="ignore"):
        log_prob = log_softmax(scores, axis=1)
    return _nll(log_prob, labels, weights, ignore_index, reduction), log_prob
