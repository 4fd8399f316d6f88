"""The content-addressed kernel store: one directory per :class:`KernelKey`, never a stale one.

Layout (``root`` defaults to :func:`default_root`)::

    <root>/<digest[:2]>/<digest>/   one entry: source.py (or .ll), compiled artifacts, meta.json
    <root>/locks/<digest>.lock      per-key lock file (flock); zero bytes, never deleted
    <root>/tmp/                     staging directories, renamed into place when complete
    (the builds catalog, compile index and trust cache live one level up, in the cache root)

How it stays correct (the torch._inductor codecache recipe, plus verification):

- **Atomic publish.** A build writes into a private staging directory under ``<root>/tmp`` (same
  filesystem), then ``os.replace`` renames it to ``<digest>/``. A reader sees a complete entry or
  none — a killed compile leaves only litter in ``tmp/`` that ``gc`` sweeps.
- **A lock per key.** Builders take an exclusive ``flock`` on the key's lock file and look again
  before building, so two processes compiling the same kernel do it once: the second waits, then
  loads. Hits take no lock (entries are immutable once published). Lock files are never deleted:
  unlinking a lock file that another process is blocked on lets a third lock a new inode.
- **Verification on every hit.** ``meta.json`` records each file's size and SHA-256; a hit re-hashes
  them (kernel files are KBs). A missing, truncated or altered file, an unreadable ``meta.json``, a
  ``meta.json`` naming another key, or a ``load`` callback that fails on the entry: a warning is
  logged and the entry is rebuilt. No ``fsync``: a crash can leave garbage, and that is caught here.
- **LRU for gc.** A hit touches ``meta.json``'s mtime (not its bytes), so ``gc`` can drop entries
  by last use.
- **In use, never collected.** A loaded build holds a shared ``flock`` on ``locks/<digest>.use`` of
  each of its kernel entries (:meth:`KernelStore.hold`) for as long as it is loaded; ``gc`` asks for
  an exclusive one and skips the entry while it cannot get it. A separate file from the build lock:
  a damaged entry a process holds can still be rebuilt (by that process, under the build lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from dcopt.errors import DcoptError
from dcopt.kernels.keys import COMPONENTS, KernelKey, describe_differences, sha256_hex

log = logging.getLogger("dcopt.kernels")

META = "meta.json"
FORMAT = 1
_HEX = set("0123456789abcdef")
_STALE_TMP_SECONDS = 3600  # a staging dir this old belongs to a dead process
#: Names of what dcopt stages under ``<store>/tmp``: :meth:`KernelStore._staging` directories
#: (``<digest[:12]>-<pid>-<hex8>``, ``trash-...``) and a compile's generated-weights directory
#: (``weights-<random>``). ``gc`` sweeps only these, so a store pointed at a folder that happens
#: to hold a ``tmp/`` of the user's never loses it.
_STAGING_NAME = re.compile(r"([0-9a-z]{1,12}-\d+-[0-9a-f]{8}|weights-[0-9a-z_]+)")


def default_root() -> Path:
    """``$DCOPT_CACHE_DIR/kernels`` if that is set, else ``$XDG_CACHE_HOME/dcopt/kernels``, else
    ``~/.cache/dcopt/kernels``. The environment only supplies this default: code passes a root to
    :class:`KernelStore` and the CLI takes ``--store DIR``."""
    base = os.environ.get("DCOPT_CACHE_DIR")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "dcopt")
    return Path(base).expanduser() / "kernels"


def _is_digest(name: str) -> bool:
    return len(name) == 64 and set(name) <= _HEX


def _file_record(path: Path) -> dict:
    data = path.read_bytes()
    return {"size": len(data), "sha256": sha256_hex(data)}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class KernelEntry:
    """One published entry: its directory and its ``meta.json``."""

    path: Path
    meta: dict

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def components(self) -> dict:
        return self.meta.get("components", {})

    @property
    def target(self) -> str:
        return self.components.get("target", "?")

    @property
    def provenance(self) -> dict:
        return self.meta.get("provenance") or {}

    @property
    def build_info(self) -> dict:
        """What the build callback returned (e.g. numba signatures needed to load it again)."""
        return self.meta.get("build_info") or {}

    @property
    def size(self) -> int:
        return int(self.meta.get("size", 0))

    @property
    def created(self) -> float:
        return float(self.meta.get("created_ts", 0.0))

    @property
    def last_used(self) -> float:
        try:
            return max(self.created, (self.path / META).stat().st_mtime)
        except OSError:
            return self.created

    @property
    def kind(self) -> str:
        """What the build callback made: ``numba`` (a kernel module), ``llvm-object`` ..."""
        return str(self.build_info.get("kind", "?"))

    @property
    def functions(self) -> list[str]:
        """The functions the entry compiles (numba signatures' names; an LLVM kernel's name)."""
        names = sorted(self.build_info.get("signatures") or {})
        kernel = self.provenance.get("kernel")
        return names or ([str(kernel)] if kernel else [])

    @property
    def source_path(self) -> Path | None:
        name = self.meta.get("source")
        return self.path / name if name else None

    def source(self) -> str:
        path = self.source_path
        return path.read_text() if path is not None else ""


@dataclass(frozen=True)
class Fetched:
    """What :meth:`KernelStore.get_or_build` returns: the entry, ``load(entry)``, and whether
    this call built it (False: it was found, possibly after waiting for another process)."""

    entry: KernelEntry
    value: Any
    built: bool


class Holds:
    """Shared "in use" locks on some entries (see :meth:`KernelStore.hold`), released by
    :meth:`close` or when this object is garbage collected."""

    def __init__(self, fds: list[int], digests: list[str]):
        self._fds = fds
        self.digests = frozenset(digests)

    def close(self, _close=os.close) -> None:  # bound now: __del__ may run at interpreter exit
        fds, self._fds = self._fds, []
        for fd in fds:
            try:
                _close(fd)
            except OSError:
                pass

    def __del__(self):
        self.close()


@dataclass(frozen=True)
class Removal:
    """One directory removed (or, in a dry run, to be removed) by :meth:`KernelStore.gc`."""

    path: Path
    size: int
    reason: str
    entry: KernelEntry | None = None


class KernelStore:
    """A directory of kernel entries keyed by :class:`KernelKey`. See the module docstring."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()

    def __repr__(self):
        return f"KernelStore({str(self.root)!r})"

    def entry_dir(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    # -- lookup ---------------------------------------------------------------------------------

    def get(self, key: KernelKey) -> KernelEntry | None:
        """The verified entry for ``key``, or None (a damaged entry logs a warning, reads as None)."""
        entry, problem = self._verified(key.digest)
        if problem:
            log.warning("kernel %s is damaged (%s); ignoring it", key.short, problem)
        return entry

    def get_or_build(self, key: KernelKey, build: Callable[[Path], Mapping | None], *,
                     load: Callable[[KernelEntry], Any] | None = None,
                     provenance: Mapping[str, Any] | None = None) -> Fetched:
        """Return the entry for ``key``, building it at most once across processes.

        ``build(staging_dir)`` writes the kernel's files (a ``source.*`` file plus whatever the
        compiler produces) into an empty directory and may return a JSON-able dict, kept as
        :attr:`KernelEntry.build_info`. It must finish compiling before returning: files written
        into the entry after it is published are not verified. ``load(entry)`` turns a published
        entry into the value handed back (a callable, a module); an exception from it on a stored
        entry means the entry is unusable, so it is rebuilt — on a fresh entry it propagates.
        ``provenance`` (model, node, group, ...) is recorded in ``meta.json`` for ``kernels ls``.
        """
        hit, rejected = self._try_hit(key, load, warn=True)
        if hit is not None:
            return hit
        if log.isEnabledFor(logging.DEBUG):
            for line in self.explain_miss(key):
                log.debug("%s", line)
        with self._lock(key.digest):
            # Another process may have (re)built it while we waited; the entry we just rejected
            # (same build_id) is not trusted again even if a second load happened to succeed.
            hit, _ = self._try_hit(key, load, warn=False, rejected=rejected)
            if hit is not None:
                return hit
            entry = self._build(key, build, provenance)
            return Fetched(entry, load(entry) if load is not None else None, built=True)

    def _try_hit(self, key: KernelKey, load, *, warn: bool,
                 rejected: str | None = None) -> tuple[Fetched | None, str | None]:
        """(hit, None), or (None, build_id of an entry found unusable; None if there was none)."""
        entry, problem = self._verified(key.digest)
        value = None
        if entry is not None and rejected is not None and entry.meta.get("build_id") == rejected:
            return None, rejected
        if entry is not None and load is not None:
            try:
                value = load(entry)
            except Exception as exc:  # an entry that cannot be loaded is as bad as a damaged one
                problem = f"load failed: {type(exc).__name__}: {exc}"
        if problem:
            if warn:
                log.warning("kernel %s is damaged (%s); rebuilding it", key.short, problem)
            return None, entry.meta.get("build_id") if entry is not None else None
        if entry is None:
            return None, None
        with contextlib.suppress(OSError):
            os.utime(entry.path / META)  # last use, for gc
        return Fetched(entry, value, built=False), None

    def _verified(self, digest: str) -> tuple[KernelEntry | None, str | None]:
        """(entry, None) if intact; (None, problem) if damaged; (None, None) if absent."""
        path = self.entry_dir(digest)
        if not path.is_dir():
            return None, None
        try:
            meta = json.loads((path / META).read_text())
        except FileNotFoundError:
            return None, "meta.json is missing"
        except (OSError, ValueError) as exc:
            return None, f"meta.json is unreadable: {exc}"
        if not isinstance(meta, dict) or meta.get("key") != digest:
            return None, "meta.json belongs to another key"
        if meta.get("format") != FORMAT:
            return None, f"entry format {meta.get('format')!r}, expected {FORMAT}"
        try:
            for name, want in meta["files"].items():
                file = path / name
                if not file.is_file():
                    return None, f"{name} is missing"
                if file.stat().st_size != want["size"]:
                    return None, f"{name} has {file.stat().st_size} bytes, expected {want['size']}"
                if _file_record(file)["sha256"] != want["sha256"]:
                    return None, f"{name} does not match its recorded sha256"
        except (KeyError, TypeError, AttributeError, OSError) as exc:
            return None, f"meta.json file list is malformed or unreadable: {exc!r}"
        return KernelEntry(path, meta), None

    # -- building -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self, name: str, *, wait: bool) -> Iterator[bool]:
        """Hold ``locks/<name>`` exclusively; with ``wait=False`` yield False at once if someone
        else holds it (shared or exclusive)."""
        lock_dir = self.root / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / name, "a+b") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _lock(self, digest: str, *, wait: bool = True):
        """Hold the key's build lock; with ``wait=False`` yield False at once if someone else holds it."""
        return self._exclusive(f"{digest}.lock", wait=wait)

    def _staging(self, digest: str) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / f"{digest[:12]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def _discard(self, path: Path) -> None:
        """Remove a directory without a window where it looks half-present: rename, then delete."""
        if not path.exists():
            return
        trash = self._staging("trash")
        os.replace(path, trash / "x")
        shutil.rmtree(trash, ignore_errors=True)

    def _build(self, key: KernelKey, build, provenance) -> KernelEntry:
        staging = self._staging(key.digest)
        try:
            start = time.perf_counter()
            info = build(staging)
            seconds = time.perf_counter() - start
            files = {p.relative_to(staging).as_posix(): _file_record(p)
                     for p in sorted(staging.rglob("*")) if p.is_file()}
            sources = sorted(n for n in files if "/" not in n and n.startswith("source."))
            meta = {
                "format": FORMAT, "key": key.digest, "build_id": uuid.uuid4().hex, "components": key.components(),
                "created": now_iso(), "created_ts": time.time(), "build_seconds": round(seconds, 4),
                "source": sources[0] if sources else None, "files": files,
                "size": sum(f["size"] for f in files.values()),
                "provenance": dict(provenance or {}), "build_info": dict(info or {}),
            }
            (staging / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
            final = self.entry_dir(key.digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            self._discard(final)  # a damaged predecessor (we hold the key's lock)
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("built kernel %s in %.3f s", key.short, seconds)
        return KernelEntry(final, meta)

    # -- listing, explaining, collecting --------------------------------------------------------

    def _entry_dirs(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.iterdir()):
            if len(shard.name) == 2 and shard.is_dir() and not shard.is_symlink():  # links are not the store's
                yield from (p for p in sorted(shard.iterdir())
                            if _is_digest(p.name) and p.is_dir() and not p.is_symlink())

    def entries(self) -> Iterator[KernelEntry]:
        """Every entry whose ``meta.json`` parses (files not re-hashed: this is for listing)."""
        for path in self._entry_dirs():
            try:
                meta = json.loads((path / META).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and meta.get("key") == path.name:
                yield KernelEntry(path, meta)

    def find(self, prefix: str) -> KernelEntry:
        """The one entry whose key starts with ``prefix`` (a DcoptError if none or several)."""
        prefix = prefix.lower()
        matches = [e for e in self.entries() if e.key.startswith(prefix)]
        if not matches:
            raise DcoptError(f"no kernel with key prefix '{prefix}' in {self.root}")
        if len(matches) > 1:
            shown = ", ".join(e.key[:16] for e in matches[:5])
            raise DcoptError(f"key prefix '{prefix}' is ambiguous ({len(matches)} kernels: {shown}...)")
        return matches[0]

    def verify(self, digest: str) -> str | None:
        """None if the entry is intact, else what is wrong with it."""
        entry, problem = self._verified(digest)
        return "no such entry" if entry is None and problem is None else problem

    def explain_miss(self, key: KernelKey, limit: int = 3) -> list[str]:
        """Why ``key`` is not (usably) stored: its nearest entries and which components differ.

        "Nearest" = fewest differing components, newest first. This is the answer to "why did
        my model recompile?": typically ``codegen_version`` (dcopt was edited), ``toolchain.numba``
        or ``options.<name>``.
        """
        entry, problem = self._verified(key.digest)
        if entry is not None:
            return [f"kernel {key.short} is stored and intact"]
        if problem:
            return [f"kernel {key.short} is stored but damaged: {problem}"]
        wanted = key.components()
        scored = []
        for other in self.entries():
            changed = sum(other.components.get(name) != wanted[name] for name in COMPONENTS)
            scored.append((changed, -other.created, other, describe_differences(other.components, wanted)))
        if not scored:
            return [f"kernel {key.short} not stored; the store at {self.root} is empty"]
        scored.sort(key=lambda t: t[:2])
        lines = [f"kernel {key.short} not stored; nearest of {len(scored)} entries:"]
        for _, _, other, diffs in scored[:limit]:
            where = describe_provenance(other.provenance)
            lines.append(f"  {other.key[:12]} ({other.meta.get('created', '?')}{', ' + where if where else ''}) differs in:")
            lines += [f"    {d}" for d in diffs]
        return lines

    def hold(self, digests) -> Holds:
        """Mark entries ``digests`` in use for as long as the returned :class:`Holds` lives (a
        shared lock each; absent entries too, so one built later is covered): ``gc`` skips them.
        What a loaded build takes on its kernels; a few microseconds per entry."""
        digests = sorted({d for d in digests if d and _is_digest(d)})
        fds = []
        if digests:
            lock_dir = self.root / "locks"
            try:
                lock_dir.mkdir(parents=True, exist_ok=True)
                for digest in digests:
                    fd = os.open(lock_dir / f"{digest}.use", os.O_RDWR | os.O_CREAT, 0o644)
                    fds.append(fd)
                    fcntl.flock(fd, fcntl.LOCK_SH)
            except OSError as exc:  # a read-only cache: nothing can collect it either
                log.debug("could not mark kernels in use under %s: %s", lock_dir, exc)
        return Holds(fds, digests)

    def in_use(self, digest: str) -> bool:
        """Whether some process (this one included) holds entry ``digest`` (:meth:`hold`)."""
        path = self.root / "locks" / f"{digest}.use"
        if not path.is_file():
            return False
        with open(path, "a+b") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False

    def _unused(self, digest: str):
        """Hold the entry's "in use" lock exclusively if nobody uses it; yield whether we do."""
        return self._exclusive(f"{digest}.use", wait=False)

    def remove(self, digest: str) -> None:
        with self._lock(digest):
            self._discard(self.entry_dir(digest))

    def gc(self, *, older_than_days: float | None = None, max_bytes: int | None = None,
           dry_run: bool = False) -> list[Removal]:
        """Drop entries unused for ``older_than_days``, then least-recently-used ones until the
        store holds at most ``max_bytes``. Damaged entries and abandoned staging directories are
        always swept. Entries in use (:meth:`hold`: a loaded build's kernels) and entries being
        built (their lock is held) are skipped; the size limit counts what is in use."""
        now = time.time()
        removals = []
        intact = []
        busy = set()
        for path in self._entry_dirs():
            entry, problem = self._verified(path.name)
            if self.in_use(path.name):
                busy.add(path.name)
                if entry is not None:
                    intact.append(entry)
                continue
            if entry is None:
                removals.append(Removal(path, _dir_size(path), f"damaged: {problem}"))
            elif older_than_days is not None and now - entry.last_used > older_than_days * 86400:
                days = (now - entry.last_used) / 86400
                removals.append(Removal(path, entry.size, f"unused for {days:.1f} days", entry))
            else:
                intact.append(entry)
        if max_bytes is not None:
            total = sum(e.size for e in intact)
            for entry in sorted(intact, key=lambda e: e.last_used):
                if total <= max_bytes:
                    break
                if entry.key in busy:
                    continue
                total -= entry.size
                removals.append(Removal(entry.path, entry.size, "over the size limit (least recently used)", entry))
        tmp = self.root / "tmp"
        if tmp.is_dir():
            removals += [Removal(p, _dir_size(p), "abandoned staging directory") for p in sorted(tmp.iterdir())
                         if _STAGING_NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink()
                         and now - p.stat().st_mtime > _STALE_TMP_SECONDS]
        if dry_run:
            return removals
        done = []
        for removal in removals:
            if removal.path.parent == tmp:
                shutil.rmtree(removal.path, ignore_errors=True)
                done.append(removal)
            elif self._remove_if_idle(removal.path):
                done.append(removal)
        return done

    def _remove_if_idle(self, path: Path) -> bool:
        with self._lock(path.name, wait=False) as idle, self._unused(path.name) as unused:
            if idle and unused:  # not being built right now, and no loaded build uses it
                self._discard(path)
            return idle and unused

def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def describe_provenance(provenance: Mapping[str, Any]) -> str:
    """``model/node`` style one-liner used by ``kernels ls`` and miss explanations."""
    parts = [str(provenance[k]) for k in ("model", "group", "node", "kernel") if provenance.get(k)]
    return "/".join(parts)
