"""GEMM and convolution steps: BLAS for the product, library kernels around it.

Why BLAS and not numba loops: a numba-only GEMM stays scalar (DESIGN.md: 25 GFLOP/s) while
OpenBLAS sgemm runs at 167-199 GFLOP/s on one core here (BERT/conv shapes, CORETYPE unset).
The product is written straight into its planned buffer (``np.dot(a, b, out=)``: no
temporary) and the fused epilogue (bias, activation, residual) runs right after, while the
output is still in cache. Not in place: LLVM cannot prove two numba arrays disjoint and an
aliased call took the scalar path (BERT GELU 580 us vs 38 us).

Threads: BLAS is the only thread pool (numba kernels are serial) and defaults to one thread
(:func:`dcopt.backends.cpu.session.set_threads`): in isolation two threads give 315-401
GFLOP/s, but next to other busy processes or onnxruntime's spinning pool a second OpenBLAS
thread stalled whole runs (BERT median 125-697 ms instead of 6 ms); a numba ``prange`` split
(2.3 ms vs 0.39 ms) and a Python helper thread with work stealing (0.50 vs 0.39 ms) fared no
better on this shared 2-core machine.

Convolution: 1x1/stride-1/no-pad convs are a plain GEMM on the image (no copy); other convs
unfold the image with :func:`library.im2col` into a shared scratch buffer and run one GEMM per
group; depthwise convs (one filter per channel) use a direct library kernel because their
per-channel GEMMs would be 1-row products dominated by call overhead.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dcopt.backends.cpu import library


def bind_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, mode: str) -> Callable[[], None]:
    if mode == "2d":
        a2 = a.reshape(-1, a.shape[-1])
        o2 = out.reshape(-1, out.shape[-1])
        dot = np.dot
        return lambda: dot(a2, b, o2)
    matmul = np.matmul
    return lambda: matmul(a, b, out=out)


def conv_scratch_elements(x_shape, w_shape, out_shape, params) -> int:
    """Elements of im2col scratch a conv step needs (0 when it needs none)."""
    if _is_pointwise(params) or params["depthwise"]:
        return 0
    return int(w_shape[1]) * params["group"] * int(np.prod(out_shape[2:]))


def _is_pointwise(params) -> bool:
    return params["kernel"] == [1, 1] and params["strides"] == [1, 1] and params["pads"] == [0, 0]


def bind_conv(x: np.ndarray, w: np.ndarray, out: np.ndarray, params: dict, scratch: np.ndarray) -> Callable[[], None]:
    """A closure running one NCHW conv (no bias: that is the epilogue's job)."""
    n, cin, h, wd = x.shape
    cout, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    g = params["group"]
    kh, kw = params["kernel"]
    (sh, sw), (ph, pw), (dh, dw) = params["strides"], params["pads"], params["dilations"]
    dot = np.dot
    if params["depthwise"]:
        wt = w.reshape(cout, kh, kw)
        kernel = library.depthwise2d
        return lambda: [kernel(x[b], wt, out[b], sh, sw, ph, pw, dh, dw) for b in range(n)] and None
    o3 = out.reshape(n, g, cout // g, oh * ow)
    w3 = w.reshape(g, cout // g, w.shape[1])
    if _is_pointwise(params):
        x3 = x.reshape(n, g, cin // g, h * wd)
        calls = [(w3[j], x3[b, j], o3[b, j]) for b in range(n) for j in range(g)]
        return lambda: [dot(wa, xa, oa) for wa, xa, oa in calls] and None
    k = w.shape[1]
    col = scratch[: g * k * oh * ow].reshape(g * k, oh * ow)
    cols = [col[j * k:(j + 1) * k] for j in range(g)]
    unfold = library.im2col

    def run() -> None:
        for b in range(n):
            unfold(x[b], col, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
            for j in range(g):
                dot(w3[j], cols[j], o3[b, j])

    return run


def _numpy_openblas():
    """numpy's bundled OpenBLAS (ctypes handle) or None when numpy uses another BLAS."""
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                fn = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                if fn is not None:
                    return fn
    return None


def set_blas_threads(threads: int) -> bool:
    """Set numpy's OpenBLAS thread count (process-wide: BLAS is the backend's one thread pool).
    Returns False when numpy's BLAS could not be found (then its default applies)."""
    fn = _numpy_openblas()
    if fn is None:
        return False
    fn(int(threads))
    return True
