"""Which manifest describes a model: ``<store>/by-model/<model sha256>`` -> the manifest's object.

Why: git hands a textconv program (``git log -p``, ``git show``) the *smudged* file -- the model,
not the manifest it committed -- and no blob id. The model's sha256 is all textconv has, and the
manifest is what knows how each parameter is stored (dense, sparse, low-rank). The clean and
smudge filters and the merge driver record every manifest they see here (the manifest itself is a
store object, so it is deduplicated and verified like any other); a repository whose store came
from elsewhere fills the index from its history on the first miss (:func:`dcopt.versions.git.textconv`).

The index lives inside the store directory (in ``by-model/``, which is not an object directory),
so copying the store with rsync carries it; it only speeds lookups up and can be deleted.
"""

from __future__ import annotations

from dcopt.errors import DcoptError
from dcopt.outputs import write_file
from dcopt.versions import manifest as manifests
from dcopt.versions.store import ObjectStore

DIRECTORY = "by-model"


def _entry(store: ObjectStore, model_sha256: str):
    return store.root / DIRECTORY / model_sha256


def remember(store: ObjectStore, manifest_bytes: bytes, manifest: dict) -> None:
    """Record that ``manifest`` (serialized as ``manifest_bytes``) rebuilds the model it names."""
    name = store.put(manifest_bytes)
    entry = _entry(store, manifest["sha256"])
    try:
        if entry.is_file() and entry.read_text().strip() == name:
            return
    except OSError:
        pass
    entry.parent.mkdir(parents=True, exist_ok=True)
    write_file(entry, name + "\n")


def recall(store: ObjectStore, model_sha256: str) -> dict | None:
    """The manifest recorded for a model with this sha256, or None (never an error: the index is
    a cache, and a damaged entry is just a miss)."""
    entry = _entry(store, model_sha256)
    try:
        name = entry.read_text().strip()
        return manifests.parse(store.get(name, "manifest"), str(entry))
    except (OSError, ValueError, DcoptError):  # missing, or a damaged entry/object/manifest
        return None
