"""Kernel keys: one hash over everything that can change a generated kernel's machine code.

A :class:`KernelKey` is built from named *components* — the kernel's IR, the target and its
features, the codegen options, the toolchain versions and the code generator's own source — and
its :attr:`~KernelKey.digest` is the SHA-256 of their canonical JSON. The components are kept (and
stored in each entry's ``meta.json``) rather than hashed away so that a cache miss can be
explained component by component (:meth:`dcopt.kernels.KernelStore.explain_miss`), the way
torch._inductor's ``debug_lines`` does.

Why each component is there:

- ``ir``: SHA-256 of the canonical serialized IR the codegen renders from. The codegen owns the
  serialization; it must be canonical (same graph -> same bytes) or keys will not repeat.
- ``target`` and ``target_features``: ``"cpu"`` keys carry the LLVM host CPU name and feature
  string (numba compiles for exactly these, so an AVX-512 kernel never lands on an AVX2 machine);
  a ``"cuda"`` key will carry the compute capability instead.
- ``options``: codegen options (tile sizes, fastmath, ...) as canonical JSON.
- ``toolchain``: Python, numba, llvmlite and numpy versions — any of them can change the code.
- ``codegen_version``: :func:`source_hash` of the code generator's source files, so editing
  the renderer invalidates its kernels without anyone bumping a version number.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Mapping

COMPONENTS = ("ir", "target", "target_features", "options", "toolchain", "codegen_version")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, no NaN: one text per value, so its hash is stable across runs
    and processes. Anything json cannot encode exactly (sets, arrays, objects) is a TypeError:
    silently using ``str()`` would let two different options hash alike."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@functools.lru_cache(maxsize=None)
def _toolchain() -> tuple[tuple[str, str], ...]:
    versions = {"python": platform.python_version()}
    versions.update({name: _package_version(name) for name in ("numba", "llvmlite", "numpy")})
    return tuple(sorted(versions.items()))


def toolchain_versions() -> dict[str, str]:
    """Python, numba, llvmlite and numpy versions, read from package metadata (no heavy imports)."""
    return dict(_toolchain())


@functools.lru_cache(maxsize=None)
def _host_cpu() -> tuple[str, str]:
    import llvmlite.binding as llvm

    # numba honours NUMBA_CPU_NAME / NUMBA_CPU_FEATURES (used to build portable caches); key on
    # what numba will actually compile for, not on what the host could do.
    name = os.environ.get("NUMBA_CPU_NAME") or llvm.get_host_cpu_name()
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if features is None:
        features = llvm.get_host_cpu_features().flatten() if not os.environ.get("NUMBA_CPU_NAME") else ""
    return name, ",".join(sorted(f for f in features.split(",") if f))


def host_cpu_features() -> dict[str, str]:
    """``{"cpu": <LLVM CPU name>, "features": <sorted +/- feature list>}`` for this machine."""
    name, features = _host_cpu()
    return {"cpu": name, "features": features}


def host_has(feature: str) -> bool:
    """Whether the CPU numba compiles for has ``feature`` (LLVM's name: ``avx512f``)."""
    return f"+{feature}" in _host_cpu()[1].split(",")


def _module_files(mod: ModuleType | str) -> list[tuple[str, Path]]:
    """(stable identifier, file) pairs for a module or package, found without importing it."""
    name = mod if isinstance(mod, str) else mod.__name__
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ValueError(f"source_hash: cannot find the source of module {name!r}")
    if spec.submodule_search_locations:  # a package: every .py file under it
        files = []
        for location in spec.submodule_search_locations:
            root = Path(location)
            files += [(f"{name}/{p.relative_to(root).as_posix()}", p) for p in root.rglob("*.py")]
        return files
    return [(name, Path(spec.origin))]


def _path_files(path: Path) -> list[tuple[str, Path]]:
    if path.is_dir():
        return [(f"{path.name}/{p.relative_to(path).as_posix()}", p) for p in path.rglob("*.py")]
    if not path.is_file():
        raise ValueError(f"source_hash: no such file {path}")
    return [(path.name, path)]


def source_hash(sources: Iterable[ModuleType | str | os.PathLike]) -> str:
    """Hash of the code generator's own source: the ``codegen_version`` key component.

    ``sources`` holds modules (objects or dotted names; a package means all its ``.py`` files) and
    paths (``pathlib.Path``: a file or a directory of ``.py`` files). Only file *contents* and
    names relative to the module or directory enter the hash, never absolute paths, so two
    checkouts of the same code agree. Compute it once per process (e.g. at codegen import):
    it reads every file.
    """
    files: list[tuple[str, Path]] = []
    for item in sources:
        files += _path_files(Path(item)) if isinstance(item, os.PathLike) else _module_files(item)
    if not files:
        raise ValueError("source_hash: no source files given")
    h = hashlib.sha256()
    for ident, path in sorted(set(files)):
        h.update(ident.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@dataclass(frozen=True)
class KernelKey:
    """Everything that can change one kernel's code; :attr:`digest` names it in the store.

    Build one with :meth:`make`. Fields are plain JSON values so ``meta.json`` can hold them and
    :meth:`KernelStore.explain_miss` can compare them; equality and hashing go by :attr:`digest`.
    """

    ir: str
    target: str
    target_features: Mapping[str, str]
    options: Mapping[str, Any]
    toolchain: Mapping[str, str]
    codegen_version: str
    digest: str = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "digest", sha256_hex(canonical_json(self.components())))

    @classmethod
    def make(cls, ir: bytes | str, *, codegen_version: str, target: str = "cpu",
             options: Mapping[str, Any] | None = None, target_features: Mapping[str, str] | None = None,
             toolchain: Mapping[str, str] | None = None) -> "KernelKey":
        """Key for a kernel rendered from ``ir`` (canonical serialized IR, bytes or text).

        ``codegen_version`` is :func:`source_hash` of the codegen's modules. ``target_features``
        defaults to :func:`host_cpu_features` for ``target="cpu"``; other targets must pass theirs
        (e.g. ``{"cc": "9.0"}`` for CUDA). ``toolchain`` defaults to :func:`toolchain_versions`;
        a backend that depends on more tools passes the extended dict.
        """
        if target_features is None:
            if target != "cpu":
                raise ValueError(f"KernelKey.make: target {target!r} needs explicit target_features")
            target_features = host_cpu_features()
        options = dict(options or {})
        canonical_json(options)  # fail here, with the caller on the stack, if not JSON-encodable
        return cls(ir=sha256_hex(ir), target=target, target_features=dict(target_features), options=options,
                   toolchain=dict(toolchain if toolchain is not None else toolchain_versions()),
                   codegen_version=codegen_version)

    @classmethod
    def from_components(cls, components: Mapping[str, Any]) -> "KernelKey":
        """Rebuild a key from :meth:`components` (as stored in ``meta.json``)."""
        return cls(**{name: components[name] for name in COMPONENTS})

    def components(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COMPONENTS}

    @property
    def short(self) -> str:
        return self.digest[:12]

    def __eq__(self, other):
        return isinstance(other, KernelKey) and other.digest == self.digest

    def __hash__(self):
        return hash(self.digest)


def describe_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two keys' components, one line per changed leaf.

    Dicts are compared key by key; comma-separated feature strings as sets (so a CPU change reads
    ``-avx512f +avx2`` rather than two 600-character strings); long hashes are shortened.
    """
    lines = []
    for name in COMPONENTS:
        a, b = stored.get(name), wanted.get(name)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for sub in sorted(set(a) | set(b)):
                if a.get(sub) != b.get(sub):
                    lines.append(f"{name}.{sub}: {_show(a.get(sub), b.get(sub))}")
        else:
            lines.append(f"{name}: {_show(a, b)}")
    return lines


def _show(a: Any, b: Any) -> str:
    if isinstance(a, str) and isinstance(b, str) and "," in a + b:
        sa, sb = set(a.split(",")), set(b.split(","))
        only_a, only_b = sorted(sa - sb), sorted(sb - sa)
        return f"stored has {only_a or 'nothing extra'}, wanted has {only_b or 'nothing extra'}"
    if isinstance(a, str) and isinstance(b, str) and len(a) == len(b) == 64:
        return f"{a[:12]} -> {b[:12]}"
    return f"{json.dumps(a)} -> {json.dumps(b)}"
