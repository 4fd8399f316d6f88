"""Reference semantics of ONNX shape and data-movement ops.

These ops compute no new values; they reshape, reorder, select or replicate existing elements
(plus a few constant generators: Constant, ConstantOfShape, Range, EyeLike). Their semantics
are mostly index bookkeeping, so the code leans on numpy's own view/indexing machinery and
spells out only what ONNX defines differently from numpy: Slice's clamping, Reshape's 0
entries, negative pads, and the inputs that older opsets passed as attributes (the attribute
arrives as a keyword of the same name as the later input, so one signature covers both).

Indexing ops (Gather/Scatter families, TopK, Unique, ...) live in ``indexing.py``; the helpers
at the top of this module are shared with it.
"""

from __future__ import annotations

import numpy as np

from dcopt.errors import UnsupportedError
from dcopt.ir import dtypes
from dcopt.ops.registry import reference

# -- shared helpers ---------------------------------------------------------------------------


def norm_axis(axis, rank: int) -> int:
    """ONNX axis in [-rank, rank-1] -> non-negative axis."""
    axis = int(axis)
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def ints(value) -> list[int]:
    """A shape-like input (array, tuple, scalar) as a list of Python ints."""
    return [int(v) for v in np.asarray(value).reshape(-1)]


def scalar_int(value) -> int:
    """A scalar (or one-element) input as a Python int."""
    return int(np.asarray(value).reshape(-1)[0])


def onnx_dtype(code: int) -> np.dtype:
    """ONNX TensorProto element type code -> numpy dtype."""
    return dtypes.to_numpy(dtypes.from_onnx(int(code)))


def wrap_indices(indices, dims) -> np.ndarray:
    """Negative indices (counting from the end of ``dims``, broadcast on the last axis) -> positive."""
    indices = np.asarray(indices).astype(np.int64)
    return np.where(indices < 0, indices + np.asarray(dims, dtype=np.int64), indices)


# -- shapes -----------------------------------------------------------------------------------


@reference("Shape")
def shape(x, *, start=0, end=None):
    return np.array(x.shape[start:end], dtype=np.int64)


@reference("Size")
def size(x):
    return np.array(x.size, dtype=np.int64)


@reference("Reshape")
def reshape(data, shape, *, allowzero=0):
    dims = ints(shape)
    if not allowzero:  # 0 copies the input's dimension
        dims = [data.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return data.reshape(dims)


@reference("Flatten")
def flatten(x, *, axis=1):
    axis = axis + x.ndim if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis:], dtype=np.int64))
    return x.reshape(outer, inner)


@reference("Squeeze")
def squeeze(data, axes=None):
    if axes is None:
        return np.squeeze(data)
    return np.squeeze(data, axis=tuple(norm_axis(a, data.ndim) for a in ints(axes)))


@reference("Unsqueeze")
def unsqueeze(data, axes):
    rank = data.ndim + len(ints(axes))
    return np.expand_dims(data, tuple(sorted(norm_axis(a, rank) for a in ints(axes))))


@reference("Transpose")
def transpose(x, *, perm=None):
    return np.transpose(x, None if perm is None else tuple(perm))


@reference("Concat")
def concat(*inputs, axis):
    return np.concatenate(inputs, axis=axis)


@reference("Split")
def split(x, split=None, *, axis=0, num_outputs=None, n_outputs=None):
    """``split`` is an attribute before opset 13 and an input since; ``num_outputs`` came in 18.

    With neither, the tensor splits into as many equal parts as the node has outputs
    (``n_outputs``, supplied by the registry).
    """
    axis = norm_axis(axis, x.ndim)
    dim = x.shape[axis]
    if split is not None:
        sizes = ints(split)
    else:
        parts = num_outputs or n_outputs
        if not parts:
            raise UnsupportedError("Split without 'split' sizes needs the node's number of outputs")
        chunk = -(-dim // parts)  # ceil: the last part may be smaller (opset 18)
        sizes = [chunk] * (parts - 1) + [dim - chunk * (parts - 1)]
    if sum(sizes) != dim:
        raise ValueError(f"split sizes {sizes} do not add up to dimension {dim}")
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


@reference("Slice")
def slice_(data, starts, ends, axes=None, steps=None):
    """Per-axis slice with ONNX's clamping (which differs from Python's for negative steps)."""
    starts, ends = ints(starts), ints(ends)
    axes = range(len(starts)) if axes is None else ints(axes)
    steps = [1] * len(starts) if steps is None else ints(steps)
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = norm_axis(axis, data.ndim)
        dim = data.shape[axis]
        start, end = (v + dim if v < 0 else v for v in (start, end))
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index[axis] = slice(start, None if end < 0 else end, step)
    return data[tuple(index)]


@reference("Expand")
def expand(x, shape):
    return np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(ints(shape)))).copy()


@reference("Tile")
def tile(x, repeats):
    return np.tile(x, tuple(ints(repeats)))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@reference("Pad")
def pad(data, pads=None, constant_value=None, axes=None, *, mode="constant", value=0.0, opset):
    """Before opset 11 ``pads`` and ``value`` are attributes; negative pads crop."""
    if opset >= 11:
        value = 0 if constant_value is None or constant_value.size == 0 else constant_value.reshape(-1)[0]
    pads = ints(pads)
    axes = range(data.ndim) if axes is None else [norm_axis(a, data.ndim) for a in ints(axes)]
    axes = list(axes)
    width = [[0, 0] for _ in range(data.ndim)]
    for i, axis in enumerate(axes):
        width[axis] = [pads[i], pads[i + len(axes)]]
    crop = tuple(slice(max(-b, 0), dim - max(-e, 0)) for (b, e), dim in zip(width, data.shape))
    data = data[crop]
    width = [(max(b, 0), max(e, 0)) for b, e in width]
    if mode not in _PAD_MODES:
        raise UnsupportedError(f"Pad mode '{mode}' is not supported")
    if mode == "constant":
        return np.pad(data, width, mode="constant", constant_values=np.asarray(value).astype(data.dtype))
    return np.pad(data, width, mode=_PAD_MODES[mode])


@reference("CenterCropPad")
def center_crop_pad(x, shape, *, axes=None):
    axes = range(x.ndim) if axes is None else [norm_axis(a, x.ndim) for a in axes]
    out = x
    for axis, target in zip(axes, ints(shape)):
        dim = out.shape[axis]
        if target < dim:  # crop: the extra element (odd difference) goes off the end
            begin = (dim - target) // 2
            out = np.take(out, np.arange(begin, begin + target), axis=axis)
        elif target > dim:  # pad: the extra zero (odd difference) goes at the end
            begin = (target - dim) // 2
            width = [(0, 0)] * out.ndim
            width[axis] = (begin, target - dim - begin)
            out = np.pad(out, width)
    return out


@reference("DepthToSpace")
def depth_to_space(x, *, blocksize, mode="DCR"):
    b, c, h, w = x.shape
    bs = blocksize
    if mode == "DCR":
        t = x.reshape(b, bs, bs, c // bs**2, h, w).transpose(0, 3, 4, 1, 5, 2)
    else:  # CRD
        t = x.reshape(b, c // bs**2, bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    return t.reshape(b, c // bs**2, h * bs, w * bs)


@reference("SpaceToDepth")
def space_to_depth(x, *, blocksize, mode="DCR"):
    b, c, h, w = x.shape
    bs = blocksize
    t = x.reshape(b, c, h // bs, bs, w // bs, bs)
    t = t.transpose(0, 3, 5, 1, 2, 4) if mode == "DCR" else t.transpose(0, 1, 3, 5, 2, 4)
    return t.reshape(b, c * bs * bs, h // bs, w // bs)


@reference("ReverseSequence")
def reverse_sequence(x, sequence_lens, *, batch_axis=1, time_axis=0):
    """Reverse the first ``sequence_lens[b]`` time steps of each batch entry."""
    steps = np.arange(x.shape[time_axis])
    lens = np.asarray(sequence_lens, dtype=np.int64)[:, None]
    perm = np.where(steps < lens, lens - 1 - steps, steps)  # [batch, time]
    if batch_axis > time_axis:
        perm = perm.T
    shape = [1] * x.ndim
    shape[batch_axis], shape[time_axis] = x.shape[batch_axis], x.shape[time_axis]
    return np.take_along_axis(x, perm.reshape(shape), axis=time_axis)


# -- constants and generators -----------------------------------------------------------------


@reference("Constant")
def constant(*, value=None, sparse_value=None, value_float=None, value_floats=None, value_int=None,
             value_ints=None, value_string=None, value_strings=None):
    if value is not None:
        return np.asarray(value)
    if sparse_value is not None:  # the importer already made it dense
        return np.asarray(sparse_value)
    if value_float is not None:
        return np.array(value_float, dtype=np.float32)
    if value_floats is not None:
        return np.array(value_floats, dtype=np.float32).reshape(-1)
    if value_int is not None:
        return np.array(value_int, dtype=np.int64)
    if value_ints is not None:
        return np.array(value_ints, dtype=np.int64).reshape(-1)
    if value_string is not None:
        return np.array(value_string, dtype=object)
    if value_strings is not None:
        return np.array(list(value_strings), dtype=object).reshape(-1)
    raise ValueError("Constant has no value attribute")


@reference("ConstantOfShape")
def constant_of_shape(shape, *, value=None):
    from dcopt.limits import check_tensor_size

    fill = np.zeros(1, dtype=np.float32) if value is None else np.asarray(value)
    dims = tuple(ints(shape))
    check_tensor_size("output", dims, fill.dtype, where="output of ConstantOfShape")
    return np.full(dims, fill.reshape(-1)[0], dtype=fill.dtype)


@reference("Range")
def range_(start, limit, delta):
    dtype = np.asarray(start).dtype
    if dtype.kind in "iu":
        s, l, d = (scalar_int(v) for v in (start, limit, delta))
        n = max(-(-(l - s) // d), 0)
        return (s + np.arange(n, dtype=np.int64) * d).astype(dtype)
    s, l, d = (float(np.asarray(v, dtype=np.float64).reshape(-1)[0]) for v in (start, limit, delta))
    n = max(int(np.ceil((l - s) / d)), 0)
    return (s + np.arange(n, dtype=np.float64) * d).astype(dtype)


@reference("EyeLike")
def eye_like(x, *, dtype=None, k=0):
    out_dtype = x.dtype if dtype is None else onnx_dtype(dtype)
    return np.eye(x.shape[0], x.shape[1], k=k, dtype=out_dtype)


@reference("Trilu")
def trilu(x, k=None, *, upper=1):
    k = 0 if k is None else scalar_int(k)
    return np.triu(x, k) if upper else np.tril(x, k)


@reference("Det")
def det(x):
    wide = x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)  # linalg has no half types
    return np.asarray(np.linalg.det(wide)).astype(x.dtype)
