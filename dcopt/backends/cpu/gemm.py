"""GEMM and convolution steps: how each becomes tasks for the pool (:mod:`parallel`).

Why BLAS for GEMMs and not generated code: OpenBLAS sgemm runs at 180-210 GFLOP/s on one core
here (BERT/conv shapes, CORETYPE unset), about what onnxruntime's MLAS reaches. Every product
is cut into tasks (rows of C) that call single-threaded ``cblas_sgemm`` straight into the
planned buffer; the fused epilogue (bias, activation, residual) follows as its own step. Not in
place: LLVM cannot prove two numba arrays disjoint and an aliased call took the scalar path
(BERT GELU 580 us vs 38 us).

Convolution: with AVX-512, every conv but depthwise and narrow 1x1 ones runs as a generated
direct kernel (:mod:`directconv`, with its bias and ReLU): OpenBLAS through im2col or shifted
GEMMs reached 160-180 GFLOP/s per core on ResNet-50's 3x3 convs and half that on 7x7 planes,
the kernel 220-240. 1x1/stride-1/no-pad convs with few input channels are a plain GEMM on the
image (no copy). Without AVX-512: other stride-1 convs on planes at least
:data:`SHIFTED_MIN_WIDTH` wide are a sum of kh*kw shifted GEMMs (:func:`_bind_shifted`, no
column buffer); the rest unfold the image with :func:`library.im2col` into a shared scratch
buffer and run one GEMM per group. Depthwise convs (one filter per channel) use a library
kernel split over channels, because their per-channel GEMMs would be 1-row products.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dcopt.backends.cpu import directconv, library, parallel


def bind_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, mode: str, trans_a: bool = False,
                trans_b: bool = False, alpha: float = 1.0) -> Callable[[], None]:
    """``out = alpha * A @ B`` as sgemm tasks on the pool, alpha passed to sgemm (numpy's
    ``matmul`` where OpenBLAS's 64-bit cblas is missing, the operands are not C arrays, or an
    operand is used transposed). The numpy path runs on OpenBLAS's own threads, which keep
    spinning after the call and slow the pool's next step: attention's scaled Q @ K^T took it,
    and BERT's softmax after it ran at half speed."""
    at = np.swapaxes(a, -1, -2) if trans_a else a
    bt = np.swapaxes(b, -1, -2) if trans_b else b
    if (trans_a or trans_b or parallel.sgemm_function() is None
            or not all(v.flags.c_contiguous for v in (a, b, out))):
        return _numpy_matmul(at, bt, out, alpha)
    parts = parallel.threads()
    k, n = b.shape[-2:]
    if mode == "2d":
        m = a.size // k
        if m == 1 and alpha == 1.0 and parallel.sgemv_function() is not None:
            return parallel.bind_gemv(k, n, b.ctypes.data, a.ctypes.data, out.ctypes.data, (a, b, out))
        return parallel.bind_gemms([[t] for t in parallel.gemm_tasks(
            m, n, k, a.ctypes.data, k, b.ctypes.data, n, out.ctypes.data, n, 0.0, parts, alpha)], (a, b, out))
    m = a.shape[-2]
    batch = out.shape[:-2]
    try:
        sa = np.broadcast_to(np.arange(int(np.prod(a.shape[:-2]))).reshape(a.shape[:-2]), batch).reshape(-1)
        sb = np.broadcast_to(np.arange(int(np.prod(b.shape[:-2]))).reshape(b.shape[:-2]), batch).reshape(-1)
    except ValueError:
        return _numpy_matmul(a, b, out, alpha)
    bits = parallel.alpha_bits(alpha)
    calls = [[m, n, k, a.ctypes.data + 4 * int(i) * m * k, k, b.ctypes.data + 4 * int(j) * k * n, n, 0.0,
              out.ctypes.data + 4 * z * m * n, n, bits] for z, (i, j) in enumerate(zip(sa, sb))]
    if len(calls) >= parts:  # whole products per task
        return parallel.bind_gemms([calls[lo:hi] for lo, hi in parallel.split(len(calls), parts)], (a, b, out))
    return parallel.bind_gemms(parallel.merge([[[t] for t in parallel.gemm_tasks(
        *c[:7], c[8], c[9], 0.0, parts, alpha)] for c in calls]), (a, b, out))


def _numpy_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, alpha: float) -> Callable[[], None]:
    matmul, scale, factor = np.matmul, np.multiply, np.float32(alpha)
    if alpha == 1.0:
        return lambda: matmul(a, b, out=out)
    return lambda: (matmul(a, b, out=out), scale(out, factor, out=out)) and None


# Narrowest output plane and fewest input channels run as shifted GEMMs: the wide grid
# computes (kw-1) junk columns per row, and at 7x7 (ResNet's last stage) the shifted form
# measured no faster than im2col; each tap's GEMM has K = input channels, and below 64
# (VGG's 3-channel stem, SqueezeNet's 16-48) im2col's single K = C*kh*kw GEMM was faster.
SHIFTED_MIN_WIDTH = 10
SHIFTED_MIN_CHANNELS = 64
# Input + result bytes per row block of a shifted-GEMM conv: only planes bigger than this
# (VGG's 224x224 and 112x112 layers) are split; 1 MB blocks made the GEMMs too narrow and cost
# 5-10% at 56x56..112x112, 8 MB measured best or even from 56x56 to 224x224 here.
SHIFTED_BLOCK_BYTES = 8 << 20


def conv_scratch_elements(x_shape, w_shape, out_shape, params) -> int:
    """Elements of scratch a conv step needs (0 when it needs none)."""
    if params.get("impl") == "direct":
        plan = directconv.DirectPlan.from_params(params)
        return int(x_shape[0]) * int(x_shape[1]) * plan.shape.hp * plan.shape.wp if plan.padded else 0
    if _is_pointwise(params) or params["depthwise"]:
        return 0
    if _use_shifted(x_shape, out_shape, params):
        plane, wp = _shifted_grid(out_shape, params)
        return int(x_shape[1]) * plane + int(out_shape[1]) * int(out_shape[2]) * wp
    return int(w_shape[1]) * params["group"] * int(np.prod(out_shape[2:]))


def _use_shifted(x_shape, out_shape, params) -> bool:
    return (params["strides"] == [1, 1] and params["group"] == 1 and not params["depthwise"]
            and not _is_pointwise(params) and int(out_shape[3]) >= SHIFTED_MIN_WIDTH
            and int(x_shape[1]) >= SHIFTED_MIN_CHANNELS and _cblas_sgemm() is not None)


def _shifted_grid(out_shape, params) -> tuple[int, int]:
    """(elements per padded input plane incl. slack, grid width) of the shifted-GEMM form."""
    (kh, kw), (dh, dw) = params["kernel"], params["dilations"]
    oh, ow = int(out_shape[2]), int(out_shape[3])
    wp = ow + (kw - 1) * dw
    return (oh + (kh - 1) * dh) * wp + (kw - 1) * dw, wp


def _is_pointwise(params) -> bool:
    return params["kernel"] == [1, 1] and params["strides"] == [1, 1] and params["pads"] == [0, 0]


def bind_conv(x: np.ndarray, w: np.ndarray, out: np.ndarray, params: dict, scratch: np.ndarray,
              native=None, bias: np.ndarray | None = None, residual: np.ndarray | None = None) -> Callable[[], None]:
    """A closure running one NCHW conv. The bias and clamp are the epilogue's job, except for
    generated kernels (:mod:`directconv`, resolved by ``native(name)`` to a ctypes function) and
    the depthwise kernel, which apply a fused ``bias`` and clamp themselves."""
    if params.get("impl") == "direct":
        plan = directconv.DirectPlan.from_params(params)
        return _bind_direct(x, w, out, plan, scratch, native(params["kernel_name"]), bias)
    if params.get("impl") == "pointwise":
        plan = directconv.DirectPlan.from_params(params)
        return _bind_pointwise_kernel(x, w, out, plan, native(params["kernel_name"]), bias, residual)
    n, cin, h, wd = x.shape
    cout, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    g = params["group"]
    kh, kw = params["kernel"]
    (sh, sw), (ph, pw), (dh, dw) = params["strides"], params["pads"], params["dilations"]
    dot = np.dot
    if params["depthwise"]:  # channel ranges as pool tasks; the bias and clamp are applied as it stores
        from dcopt.backends.cpu import tasks
        from dcopt.ir.clamp import as_bounds, from_params as clamp_from_params

        bounds = np.array(as_bounds(clamp_from_params(params)), np.float32)
        bias = np.zeros(cout, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32).reshape(-1)
        tail = [h, wd, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, bias.ctypes.data, bounds.ctypes.data]
        return tasks.bind_table(tasks.library_task("depthwise"), parallel.merge(
            [[[[lo, hi, x[b].ctypes.data, w.ctypes.data, out[b].ctypes.data, *tail]]
              for lo, hi in parallel.split(cout, parallel.threads())] for b in range(n)]), (x, w, out, bias, bounds))
    if _use_shifted(x.shape, out.shape, params):
        return _bind_shifted(x, w, out, params, scratch)
    o3 = out.reshape(n, g, cout // g, oh * ow)
    w3 = w.reshape(g, cout // g, w.shape[1])
    if _is_pointwise(params):
        return bind_pointwise(x, w, out, g)
    k = w.shape[1]
    rows = _chunk_rows(k, oh, ow) if g == 1 else oh
    if rows < oh:
        return _bind_chunked(x, w, out, params, scratch, rows)
    col = scratch[: g * k * oh * ow].reshape(g * k, oh * ow)
    cols = [col[j * k:(j + 1) * k] for j in range(g)]
    unfold = library.im2col

    def run() -> None:
        for b in range(n):
            unfold(x[b], col, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
            for j in range(g):
                dot(w3[j], cols[j], o3[b, j])

    return run


def bind_pointwise(x: np.ndarray, w: np.ndarray, out: np.ndarray, group: int = 1) -> Callable[[], None]:
    """1x1/stride-1 conv (``w`` [cout, cin/group]): per image and group ``out = W @ X`` with the
    image as the GEMM's B operand (no copy), cut into tasks for the pool."""
    n, cin = x.shape[:2]
    cout, plane = out.shape[1], int(np.prod(out.shape[2:]))
    m, k = cout // group, cin // group
    if parallel.sgemm_function() is None:
        x3, o3, w3, dot = x.reshape(n, group, k, plane), out.reshape(n, group, m, plane), w.reshape(group, m, k), np.dot
        return lambda: [dot(w3[j], x3[b, j], o3[b, j]) for b in range(n) for j in range(group)] and None
    items = [[[t] for t in parallel.gemm_tasks(m, plane, k, w.ctypes.data + 4 * j * m * k, k,
                                               x.ctypes.data + 4 * (b * cin + j * k) * plane, plane,
                                               out.ctypes.data + 4 * (b * cout + j * m) * plane, plane, 0.0,
                                               parallel.threads())]
             for b in range(n) for j in range(group)]
    return parallel.bind_gemms(parallel.merge(items), (x, w, out))


def _bind_pointwise_kernel(x: np.ndarray, w: np.ndarray, out: np.ndarray, plan: "directconv.DirectPlan", fn,
                           bias: np.ndarray | None, residual: np.ndarray | None = None) -> Callable[[], None]:
    """A 1x1 conv through :func:`directconv.pointwise_plan`'s kernel: per image and conv group,
    weight rows times the image's channel rows, tasks splitting the pixels (so each thread
    writes, and the next layer finds in its cache, the same half of every plane)."""
    s, g = plan.shape, plan.group
    n, cin, cout = x.shape[0], x.shape[1], out.shape[1]
    plane, cin_g, cout_g = s.rows_out, s.cin, s.ow * s.oh
    items = []
    for b in range(n):
        for j in range(g):
            at = 4 * (b * cout + j * cout_g) * plane
            head = [w.ctypes.data + 4 * j * cout_g * cin_g, x.ctypes.data + 4 * (b * cin + j * cin_g) * plane,
                    out.ctypes.data + at, 0 if bias is None else bias.ctypes.data + 4 * j * cout_g]
            tail = [0 if residual is None else residual.ctypes.data + at]
            items.append([[head + list(c) + tail for c in task]
                          for task in parallel.grid_tasks(plan.tiling.total_groups, s.oh, parallel.threads())])
    return parallel.bind_convs(fn, parallel.merge(items), (x, w, out, bias, residual))


def _bind_direct(x: np.ndarray, w: np.ndarray, out: np.ndarray, plan: "directconv.DirectPlan", scratch: np.ndarray,
                 fn, bias: np.ndarray | None) -> Callable[[], None]:
    """A generated direct conv (:mod:`directconv`): zero-pad the input once if it needs it, then
    every (image, conv group) as grid tasks for the pool."""
    s, g = plan.shape, plan.group
    n, cin = x.shape[:2]
    src = x
    if plan.padded:
        src = scratch[: n * cin * s.hp * s.wp].reshape(n, cin, s.hp * s.wp)
    parts = parallel.threads()
    items = []
    for b in range(n):
        for j in range(g):
            base = [src.ctypes.data + 4 * (b * cin + j * s.cin) * s.hp * s.wp, w.ctypes.data + 4 * j * plan.packed_size,
                    out.ctypes.data + 4 * (b * out.shape[1] + j * s.cout) * s.oh * s.ow,
                    0 if bias is None else bias.ctypes.data + 4 * j * s.blocks * directconv.LANES]
            items.append([[base + list(r) + [0] for r in calls]
                          for calls in parallel.grid_tasks(plan.tiling.total_groups, s.oh, parts)])
    run_convs = parallel.bind_convs(fn, parallel.merge(items), (x, w, out, src, bias))
    if not plan.padded:
        return run_convs
    from dcopt.backends.cpu import tasks

    h, wd = x.shape[2:]
    pad = tasks.bind_table(tasks.library_task("pad"), parallel.merge(
        [[[[lo, hi, x[b].ctypes.data, src[b].ctypes.data, h, wd, s.hp * s.wp, *plan.pads, s.wp]]
          for lo, hi in parallel.split(cin, parts)] for b in range(n)]), (x, src))

    def run() -> None:
        pad()
        run_convs()

    run.buffers = (pad.buffers, run_convs.buffers)
    return run


def _bind_shifted(x: np.ndarray, w: np.ndarray, out: np.ndarray, params: dict, scratch: np.ndarray):
    """A stride-1 conv as kh*kw accumulated GEMMs over shifted views of the padded input.

    The input is copied once into zero-padded planes of width ``wp = ow + (kw-1)*dw``
    (:func:`library.pad_planes`). On that flattened grid, tap (u, v) of every output position
    p = i*wp + j reads plane element p + u*dh*wp + v*dw, so the tap's operand is the plain
    strided view ``xp[:, off:off + oh*wp]`` (leading dimension = plane size): cblas_sgemm takes
    it as is and accumulates ``W[:, :, u, v] @ view`` into one wide result (beta = 1), whose
    columns j >= ow are junk that :func:`library.crop_rows` drops. No column buffer: im2col
    wrote (and the GEMM re-read) kh*kw copies of the image, 14 MB per DenseNet 3x3 conv at
    56x56 -- measured 1.3-1.8x slower than this at 14x14..56x56 planes. Large planes go in
    blocks of output rows whose wide result and input rows stay in cache across the taps and
    are cropped right after them (VGG's 64x224x224 conv: 13.6 ms in 8 MB blocks, 16.1 ms in
    one, its 13 MB result written back to memory kh*kw times)."""
    n, cin = x.shape[:2]
    cout, oh, ow = out.shape[1:]
    kh, kw = params["kernel"]
    (ph, pw), (dh, dw) = params["pads"], params["dilations"]
    plane, wp = _shifted_grid(out.shape, params)
    xp = scratch[: cin * plane].reshape(cin, plane)
    wide = scratch[cin * plane: cin * plane + cout * oh * wp].reshape(cout, oh * wp)
    taps = np.ascontiguousarray(w.reshape(cout, cin, kh, kw).transpose(2, 3, 0, 1))  # [u, v, cout, cin]
    sgemm, keep = _cblas_sgemm(), (xp, wide, taps)
    rows = min(oh, max(SHIFTED_BLOCK_BYTES // (4 * (cin + cout) * wp), -(-CHUNK_MIN_COLUMNS // wp), 1))
    blocks = [(i0, min(oh, i0 + rows), [
        (101, 111, 111, cout, (min(oh, i0 + rows) - i0) * wp, cin, 1.0, taps[u, v].ctypes.data, cin,
         xp.ctypes.data + 4 * ((i0 + u * dh) * wp + v * dw), plane, 0.0 if u == v == 0 else 1.0,
         wide.ctypes.data + 4 * i0 * wp, oh * wp) for u in range(kh) for v in range(kw)]) for i0 in range(0, oh, rows)]
    pad, crop = library.pad_planes, library.crop_rows

    def run() -> None:
        for b in range(n):
            pad(x[b], xp, ph, pw, wp)
            ob = out[b]
            for i0, i1, calls in blocks:
                for args in calls:
                    sgemm(*args)
                crop(wide, ob, wp, i0, i1)  # while the block is still in cache

    run.buffers = keep  # the raw pointers in ``calls`` point into these: keep them alive
    return run


# Column-buffer bytes above which an im2col conv runs in chunks of output rows (a chunk's
# columns stay in L2 between im2col writing and the GEMM reading them), and the fewest GEMM
# columns per chunk (narrower GEMMs lose more than the cache saves).
CHUNK_BYTES = 1 << 20
CHUNK_MIN_COLUMNS = 1024


def _chunk_rows(k: int, oh: int, ow: int) -> int:
    """Output rows per im2col chunk (``oh``: one chunk)."""
    if 4 * k * oh * ow <= CHUNK_BYTES or _cblas_sgemm() is None:
        return oh
    return min(oh, max(CHUNK_BYTES // (4 * k * ow), -(-CHUNK_MIN_COLUMNS // ow), 1))


def _bind_chunked(x: np.ndarray, w: np.ndarray, out: np.ndarray, params: dict, scratch: np.ndarray, rows: int):
    """im2col + GEMM a block of ``rows`` output rows at a time: cblas_sgemm writes each block's
    columns straight into the output (leading dimension OH*OW). The 7x7/2 stem conv's
    147 x 12544 column buffer (7.4 MB) went through memory once written and once read: 1.7 ms
    in ResNet-50's run, 1.2 ms in 1 MB chunks."""
    n = x.shape[0]
    cout, oh, ow = out.shape[1:]
    kh, kw = params["kernel"]
    (sh, sw), (ph, pw), (dh, dw) = params["strides"], params["pads"], params["dilations"]
    k = w.shape[1]
    col = scratch[: k * rows * ow].reshape(k, rows * ow)
    sgemm, unfold = _cblas_sgemm(), library.im2col_rows
    blocks = [(i0, min(oh, i0 + rows)) for i0 in range(0, oh, rows)]
    calls = [[(i0, i1, (101, 111, 111, cout, (i1 - i0) * ow, k, 1.0, w.ctypes.data, k, col.ctypes.data, rows * ow,
                         0.0, out[b].ctypes.data + 4 * i0 * ow, oh * ow)) for i0, i1 in blocks] for b in range(n)]

    def run() -> None:
        for b in range(n):
            xb = x[b]
            for i0, i1, args in calls[b]:
                unfold(xb, col, kh, kw, sh, sw, ph, pw, dh, dw, i0, i1, ow)
                sgemm(*args)

    run.buffers = (col, w, out)  # the raw pointers in ``calls`` point into these: keep them alive
    return run


_SGEMM: list = []


def _cblas_sgemm():
    """numpy's OpenBLAS ``cblas_sgemm`` through ctypes (None when it cannot be found): unlike
    ``np.dot`` it takes leading dimensions (strided operands) and accumulates (beta)."""
    import ctypes

    if _SGEMM:
        return _SGEMM[0]
    fn = None
    for lib in _numpy_openblas_libs():
        for name in ("scipy_cblas_sgemm64_", "cblas_sgemm64_", "scipy_cblas_sgemm", "cblas_sgemm"):
            fn = getattr(lib, name, None)
            if fn is not None:
                index = ctypes.c_int64 if name.endswith("64_") else ctypes.c_int
                fn.argtypes = [ctypes.c_int] * 3 + [index] * 3 + [ctypes.c_float, ctypes.c_void_p, index,
                                                                  ctypes.c_void_p, index, ctypes.c_float,
                                                                  ctypes.c_void_p, index]
                fn.restype = None
                break
        if fn is not None:
            break
    _SGEMM.append(fn)
    return fn


def _numpy_openblas_libs():
    """ctypes handles of the OpenBLAS libraries loaded in this process (numpy's)."""
    import ctypes

    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        return []
    return [ctypes.CDLL(path) for path in paths]


def _numpy_openblas():
    """numpy's bundled OpenBLAS ``set_num_threads`` (ctypes) or None when numpy uses another BLAS."""
    for lib in _numpy_openblas_libs():
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
