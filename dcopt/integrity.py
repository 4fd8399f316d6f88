"""Never run what was not verified: file hashes recorded when an artifact is written, checked
before it is used, and remembered so a second load does not rehash a gigabyte of weights.

A build directory (or a cached build) records ``{file: {"size", "sha256"}}`` for everything in
it that dcopt executes or loads -- generated kernel sources, LLVM IR, the schedule, the weights.
:func:`verify_files` checks them before the build is used and returns every problem (a changed,
missing or extra file), so a tampered ``kernels.py`` is refused (build directory) or rebuilt
(cache) instead of being compiled and run.

Hashing every file on every load would make warm starts slow (BERT-base's 435 MB of weights
take ~0.4 s to hash). :class:`TrustCache` keeps, in one SQLite file under the cache root, the
*stat signature* (device, inode, size, mtime in ns, ctime in ns) of each file at the time its
hash was verified; a file whose signature is unchanged is trusted without rehashing. Editing a
file changes its mtime/ctime (and usually size); copying a different file over it changes its
inode or ctime, so a stale trust entry never covers changed bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Mapping

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def file_records(directory: Path, names=None) -> dict[str, dict]:
    """``{relative path: {"size", "sha256"}}`` of the files in ``directory`` (or the given names)."""
    directory = Path(directory)
    paths = [directory / n for n in names] if names is not None else sorted(
        p for p in directory.rglob("*") if p.is_file())
    return {p.relative_to(directory).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in paths}


def _signature(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


class TrustCache:
    """Stat signatures of files whose sha256 was verified (see the module docstring)."""

    def __init__(self, root: Path | None):
        self.path = None if root is None else Path(root) / "verified.sqlite"

    def _connect(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("CREATE TABLE IF NOT EXISTS verified (path TEXT PRIMARY KEY, signature TEXT, sha256 TEXT)")
        return db

    def _remembered(self, path: Path) -> str | None:
        """The sha256 remembered for ``path`` if its stat signature is unchanged since."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            sig = _signature(path.stat())
            with contextlib.closing(self._connect()) as db:
                row = db.execute("SELECT signature, sha256 FROM verified WHERE path = ?", (str(path.resolve()),)).fetchone()
        except (OSError, sqlite3.Error):
            return None
        return row[1] if row is not None and row[0] == sig else None

    def trusted(self, path: Path, sha256: str) -> bool:
        return self._remembered(Path(path)) == sha256

    def digest(self, path: Path) -> str:
        """sha256 of ``path``: remembered while its stat signature is unchanged, else hashed (and
        remembered). What a warm compile keys on, without rereading a 435 MB model each time."""
        path = Path(path)
        digest = self._remembered(path)
        if digest is None:
            digest = sha256_file(path)
            self.remember([(path, digest)])
        return digest

    def remember(self, entries: list[tuple[Path, str]]) -> None:
        if self.path is None or not entries:
            return
        try:
            rows = [(str(p.resolve()), _signature(p.stat()), h) for p, h in entries]
            with contextlib.closing(self._connect()) as db, db:
                db.executemany("INSERT OR REPLACE INTO verified VALUES (?, ?, ?)", rows)
        except (OSError, sqlite3.Error):
            pass  # the trust cache is an optimization: failing to write it only costs a rehash


def verify_files(directory: Path, records: Mapping[str, Mapping], trust: TrustCache | None = None,
                 expected_extra: frozenset[str] = frozenset()) -> list[str]:
    """Problems (one sentence each) of ``directory`` against ``records``: missing files, size or
    sha256 mismatches, and files nobody recorded (other than ``expected_extra``)."""
    directory = Path(directory)
    problems, verified = [], []
    for name, want in sorted(records.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
            continue
        size = path.stat().st_size
        if size != want.get("size"):
            problems.append(f"{name} has {size} bytes, the manifest records {want.get('size')}")
            continue
        if trust is not None and trust.trusted(path, want.get("sha256", "")):
            continue
        if sha256_file(path) != want.get("sha256"):
            problems.append(f"{name} does not match the sha256 the manifest records (it was changed after the build)")
        else:
            verified.append((path, want["sha256"]))
    extra = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()
                   and p.relative_to(directory).as_posix() not in records
                   and p.relative_to(directory).as_posix() not in expected_extra)
    problems += [f"{name} is not part of the build" for name in extra]
    if trust is not None and not problems:
        trust.remember(verified)
    return problems
