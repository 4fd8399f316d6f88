"""Putting compiled machine code *inside* a store entry, so another process loads it, not compiles it.

**numba kernels.** The generated source is written as ``source.py`` in the entry and imported as a
module named after the key. Its functions are plain lazy ``@numba.njit`` (no signature, no
``cache=True``). :func:`compile_numba_module` gives each dispatcher a numba ``FunctionCache``
whose locator points at ``<entry>/numba_cache/`` and compiles the given signatures; numba writes
its index (``.nbi``) and object code (``.nbc``) there. :func:`load_numba_module` does the same with
a read-only cache and fails if any signature had to be compiled, so a warm load is a cache load or
an error (the store then rebuilds). Why not ``cache=True``: numba would write its files lazily, on
first call, *after* the entry is published, where no recorded hash covers them (a damaged ``.nbc``
then fails inside a kernel call instead of causing a rebuild); and ``NUMBA_CACHE_DIR`` is one
process-global directory keyed on the source's absolute path, while our build compiles in a
staging directory that is renamed afterwards. numba 0.68's source stamp is a content hash, so the
renamed entry stays valid with a per-entry locator. Callees are compiled into the caller's cached
code but numba does not track their source: keep the modules they live in in ``codegen_version``. The module name must be the same in the
builder and the loader (numba pickles it into the cache), hence ``_dcopt_kernel_<digest>``.

Measured on the dev machine (2 shared cores, znver5; numba 0.68), a small 2-D bias+ReLU ``@njit``
kernel through :meth:`KernelStore.get_or_build`: cold (compile + publish) 0.17-0.34 s, warm (verify
sha256 + load from the entry) 4-8 ms in a fresh process; a ``prange`` version compiles in ~0.46 s
and loads in ~7 ms. Either way a fresh process first pays ~0.25 s to import numba and ~0.3 s to
initialise its CPU target — once per process, not per kernel. Loaded dispatchers have compiling
disabled, so a call with unforeseen types raises instead of silently compiling in every process.

numba refuses to cache functions that embed raw addresses (ctypes function pointers, large global
arrays): :func:`compile_numba_module` raises for those rather than storing an entry that would
recompile every time. To call an llvmlite-compiled function from a numba kernel, register it with
``llvmlite.binding.add_symbol(name, address)`` and call it through
``numba.types.ExternalFunction(name, sig)``: that is resolved by name at load and caches fine.
LLVM IR kernels can be stored as object code: :func:`emit_llvm_object` / :func:`load_llvm_object`;
:func:`read_llvm_object` + :func:`load_llvm_objects` link several entries' objects into one engine
(a build's kernels are one entry each, its engine one: 24 engines cost ~24 ms, one engine ~2 ms).

The callers announce progress (:mod:`dcopt.progress`): a build compiles or loads many entries, one
step for all of them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Mapping, Sequence

from dcopt.kernels.store import KernelEntry

NUMBA_CACHE = "numba_cache"
SOURCE = "source.py"


class NotCachableError(RuntimeError):
    """numba compiled the kernel but would not write it to its cache (e.g. ctypes pointers)."""


class CacheMissError(RuntimeError):
    """Loading a stored kernel needed a compile: the entry's machine code is unusable here."""


def _entry_cache_class(read_only: bool):
    from numba.core import caching

    locator_base = getattr(caching, "InTreeCacheLocator", None) or caching._InTreeCacheLocator

    class EntryLocator(locator_base):
        """numba's in-tree locator, but ``<dir of source.py>/numba_cache`` instead of __pycache__."""

        def __init__(self, py_func, py_file):
            super().__init__(py_func, py_file)
            self._cache_path = os.path.join(os.path.dirname(py_file), NUMBA_CACHE)

    class EntryImpl(caching.CompileResultCacheImpl):
        _locator_classes = [EntryLocator]

    class EntryCache(caching.FunctionCache):
        _impl_class = EntryImpl

        def save_overload(self, sig, data):
            if not read_only:  # a loader must never modify a verified entry
                super().save_overload(sig, data)

    return EntryCache


def _import(path: Path, digest: str) -> ModuleType:
    name = f"_dcopt_kernel_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba resolves the module by name when it unpickles the cache
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _compile(module: ModuleType, signatures: Mapping[str, Sequence[str]], read_only: bool) -> dict[str, int]:
    """Attach an entry cache to each listed dispatcher, compile its signatures; -> misses per name."""
    cache_class = _entry_cache_class(read_only)
    misses = {}
    for name, sigs in signatures.items():
        if len(sigs) == 1 and sigs[0].startswith(CFUNC_PREFIX):
            misses[name] = _compile_cfunc(module, name, sigs[0][len(CFUNC_PREFIX):], cache_class)
        else:
            dispatcher = getattr(module, name)
            dispatcher._cache = cache_class(dispatcher.py_func)
            for sig in sigs:
                dispatcher.compile(sig)
            misses[name] = sum(dispatcher.stats.cache_misses.values())
    return misses


#: A signature ``"cfunc <sig>"`` compiles the module's plain function ``name`` as a numba C
#: callback (options from the module's ``CFUNC_OPTIONS``) and replaces it by the ``CFunc``.
CFUNC_PREFIX = "cfunc "


def _compile_cfunc(module: ModuleType, name: str, sig: str, cache_class) -> int:
    from numba.core.ccallback import CFunc

    fn = getattr(module, name)
    pyfunc = fn.__wrapped__ if isinstance(fn, CFunc) else fn
    callback = cached_cfunc(pyfunc, sig, dict(getattr(module, "CFUNC_OPTIONS", {})), cache_class)
    setattr(module, name, callback)
    return 0 if callback._cache_hits else 1


def cached_cfunc(pyfunc, signature, options, cache_class):
    """``numba.cfunc(signature, **options)(pyfunc)`` compiled through ``cache_class`` (a numba
    ``FunctionCache`` subclass): loaded from that cache when it holds the function, else compiled
    and saved there."""
    from numba.core import sigutils
    from numba.core.ccallback import CFunc

    callback = CFunc(pyfunc, sigutils.normalize_signature(signature), {}, dict(options))
    callback._cache = cache_class(pyfunc)
    callback.compile()
    return callback


def compile_numba_module(staging: Path, source: str, signatures: Mapping[str, Sequence[str]], *,
                         digest: str) -> dict:
    """Build step for :meth:`KernelStore.get_or_build`: write ``source.py`` into ``staging``,
    compile ``signatures`` (``{"kernel": ["void(float32[:], float32[:])"]}``) with numba's cache
    in the entry, and return the build info :func:`load_numba_module` needs."""
    staging = Path(staging)
    (staging / SOURCE).write_text(source)
    module = _import(staging / SOURCE, digest)
    _compile(module, signatures, read_only=False)
    cache_dir = staging / NUMBA_CACHE
    cached = {p.name.split("-")[0].removeprefix("source.") for p in cache_dir.glob("*.nbi")} if cache_dir.is_dir() else set()
    refused = sorted(set(signatures) - cached)
    if refused:
        raise NotCachableError(f"numba would not cache {', '.join(refused)} (do they use ctypes pointers or large "
                               "global arrays? call llvmlite code through ExternalFunction instead)")
    return {"kind": "numba", "signatures": {k: list(v) for k, v in signatures.items()}}


def load_numba_module(entry: KernelEntry) -> ModuleType:
    """Load step: import the entry's ``source.py`` and load every signature from its numba cache.
    Raises :class:`CacheMissError` if anything had to be compiled (the store then rebuilds).
    The loaded dispatchers cannot compile more signatures: a call matching none raises TypeError."""
    signatures = entry.build_info.get("signatures")
    if entry.build_info.get("kind") != "numba" or not signatures:
        raise CacheMissError(f"entry {entry.key[:12]} was not built by compile_numba_module")
    module = _import(entry.path / SOURCE, entry.key)
    misses = {name: n for name, n in _compile(module, signatures, read_only=True).items() if n}
    if misses:
        raise CacheMissError(f"numba had to recompile {sorted(misses)} from entry {entry.key[:12]}")
    for name in signatures:
        # Like a dispatcher given signatures up front: calls convert to a loaded signature (a C
        # array to an "A" one) or raise TypeError; a lazy one would silently compile a new exact
        # specialization in every process. (A C callback has its one signature already.)
        fn = getattr(module, name)
        if hasattr(fn, "disable_compile"):
            fn.disable_compile()
    return module


def _target_machine():
    import llvmlite.binding as llvm

    from dcopt.kernels.keys import host_cpu_features

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    cpu = host_cpu_features()
    return llvm.Target.from_default_triple().create_target_machine(cpu=cpu["cpu"], features=cpu["features"], opt=3)


def emit_llvm_object(staging: Path, llvm_ir: str, name: str = "kernel", opt_level: int = 3) -> dict:
    """Build step for an LLVM IR kernel: write ``source.ll`` and its native object ``<name>.o``,
    after LLVM's ``-O<opt_level>`` module pipeline (``emit_object`` alone only runs the code
    generator: no loop or scalar optimisation of the IR)."""
    import llvmlite.binding as llvm

    module = llvm.parse_assembly(llvm_ir)
    module.verify()
    machine = _target_machine()
    if opt_level:
        builder = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(speed_level=opt_level))
        builder.getModulePassManager().run(module, builder)
    (Path(staging) / "source.ll").write_text(llvm_ir)
    (Path(staging) / f"{name}.o").write_bytes(machine.emit_object(module))
    return {"kind": "llvm-object", "object": f"{name}.o", "opt_level": opt_level}


def load_llvm_object(entry: KernelEntry):
    """Load step: an MCJIT engine holding the entry's object code (about 3 ms, no compile).
    Keep the engine alive as long as its functions are used; ``engine.get_function_address(sym)``
    gives their addresses (for ctypes, or for ``llvmlite.binding.add_symbol``)."""
    return load_llvm_objects([read_llvm_object(entry)])


def read_llvm_object(entry: KernelEntry) -> bytes:
    """Load step that only reads the entry's object code (verified by the store), for
    :func:`load_llvm_objects` to link with others: a build's kernels share one engine."""
    if entry.build_info.get("kind") != "llvm-object":
        raise CacheMissError(f"entry {entry.key[:12]} was not built by emit_llvm_object")
    return (entry.path / entry.build_info["object"]).read_bytes()


def load_llvm_objects(objects: Sequence[bytes]):
    """One MCJIT engine holding every object of ``objects`` (their exported names must differ)."""
    import llvmlite.binding as llvm

    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _target_machine())
    for data in objects:
        engine.add_object_file(llvm.ObjectFileRef.from_data(data))
    engine.finalize_object()
    return engine
