"""LLVM IR text of the direct conv kernels (:mod:`directconv` plans them; this writes them).

One tile function per (pixels, channel vectors) shape a plan needs -- the reduction loop with
every tap unrolled, accumulators as loop phis, the bias/ReLU epilogue and the stores (per-pixel
scatters, whole rows for pixel-major outputs, or a register transpose) -- plus the exported
driver that walks channel groups and output rows and calls the tiles. Text, not llvmlite.ir:
the unrolled bodies are long, regular and easiest to read (and diff between builds) as text.
"""

from __future__ import annotations

import re

from typing import TYPE_CHECKING

from dcopt.backends.cpu.clamp import ir_lines
from dcopt.ir.clamp import Clamp

LANES = 16  # fp32 lanes of a zmm register
UNROLL_TAPS = 9  # taps unrolled per reduction step (see _tile_function)
BLOCK_TERMS = 256  # products one accumulator chain sums before it is added into the running total
SPLAT = f"<{LANES} x i32> zeroinitializer"  # shufflevector mask broadcasting lane 0

if TYPE_CHECKING:
    from dcopt.backends.cpu.directconv import ConvShape, Tiling


def _vec(values) -> str:
    return "<" + ", ".join(values) + ">"


def _tile_function(name: str, shape: ConvShape, px: int, cv: int, bias: bool, clamp: Clamp | None, transpose: bool,
                   residual: bool = False) -> str:
    """IR of one tile: ``px`` pixels x ``cv`` vectors, reduction over cin x kh x kw; the
    accumulators start at the bias (``bias``) and are clamped before the store (``clamp``: ReLU,
    ReLU6, ..., :mod:`dcopt.ir.clamp`)."""
    s = shape
    plane_in = s.hp * s.wp
    plane_out = s.oh * s.ow
    step = s.kh * s.kw * cv * LANES  # weight floats per input channel
    vt = f"<{LANES} x float>"
    lines = [f"define internal void @\"{name}\"(ptr noalias nocapture readonly %x, ptr noalias nocapture readonly %w, "
             f"ptr noalias nocapture %out, ptr noalias nocapture readonly %b, i64 %valid, "
             f"ptr noalias nocapture readonly %res) #1 {{", "entry:"]
    init = {}
    for q in range(cv):
        if bias and not s.w_stride:
            lines.append(f"  %bp{q} = getelementptr float, ptr %b, i64 {q * LANES}")
            lines.append(f"  %bv{q} = load {vt}, ptr %bp{q}, align 4")
        for p in range(px):
            init[p, q] = f"%bv{q}" if bias and not s.w_stride else "zeroinitializer"
    if bias and s.w_stride:  # one bias per row of the product: splat it across the row's vectors
        for p in range(px):
            lines += [f"  %bp{p} = getelementptr float, ptr %b, i64 {p}", f"  %bs{p} = load float, ptr %bp{p}, align 4",
                      f"  %bi{p} = insertelement {vt} poison, float %bs{p}, i64 0",
                      f"  %bv{p} = shufflevector {vt} %bi{p}, {vt} poison, <{LANES} x i32> zeroinitializer"]
            for q in range(cv):
                init[p, q] = f"%bv{p}"
    # One loop iteration covers an input channel's whole kernel window (every tap unrolled) or,
    # for windows over UNROLL_TAPS taps (7x7 stems), one kernel row: 49 unrolled taps let LLVM's
    # scheduler hoist broadcasts until the accumulators spilled (368 stack accesses per tile).
    rows = s.kh if s.kh * s.kw > UNROLL_TAPS else 1
    kh_body = s.kh // rows
    # Blocked accumulation: the accumulators sum BLOCK_TERMS-ish products (``block`` iterations),
    # then are added into running totals on the stack and restart at zero. One chain of 4,608
    # FMAs (512 channels x 3x3) put ResNet-50 2-3.5x further from the float64 result than
    # onnxruntime, whose kernels sum per channel block; the flush costs one load, add and store
    # per accumulator per block. Reductions of one block or less keep the single chain.
    total = s.cin * rows
    block = max(1, BLOCK_TERMS // (s.kh * s.kw)) * rows
    blocked = total > block
    latch = "%cont" if blocked else "%loop"
    tot = {}
    if blocked:
        lines.append(f"  %tot = alloca {vt}, i32 {px * cv}, align 64")
        for k, key in enumerate(init):
            tot[key] = f"%tp{k}"
            lines += [f"  %tp{k} = getelementptr {vt}, ptr %tot, i64 {k}", f"  store {vt} {init[key]}, ptr %tp{k}, align 64"]
        start = {key: "zeroinitializer" for key in init}
    else:
        start = init
    lines += ["  br label %loop", "loop:",
              f"  %it = phi i64 [0, %entry], [%it.next, {latch}]" + (", [%it.next, %flush]" if blocked else ""),
              f"  %xo = phi i64 [0, %entry], [%xo.next, {latch}]" + (", [%xo.next, %flush]" if blocked else "")]
    if rows > 1:
        lines.append(f"  %u = phi i64 [0, %entry], [%u.next, {latch}]" + (", [%u.next, %flush]" if blocked else ""))
    if blocked:
        lines.append("  %bc = phi i64 [0, %entry], [%bc.next, %cont], [0, %flush]")
    acc = {(p, q): f"%a{p}_{q}.in" for p in range(px) for q in range(cv)}
    phi_at = len(lines)
    lines += ["  %xb = getelementptr float, ptr %x, i64 %xo",
              f"  %wo = mul i64 %it, {s.w_stride or step // rows}", "  %wb = getelementptr float, ptr %w, i64 %wo"]
    if rows > 1:  # next kernel row of this channel, or the first row of the next channel
        lines += ["  %u.inc = add i64 %u, 1", f"  %u.wrap = icmp eq i64 %u.inc, {rows}",
                  "  %u.next = select i1 %u.wrap, i64 0, i64 %u.inc",
                  f"  %xo.step = select i1 %u.wrap, i64 {plane_in - (rows - 1) * s.dh * s.wp}, i64 {s.dh * s.wp}",
                  "  %xo.next = add i64 %xo, %xo.step"]
    else:
        lines.append(f"  %xo.next = add i64 %xo, {plane_in}")
    cur = dict(acc)
    n = 0
    for u in range(kh_body):
        for v in range(s.kw):
            t = u * s.kw + v
            for q in range(cv):
                lines.append(f"  %wp{t}_{q} = getelementptr float, ptr %wb, i64 {(t * cv + q) * LANES}")
                lines.append(f"  %wv{t}_{q} = load {vt}, ptr %wp{t}_{q}, align 4")
            for p in range(px):
                off = u * s.dh * s.wp + p * s.sw + v * s.dw
                lines.append(f"  %xp{t}_{p} = getelementptr float, ptr %xb, i64 {off}")
                lines.append(f"  %xs{t}_{p} = load float, ptr %xp{t}_{p}, align 4")
                lines.append(f"  %xi{t}_{p} = insertelement {vt} poison, float %xs{t}_{p}, i64 0")
                lines.append(f"  %xv{t}_{p} = shufflevector {vt} %xi{t}_{p}, {vt} poison, {SPLAT}")
                for q in range(cv):
                    n += 1
                    nm = f"%f{n}"
                    lines.append(f"  {nm} = call {vt} @llvm.fma.v16f32({vt} %xv{t}_{p}, {vt} %wv{t}_{q}, "
                                 f"{vt} {cur[p, q]})")
                    cur[p, q] = nm
    lines[phi_at:phi_at] = [f"  {acc[key]} = phi {vt} [{start[key]}, %entry], [{nm}, {latch}]"
                            + (", [zeroinitializer, %flush]" if blocked else "") for key, nm in cur.items()]
    lines += ["  %it.next = add i64 %it, 1", f"  %more = icmp ult i64 %it.next, {total}"]
    if blocked:  # continue the block, or flush it into the totals (and finish after the last)
        lines += ["  %bc.next = add i64 %bc, 1", f"  %bfull = icmp eq i64 %bc.next, {block}",
                  "  %bopen = xor i1 %bfull, true", "  %stay = and i1 %more, %bopen",
                  "  br i1 %stay, label %cont, label %flush", "cont:", "  br label %loop", "flush:"]
        for k, key in enumerate(init):
            lines += [f"  %tl{k} = load {vt}, ptr {tot[key]}, align 64", f"  %ts{k} = fadd {vt} %tl{k}, {cur[key]}",
                      f"  store {vt} %ts{k}, ptr {tot[key]}, align 64"]
            cur[key] = f"%ts{k}"
    lines += ["  br i1 %more, label %loop, label %store", "store:"]
    lines.append(f"  %vs = insertelement <{LANES} x i64> poison, i64 %valid, i64 0")
    lines.append(f"  %vsplat = shufflevector <{LANES} x i64> %vs, <{LANES} x i64> poison, {SPLAT}")
    for q in range(cv):
        qlanes = _vec(f"i64 {q * LANES + c}" for c in range(LANES))
        offs = _vec(f"i64 {(q * LANES + c) * plane_out}" for c in range(LANES))
        lines.append(f"  %m{q} = icmp slt <{LANES} x i64> {qlanes}, %vsplat")
        for p in range(px):
            if residual:  # + the residual, laid out like the output (pixel-major rows only)
                lines += [f"  %rp{p}_{q} = getelementptr float, ptr %res, i64 {p * s.rows_out + q * LANES}",
                          f"  %rv{p}_{q} = call {vt} @llvm.masked.load.v16f32.p0(ptr %rp{p}_{q}, i32 4, "
                          f"<{LANES} x i1> %m{q}, {vt} zeroinitializer)",
                          f"  %ra{p}_{q} = fadd {vt} {cur[p, q]}, %rv{p}_{q}"]
                cur[p, q] = f"%ra{p}_{q}"
            clamped, cur[p, q] = ir_lines(cur[p, q], clamp, f"{p}_{q}", LANES)
            lines += clamped
        if transpose:
            lines += _transposed_stores([cur[p, q] for p in range(px)], q, plane_out, f"t{q}")
            continue
        for p in range(px):
            if s.rows_out:  # 16 channels of one pixel are contiguous: a (masked) vector store
                lines.append(f"  %op{p}_{q} = getelementptr float, ptr %out, i64 {p * s.rows_out + q * LANES}")
                lines.append(f"  call void @llvm.masked.store.v16f32.p0({vt} {cur[p, q]}, ptr %op{p}_{q}, i32 4, "
                             f"<{LANES} x i1> %m{q})")
                continue
            lines.append(f"  %op{p}_{q} = getelementptr float, ptr %out, i64 {p}")
            lines.append(f"  %ptrs{p}_{q} = getelementptr float, ptr %op{p}_{q}, <{LANES} x i64> {offs}")
            lines.append(f"  call void @llvm.masked.scatter.v16f32.v16p0({vt} {cur[p, q]}, <{LANES} x ptr> "
                         f"%ptrs{p}_{q}, i32 4, <{LANES} x i1> %m{q})")
    lines += ["  ret void", "}"]
    return "\n".join(lines)


def _transposed_stores(rows: list[str], q: int, plane_out: int, tag: str) -> list[str]:
    """Store ``rows`` (one vector of 16 channels per pixel) as 16 channel rows of consecutive
    pixels: a 16x16 transpose in registers (4 rounds of block swaps, 64 shuffles), then one
    masked store per channel -- ``len(rows)`` pixels, channels below ``%valid`` only. On big
    planes this replaced per-pixel scatters that hit 16 planes at once (at 224x224 the planes
    are 49 x 4 KiB apart, so all 16 lines fall into one L1 set): VGG's 3->64 conv at 224x224
    took 12.5 ms scattered."""
    vt = f"<{LANES} x float>"
    px = len(rows)
    cur = list(rows) + ["zeroinitializer"] * (LANES - px)
    out, n = [], 0
    bs = 1
    while bs < LANES:
        nxt = list(cur)
        for i in range(LANES):
            if i & bs:
                continue
            lo_mask = _vec(f"i32 {j if not j & bs else LANES + j - bs}" for j in range(LANES))
            hi_mask = _vec(f"i32 {j + bs if not j & bs else LANES + j}" for j in range(LANES))
            a, b = cur[i], cur[i + bs]
            out.append(f"  %{tag}s{n} = shufflevector {vt} {a}, {vt} {b}, <{LANES} x i32> {lo_mask}")
            out.append(f"  %{tag}s{n + 1} = shufflevector {vt} {a}, {vt} {b}, <{LANES} x i32> {hi_mask}")
            nxt[i], nxt[i + bs] = f"%{tag}s{n}", f"%{tag}s{n + 1}"
            n += 2
        cur, bs = nxt, bs * 2
    lanes = _vec(f"i1 {1 if j < px else 0}" for j in range(LANES))
    for c in range(LANES):
        out += [f"  %{tag}in{c} = icmp slt i64 {q * LANES + c}, %valid",
                f"  %{tag}ci{c} = insertelement <{LANES} x i1> poison, i1 %{tag}in{c}, i64 0",
                f"  %{tag}cs{c} = shufflevector <{LANES} x i1> %{tag}ci{c}, <{LANES} x i1> poison, {SPLAT}",
                f"  %{tag}mk{c} = and <{LANES} x i1> %{tag}cs{c}, {lanes}",
                f"  %{tag}p{c} = getelementptr float, ptr %out, i64 {(q * LANES + c) * plane_out}",
                f"  call void @llvm.masked.store.v16f32.p0({vt} {cur[c]}, ptr %{tag}p{c}, i32 4, "
                f"<{LANES} x i1> %{tag}mk{c})"]
    return out


def _row_calls(tiling_px: int, shape: ConvShape, tile: str, rem_tile: str | None, wg: str, valid: str,
               label: str) -> list[str]:
    """Calls covering one output row with full ``px`` tiles and a remainder tile."""
    out = []
    full = shape.ow // tiling_px
    for j in range(full + (1 if rem_tile else 0)):
        j0 = j * tiling_px
        fn = tile if j < full else rem_tile
        out.append(f"  %{label}x{j} = getelementptr float, ptr %xi, i64 {j0 * shape.sw}")
        out.append(f"  %{label}o{j} = getelementptr float, ptr %oi, i64 {j0 * (shape.rows_out or 1)}")
        bias = "%bg"
        if shape.w_stride:  # per-row bias: the tile's first row (of this row block)
            bias = f"%{label}b{j}"
            out.append(f"  {bias} = getelementptr float, ptr %bi, i64 {j0}")
        out.append(f"  %{label}r{j} = getelementptr float, ptr %ri, i64 {j0 * (shape.rows_out or 1)}")
        out.append(f"  call void @\"{fn}\"(ptr %{label}x{j}, ptr {wg}, ptr %{label}o{j}, ptr {bias}, i64 {valid}, "
                   f"ptr %{label}r{j})")
    return out


def generate_functions(shape: ConvShape, tiling: Tiling, name: str, bias: bool = False, clamp: Clamp | None = None,
                       residual: bool = False) -> str:
    """LLVM IR of one conv's tile functions and its exported row/group driver ``name``
    (``name(x, w, out, b, g0, g1, r0, r1, res)``; ``b``: the bias padded to whole channel blocks;
    ``res``: a tensor added before the clamp, laid out like ``out`` -- pixel-major outputs only)."""
    if residual and not shape.rows_out:
        raise ValueError("a fused residual needs a pixel-major output (rows_out)")
    s, t = shape, tiling
    rem_px = s.ow % t.px
    funcs = {(t.px, t.cv): f"{name}.full"}
    if rem_px:
        funcs[(rem_px, t.cv)] = f"{name}.full_rem"
    if t.cv_rem:
        funcs[(t.px, t.cv_rem)] = f"{name}.last"
        if rem_px:
            funcs[(rem_px, t.cv_rem)] = f"{name}.last_rem"
    body = [_tile_function(fn, s, px, cv, bias, clamp, t.transpose, residual) for (px, cv), fn in funcs.items()]
    k = s.cin * s.kh * s.kw
    group_w = t.cv * LANES * (1 if s.w_stride else k)
    group_o = t.cv * LANES * (1 if s.rows_out else s.oh * s.ow)
    drv = [f"define void @{name}(ptr noalias %x, ptr noalias %w, ptr noalias %out, ptr noalias %b, i64 %g0, "
           f"i64 %g1, i64 %r0, i64 %r1, ptr noalias %res) #0 {{",
           "entry:", "  br label %gloop",
           "gloop:", "  %g = phi i64 [%g0, %entry], [%g.next, %gnext]",
           "  %gdone = icmp sge i64 %g, %g1", "  br i1 %gdone, label %exit, label %gbody",
           "gbody:",
           f"  %wgo = mul i64 %g, {group_w}", "  %wg = getelementptr float, ptr %w, i64 %wgo",
           f"  %ogo = mul i64 %g, {group_o}", "  %og = getelementptr float, ptr %out, i64 %ogo",
           "  %rg = getelementptr float, ptr %res, i64 %ogo",
           f"  %co0 = mul i64 %g, {t.cv * LANES}", f"  %valid = sub i64 {s.cout}, %co0",
           "  %bg = getelementptr float, ptr %b, i64 %co0",
           f"  %isrem = icmp eq i64 %g, {t.groups}",
           "  br label %iloop",
           "iloop:", "  %i = phi i64 [%r0, %gbody], [%i.next, %inext]",
           "  %idone = icmp sge i64 %i, %r1", "  br i1 %idone, label %gnext, label %ibody",
           "ibody:",
           f"  %xio = mul i64 %i, {s.sh * s.wp}", "  %xi = getelementptr float, ptr %x, i64 %xio",
           f"  %oio = mul i64 %i, {s.ow * (s.rows_out or 1)}", "  %oi = getelementptr float, ptr %og, i64 %oio",
           "  %ri = getelementptr float, ptr %rg, i64 %oio",
           f"  %bio = mul i64 %i, {s.ow}", "  %bi = getelementptr float, ptr %b, i64 %bio",
           "  br i1 %isrem, label %last, label %full",
           "full:"]
    drv += _row_calls(t.px, s, f"{name}.full", f"{name}.full_rem" if rem_px else None, "%wg", "%valid", "f")
    drv += ["  br label %inext", "last:"]
    if t.cv_rem:
        drv += _row_calls(t.px, s, f"{name}.last", f"{name}.last_rem" if rem_px else None, "%wg", "%valid", "l")
    drv += ["  br label %inext",
            "inext:", "  %i.next = add i64 %i, 1", "  br label %iloop",
            "gnext:", "  %g.next = add i64 %g, 1", "  br label %gloop",
            "exit:", "  ret void", "}"]
    return "\n\n".join(body + ["\n".join(drv)])


MODULE_TAIL = """declare <16 x float> @llvm.fma.v16f32(<16 x float>, <16 x float>, <16 x float>)
declare void @llvm.masked.scatter.v16f32.v16p0(<16 x float>, <16 x ptr>, i32 immarg, <16 x i1>)
declare void @llvm.masked.store.v16f32.p0(<16 x float>, ptr, i32 immarg, <16 x i1>)
declare <16 x float> @llvm.masked.load.v16f32.p0(ptr, i32 immarg, <16 x i1>, <16 x float>)
attributes #0 = { nounwind "no-trapping-math"="true" }
attributes #1 = { noinline nounwind "no-trapping-math"="true" }
"""


def module_ir(functions: dict[str, str]) -> str:
    """One LLVM module holding every generated kernel of a model (``{name: IR functions}`` from
    this module and :mod:`matvec`, sorted)."""
    return "\n\n".join(functions[k] for k in sorted(functions)) + "\n\n" + MODULE_TAIL


def split_module_ir(text: str) -> dict[str, str]:
    """``{kernel: its own LLVM module}`` from a module :func:`module_ir` wrote: each exported
    function with its internal helpers (``@"NAME.full"`` ...), then the module's declarations
    and attributes. A line at column 0 that starts with ``define`` begins a function; one that
    starts with ``declare`` or ``attributes`` belongs to the shared tail. Each kernel's module
    depends only on its own functions, not on its neighbours in the file."""
    functions, tail = _split_ir(text)
    return {name: fns + "\n\n" + tail for name, fns in functions.items()}


def kernel_functions_ir(text: str) -> dict[str, str]:
    """``{kernel: its functions}`` of a module :func:`module_ir` wrote, without the shared
    declarations: what a reader of one kernel's code wants to see."""
    return {name: fns + "\n" for name, fns in _split_ir(text)[0].items()}


def _split_ir(text: str) -> tuple[dict[str, str], str]:
    """({kernel: its functions, joined}, the declarations and attributes) of a generated module."""
    functions: dict[str, list[str]] = {}
    tail: list[str] = []
    text = "\n" + text  # every top-level line now follows a newline
    marks = [(m.start() + 1, m.group(1)) for m in _TOP_LEVEL.finditer(text)] + [(len(text), "")]
    for (begin, kind), (end, _) in zip(marks, marks[1:]):  # one regex scan: ResNet-50's 1.3 MB in ~1 ms
        if kind == "define":
            at = text.find("@", begin, end)
            name = text[at + 1:text.find("(", at, end)].strip('"').split(".", 1)[0]
            functions.setdefault(name, []).append(text[begin:end].strip())
        else:
            tail.append(text[begin:end].strip() + "\n")
    return {name: "\n\n".join(fns) for name, fns in sorted(functions.items())}, "".join(tail)


_TOP_LEVEL = re.compile(r"\n(define|declare|attributes) ")  # not "^...", re.M: that is 7x slower
