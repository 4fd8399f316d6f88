"""Reference semantics of ONNX ops that select or write elements by index.

Gather/Scatter families, OneHot, NonZero, Compress, TopK and Unique. The common thread is
turning ONNX's index tensors (negative entries count from the end) into numpy fancy-index
tuples; writes go through ``ufunc.at`` so duplicate indices accumulate under a reduction.
Index outputs are int64, as ONNX requires.
"""

from __future__ import annotations

import numpy as np

from dcopt.ops.registry import reference
from dcopt.ops.tensor import norm_axis, scalar_int, wrap_indices

_REDUCTIONS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _write(out: np.ndarray, index: tuple, updates: np.ndarray, reduction: str) -> np.ndarray:
    """``out[index] (reduction)= updates`` in place; plain assignment for 'none'."""
    if reduction == "none":
        out[index] = updates
    else:
        _REDUCTIONS[reduction].at(out, index, updates)
    return out


def _elements_index(indices: np.ndarray, data_shape, axis: int) -> tuple:
    """Fancy index addressing data[..., indices[i, j, ...] on ``axis``, ...] elementwise."""
    index = list(np.indices(indices.shape, sparse=True))
    index[axis] = wrap_indices(indices, data_shape[axis])
    return tuple(index)


def _nd_index(indices: np.ndarray, data_shape) -> tuple:
    """Fancy index from an ND index tensor whose last axis holds coordinates."""
    k = indices.shape[-1]
    return tuple(np.moveaxis(wrap_indices(indices, data_shape[:k]), -1, 0))


@reference("Gather")
def gather(data, indices, *, axis=0):
    axis = norm_axis(axis, data.ndim)
    return np.take(data, wrap_indices(indices, data.shape[axis]), axis=axis)


@reference("GatherElements")
def gather_elements(data, indices, *, axis=0):
    axis = norm_axis(axis, data.ndim)
    return data[_elements_index(indices, data.shape, axis)]


@reference("GatherND")
def gather_nd(data, indices, *, batch_dims=0):
    b = batch_dims
    batch = data.shape[:b]
    coords = indices.reshape((-1,) + indices.shape[b:])
    flat = data.reshape((-1,) + data.shape[b:])
    rows = np.broadcast_to(np.arange(flat.shape[0]).reshape((-1,) + (1,) * (coords.ndim - 2)), coords.shape[:-1])
    out = flat[(rows,) + _nd_index(coords, flat.shape[1:])]
    return out.reshape(batch + indices.shape[b:-1] + data.shape[b + indices.shape[-1]:])


@reference("ScatterElements", "Scatter")
def scatter_elements(data, indices, updates, *, axis=0, reduction="none"):
    axis = norm_axis(axis, data.ndim)
    return _write(data.copy(), _elements_index(indices, data.shape, axis), updates, reduction)


@reference("ScatterND")
def scatter_nd(data, indices, updates, *, reduction="none"):
    return _write(data.copy(), _nd_index(indices, data.shape), updates, reduction)


@reference("TensorScatter")
def tensor_scatter(past_cache, update, write_indices=None, *, axis=-2, mode="linear"):
    """Write ``update`` into a KV cache along ``axis`` at a per-batch offset (axis 0 is batch)."""
    axis = norm_axis(axis, past_cache.ndim)
    batch, max_len, length = past_cache.shape[0], past_cache.shape[axis], update.shape[axis]
    offsets = np.zeros(batch, np.int64) if write_indices is None else np.asarray(write_indices, np.int64)
    positions = offsets[:, None] + np.arange(length)  # [batch, length]
    if mode == "circular":
        positions %= max_len
    index = list(np.indices(update.shape, sparse=True))
    index[axis] = positions.reshape((batch,) + (1,) * (axis - 1) + (length,) + (1,) * (update.ndim - axis - 1))
    out = past_cache.copy()
    out[tuple(index)] = update
    return out


@reference("OneHot")
def one_hot(indices, depth, values, *, axis=-1):
    depth = scalar_int(depth)
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + depth, idx)
    hot = idx[..., None] == np.arange(depth)
    hot = np.moveaxis(hot, -1, norm_axis(axis, idx.ndim + 1))
    return np.where(hot, values[1], values[0]).astype(values.dtype)


@reference("NonZero")
def non_zero(x):
    if x.ndim == 0:
        return np.zeros((0, int(bool(x))), dtype=np.int64)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@reference("Compress")
def compress(x, condition, *, axis=None):
    return np.compress(np.asarray(condition).astype(bool).reshape(-1), x, axis=axis)


@reference("TopK")
def top_k(x, k, *, axis=-1, largest=1, sorted=1):
    """``k`` is an attribute before opset 10 and an input since. Ties keep index order."""
    axis = norm_axis(axis, x.ndim)
    n = x.shape[axis]
    if largest:  # descending, stable: sort the reversed axis ascending, then reverse back
        order = n - 1 - np.flip(np.argsort(np.flip(x, axis), axis=axis, kind="stable"), axis)
    else:
        order = np.argsort(x, axis=axis, kind="stable")
    order = np.take(order, np.arange(scalar_int(k)), axis=axis).astype(np.int64)
    return np.take_along_axis(x, order, axis=axis), order


@reference("Unique")
def unique(x, *, axis=None, sorted=1):
    """Unique values (or slices along ``axis``) with first indices, inverse map and counts."""
    data = x.reshape(-1) if axis is None else x
    axis = 0 if axis is None else norm_axis(axis, x.ndim)
    values, first, inverse, counts = np.unique(data, return_index=True, return_inverse=True,
                                               return_counts=True, axis=axis)
    inverse = inverse.reshape(-1)
    if not sorted:  # order of first occurrence
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        values, first, counts, inverse = np.take(values, order, axis=axis), first[order], counts[order], rank[inverse]
    return values, *(a.astype(np.int64) for a in (first, inverse, counts))
