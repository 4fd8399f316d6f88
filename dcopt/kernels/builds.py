"""Builds: a compiled model as one self-contained, verifiable directory (e.g. ``model.dcopt/``).

::

    model.dcopt/
      manifest.json      what was built, how, with what (see below), plus every file's sha256
      kernels/<name>.py  each kernel's generated source (.ll for LLVM IR kernels)
      weights.npz        the model's parameters (uncompressed: loads at disk speed)

``manifest.json`` holds what the caller passes — ``model`` (a dict with at least ``hash``),
``pipeline`` (pass names in order), ``patches``, ``target``, optional ``benchmark`` (metric ->
number) and anything else JSON-able — and what :func:`write_build` adds: ``format``, ``created``,
``toolchain``, ``kernels`` (name, key, file) and ``files`` (path -> size and sha256).

A build is written into a sibling temp directory and renamed into place, so no reader ever sees
half a build; replacing an existing build renames the old one away first (never a non-build
directory). :func:`read_build` checks every file against the manifest and raises one
:class:`~dcopt.errors.ModelLoadError` naming the build and what is wrong.

Builds written with ``store=`` are recorded in ``<store root>/builds.sqlite`` (path, model,
target, time): ``dcopt builds ls`` lists them. The record is an index, not the truth — the
directory is; ``ls`` says when a recorded build is gone or was rewritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dcopt.errors import ModelLoadError
from dcopt.kernels.keys import sha256_hex, toolchain_versions
from dcopt.kernels.store import KernelEntry, KernelStore, now_iso
from dcopt.outputs import staged_directory

MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
FORMAT = 1
REQUIRED = ("model", "pipeline", "patches", "target")
REGISTRY = "builds.sqlite"


@dataclass(frozen=True)
class BuildKernel:
    """A kernel as a build stores it: its key digest and generated source."""

    key: str
    source: str
    suffix: str = ".py"

    @classmethod
    def from_entry(cls, entry: KernelEntry) -> "BuildKernel":
        suffix = Path(entry.meta.get("source") or "source.py").suffix
        return cls(entry.key, entry.source(), suffix)


@dataclass(frozen=True)
class Build:
    """A build read from disk and verified: its directory and manifest."""

    path: Path
    manifest: dict

    @property
    def kernels(self) -> dict[str, dict]:
        return {k["name"]: k for k in self.manifest["kernels"]}

    def kernel_source(self, name: str) -> str:
        return (self.path / self.kernels[name]["file"]).read_text()

    def weights(self) -> dict[str, np.ndarray]:
        if WEIGHTS not in self.manifest["files"]:
            return {}
        with np.load(self.path / WEIGHTS, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")


def _record(path: Path) -> dict:
    data = path.read_bytes()
    return {"size": len(data), "sha256": sha256_hex(data)}


def write_build(path: str | os.PathLike, manifest: Mapping[str, Any], kernels: Mapping[str, BuildKernel | KernelEntry],
                weights: Mapping[str, np.ndarray] | None = None, *, store: KernelStore | None = None) -> Build:
    """Write a build directory atomically and return it (as :func:`read_build` would).

    ``manifest`` must hold ``model`` (dict with ``hash``), ``pipeline``, ``patches`` and ``target``.
    ``kernels`` maps kernel names to :class:`BuildKernel` or store :class:`KernelEntry` objects.
    An existing *build* at ``path`` is replaced; any other existing path is refused.
    """
    path = Path(path)
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise ValueError(f"write_build: manifest lacks {', '.join(missing)}")
    if not isinstance(manifest["model"], Mapping) or "hash" not in manifest["model"]:
        raise ValueError("write_build: manifest['model'] must be a dict with a 'hash'")
    with staged_directory(path, replaceable=_replaceable, force=True, what="dcopt build") as staging:
        body = {"toolchain": toolchain_versions(), **manifest, "format": FORMAT, "created": now_iso()}
        body["kernels"] = []
        (staging / "kernels").mkdir()
        for name in sorted(kernels):
            k = kernels[name]
            k = BuildKernel.from_entry(k) if isinstance(k, KernelEntry) else k
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"write_build: bad kernel name {name!r}")
            file = f"kernels/{name}{k.suffix}"
            (staging / file).write_text(k.source)
            body["kernels"].append({"name": name, "key": k.key, "file": file})
        if weights:
            np.savez(staging / WEIGHTS, **{n: np.asarray(a) for n, a in weights.items()})
        body["files"] = {p.relative_to(staging).as_posix(): _record(p)
                         for p in sorted(staging.rglob("*")) if p.is_file()}
        _write_json(staging / MANIFEST, body)
    if store is not None:
        _register(store, path, body)
    return Build(path, body)


def _replaceable(path: Path) -> bool:
    """A build (it has a manifest) or an empty directory may be replaced; nothing else."""
    return (path / MANIFEST).is_file() or not any(path.iterdir())


def read_build(path: str | os.PathLike, *, verify: bool = True) -> Build:
    """Read and validate a build; a :class:`ModelLoadError` says what is wrong with it.

    ``verify`` re-hashes every file (weights included: ~1 s per GB); turn it off only for listing.
    """
    path = Path(path)
    where = {"file": str(path)}
    if not path.is_dir():
        raise ModelLoadError("not a dcopt build: no such directory" if not path.exists() else
                             "not a dcopt build: not a directory", **where)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"damaged build: {MANIFEST} is missing", **where) from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"damaged build: {MANIFEST} is unreadable ({exc})", **where) from None
    if not isinstance(manifest, dict):
        raise ModelLoadError(f"damaged build: {MANIFEST} is not an object", **where)
    if manifest.get("format") != FORMAT:
        raise ModelLoadError(f"unsupported build format {manifest.get('format')!r} (this dcopt reads {FORMAT})", **where)
    missing = [k for k in (*REQUIRED, "kernels", "files") if k not in manifest]
    if missing:
        raise ModelLoadError(f"damaged build: {MANIFEST} lacks {', '.join(missing)}", **where)
    problems = []
    files = manifest["files"]
    for kernel in manifest["kernels"]:
        if not isinstance(kernel, dict) or not {"name", "key", "file"} <= set(kernel):
            problems.append(f"malformed kernel record {kernel!r}")
        elif kernel["file"] not in files:
            problems.append(f"kernel '{kernel['name']}': {kernel['file']} is not in the file list")
    for name, want in files.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif file.stat().st_size != want.get("size"):
            problems.append(f"{name} has {file.stat().st_size} bytes, manifest says {want.get('size')}")
        elif verify and _record(file)["sha256"] != want.get("sha256"):
            problems.append(f"{name} does not match its sha256 in the manifest")
    if problems:
        raise ModelLoadError("damaged build:\n  " + "\n  ".join(problems), **where)
    return Build(path, manifest)


# -- the record of builds --------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildRecord:
    path: Path
    created: str
    model: str
    model_hash: str
    target: str
    n_kernels: int
    manifest_sha256: str

    def status(self) -> str:
        """"ok", "missing" (directory gone) or "replaced" (rewritten without recording)."""
        try:
            current = sha256_hex((self.path / MANIFEST).read_bytes())
        except OSError:
            return "missing"
        return "ok" if current == self.manifest_sha256 else "replaced"


def _connect(store: KernelStore) -> sqlite3.Connection:
    store.root.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(store.root / REGISTRY, timeout=30)
    db.execute("CREATE TABLE IF NOT EXISTS builds (path TEXT PRIMARY KEY, created TEXT, model TEXT, "
               "model_hash TEXT, target TEXT, n_kernels INTEGER, manifest_sha256 TEXT)")
    return db


def _register(store: KernelStore, path: Path, manifest: Mapping) -> None:
    model = manifest["model"]
    target = manifest["target"] if isinstance(manifest["target"], str) else json.dumps(manifest["target"], sort_keys=True)
    row = (str(path.resolve()), manifest["created"], str(model.get("name", "")), str(model["hash"]), target,
           len(manifest["kernels"]), sha256_hex((path / MANIFEST).read_bytes()))
    with contextlib.closing(_connect(store)) as db, db:
        db.execute("INSERT OR REPLACE INTO builds VALUES (?, ?, ?, ?, ?, ?, ?)", row)


def list_builds(store: KernelStore, *, prune: bool = False) -> list[BuildRecord]:
    """Recorded builds, newest first; ``prune`` forgets those whose directory is gone."""
    if not (store.root / REGISTRY).is_file():
        return []
    with contextlib.closing(_connect(store)) as db, db:
        rows = db.execute("SELECT path, created, model, model_hash, target, n_kernels, manifest_sha256 "
                          "FROM builds ORDER BY created DESC").fetchall()
        records = [BuildRecord(Path(r[0]), *r[1:]) for r in rows]
        if prune:
            gone = [(str(r.path),) for r in records if r.status() == "missing"]
            db.executemany("DELETE FROM builds WHERE path = ?", gone)
            records = [r for r in records if r.status() != "missing"]
    return records

