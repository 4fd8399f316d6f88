"""Compiler: generated source -> compiled kernels, one kernel-store entry per kernel.

A model's generated numba kernels arrive as one module text (the build's ``kernels.py``,
:func:`renderer.render_module`); :func:`compile_kernels` cuts it into one module per kernel
(:func:`renderer.split_module`: the header, the kernel, its pool-task wrapper) and stores each as
its own :class:`dcopt.kernels.KernelStore` entry, keyed (:class:`dcopt.kernels.KernelKey`) by that
module's text, the exact signatures it is compiled for, the fast-math flags, the host CPU, the
toolchain, and ``CODEGEN_VERSION`` -- a hash of this backend's sources, :mod:`mathlib` included,
since numba inlines it into the kernels' machine code without tracking it (STYLE point 9). The
generated LLVM IR kernels (direct convolutions, GEMMs, matvecs) are split the same way
(:func:`conv_ir.split_module_ir`) by :func:`compile_native`: one native object per kernel.

So a build compiles only the kernels no earlier build stored: ``-O2`` after ``-O3``, another
batch size, a fine-tuned model of the same structure or a model with the same blocks reuse the
machine code of every kernel they share. A miss compiles the kernel's signatures eagerly into its
entry (cold compile); a hit only loads machine code (warm), and a damaged entry is rebuilt by the
store. What a build runs is assembled from its entries: one namespace holding every numba
function (:class:`Kernels`), one MCJIT engine holding every native object.
"""

from __future__ import annotations

import functools
import hashlib
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


def set_key(keys: Mapping[str, str]) -> str | None:
    """One digest for a build's kernel entries (sha256 of their sorted, distinct store keys):
    equal for two builds exactly when they run the same kernels. None when there are none."""
    distinct = sorted(set(keys.values()))
    return hashlib.sha256("\n".join(distinct).encode()).hexdigest() if distinct else None


class Kernels(ModuleType):
    """Every numba function of a build, gathered from its per-kernel modules: what the runtime
    looks kernels up in (``getattr(kernels, name)``). ``keys``: function -> store key."""

    def __init__(self, keys: Mapping[str, str] | None = None):
        super().__init__("dcopt_kernels")
        self.keys = dict(keys or {})


def _numba_key(source: str, sigs: Mapping[str, Sequence[str]]):
    from dcopt.backends.cpu.mathlib import FASTMATH  # imports numba: only when kernels are compiled or loaded
    from dcopt.kernels import KernelKey

    return KernelKey.make(source, codegen_version=codegen_version(),
                          options={"fastmath": sorted(FASTMATH), "signatures": sigs})


def _fetch_module(store, key, source: str, sigs, provenance) -> ModuleType:
    from dcopt.kernels.native import compile_numba_module, load_numba_module

    cached = _LOADED.get(key.digest)
    if cached is not None:
        return cached
    fetched = store.get_or_build(
        key, build=lambda staging: compile_numba_module(staging, source, sigs, digest=key.digest),
        load=load_numba_module, provenance=dict(provenance or {}))
    _LOADED[key.digest] = fetched.value
    return fetched.value


def kernel_modules(source: str, signatures: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, dict]]:
    """``{kernel: (its module's source, {function: sorted signatures})}``: how :func:`compile_kernels`
    cuts a build's module (functions without signatures are not compiled, as before)."""
    from dcopt.backends.cpu.renderer import kernel_module, split_module

    header, groups = split_module(source)
    known = {name for functions in groups.values() for name in functions}
    missing = sorted(set(signatures) - known)
    if missing:
        raise ValueError(f"kernel source has no function {', '.join(missing)}")
    parts = {}
    for kernel, functions in groups.items():
        sigs = {name: sorted(set(signatures[name])) for name in sorted(functions) if signatures.get(name)}
        if sigs:
            parts[kernel] = (kernel_module(header, functions), sigs)
    return parts


def compile_kernels(source: str, signatures: Mapping[str, Sequence[str]], store_root=None,
                    provenance: Mapping | None = None) -> Kernels:
    """Every numba kernel of ``source`` (a module :func:`renderer.render_module` wrote) compiled
    for ``signatures``, one store entry per kernel; the result holds all their functions."""
    from dcopt.kernels import KernelStore
    from dcopt.progress import step

    parts = kernel_modules(source, signatures)
    if not parts:  # nothing to compile (e.g. every conv's epilogue went into its generated kernel)
        return Kernels()
    store = KernelStore(store_root)
    keys = {kernel: _numba_key(text, sigs) for kernel, (text, sigs) in parts.items()}
    kernels = Kernels()
    with step(_step_name(store, keys.values(), "kernel(s)"), total=len(parts)) as done:
        for kernel, (text, sigs) in parts.items():
            module = _fetch_module(store, keys[kernel], text, sigs, {**(provenance or {}), "kernel": kernel})
            for name in sigs:
                setattr(kernels, name, getattr(module, name))
                kernels.keys[name] = keys[kernel].digest
            done.advance()
    return kernels


def _step_name(store, keys, what: str) -> str:
    """"load N kernel(s)" when every entry is there (and loaded or loadable), else "compile M of N"."""
    missing = sum(1 for k in keys if k.digest not in _LOADED and k.digest not in _OBJECTS
                  and not (store.entry_dir(k.digest) / "meta.json").is_file())
    total = len(list(keys))
    return f"load {total} {what}" if not missing else f"compile {missing} of {total} {what}"


#: Modules loaded in this process, by key (a second session, or another build sharing a kernel, reuses them).
_LOADED: dict[str, ModuleType] = {}


def compile_llvm(ir: str, store_root=None, provenance: Mapping | None = None):
    """(MCJIT engine, store key) holding the native object of LLVM IR module ``ir`` as one store
    entry (the thread pool's own code): a hit loads object code (~3 ms), a miss optimises and
    compiles it once. Keep the engine alive while its functions are called."""
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


def compile_native(ir: str, store_root=None, provenance: Mapping | None = None):
    """(MCJIT engine, {function: store key}) for a build's generated LLVM IR (``kernels.ll``,
    :func:`conv_ir.module_ir`): one store entry per kernel (its exported function with its
    internal helpers), all objects loaded into one engine (one engine per object cost ~1 ms each,
    24 ms for ResNet-50's 24 kernels; one engine with 24 objects ~2 ms). Keep the engine alive
    while its functions are called."""
    from dcopt.backends.cpu.conv_ir import split_module_ir
    from dcopt.kernels import KernelKey, KernelStore
    from dcopt.kernels.native import emit_llvm_object, read_llvm_object, load_llvm_objects
    from dcopt.progress import step

    modules = split_module_ir(ir)
    keys = {name: KernelKey.make(text, codegen_version=codegen_version(), options={"kind": "llvm", "opt_level": 3})
            for name, text in modules.items()}
    digests = {name: key.digest for name, key in keys.items()}
    engine_key = set_key(digests)
    engine = _ENGINES.get(engine_key)
    if engine is not None:
        return engine, digests
    store = KernelStore(store_root)
    objects = []
    with step(_step_name(store, keys.values(), "native kernel(s)"), total=len(keys)) as done:
        for name, text in modules.items():
            key = keys[name]
            data = _OBJECTS.get(key.digest)
            if data is None:
                data = store.get_or_build(
                    key, build=lambda staging, text=text: emit_llvm_object(staging, text, "kernel"),
                    load=read_llvm_object, provenance={**(provenance or {}), "kernel": name}).value
                _OBJECTS[key.digest] = data
            objects.append(data)
            done.advance()
    engine = _ENGINES[engine_key] = load_llvm_objects(objects)
    return engine, digests


#: Native engines loaded in this process, by key (their code must outlive every session using it).
_ENGINES: dict[str, object] = {}
#: Native objects read (and verified) in this process, by key: an engine of another build reuses them.
_OBJECTS: dict[str, bytes] = {}
