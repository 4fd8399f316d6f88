"""LLVM IR of the clamp (:mod:`dcopt.ir.clamp`) that the generated conv, GEMM and matvec
kernels apply to their accumulators before they store."""

from __future__ import annotations

import struct

from dcopt.ir.clamp import Clamp, f32


def _llvm_float(value: float) -> str:
    """An LLVM IR float constant: the hex form of the (float32-exact) double."""
    return "0x%016X" % struct.unpack(">Q", struct.pack(">d", f32(value)))[0]


def ir_lines(value: str, clamp: Clamp | None, tag: str, lanes: int = 16) -> tuple[list[str], str]:
    """IR that clamps the ``<lanes x float>`` SSA ``value``: (instructions, the clamped value's
    name). ``tag`` makes the names unique per call site."""
    if clamp is None:
        return [], value
    vt = f"<{lanes} x float>"
    lines = []
    for side, bound, cmp in (("lo", clamp[0], "olt"), ("hi", clamp[1], "ogt")):
        if bound is None:
            continue
        const = "zeroinitializer" if bound == 0.0 and struct.pack(">d", bound)[0] == 0 else \
            "<" + ", ".join([f"float {_llvm_float(bound)}"] * lanes) + ">"
        lines += [f"  %{side}c{tag} = fcmp {cmp} {vt} {value}, {const}",
                  f"  %{side}s{tag} = select <{lanes} x i1> %{side}c{tag}, {vt} {const}, {vt} {value}"]
        value = f"%{side}s{tag}"
    return lines, value
