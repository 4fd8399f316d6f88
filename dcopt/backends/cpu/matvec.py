"""Batch-1 fully connected layers (``y = x @ W (+ b)``, then ReLU) as generated LLVM IR kernels.

Why generated: at batch 1 a dense layer is a matrix-vector product, bound by streaming ``W``
from memory. Through BLAS it cost a ``cblas_sgemv`` per thread plus a separate bias/ReLU pass
over ``y`` (MLP 1024-wide, 3 layers: 0.105-0.11 ms against onnxruntime's 0.084). Here ``W``
is repacked once into column blocks of :data:`BLOCK` floats, ``[block][K][BLOCK]``, so each
block is one sequential stream; a block's ``BLOCK / 16`` zmm accumulators start at the bias,
take one FMA per row of ``W`` and get ReLU'd on the way out. Tasks split the blocks.

The exported kernel takes the pool's 9-integer convention (:data:`threadpool.CONV` rows):
``(x, w, y, b, blk0, blk1, 0, 1, 0)`` computes column blocks ``[blk0, blk1)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from dcopt.backends.cpu.clamp import ir_lines
from dcopt.backends.cpu.directconv import LANES, supported
from dcopt.ir.clamp import Clamp, from_params as clamp_from_params, to_params as clamp_params

KERNEL_VERSION = 1
BLOCK = 128  # columns per block: 8 accumulators


@dataclass(frozen=True)
class MatvecPlan:
    k: int
    n: int
    bias: bool
    clamp: Clamp | None  # applied before the store (ReLU, ReLU6: :mod:`dcopt.ir.clamp`)

    @property
    def blocks(self) -> int:
        return -(-self.n // BLOCK)

    @property
    def name(self) -> str:
        text = repr((self.k, self.n, self.bias, self.clamp, BLOCK, KERNEL_VERSION))
        return "dcopt_matvec_" + hashlib.sha1(text.encode()).hexdigest()[:16]

    def params(self) -> dict:
        return {"kernel_name": self.name, "k": self.k, "n": self.n, "bias": self.bias, "clamp": clamp_params(self.clamp)}

    @classmethod
    def from_params(cls, p: dict) -> "MatvecPlan":
        return cls(int(p["k"]), int(p["n"]), bool(p["bias"]), clamp_from_params(p))

    def functions(self) -> str:
        return generate_functions(self)


def plan(k: int, n: int, bias: bool, clamp: Clamp | None) -> MatvecPlan | None:
    """A plan for ``[1, k] @ [k, n]``, or None on hosts without AVX-512."""
    return MatvecPlan(int(k), int(n), bias, clamp) if supported() else None


def pack_weights(w: np.ndarray, plan: MatvecPlan) -> np.ndarray:
    """``W [k, n]`` -> ``[block][k][BLOCK]`` (zero columns past ``n``), flat float32, written
    block by block into the result: one copy of the weights (VGG-19's fc6 is 411 MB; a padded
    intermediate and a transposed copy made three)."""
    w = np.asarray(w).reshape(plan.k, plan.n)
    packed = np.zeros((plan.blocks, plan.k, BLOCK), np.float32)
    for j in range(plan.blocks):
        cols = w[:, j * BLOCK:(j + 1) * BLOCK]
        packed[j, :, : cols.shape[1]] = cols
    return packed.reshape(-1)


def pack_bias(b: np.ndarray, plan: MatvecPlan) -> np.ndarray:
    out = np.zeros(plan.blocks * BLOCK, np.float32)
    out[: plan.n] = np.asarray(b, np.float32).reshape(-1)
    return out


def _block_function(name: str, plan: MatvecPlan, vectors: int, tail: int) -> str:
    """One column block of ``vectors`` accumulators; the last one stores only ``tail`` lanes."""
    vt = f"<{LANES} x float>"
    lines = [f'define internal void @"{name}"(ptr noalias readonly %x, ptr noalias readonly %w, ptr noalias %y, '
             f'ptr noalias readonly %b) #1 {{', "entry:"]
    init = []
    for v in range(vectors):
        if plan.bias:
            lines += [f"  %bp{v} = getelementptr float, ptr %b, i64 {v * LANES}",
                      f"  %bv{v} = load {vt}, ptr %bp{v}, align 4"]
        init.append(f"%bv{v}" if plan.bias else "zeroinitializer")
    lines += ["  br label %loop", "loop:", "  %k = phi i64 [0, %entry], [%k.next, %loop]"]
    phis = len(lines)
    lines += ["  %xp = getelementptr float, ptr %x, i64 %k", "  %xs = load float, ptr %xp, align 4",
              f"  %xi = insertelement {vt} poison, float %xs, i64 0",
              f"  %xv = shufflevector {vt} %xi, {vt} poison, <{LANES} x i32> zeroinitializer",
              f"  %row = mul i64 %k, {BLOCK}"]
    for v in range(vectors):
        lines += [f"  %wo{v} = add i64 %row, {v * LANES}", f"  %wp{v} = getelementptr float, ptr %w, i64 %wo{v}",
                  f"  %wv{v} = load {vt}, ptr %wp{v}, align 4",
                  f"  %acc{v}.next = call {vt} @llvm.fma.v16f32({vt} %xv, {vt} %wv{v}, {vt} %acc{v})"]
    lines[phis:phis] = [f"  %acc{v} = phi {vt} [{init[v]}, %entry], [%acc{v}.next, %loop]" for v in range(vectors)]
    lines += ["  %k.next = add i64 %k, 1", f"  %more = icmp ult i64 %k.next, {plan.k}",
              "  br i1 %more, label %loop, label %store", "store:"]
    for v in range(vectors):
        val = f"%acc{v}.next"
        clamped, val = ir_lines(val, plan.clamp, str(v), LANES)
        lines += clamped
        lines.append(f"  %yp{v} = getelementptr float, ptr %y, i64 {v * LANES}")
        if v == vectors - 1 and tail < LANES:
            mask = "<" + ", ".join(f"i1 {1 if c < tail else 0}" for c in range(LANES)) + ">"
            lines.append(f"  call void @llvm.masked.store.v16f32.p0({vt} {val}, ptr %yp{v}, i32 4, "
                         f"<{LANES} x i1> {mask})")
        else:
            lines.append(f"  store {vt} {val}, ptr %yp{v}, align 4")
    lines += ["  ret void", "}"]
    return "\n".join(lines)


def generate_functions(plan: MatvecPlan) -> str:
    """IR of the block functions and the exported driver ``plan.name``."""
    name = plan.name
    last_cols = plan.n - (plan.blocks - 1) * BLOCK
    last_vectors = -(-last_cols // LANES)
    tail = last_cols - (last_vectors - 1) * LANES
    body = [_block_function(f"{name}.full", plan, BLOCK // LANES, LANES),
            _block_function(f"{name}.last", plan, last_vectors, tail)]
    drv = [f"define void @{name}(ptr %x, ptr %w, ptr %y, ptr %b, i64 %g0, i64 %g1, i64 %r0, i64 %r1, ptr %res) #0 {{",
           "entry:", "  br label %loop",
           "loop:", "  %g = phi i64 [%g0, %entry], [%g.next, %next]",
           "  %done = icmp sge i64 %g, %g1", "  br i1 %done, label %exit, label %body",
           "body:",
           f"  %wo = mul i64 %g, {plan.k * BLOCK}", "  %wg = getelementptr float, ptr %w, i64 %wo",
           f"  %co = mul i64 %g, {BLOCK}", "  %yg = getelementptr float, ptr %y, i64 %co",
           "  %bg = getelementptr float, ptr %b, i64 %co",
           f"  %islast = icmp eq i64 %g, {plan.blocks - 1}", "  br i1 %islast, label %last, label %full",
           "full:", f'  call void @"{name}.full"(ptr %x, ptr %wg, ptr %yg, ptr %bg)', "  br label %next",
           "last:", f'  call void @"{name}.last"(ptr %x, ptr %wg, ptr %yg, ptr %bg)', "  br label %next",
           "next:", "  %g.next = add i64 %g, 1", "  br label %loop",
           "exit:", "  ret void", "}"]
    return "\n\n".join(body + ["\n".join(drv)])
