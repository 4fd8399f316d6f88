"""Direct convolution kernels generated as LLVM IR (llvmlite), specialised per conv shape.

Why generated and not BLAS: a KxK conv through BLAS needs its input unfolded (im2col) or a
sum of shifted GEMMs over a wide grid; both move the image through memory several times and
pay per-call BLAS packing. OpenBLAS reached 160-180 GFLOP/s per core on ResNet-50's 3x3 convs
that way, onnxruntime's direct NCHWc kernels ~220 (measured here, znver5). This kernel is the
register-blocked direct form: a tile of ``PX`` consecutive output pixels times ``CV`` vectors of
16 output channels lives in ``PX*CV`` zmm accumulators; every step of the reduction over
(input channel, kernel row, kernel column) loads ``CV`` weight vectors, broadcasts ``PX`` input
scalars and issues ``PX*CV`` FMAs. All shapes are compile-time constants, so LLVM resolves every
address to a base plus displacement.

Data layout:
- input: zero-padded planes ``xp[cin][HP][WP]`` (:func:`library.pad_planes`-style copy made
  by the caller), so the kernel never bounds-checks; strides and dilations are plain offsets.
- weights: packed once at bind time (:func:`pack_weights`) into groups of ``CV*16`` output
  channels, ``[group][cin][kh][kw][CV*16]`` (zero-filled past ``cout``), so the reduction reads
  them sequentially.
- output: NCHW, written by masked scatters of each accumulator (16 channels of one pixel,
  ``OH*OW`` apart). A scatter per 16 results is ~1-5% of a 3x3 tile's work and saves a
  separate transpose pass over the output.

The exported function ``conv(x, w, out, b, g0, g1, r0, r1)`` computes channel groups
``[g0, g1)`` for output rows ``[r0, r1)``: callers split that range across threads. A kernel
can start its accumulators at the conv's bias ``b`` and apply ReLU before storing, so the
common Conv(+bias)+Relu pair needs no elementwise pass over its output at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcopt.ir.clamp import Clamp, from_params as clamp_from_params, to_params as clamp_params
from dcopt.backends.cpu.conv_ir import LANES, UNROLL_TAPS, generate_functions, module_ir  # noqa: F401 (re-exported)

#: Bump when the generated code changes in a way the shapes do not show (part of kernel names).
KERNEL_VERSION = 8
# Tile limits, measured (znver5, one core, ResNet/Inception conv shapes, every tile swept):
# 7x3, 7x2, 8x2, 10x2 and 14x1 tiles reach 220-240 GFLOP/s; 24 accumulators (8x3, 6x4) fell to
# 150-170 (register spills: 32 zmm hold the accumulators, the weight vectors and a broadcast)
# and 4 weight vectors per step never won.
MAX_ACCUMULATORS = 21
MAX_VECTORS = 3
# 1x1 convs as generated kernels from this many input channels per group; below it OpenBLAS on
# the image was faster: C_in 64 at 56x56 153 vs ~190 GFLOP/s, C_in 16 74. From 256 up the kernel
# won (206 vs ~195 at 56x56) and by far on small planes (C_in 512-2048 at 7x7: 225 vs 125-160).
POINTWISE_MIN_CHANNELS = 192
POINTWISE_ROW_BLOCKS = 4  # see pointwise_plan


@dataclass(frozen=True)
class ConvShape:
    """Everything a generated kernel is specialised on (NCHW, one image)."""

    cin: int
    cout: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    hp: int  # padded input height/width
    wp: int
    oh: int
    ow: int
    rows_out: int = 0  # 0: NCHW output; else pixel-major output with this many channels per pixel
    # 0: packed weights. Else the "weights" are a runtime row-major matrix B with this row stride,
    # read in place, and the bias is per "pixel" (row of the product): see pointwise_plan.
    w_stride: int = 0

    @property
    def blocks(self) -> int:
        return -(-self.cout // LANES)


@dataclass(frozen=True)
class Tiling:
    """``px`` pixels x ``cv`` channel vectors per tile; ``groups`` full groups of ``cv`` vectors
    plus one of ``cv_rem`` vectors when the channel blocks do not divide evenly."""

    px: int
    cv: int
    groups: int
    cv_rem: int
    transpose: bool = False  # store channel rows through a register transpose, not per-pixel scatters

    @property
    def total_groups(self) -> int:
        return self.groups + (1 if self.cv_rem else 0)


def _tile_cycles(px: int, cv: int, steps: int) -> float:
    """Modelled cycles of one tile: FMA-bound at 2 per cycle unless the ``px`` broadcasts and
    ``cv`` weight loads dominate (a weight vector streams from L2 and costs about two
    broadcasts), plus ~16 cycles per scatter and the call."""
    return steps * max(px * cv, px + 2 * cv) / 2.0 + px * cv * 16 + 40


def choose_tiling(shape: ConvShape) -> Tiling:
    """The (pixels, channel vectors) tile minimising modelled cycles for this conv -- or, for
    windows of 2-9 taps on rows of 16 pixels or more, 16-pixel tiles of one channel vector
    stored through a transpose (:func:`_transposed_stores`). Measured on one core: 3x3 convs
    at 27x27-112x112 220-234 GFLOP/s that way against 185-225 with scatters; 1x1 convs (202
    vs 183) and the 7x7/2 stem (187 vs 136), with few taps per broadcast, keep the scatters."""
    if shape.ow >= LANES and 1 < shape.kh * shape.kw <= UNROLL_TAPS and not shape.rows_out:
        return Tiling(LANES, 1, shape.blocks, 0, True)
    steps = shape.cin * shape.kh * shape.kw
    best = None
    for cv in range(1, MAX_VECTORS + 1):
        groups, cv_rem = divmod(shape.blocks, cv)
        if groups == 0:
            continue
        for px in range(1, min(shape.ow, MAX_ACCUMULATORS // cv) + 1):
            full, rem = divmod(shape.ow, px)
            row = full * _tile_cycles(px, cv, steps) + (_tile_cycles(rem, cv, steps) if rem else 0)
            cost = groups * row
            if cv_rem:
                cost += full * _tile_cycles(px, cv_rem, steps) + (_tile_cycles(rem, cv_rem, steps) if rem else 0)
            if best is None or cost < best[0]:
                best = (cost, Tiling(px, cv, groups, cv_rem))
    return best[1]


def pack_weights(w: np.ndarray, shape: ConvShape, tiling: Tiling) -> np.ndarray:
    """OIHW weights -> ``[group][cin][kh][kw][cv*16]`` (float32, zero past ``cout``), flat."""
    w = np.asarray(w, np.float32).reshape(shape.cout, shape.cin, shape.kh, shape.kw)
    padded = np.zeros((shape.blocks * LANES, shape.cin, shape.kh, shape.kw), np.float32)
    padded[: shape.cout] = w
    parts = []
    for g in range(tiling.total_groups):
        cv = tiling.cv if g < tiling.groups else tiling.cv_rem
        co0 = g * tiling.cv * LANES
        parts.append(padded[co0: co0 + cv * LANES].transpose(1, 2, 3, 0).reshape(-1))
    return np.ascontiguousarray(np.concatenate(parts))


def kernel_name(shape: ConvShape, tiling: Tiling, bias: bool = False, clamp: Clamp | None = None,
                residual: bool = False) -> str:
    """Content-derived symbol of one specialised kernel (equal convs share it)."""
    import hashlib

    text = repr((shape, tiling, bias, clamp, residual, KERNEL_VERSION))
    return "dcopt_conv_" + hashlib.sha1(text.encode()).hexdigest()[:16]


_SUPPORTED: list[bool] = []


def supported() -> bool:
    """Whether this host runs the generated kernels (they use AVX-512 zmm registers)."""
    if not _SUPPORTED:
        from dcopt.kernels import host_has

        _SUPPORTED.append(host_has("avx512f"))
    return _SUPPORTED[0]


@dataclass(frozen=True)
class DirectPlan:
    """How one (possibly grouped) conv runs as a generated kernel: the per-group ``shape``, its
    ``tiling``, the kernel ``name``, and whether the input needs a zero-padded copy (else the
    kernel reads it in place, ``shape.hp x shape.wp`` being the input planes)."""

    shape: ConvShape
    tiling: Tiling
    name: str
    group: int
    pads: tuple[int, int]
    padded: bool
    bias: bool = False  # the kernel adds a bias (accumulators start at it)
    clamp: Clamp | None = None  # and clamps before storing (ReLU, ReLU6: :mod:`dcopt.ir.clamp`)
    residual: bool = False  # and, before the clamp, adds a tensor laid out like its output

    def with_epilogue(self, bias: bool, clamp: Clamp | None, residual: bool = False) -> "DirectPlan":
        """This plan with a fused bias, residual and/or clamp (a different kernel and name)."""
        import dataclasses

        return dataclasses.replace(self, bias=bias, clamp=clamp, residual=residual,
                                   name=kernel_name(self.shape, self.tiling, bias, clamp, residual))

    def functions(self) -> str:
        """The LLVM IR of this plan's kernel (:func:`generate_functions`)."""
        return generate_functions(self.shape, self.tiling, self.name, self.bias, self.clamp, self.residual)

    @property
    def packed_size(self) -> int:
        """Floats of one group's packed weights (every channel block, zero-filled past cout)."""
        s = self.shape
        return s.blocks * LANES * s.cin * s.kh * s.kw

    def params(self) -> dict:
        """The step parameters a build stores (JSON)."""
        return {"kernel_name": self.name, "conv_shape": list(self.shape.__dict__.values()),
                "tiling": [self.tiling.px, self.tiling.cv, self.tiling.groups, self.tiling.cv_rem,
                           self.tiling.transpose],
                "padded": self.padded, "bias": self.bias, "clamp": clamp_params(self.clamp), "residual": self.residual,
                "impl": "pointwise" if self.shape.w_stride else "direct"}

    @classmethod
    def from_params(cls, p: dict) -> "DirectPlan":
        return cls(ConvShape(*p["conv_shape"]), Tiling(*p["tiling"]), p["kernel_name"], int(p["group"]),
                   tuple(p["pads"]), bool(p["padded"]), bool(p["bias"]), clamp_from_params(p), bool(p.get("residual")))


def plan(x_shape, w_shape, out_shape, kernel, strides, pads, dilations, group) -> DirectPlan | None:
    """A :class:`DirectPlan` for an NCHW float32 conv, or None where a generated kernel is not
    the better choice: depthwise convs (one channel per group: :func:`library.depthwise2d`),
    1x1/stride-1/unpadded convs with fewer than :data:`POINTWISE_MIN_CHANNELS` input channels
    (a plain GEMM on the image: their few reduction steps do not hide the scatter stores), and
    hosts without AVX-512."""
    n, cin, h, w = (int(d) for d in x_shape)
    cout, oh, ow = (int(d) for d in out_shape[1:])
    kh, kw = kernel
    (sh, sw), (ph, pw), (dh, dw) = strides, pads, dilations
    if group > 1 and cin == group == cout:
        return None
    if ((kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0) and cin // group < POINTWISE_MIN_CHANNELS) or not supported():
        return None
    hp, wp = (oh - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    padded = bool(ph or pw or h < hp or w < wp)
    if not padded:
        hp, wp = h, w
    shape = ConvShape(cin // group, cout // group, kh, kw, sh, sw, dh, dw, hp, wp, oh, ow)
    tiling = choose_tiling(shape)
    return DirectPlan(shape, tiling, kernel_name(shape, tiling), group, (ph, pw), padded)


def pack_bias(b: np.ndarray, plan: DirectPlan) -> np.ndarray:
    """Per-group bias vectors, each zero-padded to whole 16-channel blocks, concatenated."""
    s = plan.shape
    out = np.zeros((plan.group, s.blocks * LANES), np.float32)
    out[:, : s.cout] = np.asarray(b, np.float32).reshape(plan.group, s.cout)
    return out.reshape(-1)


def pack_grouped(w: np.ndarray, plan: DirectPlan) -> np.ndarray:
    """OIHW weights of a (grouped) conv -> each group's :func:`pack_weights`, concatenated."""
    s = plan.shape
    w = np.asarray(w, np.float32).reshape(plan.group, s.cout, s.cin, s.kh, s.kw)
    return np.concatenate([pack_weights(w[g], s, plan.tiling) for g in range(plan.group)])


#: Rows of A one call of a GEMM compiled for a build for every size covers: the run's rows go in
#: chunks of the first, what remains in chunks of the second, the last few through a zero-padded
#: copy (runtime._bind_gemm_chunks). Why two: 8 tokens through one 32-row chunk did 4x the work.
GEMM_CHUNK_ROWS = (32, 8)


def gemm_chunk_plans(k: int, n: int) -> list[DirectPlan] | None:
    """Plans of :data:`GEMM_CHUNK_ROWS` rows each, sharing one packing of the weights (the same
    channel-vector tiling: the smaller chunk only tiles fewer pixels). None without AVX-512."""
    import dataclasses

    big = gemm_plan(GEMM_CHUNK_ROWS[0], k, n)
    if big is None:
        return None
    plans = [big]
    for rows in GEMM_CHUNK_ROWS[1:]:
        shape = dataclasses.replace(big.shape, ow=rows)
        tiling = dataclasses.replace(big.tiling, px=min(big.tiling.px, rows))
        plans.append(DirectPlan(shape, tiling, kernel_name(shape, tiling), 1, (0, 0), False))
    return plans


def gemm_plan(m: int, k: int, n: int) -> DirectPlan | None:
    """``[m, k] @ [k, n]`` (row-major, constant ``[k, n]``) as the 1x1 special case of the conv
    kernel: the rows of A are the "pixels" (``k`` floats apart), K the input channels, N the
    output channels, written pixel-major (``rows_out``) -- i.e. the row-major product. Its
    weights are packed once like a conv's (no per-call packing as in sgemm) and its bias/ReLU
    fused the same way. None without AVX-512."""
    if not supported():
        return None
    shape = ConvShape(k, n, 1, 1, 1, k, 1, 1, 1, 1, 1, m, rows_out=n)
    tiling = choose_tiling(shape)
    return DirectPlan(shape, tiling, kernel_name(shape, tiling), 1, (0, 0), False)


def pointwise_fits(plane: int) -> bool:
    """Whether a plane wastes little of its last 16-pixel vector (at most 10%): 7x7 planes (49
    pixels in 4 vectors) ran at 182 GFLOP/s this way against 225 through the scattered kernel."""
    return -(-plane // LANES) * LANES <= 1.1 * plane


def pointwise_plan(cin: int, cout: int, plane: int) -> DirectPlan | None:
    """A 1x1/stride-1 conv ``out[cout, plane] = W[cout, cin] @ x[cin, plane]`` as the GEMM form
    with the roles turned: the weight rows are the "pixels" (broadcast, read in place from
    ``[cout, cin]``), the image's pixels are the vector lanes, read straight from the image rows
    (``w_stride``), and each output row is stored contiguously -- no packing, no scatter. Per
    core 220-230 GFLOP/s where OpenBLAS on the image gave 180-200 and the scattered 1x1 kernel
    150-225. The conv's bias is per output channel, i.e. per row here. None without AVX-512."""
    if not supported():
        return None
    # The output channels run in POINTWISE_ROW_BLOCKS blocks (the driver's "rows", ``sh`` apart in
    # the weights): with only ~7 pixel groups on a 14x14 plane, groups alone split 3:4 between
    # two threads; groups x row blocks split evenly.
    blocks = POINTWISE_ROW_BLOCKS if cout % POINTWISE_ROW_BLOCKS == 0 else 1
    rows = cout // blocks
    shape = ConvShape(cin, plane, 1, 1, rows * cin, cin, 1, 1, 1, 1, blocks, rows, rows_out=plane, w_stride=plane)
    tiling = choose_tiling(shape)
    return DirectPlan(shape, tiling, kernel_name(shape, tiling), 1, (0, 0), False)
