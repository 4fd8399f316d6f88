"""The manifest: the small text file git commits in place of a model.

It holds the model's structure as readable lines (so even a plain ``git diff`` of it says which
nodes changed), the store object of the *skeleton* (the file's bytes without its parameter
payloads), and per parameter its name, dtype, shape, where it goes back into the skeleton, and
the recipe (:mod:`dcopt.versions.updates`) that rebuilds its bytes -- dense, sparse or low-rank,
with the update type visible. :func:`build` makes one from a model (the clean filter),
:func:`rebuild` gives the model back, byte for byte (the smudge filter).

The layout is JSON with one structure line or one parameter per line, so git's line diff and
delta compression work on it.
"""

from __future__ import annotations

import json
from typing import Iterable

from dcopt.errors import ModelLoadError
from dcopt.versions import updates
from dcopt.versions.errors import StoreError
from dcopt.versions.params import ModelFile, assemble
from dcopt.versions.store import ObjectStore, sha256

MAGIC = "dcopt_model_manifest"
VERSION = 1


def is_manifest(data: bytes) -> bool:
    return data[:40].lstrip().startswith(b'{"' + MAGIC.encode() + b'"')


def build(model: ModelFile, store: ObjectStore, previous: dict | None = None, tolerance: float = 0.0) -> dict:
    """Store ``model``'s skeleton and parameters (only what ``previous``, the last version's
    manifest, does not already hold) and return its manifest."""
    skeleton, offsets = model.skeleton()
    old = {p["name"]: p for p in (previous or {}).get("params", [])}
    params, pieces = [], []
    for payload, offset in zip(model.payloads, offsets):
        new = model.blob(payload)
        base = _base(old.get(payload.name), payload, new, store)
        recipe, produced = updates.encode(new, payload.dtype, payload.shape, payload.encoding, store, base,
                                          tolerance=tolerance)
        params.append({"name": payload.name, "dtype": payload.dtype, "shape": list(payload.shape),
                       "encoding": payload.encoding, "offset": offset, "size": payload.nbytes, "update": recipe})
        pieces.append((offset, produced))
    produced = assemble(skeleton, pieces)
    manifest = {MAGIC: VERSION, "format": model.format.name, "size": len(produced), "sha256": sha256(produced)}
    if produced != model.data:
        manifest["lossy"] = {"tolerance": tolerance, "original_sha256": sha256(model.data)}
    manifest["skeleton"] = {"object": store.put(skeleton), "size": len(skeleton)}
    manifest["structure"] = model.structure.lines()
    manifest["params"] = params
    return manifest


def _base(entry: dict | None, payload, new: bytes, store: ObjectStore) -> tuple[dict, bytes] | None:
    """The previous version of a parameter, as (recipe, bytes), when a delta against it may pay."""
    if entry is None or entry["dtype"] != payload.dtype or tuple(entry["shape"]) != payload.shape \
            or entry["encoding"] != payload.encoding:
        return None
    recipe = entry["update"]
    if recipe["sha256"] == sha256(new):
        return recipe, new
    try:
        return recipe, updates.decode(recipe, entry["dtype"], entry["shape"], store, f"parameter '{entry['name']}'")
    except StoreError:
        return None  # the previous version is not in this store: store the new one whole


def rebuild(manifest: dict, store: ObjectStore, file: str = "<manifest>") -> bytes:
    """The model a manifest describes, verified byte for byte against its recorded sha256."""
    try:
        skeleton = store.get(manifest["skeleton"]["object"], "the model's skeleton (non-parameter bytes)")
        pieces = [(p["offset"], updates.decode(p["update"], p["dtype"], p["shape"], store, f"parameter '{p['name']}'"))
                  for p in manifest["params"]]
    except StoreError as exc:
        raise exc.at(file=file)
    data = assemble(skeleton, pieces)
    if len(data) != manifest["size"] or sha256(data) != manifest["sha256"]:
        raise StoreError(f"rebuilt model hashes to {sha256(data)[:16]}... ({len(data)} bytes), not the recorded "
                         f"{manifest['sha256'][:16]}... ({manifest['size']} bytes)", file=file)
    return data


def objects(manifest: dict) -> list[str]:
    """Every store object the manifest needs."""
    out = [manifest["skeleton"]["object"]]
    for p in manifest["params"]:
        out += updates.objects(p["update"])
    return list(dict.fromkeys(out))


def parse(data: bytes, file: str = "<manifest>") -> dict:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ModelLoadError(f"damaged dcopt manifest (not JSON: {exc})", file=file) from None
    if not isinstance(manifest, dict) or manifest.get(MAGIC) != VERSION:
        raise ModelLoadError(f"not a dcopt manifest of version {VERSION} (field '{MAGIC}' is "
                             f"{manifest.get(MAGIC) if isinstance(manifest, dict) else None!r})", file=file)
    for key in ("format", "size", "sha256", "skeleton", "structure", "params"):
        if key not in manifest:
            raise ModelLoadError(f"damaged dcopt manifest: field '{key}' is missing", file=file)
    return manifest


def dumps(manifest: dict) -> bytes:
    """One key, structure line or parameter per line; valid JSON."""
    lines = ["{" + json.dumps(MAGIC) + ": " + json.dumps(manifest[MAGIC]) + ","]
    for key, value in manifest.items():
        if key in (MAGIC, "structure", "params"):
            continue
        lines.append(f" {json.dumps(key)}: {json.dumps(value, sort_keys=True)},")
    for key in ("structure", "params"):
        items: Iterable = manifest[key]
        body = [f"  {json.dumps(item, sort_keys=True)}" for item in items]
        lines.append(f" {json.dumps(key)}: [" + ("\n" + ",\n".join(body) + "\n ]" if body else "]"))
        lines[-1] += "," if key == "structure" else ""
    return ("\n".join(lines) + "}\n").encode()
