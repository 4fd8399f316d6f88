"""The object store and the update types: lossless by construction, loud when damaged."""

import numpy as np
import pytest

from dcopt.versions import updates
from dcopt.versions.errors import StoreError
from dcopt.versions.store import ObjectStore


def _encode(store, new, base=None, tolerance=0.0):
    base_arg = None if base is None else (updates.encode(base.tobytes(), new.dtype.name, new.shape, "raw", store)[0],
                                          base.tobytes())
    return updates.encode(new.tobytes(), new.dtype.name, new.shape, "raw", store, base_arg, tolerance=tolerance)


def test_store_dedups_and_detects_missing_and_corrupted(tmp_path):
    store = ObjectStore(tmp_path / "objects")
    name = store.put(b"x" * 1000)
    assert store.put(b"x" * 1000) == name and len(list(store.names())) == 1
    assert store.get(name) == b"x" * 1000
    path = store.file_of(name)
    path.write_bytes(path.read_bytes()[:-3] + b"zzz")
    with pytest.raises(StoreError, match=f"parameter 'w'.*{name}.*(corrupted|cannot be read)"):
        store.get(name, "parameter 'w'")
    path.unlink()
    with pytest.raises(StoreError, match=f"parameter 'w'.*{name} is missing"):
        store.get(name, "parameter 'w'")


def test_sparse_update_is_bit_exact_including_nan_and_negative_zero(tmp_path):
    store = ObjectStore(tmp_path)
    base = np.random.default_rng(0).standard_normal((50, 40)).astype(np.float32)
    new = base.copy()
    new[0, 0], new[3, 7], new[9, 9] = np.nan, -0.0 if base[3, 7] == 0 else 1.5, -base[9, 9]
    recipe, produced = _encode(store, new, base)
    assert recipe["type"] == "sparse" and recipe["count"] == 3
    assert produced == new.tobytes()
    assert updates.decode(recipe, "float32", new.shape, store, "p") == new.tobytes()


def test_low_rank_update_is_lossless_and_small(tmp_path):
    store = ObjectStore(tmp_path)
    rng = np.random.default_rng(1)
    base = (rng.standard_normal((128, 96)) * 0.1).astype(np.float32)
    new = (base + (rng.standard_normal((128, 3)) * 0.05).astype(np.float32)
           @ (rng.standard_normal((3, 96)) * 0.05).astype(np.float32)).astype(np.float32)
    base_recipe, _ = updates.encode(base.tobytes(), "float32", base.shape, "raw", store)
    before = store.size()
    recipe, produced = updates.encode(new.tobytes(), "float32", new.shape, "raw", store, (base_recipe, base.tobytes()))
    assert recipe["type"] == "low-rank" and recipe["rank"] == 3, updates.summary(recipe)
    assert produced == new.tobytes()
    assert updates.decode(recipe, "float32", new.shape, store, "p") == new.tobytes()
    assert store.size() - before < new.nbytes / 4  # factors + compressed last-place fixes


def test_low_rank_within_tolerance_is_declared_and_bounded(tmp_path):
    store = ObjectStore(tmp_path)
    rng = np.random.default_rng(2)
    base = (rng.standard_normal((64, 64)) * 0.1).astype(np.float32)
    new = (base + np.outer(rng.standard_normal(64), rng.standard_normal(64)).astype(np.float32) * 0.01
           + (rng.standard_normal((64, 64)) * 1e-7).astype(np.float32)).astype(np.float32)
    recipe, produced = _encode(store, new, base, tolerance=1e-5)
    assert recipe["type"] == "low-rank" and recipe["tolerance"] == 1e-5
    rebuilt = np.frombuffer(updates.decode(recipe, "float32", new.shape, store, "p"), np.float32).reshape(new.shape)
    assert rebuilt.tobytes() == produced and np.abs(rebuilt - new).max() <= 1e-5


def test_unrelated_change_is_stored_dense_and_chains_are_capped(tmp_path):
    store = ObjectStore(tmp_path)
    rng = np.random.default_rng(3)
    base = rng.standard_normal((20, 20)).astype(np.float32)
    recipe, _ = _encode(store, rng.standard_normal((20, 20)).astype(np.float32), base)
    assert recipe["type"] == "dense"
    current = (updates.encode(base.tobytes(), "float32", base.shape, "raw", store)[0], base.tobytes())
    for step in range(updates.MAX_CHAIN + 2):
        nxt = np.frombuffer(current[1], np.float32).reshape(base.shape).copy()
        nxt[step, step] += 1
        current = updates.encode(nxt.tobytes(), "float32", base.shape, "raw", store, current)
        assert updates.depth(current[0]) <= updates.MAX_CHAIN
    assert updates.decode(current[0], "float32", base.shape, store, "p") == current[1]
