"""The warm-hit index: which cached build answered a compile request, found without the model.

A build's key needs the model's IR (its input sizes decide the bindings), and building the IR
means importing onnx, parsing the protobuf and inferring shapes: 1-20 s for the benchmark
models. A *request* -- the model file's digest, the pipeline, the patches, the dims the caller
gave, the build format and every version that decides code -- is known before any of that. This
index maps a request to the build it produced last time, so a repeated compile is a file hash
and a verified directory load.

An ONNX model with external data (weights in files beside it) is only the same model if those
files are too: their sha256 is recorded with the request and checked on lookup (through the
:class:`~dcopt.integrity.TrustCache`, so an unchanged file is not rehashed).

``<cache root>/compile-index.sqlite``; the index only points into the cache, so deleting it (or
any row) costs one slow compile, never a wrong result: the build it names is verified on load.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

INDEX = "compile-index.sqlite"


class CompileIndex:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.path = self.root / INDEX

    @contextlib.contextmanager
    def _db(self):
        self.root.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("CREATE TABLE IF NOT EXISTS hits (request TEXT PRIMARY KEY, build TEXT, model TEXT, "
                       "external TEXT, created TEXT, used TEXT)")
            with db:
                yield db
        finally:
            db.close()

    def lookup(self, request: str, source) -> str | None:
        """The build key recorded for ``request``, if the model's external data still matches."""
        from dcopt.integrity import TrustCache
        from dcopt.kernels.store import now_iso

        if not self.path.is_file():
            return None
        with self._db() as db:
            row = db.execute("SELECT build, external FROM hits WHERE request = ?", (request,)).fetchone()
            if row is None:
                return None
            build, external = row[0], json.loads(row[1] or "{}")
            if external:
                if source.path is None:
                    return None
                trust = TrustCache(self.root)
                try:
                    if any(trust.digest(Path(source.path).parent / name) != digest for name, digest in external.items()):
                        return None
                except OSError:
                    return None
            db.execute("UPDATE hits SET used = ? WHERE request = ?", (now_iso(), request))
        source.known_external = sorted(external)  # what saving the model needs to know, without parsing it
        return build

    def remember(self, request: str, build: str, source) -> None:
        """Record that ``request`` is answered by cached build ``build``."""
        from dcopt.integrity import TrustCache
        from dcopt.kernels.store import now_iso

        external = {}
        if source.path is not None:
            trust = TrustCache(self.root)
            external = {name: trust.digest(Path(source.path).parent / name) for name in source.external_files()}
        now = now_iso()
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO hits VALUES (?, ?, ?, ?, ?, ?)",
                       (request, build, str(source.path or ""), json.dumps(external), now, now))

    def forget_builds(self, builds: set[str]) -> int:
        """Drop the rows that point at ``builds`` (garbage-collected); returns how many."""
        if not self.path.is_file() or not builds:
            return 0
        with self._db() as db:
            rows = [r[0] for r in db.execute("SELECT request, build FROM hits") if r[1] in builds]
            db.executemany("DELETE FROM hits WHERE request = ?", [(r,) for r in rows])
        return len(rows)
