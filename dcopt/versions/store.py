"""The content-addressed object store of parameter blobs: ``<root>/<2 hex>/<62 hex>``.

An object is named by the sha256 of its bytes, so one parameter shared by many versions and
branches is stored once. Objects that compress well (sparse indices, skeletons, repeated values)
are kept zlib-compressed as ``<name>.z``; the name is always the hash of the *uncompressed*
bytes. Writes go to a temporary sibling and are renamed into place; every read re-hashes the
bytes, so a damaged object is an error naming it, never a wrong parameter.

In a git repository the store defaults to ``.git/dcopt/objects`` (the common git dir, so every
worktree shares it); ``git config dcopt.store PATH`` moves it.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import Iterator

from dcopt.outputs import write_file
from dcopt.versions.errors import StoreError


def sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class ObjectStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise StoreError(f"'{digest}' is not an object name (64 hex digits)")
        return self.root / digest[:2] / digest[2:]

    def _existing(self, digest: str) -> Path | None:
        path = self._path(digest)
        for candidate in (path, path.with_name(path.name + ".z")):
            if candidate.is_file():
                return candidate
        return None

    def has(self, digest: str) -> bool:
        return self._existing(digest) is not None

    def put(self, data: bytes | memoryview) -> str:
        """Store ``data`` (once) and return its name."""
        data = bytes(data)
        digest = sha256(data)
        if self.has(digest):
            return digest
        # float weights rarely compress: try a 64 KiB sample before spending seconds on 100 MB
        sample = data[:1 << 16]
        worth = len(data) >= 64 and len(zlib.compress(sample, 1)) < 0.9 * len(sample)
        packed = zlib.compress(data, 1) if worth else data
        compressed = len(packed) < 0.9 * len(data)
        target = self._path(digest)
        if compressed:
            target = target.with_name(target.name + ".z")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_file(target, packed if compressed else data)
        return digest

    def get(self, digest: str, what: str = "object") -> bytes:
        """The bytes of object ``digest``; StoreError naming ``what`` (e.g. "parameter 'fc.weight'")
        and the object if it is missing or does not hash to its name."""
        path = self._existing(digest)
        if path is None:
            raise StoreError(f"{what}: object {digest} is missing from the store {self.root} "
                             f"(fetch it with 'dcopt git pull-store REMOTE', or restore the store)")
        try:
            data = path.read_bytes()
            if path.suffix == ".z":
                data = zlib.decompress(data)
        except (OSError, zlib.error) as exc:
            raise StoreError(f"{what}: object {digest} in {self.root} cannot be read ({exc}): "
                             "the store is damaged") from None
        actual = sha256(data)
        if actual != digest:
            raise StoreError(f"{what}: object {digest} in {self.root} is corrupted "
                             f"(its bytes hash to {actual[:16]}...): the store is damaged")
        return data

    def names(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if len(sub.name) == 2 and sub.is_dir():
                for f in sorted(sub.iterdir()):
                    if not f.name.startswith("."):  # a write in progress (staged_file's temporary)
                        yield sub.name + f.name.removesuffix(".z")

    def file_of(self, digest: str) -> Path | None:
        """Where object ``digest`` lives (for copying stores), None if absent."""
        return self._existing(digest)

    def size(self) -> int:
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file()) if self.root.is_dir() else 0
