"""Reference semantics of ONNX signal-processing ops: windows, DFT, STFT, MelWeightMatrix.

ONNX carries complex numbers as a trailing axis of size 2 (real, imaginary); real signals may
have a trailing axis of size 1. These functions convert to numpy complex arrays, call
``numpy.fft`` and convert back, keeping the input's float dtype.
"""

from __future__ import annotations

import numpy as np

from dcopt.ops.registry import reference
from dcopt.ops.tensor import onnx_dtype, scalar_int

# -- windows ----------------------------------------------------------------------------------


def _cosine_window(size, periodic: int, output_datatype: int, coefficients) -> np.ndarray:
    """sum_j a_j cos(2 pi j n / N), N = size (periodic) or size - 1 (symmetric)."""
    n = scalar_int(size)
    denom = n if periodic else n - 1
    k = np.arange(n, dtype=np.float64)
    out = sum(a * np.cos(2 * np.pi * j * k / denom) for j, a in enumerate(coefficients))
    return np.asarray(out, dtype=np.float64).astype(onnx_dtype(output_datatype))


@reference("HannWindow")
def hann_window(size, *, output_datatype=1, periodic=1):
    return _cosine_window(size, periodic, output_datatype, (0.5, -0.5))


@reference("HammingWindow")
def hamming_window(size, *, output_datatype=1, periodic=1):
    return _cosine_window(size, periodic, output_datatype, (25 / 46, -21 / 46))


@reference("BlackmanWindow")
def blackman_window(size, *, output_datatype=1, periodic=1):
    return _cosine_window(size, periodic, output_datatype, (0.42, -0.5, 0.08))


# -- transforms -------------------------------------------------------------------------------


def _to_complex(x: np.ndarray) -> np.ndarray:
    return x[..., 0] if x.shape[-1] == 1 else x[..., 0] + 1j * x[..., 1]


def _dft(x: np.ndarray, length: int | None, axis: int, inverse: bool, onesided: bool) -> np.ndarray:
    axis = axis % x.ndim
    signal = _to_complex(x)
    if length is None:
        length = 2 * (x.shape[axis] - 1) if inverse and onesided else x.shape[axis]
    if inverse and onesided:  # one-sided spectrum -> real signal, trailing axis 1
        return np.fft.irfft(signal, length, axis=axis)[..., None].astype(x.dtype)
    out = (np.fft.ifft if inverse else np.fft.fft)(signal, length, axis=axis)
    if onesided:
        out = np.take(out, np.arange(length // 2 + 1), axis=axis)
    return np.stack([out.real, out.imag], axis=-1).astype(x.dtype)


@reference("DFT")
def dft(x, dft_length=None, axis=None, *, inverse=0, onesided=0):
    """``axis`` is an attribute (default 1) before opset 20 and an input (default -2) since."""
    length = None if dft_length is None else scalar_int(dft_length)
    return _dft(x, length, -2 if axis is None else scalar_int(axis), bool(inverse), bool(onesided))


@reference("STFT")
def stft(signal, frame_step, window=None, frame_length=None, *, onesided=1):
    """[batch, length, 1|2] -> [batch, frames, bins, 2]: windowed DFTs of strided frames."""
    if frame_length is not None:
        frame_length = scalar_int(frame_length)
    else:
        frame_length = signal.shape[-2] if window is None else window.shape[0]
    window = np.ones(frame_length, dtype=signal.dtype) if window is None else window
    step = scalar_int(frame_step)
    n_frames = 1 + (signal.shape[1] - frame_length) // step
    frames = np.stack([signal[:, f * step:f * step + frame_length] for f in range(n_frames)], axis=1)
    return _dft(frames * window[:, None], frame_length, 2, False, bool(onesided))


@reference("MelWeightMatrix")
def mel_weight_matrix(num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz, *,
                      output_datatype=1):
    """Triangular mel filters, [dft_length // 2 + 1, num_mel_bins].

    Follows the arithmetic of ONNX's reference and conformance data (mel points spaced by
    (high - low) / (num_mel_bins + 2), computed in the inputs' precision).
    """
    n_mel, n_dft = scalar_int(num_mel_bins), scalar_int(dft_length)
    points = np.arange(n_mel + 2)
    low_mel = 2595 * np.log1p(lower_edge_hertz / 700) / np.log(10)
    high_mel = 2595 * np.log1p(upper_edge_hertz / 700) / np.log(10)
    hertz = 700 * np.expm1((points * ((high_mel - low_mel) / points.shape[0]) + low_mel) / 2595 * np.log(10))
    bins = (((n_dft + 1) * hertz) // sample_rate).astype(np.int64)
    out = np.zeros((n_dft // 2 + 1, n_mel))
    for i, (left, center, right) in enumerate(zip(bins, bins[1:], bins[2:])):
        if center == left:
            out[center, i] = 1
        else:
            out[left:center + 1, i] = (np.arange(left, center + 1) - left) / (center - left)
        if right > center:
            out[center:right, i] = (right - np.arange(center, right)) / (right - center)
    return out.astype(onnx_dtype(output_datatype))
