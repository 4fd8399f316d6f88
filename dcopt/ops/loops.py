"""Reference semantics of the loop-level ops (``dcopt.loop``): Map and LibraryCall.

A map is evaluated *vectorized*, never with Python loops, so that fully expanded real models
(CNNs at 224x224) run on the reference executor in seconds: every parameter becomes an open
index grid (``np.arange`` shaped to broadcast along its own axis), every in-memlet a gathered
array over that grid, the tasklet runs once on those arrays through its numpy translation, and
each out-memlet scatters (or, with a wcr, reduces) the result into a fresh output.

Gathers take a fast path when a subset is a strided *view*: every dimension a constant or
``a*p + c`` (one param, positive stride, each param at most once, in bounds) -- then it is basic
slicing plus a transpose, no copy. Anything else (windows ``2*i2 + i4 - 1``, reshape arithmetic,
padded reads with an ``outside`` value) is numpy advanced indexing over the broadcast grid.
Writes likewise: an out subset that is "params in some order, constants elsewhere" is a
transpose (no wcr) or a ``ufunc.reduce`` over the other params (wcr); other subsets fall back to
indexed assignment / ``ufunc.at``.
"""

from __future__ import annotations

import numpy as np

from dcopt.errors import ExecutionError
from dcopt.ir import clamp as clamps, dtypes
from dcopt.ir.loops import LIBRARY_CALL, LOOP_DOMAIN, MAP, WCR, LoopSpec, Memlet, Range, spec_from_attrs, written_shape
from dcopt.ir.tasklet import run_numpy
from dcopt.ops import nn
from dcopt.ops.registry import reference


def _containers(spec: LoopSpec, arrays) -> dict[str, np.ndarray]:
    names = spec.input_containers
    if len(arrays) != len(names):
        raise ExecutionError(f"loop node got {len(arrays)} inputs for in-memlet containers {list(names)}")
    return dict(zip(names, arrays))


def _linear_dims(spec: LoopSpec, memlet: Memlet, bindings) -> list[tuple[str | None, int, int]] | None:
    """Per dim (param or None, stride, offset) when the subset is one param or a constant per dim,
    each param at most once; None otherwise."""
    dims, seen = [], set()
    for d in memlet.subset:
        if isinstance(d, Range):
            return None
        lin = d.linear(bindings, spec.params)
        if lin is None:
            return None
        terms = [(p, a) for p, a in lin.items() if p is not None and a != 0]
        if len(terms) > 1 or (terms and (terms[0][1] <= 0 or terms[0][0] in seen)):
            return None
        param, stride = terms[0] if terms else (None, 0)
        seen.add(param)
        dims.append((param, stride, lin.get(None, 0)))
    return dims


def _grid_axes(spec: LoopSpec, params: list[str]) -> list[int]:
    return [spec.params.index(p) for p in params]


def _gather(array: np.ndarray, m: Memlet, spec: LoopSpec, grid, bounds, bindings, loaded=None) -> np.ndarray:
    if loaded:  # an indirect subset: index with the loaded values
        idx = [np.asarray(d.evaluate({**bindings, **grid, **loaded})) for d in m.subset]
        if m.outside is None:
            return array[tuple(idx)]
        return _masked(array, idx, m.outside)
    dims = _linear_dims(spec, m, bindings)
    if dims is not None:
        index, params = [], []
        for (param, stride, offset), size in zip(dims, array.shape):
            lo, hi = bounds[param] if param else (0, 0)
            first, last = stride * lo + offset, stride * hi + offset
            if hi >= lo and (first < 0 or last >= size):
                break  # out of bounds: needs the masked path
            if param is None:
                index.append(offset)
            else:
                index.append(slice(first, last + 1, stride) if hi >= lo else slice(0, 0))
                params.append(param)
        else:
            view = array[tuple(index)]
            axes = _grid_axes(spec, params)
            view = view.transpose(np.argsort(axes)) if axes != sorted(axes) else view
            shape = [1] * len(spec.params)
            for p, ax in zip(params, axes):
                shape[ax] = max(0, bounds[p][1] - bounds[p][0] + 1)
            return view.reshape(shape)
    if any(isinstance(d, Range) for d in m.subset):
        raise ExecutionError(f"map memlet {m} uses a range; map subsets are index expressions")
    idx = [np.asarray(d.evaluate({**bindings, **grid})) for d in m.subset]
    if m.outside is None:
        return array[tuple(idx)]
    return _masked(array, idx, m.outside)


def _masked(array: np.ndarray, idx, outside_value) -> np.ndarray:
    """``array[idx]`` where every index is in bounds, the outside value elsewhere."""
    inside = np.ones((), bool)
    for i, size in zip(idx, array.shape):
        inside = inside & (i >= 0) & (i < size)
    clipped = tuple(np.clip(i, 0, max(size - 1, 0)) for i, size in zip(idx, array.shape))
    outside = np.asarray(outside_value).astype(array.dtype)  # int64 beyond 2**53 must not pass through float64
    return np.where(inside, array[clipped] if array.size else outside, outside)


def _identity(wcr: str, dtype: np.dtype):
    value = WCR[wcr][1]
    if dtype.kind in "iub" and abs(value) == np.inf:
        info = np.iinfo(dtype) if dtype.kind != "b" else None
        return (value > 0) if info is None else (info.max if value > 0 else info.min)
    return value


def _scatter(value, m: Memlet, spec: LoopSpec, grid, bounds, bindings, dtype: np.dtype, env=None,
             loaded=None) -> np.ndarray:
    grid_shape = tuple(max(0, hi - lo + 1) for lo, hi in bounds.values())
    value = np.broadcast_to(np.asarray(value), grid_shape)
    if m.init:
        out = np.array(env[m.init], dtype=dtype, copy=True)
        idx = tuple(np.broadcast_to(np.asarray(d.evaluate({**bindings, **grid, **(loaded or {})})), grid_shape)
                    for d in m.subset)
        if m.wcr is None:  # sequential semantics: the last iteration writing an element wins
            flat = np.ravel_multi_index(tuple(i.reshape(-1) for i in idx), out.shape) if out.ndim else None
            if flat is None:
                if value.size:
                    out[()] = value.reshape(-1)[-1]
                return out
            order = np.arange(flat.size)
            last = np.zeros(out.size, np.int64) - 1
            np.maximum.at(last, flat, order)
            chosen = last >= 0
            out.reshape(-1)[chosen] = value.reshape(-1)[last[chosen]]
        else:
            WCR[m.wcr][0].at(out, idx, value.astype(dtype, copy=False))
        return out
    out_shape = written_shape(spec, m, bindings)
    dims = _linear_dims(spec, m, bindings)
    simple = dims is not None and all(
        (p is None and off == 0) or (p is not None and stride == 1 and off == -bounds[p][0]) for p, stride, off in dims)
    if simple:
        axes = _grid_axes(spec, [p for p, _, _ in dims if p])
        others = tuple(ax for ax in range(len(spec.params)) if ax not in axes)
        if m.wcr is not None:
            ufunc = WCR[m.wcr][0]
            value = ufunc.reduce(value, axis=others, initial=_identity(m.wcr, value.dtype)) if others else value
            kept = sorted(axes)
            value = value.transpose([kept.index(ax) for ax in axes])
        else:
            value = value.transpose(axes + list(others))
        return np.ascontiguousarray(value.reshape(out_shape).astype(dtype, copy=False)).reshape(out_shape)
    idx = tuple(np.broadcast_to(np.asarray(d.evaluate({**bindings, **grid})), grid_shape) for d in m.subset)
    if m.wcr is None:
        out = np.zeros(out_shape, dtype)
        out[idx] = value
        return out
    out = np.full(out_shape, _identity(m.wcr, dtype), dtype)
    WCR[m.wcr][0].at(out, idx, value.astype(dtype, copy=False))
    return out


@reference(MAP, domain=LOOP_DOMAIN)
def run_map(*arrays, **attrs):
    spec = spec_from_attrs(MAP, attrs)
    env = _containers(spec, arrays)
    bindings = spec.bind({k: v.shape for k, v in env.items()})
    bounds = spec.param_bounds(bindings)
    n = len(spec.params)
    grid = {p: np.arange(lo, hi + 1).reshape([-1 if k == j else 1 for k in range(n)])
            for j, (p, (lo, hi)) in enumerate(bounds.items())}
    values = {**bindings, **{p: g for p, g in grid.items() if p in spec.tasklet.reads}}
    loaded: dict[str, np.ndarray] = {}
    pending = list(spec.inputs)
    while pending:  # indirect memlets after the connectors their subsets name
        ready = [m for m in pending if not (m.names() & spec.connectors) - loaded.keys()]
        if not ready:
            raise ExecutionError(f"indirect memlets {[str(m) for m in pending]} depend on each other")
        for m in ready:
            uses = {c: loaded[c] for c in m.names() & spec.connectors}
            loaded[m.connector] = _gather(env[m.container], m, spec, grid, bounds, bindings, uses)
            pending.remove(m)
    values.update(loaded)
    results = run_numpy(spec.tasklet, values)
    return tuple(_scatter(results[m.connector], m, spec, grid, bounds, bindings, dtypes.to_numpy(dtype), env,
                          {c: loaded[c] for c in m.names() & spec.connectors})
                 for m, dtype in zip(spec.outputs, spec.out_dtypes))


# ------------------------------------------------------------------------------------ library calls

def _gemm(A, B, C=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    if A.ndim == 2 and B.ndim == 2:
        return nn.gemm(A, B, C, alpha=alpha, beta=beta, transA=transA, transB=transB)
    y = nn.matmul(np.swapaxes(A, -1, -2) if transA else A, np.swapaxes(B, -1, -2) if transB else B)
    if alpha != 1.0:
        y = y * alpha
    if C is not None and beta != 0:
        y = y + (C * beta if beta != 1.0 else C)
    return y.astype(A.dtype, copy=False)


def _conv(X, W, B=None, R=None, *, strides, pads, dilations, group=1):
    y = nn.conv(X, W, B, strides=strides, pads=pads, dilations=dilations, group=group)
    return y if R is None else (y + R).astype(y.dtype, copy=False)


_LIBRARY = {"gemm": _gemm, "conv": _conv}


def _operand(array: np.ndarray, m: Memlet, bindings) -> np.ndarray:
    index = tuple(slice(int(d.begin.evaluate(bindings)), int(d.end.evaluate(bindings))) if isinstance(d, Range)
                  else int(d.evaluate(bindings)) for d in m.subset)
    return array[index]


@reference(LIBRARY_CALL, domain=LOOP_DOMAIN)
def run_library_call(*arrays, **attrs):
    spec = spec_from_attrs(LIBRARY_CALL, attrs)
    env = _containers(spec, arrays)
    bindings = spec.bind({k: v.shape for k, v in env.items()})
    operands = {m.connector: _operand(env[m.container], m, bindings) for m in spec.inputs}
    options = {k: v for k, v in spec.options if k not in ("impl", "activation", "clamp")}
    y = np.asarray(_LIBRARY[spec.kind](**operands, **options))
    y = clamps.apply(y, clamps.from_options(dict(spec.options)))
    (out,), (dtype,) = spec.outputs, spec.out_dtypes
    expected = written_shape(spec, out, bindings)
    if y.shape != expected:
        raise ExecutionError(f"{spec.kind} produced shape {list(y.shape)}, but its out memlet {out} has extent "
                             f"{list(expected)}")
    return y.astype(dtypes.to_numpy(dtype), copy=False)
