"""The catalog of builds: the cache's builds and the build directories ``dcopt compile`` wrote.

There is one build format (written by :mod:`dcopt.backends.cpu.build`): a directory with
``manifest.json`` (provenance: model digest, pipeline, patches, pass summary, toolchain and CPU
features, dcopt version; every file's size and sha256; each kernel's kernel-store key),
``program.json`` (the schedule and the weights index), ``kernels.py`` / ``kernels.ll`` (generated
source; its machine code is in the kernel store, one entry per kernel, shared between builds),
``weights.bin`` (raw, memory-mapped) and, outside the cache, the source model. This module finds
and describes them:

* cache builds live in ``<cache root>/cpu-builds/<key>/``; they are dcopt's own, so ``gc``
  removes them (least recently used first, never one a running process has loaded: loading
  takes a shared lock, gc asks for an exclusive one and skips what it cannot get);
* an output build (``dcopt compile -o DIR``, ``session.save``) is recorded in
  ``<cache root>/builds.sqlite`` when written. The record is an index, the directory is the
  truth: ``ls`` says when a recorded build is gone or was replaced. gc never deletes an output
  build (it is the user's); ``ls --prune`` forgets records of vanished ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from dcopt.errors import InputError, ModelLoadError

FORMAT = "dcopt-build"
FORMAT_VERSION = 2
CACHE_BUILDS = "cpu-builds"
REGISTRY = "builds.sqlite"
LOCKS = "locks"


@dataclass
class BuildInfo:
    """One build as the catalog sees it."""

    path: Path
    kind: str  # "cache" or "output"
    manifest: dict = field(default_factory=dict)
    size: int = 0
    last_used: float = 0.0
    status: str = "ok"  # ok | missing | replaced | unreadable

    @property
    def key(self) -> str:
        """A cache build's key (its directory name); an output build's path."""
        return self.path.name if self.kind == "cache" else str(self.path)

    @property
    def model(self) -> str:
        return (self.manifest.get("model") or {}).get("name", "?")

    @property
    def model_sha(self) -> str:
        return (self.manifest.get("model") or {}).get("sha256", "")

    def to_json(self) -> dict:
        m = self.manifest
        return {"path": str(self.path), "kind": self.kind, "key": self.key, "status": self.status,
                "model": self.model, "model_sha256": self.model_sha, "pipeline": m.get("pipeline"),
                "patches": m.get("patches", []), "bindings": m.get("bindings", {}), "size": self.size,
                "last_used": self.last_used, "steps": m.get("steps", {}), "dcopt": m.get("dcopt")}


def read_manifest(directory: Path) -> dict:
    """A build's manifest, checked for format: ModelLoadError for anything else (an older build
    format says how to rebuild)."""
    try:
        manifest = json.loads((Path(directory) / "manifest.json").read_text())
    except FileNotFoundError:
        raise ModelLoadError("not a dcopt build directory (no manifest.json)", file=str(directory)) from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"unreadable manifest.json: {exc}", file=str(directory)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelLoadError("not a dcopt build directory (manifest format)", file=str(directory))
    if "files" not in manifest or manifest.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f"this build was written by another dcopt (build format "
                             f"{manifest.get('format_version', '1, without file hashes')}; this dcopt reads "
                             f"{FORMAT_VERSION}); rebuild it from its model: dcopt compile MODEL -o DIR --force",
                             file=str(directory))
    return manifest


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def is_cache_build_dir(directory: Path, root: Path) -> bool:
    """Whether ``directory`` is a build directory dcopt's cache made: a hex build key right under
    ``<root>/cpu-builds``, a real directory and not a link. The only kind a cache cleanup (damaged
    entry, gc) may delete; a key read from the warm-hit index, a file on disk, must not name a
    path elsewhere."""
    name = directory.name
    return (0 < len(name) <= 64 and all(c in "0123456789abcdef" for c in name) and not directory.is_symlink()
            and directory.is_dir() and directory.parent.resolve() == (Path(root) / CACHE_BUILDS).resolve())


class BuildCatalog:
    """The builds under one cache root (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- output builds ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _db(self):
        self.root.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.root / REGISTRY, timeout=30)
        try:
            db.execute("CREATE TABLE IF NOT EXISTS outputs (path TEXT PRIMARY KEY, manifest_sha TEXT, "
                       "model TEXT, created REAL)")
            with db:
                yield db
        finally:
            db.close()

    def record_output(self, path: Path) -> None:
        """Remember a build directory dcopt just wrote (``ls`` lists it)."""
        import hashlib

        path = Path(path).resolve()
        data = (path / "manifest.json").read_bytes()
        model = (json.loads(data).get("model") or {}).get("name", "")
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?)",
                       (str(path), hashlib.sha256(data).hexdigest(), model, time.time()))

    def outputs(self, *, prune: bool = False) -> list[BuildInfo]:
        import hashlib

        if not (self.root / REGISTRY).is_file():
            return []
        with self._db() as db:
            rows = db.execute("SELECT path, manifest_sha, created FROM outputs").fetchall()
        found, gone = [], []
        for path, sha, created in rows:
            path = Path(path)
            try:
                data = (path / "manifest.json").read_bytes()
                manifest = json.loads(data)
            except FileNotFoundError:
                gone.append(str(path))
                found.append(BuildInfo(path, "output", {}, 0, created, "missing"))
                continue
            except (OSError, ValueError):
                found.append(BuildInfo(path, "output", {}, 0, created, "unreadable"))
                continue
            status = "ok" if hashlib.sha256(data).hexdigest() == sha else "replaced"
            found.append(BuildInfo(path, "output", manifest, _size(path), created, status))
        if prune and gone:
            with self._db() as db:
                db.executemany("DELETE FROM outputs WHERE path = ?", [(g,) for g in gone])
            found = [b for b in found if b.status != "missing"]
        return found

    # -- cache builds ----------------------------------------------------------------------------
    def cached(self) -> list[BuildInfo]:
        """The cache's builds: only directories named like a build key (anything else a user put
        under ``cpu-builds`` is not dcopt's, so gc must never see it)."""
        base = self.root / CACHE_BUILDS
        if not base.is_dir():
            return []
        out = []
        for path in sorted(p for p in base.iterdir() if is_cache_build_dir(p, self.root)):
            try:
                manifest = json.loads((path / "manifest.json").read_text())
                status = "ok"
            except (OSError, ValueError):
                manifest, status = {}, "unreadable"
            out.append(BuildInfo(path, "cache", manifest, _size(path), self._last_used(path), status))
        return out

    def _last_used(self, path: Path) -> float:
        lock = self.root / LOCKS / f"build-{path.name}.lock"
        stamps = [path.stat().st_mtime]
        if lock.is_file():
            stamps.append(lock.stat().st_mtime)
        return max(stamps)

    def all(self, *, prune: bool = False) -> list[BuildInfo]:
        builds = self.cached() + self.outputs(prune=prune)
        return sorted(builds, key=lambda b: b.last_used, reverse=True)

    def find(self, ref: str) -> BuildInfo:
        """A build by path (a directory), or a cache build by key prefix."""
        if os.path.isdir(ref):
            path = Path(ref)
            manifest = read_manifest(path)
            cache = (self.root / CACHE_BUILDS).resolve()
            kind = "cache" if path.resolve().parent == cache else "output"
            return BuildInfo(path, kind, manifest, _size(path), path.stat().st_mtime)
        matches = [b for b in self.cached() if b.key.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise InputError(f"no build directory '{ref}' and no cache build with key prefix '{ref}' "
                             f"(dcopt builds ls lists them)")
        raise InputError(f"key prefix '{ref}' matches {len(matches)} cache builds: "
                         f"{', '.join(b.key[:12] for b in matches[:5])}; give more characters")

    def kernel_users(self) -> dict[str, list[BuildInfo]]:
        """Kernel-store key -> the builds (cache and recorded output builds) whose manifests list
        it: which builds share a kernel entry (``dcopt kernels ls``)."""
        users: dict[str, list[BuildInfo]] = {}
        for build in self.all():
            for kernel in build.manifest.get("kernels", []):
                key = kernel.get("key") if isinstance(kernel, dict) else None
                if isinstance(key, str) and build not in users.setdefault(key, []):
                    users[key].append(build)
        return users

    # -- use and collection ----------------------------------------------------------------------
    def hold(self, key: str):
        """A shared lock on cache build ``key`` for as long as the returned file stays open:
        what keeps ``gc`` from deleting a build a process is running. Touches its use time."""
        locks = self.root / LOCKS
        locks.mkdir(parents=True, exist_ok=True)
        handle = open(locks / f"build-{key}.lock", "a+")  # noqa: SIM115 - held by the caller
        fcntl.flock(handle, fcntl.LOCK_SH)
        os.utime(handle.fileno())
        return handle

    def gc(self, *, max_bytes: int | None = None, older_than_days: float | None = None,
           dry_run: bool = False) -> list[tuple[BuildInfo, str]]:
        """Remove cache builds unused for ``older_than_days``, then least recently used ones
        until the cache's builds take at most ``max_bytes``; unreadable ones always. A build a
        process holds (:meth:`hold`) is skipped. Output builds are never touched."""
        from dcopt.kernels.compile_index import CompileIndex

        now = time.time()
        builds = sorted(self.cached(), key=lambda b: b.last_used)
        chosen: list[tuple[BuildInfo, str]] = []
        kept = []
        for b in builds:
            if b.status != "ok":
                chosen.append((b, "unreadable manifest"))
            elif older_than_days is not None and now - b.last_used > older_than_days * 86400:
                chosen.append((b, f"unused for {(now - b.last_used) / 86400:.1f} days"))
            else:
                kept.append(b)
        if max_bytes is not None:
            total = sum(b.size for b in kept)
            for b in kept:
                if total <= max_bytes:
                    break
                total -= b.size
                chosen.append((b, "over the size limit (least recently used)"))
        if dry_run:
            return chosen
        done = []
        for b, why in chosen:
            if self._remove_if_idle(b):
                done.append((b, why))
        CompileIndex(self.root).forget_builds({b.key for b, _ in done})
        return done

    def _remove_if_idle(self, build: BuildInfo) -> bool:
        if not is_cache_build_dir(build.path, self.root):
            return False  # only the cache's own build directories are ever deleted
        locks = self.root / LOCKS
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"build-{build.key}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # loaded by a running process
            trash = build.path.with_name(f".gc-{build.key}-{os.getpid()}")
            os.replace(build.path, trash)  # out of sight first: no reader finds half a build
            shutil.rmtree(trash, ignore_errors=True)
        return True
