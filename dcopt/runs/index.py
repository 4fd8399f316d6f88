"""One SQLite index of every run under a home: what ``runs ls`` and ``runs compare`` read.

The run directory is the truth (``run.json``, ``annotations.json``); the index holds a copy of
what listing, selecting and comparing need (status, kind, model, options, metrics, label, tags)
so a thousand runs are listed without opening a thousand files. :func:`dcopt.runs.select.reindex`
(``dcopt runs ls --reindex``) makes it again from the directories.

Several processes record at once (a benchmark matrix, two terminals), so the database runs in
WAL mode (readers never block the writer) and every write is one short ``BEGIN IMMEDIATE``
transaction with a 30 s busy timeout: a second writer waits its turn instead of failing, and no
row is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dcopt.runs.home import INDEX, dcopt_home

_COLUMNS = ("id", "started", "finished", "kind", "model", "status", "pid", "pid_start", "host", "label", "tags",
            "options", "metrics", "build_key", "sha", "model_sha")
_JSON = ("tags", "options", "metrics")
#: Open connections by (index path, thread, process); see :meth:`RunIndex._connect`.
_CONNECTIONS: dict[tuple, sqlite3.Connection] = {}
_SCHEMA = ("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, started REAL, finished REAL, kind TEXT, "
           "model TEXT, status TEXT, pid INTEGER, pid_start TEXT, host TEXT, label TEXT, tags TEXT, options TEXT, "
           "metrics TEXT, build_key TEXT, sha TEXT, model_sha TEXT)")
#: Columns named, so an index that later versions extend with more columns still takes our rows.
_INSERT = f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
#: Columns added after the first schema: (name, type), appended to an older index when opened.
_ADDED = (("model_sha", "TEXT"),)


@dataclass
class RunRow:
    """A run as the index knows it."""

    id: str
    started: float
    finished: float | None = None
    kind: str = ""
    model: str = ""
    status: str = "running"
    pid: int | None = None
    pid_start: str | None = None
    host: str = ""
    label: str = ""
    tags: list = field(default_factory=list)
    options: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    build_key: str = ""
    sha: str = ""
    model_sha: str | None = None  # the model file's sha256 (None: not recorded, or an index row from before)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def values(self) -> tuple:
        return tuple(json.dumps(getattr(self, c), sort_keys=True) if c in _JSON else getattr(self, c)
                     for c in _COLUMNS)

    @classmethod
    def from_values(cls, values) -> "RunRow":
        kwargs = dict(zip(_COLUMNS, values))
        for c in _JSON:
            kwargs[c] = json.loads(kwargs[c]) if kwargs[c] else ({} if c != "tags" else [])
        return cls(**kwargs)

    @classmethod
    def from_record(cls, record: dict, annotations: dict, sha: str = "") -> "RunRow":
        """The row of a run directory's ``run.json`` and ``annotations.json``."""
        return cls(id=record["id"], started=record["started"], finished=record.get("finished"),
                   kind=record.get("kind", ""), model=(record.get("model") or {}).get("name", ""),
                   status=record.get("status", "running"), pid=record.get("pid"), pid_start=record.get("pid_start"),
                   host=(record.get("host") or {}).get("hostname", ""), label=annotations.get("label", ""),
                   tags=list(annotations.get("tags", [])), options=record.get("options", {}),
                   metrics=record.get("metrics", {}), build_key=(record.get("build") or {}).get("key", ""), sha=sha,
                   model_sha=(record.get("model") or {}).get("sha256"))


def _set_wal(db: sqlite3.Connection, patience_s: float = 30.0) -> None:
    """Switch to WAL. Why a loop: while another process creates the index, changing the journal
    mode answers "database is locked" at once, without waiting on the busy timeout (two processes
    recording their first runs together hit it)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class RunIndex:
    def __init__(self, home: Path | None = None):
        self.home = Path(home) if home is not None else dcopt_home()
        self.path = self.home / INDEX

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection to the index, opened once: closing the last connection to a
        WAL database checkpoints it with an fsync (10+ ms on a busy disk), which a run would pay
        twice (start, finish) if every operation opened its own."""
        key = (str(self.path), threading.get_ident(), os.getpid())
        db = _CONNECTIONS.get(key)
        if db is None or not self.path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA busy_timeout = 30000")
            _set_wal(db)
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("BEGIN IMMEDIATE")
            db.execute(_SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            for column, kind in _ADDED:
                if column not in have:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {column} {kind}")
            db.execute("CREATE INDEX IF NOT EXISTS runs_started ON runs (started)")
            db.execute("COMMIT")
            _CONNECTIONS[key] = db
        return db

    @contextlib.contextmanager
    def _db(self, write: bool = False):
        db = self._connect()
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def put(self, row: RunRow) -> None:
        with self._db(write=True) as db:
            db.execute(_INSERT, row.values())

    def put_many(self, rows: list[RunRow]) -> None:
        with self._db(write=True) as db:
            db.executemany(_INSERT,
                           [r.values() for r in rows])

    def update(self, run_id: str, **fields) -> None:
        unknown = set(fields) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown index column(s) {sorted(unknown)}")
        values = [json.dumps(v, sort_keys=True) if k in _JSON else v for k, v in fields.items()]
        with self._db(write=True) as db:
            db.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?", (*values, run_id))

    def remove(self, run_ids) -> None:
        with self._db(write=True) as db:
            db.executemany("DELETE FROM runs WHERE id = ?", [(r,) for r in run_ids])

    def rows(self) -> list[RunRow]:
        """Every run, latest first (index 1 is the latest)."""
        if not self.path.is_file():
            return []
        with self._db() as db:
            return [RunRow.from_values(v) for v in
                    db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs ORDER BY started DESC, id")]

    def get(self, run_id: str) -> RunRow | None:
        if not self.path.is_file():
            return None
        with self._db() as db:
            v = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if v is None else RunRow.from_values(v)
