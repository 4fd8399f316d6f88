"""Resampling ops (Resize, Upsample, CenterCropPad, AffineGrid) -> maps over the output.

With static shapes and constant scales/sizes, Resize is separable and its coordinate arithmetic
is a function of the output coordinate alone: for each resized axis, the reference's own
:func:`dcopt.ops.sampling.resize_axis_taps` computes a table of source indices and weights per
output position once, at expansion time, as constant containers -- so every mode (nearest with
each rounding rule, linear, cubic with ``cubic_coeff_a``, ``exclude_outside``, antialias) and
every coordinate transformation is exact by construction, and the kernels only gather:

* nearest: one map over the output; each resized axis reads the data at a loaded index
  (an indirect subset naming the table's connector), or at ``(a*o + c) // d`` when the table
  is that affine floor (integer up- and down-sampling) and no table is needed at all;
* linear, cubic: one map per resized axis, in the reference's order, over that axis's output
  summing ``data[..., k_t, ...] * w_t`` over the taps ``t`` (unrolled in the tasklet; the many
  taps of antialiased downsampling reduce over a tap param with wcr sum) in the reference's
  working dtype (float32 for float32, else float64), then a map rounding and saturating to the
  input's dtype where it differs.

``tf_crop_and_resize`` marks outputs outside the crop in a boolean table; the tasklet writes
``extrapolation_value`` there.
"""

from __future__ import annotations

import math

import numpy as np

from dcopt.ops.sampling import resize_axis_taps, resize_steps
from dcopt.passes.expand import LoopBuilder, Refused, affine, expansion, fmt, index, params_of
from dcopt.passes.expansions.pooling import FLOATS, INTS

NUMBERS = FLOATS + INTS
#: taps per output written out in one tasklet (beyond: a reduction over a tap param)
MAX_UNROLLED_TAPS = 16


def table(b: LoopBuilder, hint: str, data: np.ndarray) -> str:
    """A constant container (index or weight table) computed at expansion time."""
    name = b.graph.fresh_name(f"{b.output() or b.node.op}_{hint}")
    b.graph.add_parameter(name, np.asarray(data, order="C"))
    return name


def constant_input(b: LoopBuilder, i: int, what: str):
    """The value of optional input ``i`` (None when absent), refusing when it is not a constant."""
    name = b.input(i, optional=True)
    if not name:
        return None
    value = b.constant(name)
    if value is None:
        raise Refused(f"{what} (input {i}) is computed at run time")
    return value


def affine_floor(idx: np.ndarray, param: str) -> str | None:
    """``(a*param + c) // d`` (small a, c, d) when it equals the index table ``idx``, else None."""
    out = len(idx)
    if out == 0:
        return None
    o = np.arange(out)
    for d in range(1, 17):
        slope = 0.0 if out == 1 else (idx[-1] - idx[0]) / (out - 1) * d
        for a in sorted({max(0, math.floor(slope)), max(0, math.ceil(slope))}):
            for c in range(int(idx[0]) * d, int(idx[0]) * d + d):
                if np.array_equal((a * o + c) // d, idx):
                    text = affine([(a, param)], c)
                    return text if d == 1 else (f"({text}) // {d}" if " " in text else f"{text} // {d}")
    return None


def _literal(value: float, dtype: str) -> str:
    """``value`` as the dtype holds it (the reference casts extrapolation_value to the data's)."""
    import ml_dtypes  # noqa: F401  (bfloat16)

    return fmt(float(np.asarray(value).astype(np.dtype(dtype))))


def resize(b: LoopBuilder, x: str, y: str, roi, scales, sizes, *, mode: str, ctm: str, nearest_mode: str,
           cubic_a: float, antialias: int, exclude_outside: int, extrapolation_value: float, axes=None,
           keep_aspect_ratio_policy: str = "stretch") -> None:
    """The maps computing ``y = Resize(x)`` (see the module docstring)."""
    shape = b.shape(x)
    if not all(isinstance(d, int) for d in shape):
        raise Refused(f"Resize needs static input sizes (has {list(shape)})")
    dtype = b.dtype(x)
    b.require_dtype(x, allowed=NUMBERS + (("bool",) if mode == "nearest" else ()))
    steps = resize_steps(shape, roi, scales, sizes, axes=axes, keep_aspect_ratio_policy=keep_aspect_ratio_policy,
                         ctm=ctm)
    result = list(shape)
    for a, size, _, _ in steps:
        result[a] = size
    if list(b.shape(y)) != result:
        raise Refused(f"output shape {list(b.shape(y))} is not the resized {result}")
    kw = dict(mode=mode, ctm=ctm, nearest_mode=nearest_mode, cubic_a=cubic_a, antialias=antialias,
              exclude_outside=exclude_outside)
    tables = [(a, resize_axis_taps(shape[a], size, f, roi_, **kw)) for a, size, f, roi_ in steps]
    if mode == "nearest":
        _nearest(b, x, y, tables, _literal(extrapolation_value, dtype))
    else:
        _interpolate(b, x, y, tables, extrapolation_value)


def _nearest(b: LoopBuilder, x: str, y: str, tables, ev: str) -> None:
    rank = len(b.shape(y))
    p = params_of(rank)
    subset, reads, flags = list(p), [], []
    for a, (idx, _, outside) in tables:
        fitted = affine_floor(idx[:, 0], p[a])
        if fitted is None:
            reads.append((f"s{a}", table(b, f"rows{a}", idx[:, 0].astype(np.int64)), p[a]))
            fitted = f"s{a}"
        subset[a] = fitted
        if outside is not None and outside.any():
            reads.append((f"f{a}", table(b, f"outside{a}", outside), p[a]))
            flags.append(f"f{a}")
    code = f"out = {ev} if {' or '.join(flags)} else a" if flags else "out = a"
    b.map("nearest", b.shape(y), code, [*reads, ("a", x, index(subset))], [("out", y, index(p))])


def _interpolate(b: LoopBuilder, x: str, y: str, tables, ev: float) -> None:
    dtype = b.dtype(x)
    work = dtype if dtype in ("float32", "float64") else "float64"
    current, shape = x, list(b.shape(x))
    for step, (a, (idx, w, outside)) in enumerate(tables):
        shape[a] = idx.shape[0]
        last = step == len(tables) - 1
        out = y if last and work == dtype else b.transient(shape, work, f"axis{a}")
        _axis_map(b, current, out, shape, a, idx, w.astype(work), outside, fmt(float(np.asarray(ev, work))))
        current = out
    if current != y:
        code = "a"
        if dtype in INTS:
            info = np.iinfo(np.dtype(dtype))
            code = f"min(max(rint(a), {fmt(info.min)}), {fmt(info.max)})"
        b.elementwise(code, {"a": current}, y, what="saturate")


def _axis_map(b: LoopBuilder, data: str, out: str, shape, a: int, idx, w, outside, ev: str) -> None:
    """One resized axis: ``out = sum_t data[..., k_t, ...] * w_t`` over the output. Up to
    MAX_UNROLLED_TAPS taps are unrolled in the tasklet (a plain map, no reduction: each output is
    one store), summed left to right from the first tap as the reference does; more (antialiased
    downsampling) reduce over a tap param with wcr sum."""
    rank, taps = len(shape), idx.shape[1]
    work = b.dtype(out)
    k_table, w_table = table(b, f"taps{a}", idx.astype(np.int64)), table(b, f"weights{a}", w)
    flag = table(b, f"outside{a}", outside) if outside is not None and outside.any() else None
    p = params_of(rank + (taps > MAX_UNROLLED_TAPS))
    reads = [("f", flag, p[a])] if flag else []
    if taps <= MAX_UNROLLED_TAPS:
        for t in range(taps):
            source = list(p[:rank])
            source[a] = f"k{t}"
            reads += [(f"k{t}", k_table, f"{p[a]}, {t}"), (f"w{t}", w_table, f"{p[a]}, {t}"),
                      (f"a{t}", data, index(source))]
        value = " + ".join(f"a{t} * w{t}" for t in range(taps))
        code = f"out = {ev} if f else {value}" if flag else f"out = {value}"
        b.map(f"axis{a}", shape, code, reads, [("out", out, index(p))], [work])
        return
    tap = p[rank]
    source = list(p[:rank])
    source[a] = "k"
    reads += [("k", k_table, f"{p[a]}, {tap}"), ("w", w_table, f"{p[a]}, {tap}"), ("a", data, index(source))]
    code = f"out = ({ev} if {tap} == 0 else 0) if f else a * w" if flag else "out = a * w"
    b.map(f"axis{a}", (*shape, taps), code, reads, [("out", out, index(p[:rank]), "sum")], [work])


_RESIZE_DEFAULTS = dict(antialias=0, axes=None, coordinate_transformation_mode="asymmetric", cubic_coeff_a=-0.75,
                        exclude_outside=0, extrapolation_value=0.0, keep_aspect_ratio_policy="stretch",
                        mode="nearest", nearest_mode="simple")


@expansion("Resize")
def resize_op(graph, node):
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    if b.opset < 11:  # Resize-10: (X, scales)
        roi, scales, sizes = None, constant_input(b, 1, "scales"), None
    else:
        roi, scales, sizes = (constant_input(b, i, what) for i, what in ((1, "roi"), (2, "scales"), (3, "sizes")))
    attr = {k: b.attr(k, v) for k, v in _RESIZE_DEFAULTS.items()}
    if b.attr("axes") is not None:
        attr["axes"] = [int(a) for a in attr["axes"]]
    resize(b, x, y, roi, scales, sizes, mode=attr["mode"], ctm=attr["coordinate_transformation_mode"],
           nearest_mode=attr["nearest_mode"], cubic_a=float(attr["cubic_coeff_a"]), antialias=int(attr["antialias"]),
           exclude_outside=int(attr["exclude_outside"]), extrapolation_value=float(attr["extrapolation_value"]),
           axes=attr["axes"], keep_aspect_ratio_policy=attr["keep_aspect_ratio_policy"])
    return b.nodes


@expansion("Upsample")
def upsample(graph, node):
    """Resize with asymmetric coordinates and truncating nearest rounding (the reference's Upsample)."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    scales = constant_input(b, 1, "scales")
    if scales is None:
        scales = b.attr("scales")
    if scales is None:
        scales = [1.0, 1.0, b.attr("height_scale"), b.attr("width_scale")]
    mode = b.attr("mode", "nearest")
    resize(b, x, y, None, np.asarray(scales, np.float64), None, mode="linear" if mode == "bilinear" else mode,
           ctm="asymmetric", nearest_mode="simple", cubic_a=-0.75, antialias=0, exclude_outside=0,
           extrapolation_value=0.0)
    return b.nodes


@expansion("CenterCropPad")
def center_crop_pad(graph, node):
    """A copy map: along each listed axis the output reads ``x[o + (dim - target) // 2]`` (a crop
    when positive, a pad when negative: reads before or past the input are the memlet's 0)."""
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    target = constant_input(b, 1, "shape")
    if target is None:
        raise Refused("the shape input is missing")
    shape = b.shape(x)
    rank = len(shape)
    axes = list(range(rank)) if b.attr("axes") is None else [int(a) % rank for a in b.attr("axes")]
    sizes = [int(v) for v in np.asarray(target).reshape(-1)]
    dims = b.static_dims(x, axes)
    p = params_of(rank)
    subset, result = list(p), list(shape)
    for axis, size, dim in zip(axes, sizes, dims):
        shift = (dim - size) // 2 if size < dim else -((size - dim) // 2)
        subset[axis] = affine([(1, p[axis])], shift)
        result[axis] = size
    if list(b.shape(y)) != result:
        raise Refused(f"output shape {list(b.shape(y))} is not the cropped/padded {result}")
    b.map("crop_pad", result, "out = a", [("a", x, index(subset), 0.0)], [("out", y, index(p))])
    return b.nodes


@expansion("AffineGrid")
def affine_grid(graph, node):
    """grid[n, p..., c] = sum_k theta[n, c, k] * (x, y[, z], 1)_k with the normalized coordinates of
    each axis a constant table (the reference's linspace or pixel centres), summed in float64."""
    b = LoopBuilder(graph, node)
    theta, y = b.input(0), b.output()
    b.require_dtype(theta, allowed=FLOATS)
    size = constant_input(b, 1, "size")
    if size is None:
        raise Refused("the size input is missing")
    spatial = [int(s) for s in np.asarray(size).reshape(-1)[2:]]
    nd = len(spatial)
    n = b.shape(theta)[0]
    if list(b.shape(y)) != [n, *spatial, nd] or list(b.shape(theta)[1:]) != [nd, nd + 1]:
        raise Refused(f"theta {list(b.shape(theta))} and size {spatial} do not give {list(b.shape(y))}")
    align = bool(b.attr("align_corners", 0))
    coords = [np.linspace(-1, 1, s) if align else (2 * np.arange(s) + 1) / s - 1 for s in spatial]
    p = params_of(nd + 2)
    reads = []
    for k in range(nd):  # homogeneous coordinate k is (x, y, z)[k]: spatial axis nd-1-k
        axis = nd - 1 - k
        reads.append((f"h{k}", table(b, f"coords{axis}", coords[axis].astype(np.float64)), p[1 + axis]))
    reads += [(f"t{k}", theta, f"{p[0]}, {p[-1]}, {k}") for k in range(nd + 1)]
    terms = " + ".join(f"h{k} * as_float64(t{k})" for k in range(nd))
    b.map("grid", (n, *spatial, nd), f"out = {terms} + as_float64(t{nd})", reads, [("out", y, index(p))])
    return b.nodes
