"""The kernel artifact store: content-addressed generated kernels, builds, their provenance and diffs.

A backend renders IR to source and compiles it; this package decides whether it has to. Each
kernel is stored under a :class:`KernelKey` that covers everything that can change its machine
code, is published atomically, is re-verified (sha256 of every file) on every hit, and is built at
most once even when several processes ask for it at the same moment.

Using it from a code generator (numba)::

    from dcopt.kernels import KernelKey, KernelStore, source_hash
    from dcopt.kernels.native import compile_numba_module, load_numba_module

    CODEGEN_VERSION = source_hash(["dcopt.backends.cpu"])        # once, at import of the codegen

    key = KernelKey.make(ir_text,                                  # canonical serialized IR
                         codegen_version=CODEGEN_VERSION,
                         options={"fastmath": True, "tile": [6, 32]})
    sigs = {"kernel": ["void(float32[:, :], float32[:], float32[:, :])"]}
    fetched = KernelStore(root).get_or_build(                      # root=None: the default store
        key,
        build=lambda d: compile_numba_module(d, source_text, sigs, digest=key.digest),
        load=load_numba_module,
        provenance={"model": "bert", "group": "fused_3", "node": "Gelu_12"},
    )
    fetched.value.kernel(x, b, out)      # fetched.built: False if it came from the store

``build(staging_dir)`` writes files into an empty directory (``source.py`` or ``source.ll`` plus
compiled artifacts) and returns a JSON-able dict kept as ``entry.build_info``; ``load(entry)``
turns a published entry into a usable value and may raise to declare the entry unusable (it is
then rebuilt, with a warning). LLVM IR kernels: :func:`dcopt.kernels.native.emit_llvm_object` /
:func:`~dcopt.kernels.native.load_llvm_object` store and load native object code the same way.

Explaining a recompile: ``store.explain_miss(key)`` lists the nearest stored entries and which
key components differ (``codegen_version``, ``toolchain.numba``, ``options.tile`` ...); with the
``dcopt.kernels`` logger at DEBUG, :meth:`KernelStore.get_or_build` logs it on every miss.

A model's kernels are one entry each (:mod:`dcopt.backends.cpu.compiler`): a numba kernel's
module (the kernel, its pool-task wrapper, the module header) with its machine code, or an LLVM
kernel's IR with its native object. Builds that share a kernel share its entry, a build's
manifest records each kernel's key, and a loaded build marks its entries in use
(:meth:`KernelStore.hold`) so that ``gc`` skips them.

Builds (a compiled model as a directory, written by :mod:`dcopt.backends.cpu.build`)::

    from dcopt.kernels import BuildCatalog, diff_builds
    catalog = BuildCatalog(cache_root)               # the cache's builds + recorded outputs
    for b in catalog.all(): print(b.key, b.model, b.size)
    print("\n".join(diff_builds("old.dcopt", "model.dcopt").lines()))
    catalog.gc(max_bytes=2 << 30)                     # LRU, never a build a process holds

Where the store lives: ``KernelStore(root)``; with ``root=None``, ``$DCOPT_CACHE_DIR/kernels``,
else ``$XDG_CACHE_HOME/dcopt/kernels``, else ``~/.cache/dcopt/kernels`` (:func:`default_root`).
CLI: ``dcopt kernels ls|show|gc`` and ``dcopt builds ls|show|diff|gc``.
"""

from dcopt.kernels.builds import BuildCatalog, BuildInfo
from dcopt.kernels.diff import BuildDiff, diff_builds
from dcopt.kernels.keys import KernelKey, host_cpu_features, host_has, source_hash, toolchain_versions
from dcopt.kernels.store import Fetched, Holds, KernelEntry, KernelStore, Removal, default_root

__all__ = [
    "BuildCatalog", "BuildDiff", "BuildInfo", "Fetched", "Holds", "KernelEntry", "KernelKey", "KernelStore", "Removal",
    "default_root", "diff_builds", "host_cpu_features", "host_has", "source_hash", "toolchain_versions",
]
