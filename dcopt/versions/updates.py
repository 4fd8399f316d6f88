"""Update types: how one parameter's bytes are stored, given the previous version's.

A *recipe* (a small JSON dict kept in the manifest) rebuilds a parameter's bytes from store
objects; every recipe carries the sha256 of the bytes it rebuilds, checked after rebuilding:

* ``dense``: ``{"object": sha}`` -- the bytes themselves (deduplicated by the store);
* ``sparse``: ``{"base": recipe, "indices": sha, "values": sha}`` -- few elements changed: their
  flat indices and new element bytes (bit-exact, any fixed-size dtype);
* ``low-rank``: ``{"base": recipe, "u": sha, "v": sha, "fix": {...}|null, "tolerance": t}`` --
  a floating-point delta of small rank: ``new = base + U @ V`` (float64, machine-independent, see
  :mod:`dcopt.versions.lowrank`) cast to the dtype, corrected where that is not exactly the new
  value (lossless: last-place steps as a compressible int8 array, a sparse list for the rest),
  or not within ``tolerance`` when the user allowed one (lossy, and the manifest says so).

:func:`encode` picks the smallest of the three. Chains of deltas are capped at :data:`MAX_CHAIN`
so a checkout never replays a long history.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from dcopt.versions import lowrank
from dcopt.versions.errors import StoreError
from dcopt.versions.formats import numpy_dtype
from dcopt.versions.store import ObjectStore, sha256

UPDATE_TYPES = ("dense", "sparse", "low-rank")
MAX_CHAIN = 4
#: a delta type is used only when it takes at most this fraction of the dense bytes
WORTH = 0.5


def depth(recipe: dict) -> int:
    return 0 if recipe["type"] == "dense" else 1 + depth(recipe["base"])


def _bits(array: np.ndarray) -> np.ndarray:
    """The array's elements as unsigned integers of the same width: compares bits, not values
    (NaN equals itself, -0.0 differs from 0.0)."""
    return np.ascontiguousarray(array).reshape(-1).view(f"u{array.dtype.itemsize}")


def _index_dtype(size: int) -> str:
    return "int32" if size < 2**31 else "int64"


def _put_sparse(store: ObjectStore, new_bits: np.ndarray, indices: np.ndarray) -> dict:
    index_dtype = _index_dtype(new_bits.size)
    return {"indices": store.put(indices.astype(index_dtype).tobytes()),
            "values": store.put(new_bits[indices].tobytes()), "count": int(indices.size), "index_dtype": index_dtype}


def _apply_sparse(bits: np.ndarray, sparse: dict, store: ObjectStore, what: str) -> None:
    indices = np.frombuffer(store.get(sparse["indices"], f"{what} (sparse indices)"), sparse["index_dtype"])
    values = np.frombuffer(store.get(sparse["values"], f"{what} (sparse values)"), bits.dtype)
    if indices.size != values.size or (indices.size and (indices.min() < 0 or indices.max() >= bits.size)):
        raise StoreError(f"{what}: sparse update objects {sparse['indices'][:12]}/{sparse['values'][:12]} "
                         f"do not fit a parameter of {bits.size} elements: the store is damaged")
    bits[indices] = values


def _low_rank_guess(base: np.ndarray, u: np.ndarray, v: np.ndarray, dtype: np.dtype) -> np.ndarray:
    delta = lowrank.rebuild(u, v).reshape(base.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        return (base.astype(np.float64) + delta).astype(dtype)


def _put_fix(store: ObjectStore, guess_bits: np.ndarray, new_bits: np.ndarray, wrong: np.ndarray) -> dict | None:
    """What turns the low-rank guess into the exact bits: a dense int8 array of last-place steps
    (mostly zeros, so it compresses to a fraction of a bit per element: the guess is usually off
    by one rounding step where it is off at all) plus a sparse list for elements further away."""
    if not wrong.size:
        return None
    steps = new_bits[wrong].astype(np.int64) - guess_bits[wrong].astype(np.int64)
    near = np.abs(steps) <= 127
    fix: dict = {"count": int(wrong.size), "ulps": None, "sparse": None}
    if near.any():
        ulps = np.zeros(new_bits.size, np.int8)
        ulps[wrong[near]] = steps[near]
        fix["ulps"] = store.put(ulps.tobytes())
    if (~near).any():
        fix["sparse"] = _put_sparse(store, new_bits, wrong[~near])
    return fix


def _apply_fix(bits: np.ndarray, fix: dict, store: ObjectStore, what: str) -> None:
    if fix.get("ulps"):
        ulps = np.frombuffer(store.get(fix["ulps"], f"{what} (low-rank last-place fixes)"), np.int8)
        if ulps.size != bits.size:
            raise StoreError(f"{what}: low-rank fix object {fix['ulps'][:12]} has {ulps.size} elements, the "
                             f"parameter {bits.size}: the store is damaged")
        bits += ulps.astype(bits.dtype)  # unsigned wrap-around adds negative steps exactly
    if fix.get("sparse"):
        _apply_sparse(bits, fix["sparse"], store, what)


def _fix_cost(guess_bits: np.ndarray, new_bits: np.ndarray, wrong: np.ndarray, itemsize: int) -> int:
    if not wrong.size:
        return 0
    steps = new_bits[wrong].astype(np.int64) - guess_bits[wrong].astype(np.int64)
    far = int(np.count_nonzero(np.abs(steps) > 127))
    ulps = np.zeros(new_bits.size, np.int8)
    ulps[wrong] = np.clip(steps, -127, 127)
    return len(zlib.compress(ulps.tobytes(), 1)) + far * (np.dtype(_index_dtype(new_bits.size)).itemsize + itemsize)


def decode(recipe: dict, dtype: str, shape, store: ObjectStore, what: str) -> bytes:
    """The bytes a recipe rebuilds, verified against its sha256; StoreError naming ``what``."""
    kind = recipe.get("type")
    if kind == "dense":
        data = store.get(recipe["object"], what)
    elif kind in ("sparse", "low-rank"):
        base = decode(recipe["base"], dtype, shape, store, what)
        np_dtype = numpy_dtype(dtype)
        array = np.frombuffer(base, np_dtype).reshape(tuple(shape))
        if kind == "low-rank":
            matrix = lowrank.as_matrix(array)
            rank = int(recipe["rank"])
            u = np.frombuffer(store.get(recipe["u"], f"{what} (low-rank U)"), np.float32)
            v = np.frombuffer(store.get(recipe["v"], f"{what} (low-rank V)"), np.float32)
            if matrix is None or u.size != matrix.shape[0] * rank or v.size != rank * matrix.shape[1]:
                raise StoreError(f"{what}: low-rank factors {recipe['u'][:12]}/{recipe['v'][:12]} do not fit "
                                 f"shape {list(shape)} at rank {rank}: the store is damaged")
            array = _low_rank_guess(array, u.reshape(-1, rank), v.reshape(rank, -1), np_dtype)
        bits = _bits(array).copy()
        if kind == "sparse":
            _apply_sparse(bits, recipe, store, what)
        elif recipe.get("fix"):
            _apply_fix(bits, recipe["fix"], store, what)
        data = bits.tobytes()
    else:
        raise StoreError(f"{what}: unknown update type {kind!r} (known: {', '.join(UPDATE_TYPES)})")
    actual = sha256(data)
    if actual != recipe["sha256"]:
        raise StoreError(f"{what}: the {kind} update rebuilds bytes hashing to {actual[:16]}..., not the "
                         f"recorded {recipe['sha256'][:16]}...: a store object is damaged or missing data")
    return data


def _try_low_rank(new: np.ndarray, base: np.ndarray, store: ObjectStore, tolerance: float, rtol: float,
                  budget: int) -> tuple[dict, bytes, int] | None:
    """A low-rank recipe (without base), the bytes it rebuilds and its cost, if cheaper than budget."""
    matrix = lowrank.as_matrix(new)
    if matrix is None or new.dtype.kind != "f" or new.dtype.itemsize < 2 or new.dtype.name == "bfloat16":
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        delta = new.astype(np.float64) - base.astype(np.float64)
    if not np.isfinite(delta).all():
        return None
    estimate = lowrank.estimate_rank(delta, rtol)
    m, n = matrix.shape
    if estimate is None or not estimate[1] or estimate[0] == 0 or estimate[0] * (m + n) * 4 >= budget:
        return None
    rank = estimate[0]
    u, v = lowrank.factorize(delta, rank)
    guess = _low_rank_guess(base, u, v, new.dtype)
    if tolerance > 0:
        with np.errstate(over="ignore", invalid="ignore"):
            off = ~(np.abs(guess.astype(np.float64) - new.astype(np.float64)) <= tolerance)
        wrong = np.flatnonzero(off.reshape(-1) | (np.isnan(guess) != np.isnan(new)).reshape(-1))
    else:
        wrong = np.flatnonzero(_bits(guess) != _bits(new))
    guess_bits, new_bits = _bits(guess), _bits(new)
    cost = rank * (m + n) * 4 + _fix_cost(guess_bits, new_bits, wrong, new.dtype.itemsize)
    if cost >= budget:
        return None
    bits = guess_bits.copy()
    bits[wrong] = new_bits[wrong]
    recipe = {"type": "low-rank", "rank": rank, "u": store.put(u.tobytes()), "v": store.put(v.tobytes()),
              "fix": _put_fix(store, guess_bits, new_bits, wrong)}
    if tolerance > 0:
        recipe["tolerance"] = tolerance
    return recipe, bits.tobytes(), cost


def encode(new: bytes, dtype: str, shape, encoding: str, store: ObjectStore, base: tuple[dict, bytes] | None = None,
           tolerance: float = 0.0, rtol: float = lowrank.DEFAULT_RTOL) -> tuple[dict, bytes]:
    """Store ``new`` (one parameter's payload) and return (recipe, the bytes the recipe rebuilds):
    the same as ``new`` unless a low-rank update within ``tolerance`` was chosen."""
    digest = sha256(new)
    if base is not None and base[0]["sha256"] == digest:
        return base[0], new
    usable = (base is not None and encoding == "raw" and len(base[1]) == len(new) and not store.has(digest)
              and depth(base[0]) < MAX_CHAIN and numpy_dtype(dtype).itemsize in (1, 2, 4, 8))
    best: tuple[dict, bytes, int] | None = None
    if usable:
        np_dtype = numpy_dtype(dtype)
        new_a = np.frombuffer(new, np_dtype).reshape(tuple(shape))
        base_a = np.frombuffer(base[1], np_dtype).reshape(tuple(shape))
        new_bits = _bits(new_a)
        changed = np.flatnonzero(new_bits != _bits(base_a))
        budget = int(WORTH * len(new))
        sparse_cost = changed.size * (np.dtype(_index_dtype(new_bits.size)).itemsize + np_dtype.itemsize)
        if sparse_cost < budget:
            best = ({"type": "sparse", **_put_sparse(store, new_bits, changed)}, new, sparse_cost)
            budget = sparse_cost
        low = _try_low_rank(new_a, base_a, store, tolerance, rtol, budget)
        if low is not None:
            best = low
    if best is None:
        return {"type": "dense", "object": store.put(new), "sha256": digest}, new
    recipe, data, _ = best
    recipe["base"] = base[0]
    recipe["sha256"] = sha256(data) if data is not new else digest
    return recipe, data


def summary(recipe: dict) -> str:
    """One short phrase for diffs and logs: 'dense', 'sparse (12 of base)', 'low-rank r=4 (+3 fixes)'."""
    kind = recipe["type"]
    if kind == "sparse":
        return f"sparse ({recipe['count']} elements)"
    if kind == "low-rank":
        fix = recipe.get("fix")
        lossy = f", within {recipe['tolerance']:g}" if recipe.get("tolerance") else ""
        return f"low-rank r={recipe['rank']}" + (f" (+{fix['count']} last-place fixes)" if fix else "") + lossy
    return kind


def objects(recipe: dict[str, Any]) -> list[str]:
    """Every store object a recipe needs (for pushing and checking stores)."""
    out = []
    if recipe["type"] == "dense":
        out.append(recipe["object"])
    else:
        out += objects(recipe["base"])
        if recipe["type"] == "sparse":
            out += [recipe["indices"], recipe["values"]]
        else:
            out += [recipe["u"], recipe["v"]]
            fix = recipe.get("fix") or {}
            out += [fix["ulps"]] if fix.get("ulps") else []
            out += [fix["sparse"]["indices"], fix["sparse"]["values"]] if fix.get("sparse") else []
    return out
