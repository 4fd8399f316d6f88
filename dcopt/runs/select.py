"""Naming runs as Guild does: by index (``1`` is the latest, ``2:5`` a range), by id prefix, or by
label (a label names its latest run for one-run commands, all its runs for many-run commands)."""

from __future__ import annotations

import re
from pathlib import Path

from dcopt.errors import InputError
from dcopt.runs.index import RunIndex, RunRow
from dcopt.runs.record import ANNOTATIONS, FINISHED, RUN_JSON, content_hash, read_json, settle_stale

_RANGE = re.compile(r"^(\d*):(\d*)$")


def list_runs(home: Path | None = None) -> list[RunRow]:
    """Every run, latest first, with dead ``running`` ones settled as ``terminated``."""
    index = RunIndex(home)
    return settle_stale(index, index.rows())


def reindex(home: Path | None = None) -> tuple[int, int]:
    """Make the index again from the run directories (the truth): rows for every readable run,
    none for a run whose directory is gone. Returns (runs indexed, rows dropped)."""
    from dcopt.runs.home import dcopt_home, runs_dir

    home = Path(home) if home is not None else dcopt_home()
    index = RunIndex(home)
    rows = []
    base = runs_dir(home)
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        if path.name.startswith(".") or not (path / RUN_JSON).is_file():
            continue
        try:
            record = read_json(path / RUN_JSON)
            finished = record.get("status") in FINISHED
            rows.append(RunRow.from_record(record, read_json(path / ANNOTATIONS, {}),
                                           content_hash(path) if finished else ""))
        except (OSError, ValueError, KeyError):
            continue
    kept = {r.id for r in rows}
    dropped = [r.id for r in index.rows() if r.id not in kept]
    index.remove(dropped)
    index.put_many(rows)
    return len(rows), len(dropped)


def _match(ref: str, rows: list[RunRow]) -> list[RunRow]:
    ref = ref.strip()
    if ref.isdigit():
        n = int(ref)
        if 1 <= n <= len(rows):
            return [rows[n - 1]]
        by_id = [r for r in rows if r.id.startswith(ref)]  # an id prefix that happens to be all digits
        if len(by_id) == 1:
            return by_id
        raise InputError(f"run {n}: there are {len(rows)} run(s) (1 is the latest; dcopt runs ls lists them)"
                         + (f"; as an id prefix it matches {len(by_id)} runs" if by_id else ""))
    m = _RANGE.match(ref)
    if m:
        lo, hi = int(m.group(1) or 1), int(m.group(2) or len(rows))
        if lo < 1 or lo > hi:
            raise InputError(f"run range '{ref}': expected FIRST:LAST with 1 <= FIRST <= LAST")
        return rows[lo - 1:hi]
    by_id = [r for r in rows if r.id.startswith(ref.lower())] if re.fullmatch(r"[0-9a-fA-F]+", ref) else []
    if len(by_id) > 1:
        raise InputError(f"run id prefix '{ref}' matches {len(by_id)} runs: "
                         f"{', '.join(r.short_id for r in by_id[:5])}; give more characters")
    if by_id:
        return by_id
    by_label = [r for r in rows if r.label == ref]
    if by_label:
        return by_label
    raise InputError(f"no run '{ref}': not an index (1 = latest), a range (1:3), an id prefix or a label "
                     f"(dcopt runs ls lists {len(rows)} run(s))")


def select_runs(refs, rows: list[RunRow]) -> list[RunRow]:
    """Runs named by ``refs`` in the order given (no duplicates); every run when ``refs`` is empty."""
    if not refs:
        return list(rows)
    out, seen = [], set()
    for ref in refs:
        for r in _match(ref, rows):
            if r.id not in seen:
                seen.add(r.id)
                out.append(r)
    return out


def select_one(ref: str, rows: list[RunRow]) -> RunRow:
    """One run; a label names its latest run."""
    return _match(ref, rows)[0]
