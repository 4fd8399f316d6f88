"""Signal-processing ops -> maps with cos/sin tasklets (dcopt.ops.signal is the reference).

* **HannWindow, HammingWindow, BlackmanWindow**: one map over the window,
  ``sum_j a_j cos(2 pi j n / N)`` in float64 as the reference writes it, cast to the output type.
* **DFT**: the direct O(N^2) transform, one map over (output..., samples) summing
  ``x[n] * exp(-+2 pi i k n / L)`` in float64 (the angle from ``k * n mod L``, so large indices
  lose no accuracy): real or complex input, ``dft_length`` padding or truncating, ``onesided``
  keeping the first ``L // 2 + 1`` bins, ``inverse`` dividing by ``L``; the inverse of a one-sided
  spectrum (numpy's irfft) adds each bin's mirror image as twice its real part.
* **STFT**: the same transform of every frame ``signal[f * step : f * step + L] * window``, read
  in place (no frame copies).
* **MelWeightMatrix**: one map over ``[dft_length // 2 + 1, num_mel_bins]`` computing each mel
  band's edges from the (run-time) edge frequencies in the reference's mixed float32/float64
  arithmetic, then the triangle.

Sizes (window size, ``dft_length``, ``axis``, ``frame_step``, ``frame_length``, the mel bin count and
DFT length) must be constants: they shape the loops.
"""

from __future__ import annotations

import math

import numpy as np

from dcopt.ops.tensor import onnx_dtype
from dcopt.passes.expand import LoopBuilder, Refused, expansion, fmt, index, params_of

FLOATS = ("float16", "bfloat16", "float32", "float64")
WINDOWS = {"HannWindow": (0.5, -0.5), "HammingWindow": (25 / 46, -21 / 46), "BlackmanWindow": (0.42, -0.5, 0.08)}


def _constant_int(b: LoopBuilder, i: int, what: str) -> int | None:
    name = b.input(i, optional=True)
    if not name:
        return None
    value = b.constant(name)
    if value is None:
        raise Refused(f"{what} is computed at run time")
    return int(np.asarray(value).reshape(-1)[0])


def _dtype_name(value) -> str:
    dtype = onnx_dtype(int(value))
    return "bfloat16" if dtype.kind == "V" else np.dtype(dtype).name


@expansion(*WINDOWS)
def window(graph, node):
    b = LoopBuilder(graph, node)
    size = _constant_int(b, 0, "the window size")
    y = b.output()
    periodic = bool(b.attr("periodic", 1))
    denom = size if periodic else size - 1
    terms = []
    for j, a in enumerate(WINDOWS[node.op]):
        # the reference: a * cos(2 * pi * j * k / denom) with k float64, 2 * pi * j a Python float
        terms.append(f"{fmt(a)} * cos({fmt(2 * math.pi * j)} * k / {fmt(float(denom))})")
    total = terms[0]
    for t in terms[1:]:
        total = f"({total}) + {t}"
    b.map("window", (size,), f"k = as_float64(i0)\nout = {total}", [], [("out", y, "i0")],
          [_dtype_name(b.attr("output_datatype", 1))])
    return b.nodes


def _twiddle(b: LoopBuilder, k: str, n: str, length: int) -> str:
    """The angle 2 pi k n / L, reduced exactly in integers first."""
    return f"{fmt(2 * math.pi / length)} * as_float64(({k} * {n}) % {length})"


def _transform(b: LoopBuilder, what: str, out: str, out_space, read, complex_input: bool, length: int,
               samples: int, k: str, n: str, inverse: bool, component: str, window: tuple | None = None) -> None:
    """out[...] = sum_n x[n] e^(-+i theta) (real part where component == 0, imaginary where 1),
    divided by the length for the inverse; ``read(conn, part)`` gives the in-memlet of sample
    ``n``'s real (0) or imaginary (1) part; a ``window`` in-memlet (connector ``w``) scales the
    samples in their own dtype first, as the reference multiplies frames by it."""
    scaled = (lambda v: f"as_float64({v} * w)") if window else (lambda v: f"as_float64({v})")
    reads = [read("xr", 0), *([window] if window else [])]
    xi = "0.0"
    if complex_input:
        reads.append(read("xi", 1))
        xi = scaled("xi")
    theta = _twiddle(b, k, n, length)
    sign = "+" if inverse else "-"
    other = "-" if inverse else "+"
    code = [f"t = {theta}", "c = cos(t)", "s = sin(t)", f"xr_ = {scaled('xr')}", f"xi_ = {xi}",
            # forward: (xr + i xi)(cos - i sin); inverse: (xr + i xi)(cos + i sin) / L
            f"re = xr_ * c {other} xi_ * s", f"im = xi_ * c {sign} xr_ * s",
            f"out = (re if {component} == 0 else im)" + (f" / {fmt(float(length))}" if inverse else "")]
    b.map(what, (*out_space, samples), "\n".join(code), reads, [("out", out, index(params_of(len(out_space))), "sum")],
          ["float64"])


@expansion("DFT")
def dft(graph, node):
    b = LoopBuilder(graph, node)
    x, y = b.input(0), b.output()
    b.require_dtype(x, allowed=FLOATS)
    shape = b.static_dims(x, range(len(b.shape(x))))
    rank = len(shape)
    if rank < 2 or shape[-1] not in (1, 2):
        raise Refused("DFT input needs a trailing axis of size 1 (real) or 2 (complex)")
    length = _constant_int(b, 1, "dft_length")
    if b.opset >= 20:
        axis = _constant_int(b, 2, "the axis")
        axis = -2 if axis is None else axis
    else:
        axis = int(b.attr("axis", 1))
    axis %= rank
    if axis == rank - 1:
        raise Refused("the transform axis is the complex axis")
    inverse, onesided = bool(b.attr("inverse", 0)), bool(b.attr("onesided", 0))
    size = shape[axis]
    if length is None:
        length = 2 * (size - 1) if inverse and onesided else size
    if length <= 0:
        raise Refused(f"dft_length {length}")
    complex_input = shape[-1] == 2
    out_shape = b.static_dims(y, range(rank))
    acc = b.transient(out_shape, "float64", "acc") if b.dtype(y) != "float64" else y
    p = params_of(rank + 1)
    k, n = p[axis], p[rank]

    if inverse and onesided:  # numpy's irfft: the first L // 2 + 1 bins, each mirror bin as 2 Re(...)
        bins = length // 2 + 1

        def read(conn, part):
            return (conn, x, index([*p[:axis], n, *p[axis + 1:rank - 1], str(part)]), 0.0)

        nyquist = f" or (({n}) * 2 == {length})" if length % 2 == 0 else ""
        weight = f"(1.0 if {n} == 0{nyquist} else 2.0)"
        keep_im = f"(0.0 if {n} == 0{nyquist} else 1.0)"  # numpy ignores those bins' imaginary parts
        reads = [read("xr", 0)] + ([read("xi", 1)] if complex_input else [])
        xi = f"as_float64(xi) * {keep_im}" if complex_input else "0.0"
        scaled = f"{weight} * (as_float64(xr) * cos(t) - {xi} * sin(t)) / {fmt(float(length))}"
        code = [f"t = {_twiddle(b, n, k, length)}", f"out = {scaled}"]
        b.map("irfft", (*out_shape, bins), "\n".join(code), reads, [("out", acc, index(p[:rank]), "sum")],
              ["float64"])
    else:
        samples = min(size, length)  # zero padding adds nothing; truncation drops samples

        def read(conn, part):
            return (conn, x, index([*p[:axis], n, *p[axis + 1:rank - 1], str(part if complex_input else 0)]))

        _transform(b, "dft", acc, out_shape, read, complex_input, length, samples, k, n, inverse, p[rank - 1])
    if acc != y:
        b.elementwise("a", {"a": acc}, y, what="cast")
    return b.nodes


@expansion("STFT")
def stft(graph, node):
    b = LoopBuilder(graph, node)
    signal, y = b.input(0), b.output()
    window_ = b.input(2, optional=True)
    b.require_dtype(signal, window_, allowed=FLOATS)
    step = _constant_int(b, 1, "frame_step")
    length = _constant_int(b, 3, "frame_length")
    _, total, parts = b.static_dims(signal, range(3))
    if length is None:
        length = b.static_dims(window_, [0])[0] if window_ else total
    if parts not in (1, 2) or step is None or step <= 0 or length <= 0 or length > total:
        raise Refused("STFT needs a [batch, length, 1|2] signal, a positive frame step and length")
    out_shape = b.static_dims(y, range(4))
    acc = b.transient(out_shape, "float64", "acc") if b.dtype(y) != "float64" else y
    p = params_of(5)

    def read(conn, part):
        return (conn, signal, f"{p[0]}, {p[1]} * {step} + {p[4]}, {part}")

    _transform(b, "stft", acc, out_shape, read, parts == 2, length, length, p[2], p[4], False, p[3],
               ("w", window_, p[4]) if window_ else None)
    if acc != y:
        b.elementwise("a", {"a": acc}, y, what="cast")
    return b.nodes


@expansion("MelWeightMatrix")
def mel_weight_matrix(graph, node):
    """The reference's arithmetic per element: the mel edges of band i (points i, i+1, i+2) from
    the edge frequencies, as float64 after float32 log1p (the inputs' precision), floored to DFT bins."""
    b = LoopBuilder(graph, node)
    n_mel = _constant_int(b, 0, "num_mel_bins")
    n_dft = _constant_int(b, 1, "dft_length")
    rate, low, high = b.input(2), b.input(3), b.input(4)
    b.require_dtype(low, high, allowed=("float32", "float64", "float16"))
    b.require_dtype(rate, allowed=("int32", "int64"))
    rows = n_dft // 2 + 1
    scalars = {"sr": rate, "lo": low, "hi": high}
    if any(b.shape(name) not in ((), (1,)) for name in scalars.values()):
        raise Refused("MelWeightMatrix takes scalar rates and frequencies")
    reads = [(c, name, "" if not b.shape(name) else "0") for c, name in scalars.items()]
    ln10 = fmt(float(np.log(10)))
    code = [f"lm = as_float64(2595.0 * log1p(lo / 700.0)) / {ln10}",
            f"hm = as_float64(2595.0 * log1p(hi / 700.0)) / {ln10}",
            f"step = (hm - lm) / {fmt(float(n_mel + 2))}"]
    for name, offset in (("left", 0), ("center", 1), ("right", 2)):
        code.append(f"hz_{name} = 700.0 * expm1((as_float64(i1 + {offset}) * step + lm) / 2595.0 * {ln10})")
        code.append(f"{name} = as_int64(({n_dft + 1}.0 * hz_{name}) // as_float64(sr))")
    rising = "as_float64(i0 - left) / as_float64(center - left) if left <= i0 and i0 <= center else 0.0"
    falling = "as_float64(right - i0) / as_float64(right - center)"
    code += [f"up = (1.0 if i0 == center else 0.0) if center == left else ({rising})",
             f"out = {falling} if right > center and center <= i0 and i0 < right else up"]
    b.map("mel", (rows, n_mel), "\n".join(code), reads, [("out", b.output(), "i0, i1")],
          [_dtype_name(b.attr("output_datatype", 1))])
    return b.nodes
