"""Shape rules of the signal-processing ops (mirrors :mod:`dcopt.ops.signal`). Complex values are a
trailing axis of 2 (real, imaginary); a real signal may have a trailing 1."""

from __future__ import annotations

from dcopt.ops.shapes import dims
from dcopt.ops.shapes.registry import onnx_dtype, shape_rule


@shape_rule("HannWindow", "HammingWindow", "BlackmanWindow", shape_inputs=(0,))
def window(ctx):
    size = ctx.dims_value(0)
    return ctx.tensor(onnx_dtype(ctx.attrs.get("output_datatype", 1)), (None if size is None else size[0],))


@shape_rule("DFT", shape_inputs=lambda opset: (1, 2) if opset >= 20 else (1,))
def dft(ctx):
    shape = ctx.shape(0)
    if ctx.opset >= 20:
        axis = -2 if not ctx.has(2) else ctx.scalar(2)
    else:
        axis = ctx.attrs.get("axis", 1)
    inverse, onesided = bool(ctx.attrs.get("inverse", 0)), bool(ctx.attrs.get("onesided", 0))
    if axis is None:
        return ctx.tensor(ctx.dtype(0), (*(None,) * (len(shape) - 1), 1 if inverse and onesided else 2))
    axis = int(axis) % len(shape)
    if ctx.has(1):
        length = ctx.dims_value(1)
        length = None if length is None else length[0]
    else:
        length = dims.mul(2, dims.add(shape[axis], -1)) if inverse and onesided else shape[axis]
    out = list(shape[:-1])
    if inverse and onesided:
        out[axis] = length
        return ctx.tensor(ctx.dtype(0), (*out, 1))
    out[axis] = dims.floordiv(length, 2) if onesided else length
    if onesided:
        out[axis] = None if out[axis] is None else dims.add(out[axis], 1)
    return ctx.tensor(ctx.dtype(0), (*out, 2))


@shape_rule("STFT", shape_inputs=(1, 3))
def stft(ctx):
    signal = ctx.shape(0)
    if ctx.has(3):
        frame_length = ctx.scalar(3)
    elif ctx.has(2):
        frame_length = ctx.shape(2)[0]
    else:
        frame_length = signal[-2]
    step = ctx.scalar(1)
    frames = bins = None
    if step is not None and frame_length is not None and isinstance(signal[1], int) and isinstance(frame_length, int):
        frames = 1 + (signal[1] - frame_length) // int(step)
    if isinstance(frame_length, int):
        bins = frame_length // 2 + 1 if ctx.attrs.get("onesided", 1) else frame_length
    return ctx.tensor(ctx.dtype(0), (signal[0], frames, bins, 2))


@shape_rule("MelWeightMatrix", shape_inputs=(0, 1))
def mel_weight_matrix(ctx):
    mel, dft_length = ctx.scalar(0), ctx.scalar(1)
    return ctx.tensor(onnx_dtype(ctx.attrs.get("output_datatype", 1)),
                      (None if dft_length is None else int(dft_length) // 2 + 1, None if mel is None else int(mel)))
