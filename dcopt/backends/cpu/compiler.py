"""Compiler: generated source -> module of compiled numba kernels, through the kernel store.

A model's generated kernels are one module, stored as one :class:`dcopt.kernels.KernelStore`
entry keyed (:class:`dcopt.kernels.KernelKey`) by the source text, the exact signatures it is
compiled for, the fast-math flags, the host CPU, the toolchain, and ``CODEGEN_VERSION`` -- a hash
of this backend's sources, :mod:`mathlib` included, since numba inlines it into the kernels'
machine code without tracking it (STYLE point 9). A miss compiles every signature eagerly
into the entry's numba cache (cold compile); a hit only loads machine code (warm compile),
and a damaged entry is rebuilt by the store.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Mapping, Sequence

#: numba signature spelling of the element types generated kernels read and write.
NUMBA_TYPES = {"float32": "float32", "bool": "boolean"}


@functools.lru_cache(maxsize=None)
def codegen_version() -> str:
    from dcopt.kernels import source_hash

    return source_hash(["dcopt.backends.cpu"])


@functools.lru_cache(maxsize=None)
def toolchain() -> dict[str, str]:
    """What decides the machine code besides the source: the store's toolchain versions, the
    host CPU, and this backend's own code version."""
    from dcopt.kernels import host_cpu_features, toolchain_versions

    return {**toolchain_versions(), **{f"cpu_{k}": str(v) for k, v in host_cpu_features().items()},
            "codegen": codegen_version()[:16]}


def array_signature(dtype: str, rank: int) -> str:
    """numba type of a C-contiguous array: ``float32[:, ::1]``."""
    return f"{NUMBA_TYPES[dtype]}[{', '.join([':'] * (rank - 1) + ['::1'])}]"


def compile_module(source: str, signatures: Mapping[str, Sequence[str]], store_root=None,
                   provenance: Mapping | None = None) -> tuple[ModuleType, str]:
    """(module, store key) for ``source`` compiled for ``signatures`` ({function: [sig, ...]})."""
    from dcopt.kernels import KernelKey, KernelStore
    from dcopt.kernels.native import compile_numba_module, load_numba_module

    sigs = {name: sorted(set(s)) for name, s in sorted(signatures.items())}
    if not sigs:  # nothing to compile (e.g. every conv's epilogue went into its generated kernel)
        return ModuleType("dcopt_no_numba_kernels"), None
    from dcopt.backends.cpu.mathlib import FASTMATH  # imports numba: only when kernels are compiled or loaded

    key = KernelKey.make(source, codegen_version=codegen_version(),
                         options={"fastmath": sorted(FASTMATH), "signatures": sigs})
    cached = _LOADED.get(key.digest)
    if cached is not None:
        return cached, key.digest
    fetched = KernelStore(store_root).get_or_build(
        key, build=lambda staging: compile_numba_module(staging, source, sigs, digest=key.digest),
        load=load_numba_module, provenance=dict(provenance or {}))
    _LOADED[key.digest] = fetched.value
    return fetched.value, key.digest


#: Modules loaded in this process, by key (a second session of the same model shares them).
_LOADED: dict[str, ModuleType] = {}


def compile_llvm(ir: str, store_root=None, provenance: Mapping | None = None):
    """(MCJIT engine, store key) holding the native object of LLVM IR module ``ir`` (direct conv
    kernels): a store hit loads object code (~3 ms), a miss optimises and compiles it once.
    Keep the engine alive while its functions are called."""
    from dcopt.kernels import KernelKey, KernelStore
    from dcopt.kernels.native import emit_llvm_object, load_llvm_object

    key = KernelKey.make(ir, codegen_version=codegen_version(), options={"kind": "llvm", "opt_level": 3})
    cached = _ENGINES.get(key.digest)
    if cached is not None:
        return cached, key.digest
    fetched = KernelStore(store_root).get_or_build(
        key, build=lambda staging: emit_llvm_object(staging, ir, "kernels"), load=load_llvm_object,
        provenance=dict(provenance or {}))
    _ENGINES[key.digest] = fetched.value
    return fetched.value, key.digest


#: Native engines loaded in this process, by key (their code must outlive every session using it).
_ENGINES: dict[str, object] = {}
