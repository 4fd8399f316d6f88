"""Low-rank structure of a parameter delta: estimate its rank, factor it, rebuild it exactly.

A parameter of two or more dims is seen as a matrix ``(shape[0], prod(shape[1:]))``. The rank
counts singular values above ``rtol`` times the largest; a matrix with one side over
:data:`EXACT_LIMIT` (a 30522 x 256 embedding) goes through its small Gram matrix, one with both
sides over it is sketched (a seeded random range finder of
:data:`SKETCH` columns and one power iteration), so a rank of ``SKETCH`` or more reads "at least". Rebuilding multiplies the factors one rank-1 term
at a time with numpy's element-wise ufuncs (each correctly rounded), not a BLAS call whose
summation order depends on the machine: the same factors give the same bits everywhere.
"""

from __future__ import annotations

import numpy as np

EXACT_LIMIT = 1024
SKETCH = 96
DEFAULT_RTOL = 1e-4


def as_matrix(array: np.ndarray) -> np.ndarray | None:
    if array.ndim < 2 or min(array.shape[0], array.size // max(array.shape[0], 1)) < 2:
        return None
    return array.reshape(array.shape[0], -1)


def _exact(m: int, n: int) -> bool:
    return max(m, n) <= EXACT_LIMIT or min(m, n) <= SKETCH


def _gram(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Eigen-decomposition of the smaller Gram matrix (M^T M or M M^T), largest first: one GEMM
    and a small symmetric solve instead of an SVD of a tall matrix (a 30522 x 256 embedding: 0.1 s,
    not seconds). Squaring loses singular values below ~1e-8 of the largest, far under any rtol."""
    transposed = matrix.shape[0] < matrix.shape[1]
    small = matrix @ matrix.T if transposed else matrix.T @ matrix
    values, vectors = np.linalg.eigh(small)
    return values[::-1].clip(min=0), vectors[:, ::-1], transposed


def _singular_values(matrix: np.ndarray) -> tuple[np.ndarray, bool]:
    """Singular values (largest first) and whether they are all of them (False: a sketch)."""
    m, n = matrix.shape
    if _exact(m, n):
        return np.linalg.svd(matrix, compute_uv=False), True
    if min(m, n) <= EXACT_LIMIT:
        return np.sqrt(_gram(matrix)[0]), True
    q = _range(matrix, SKETCH)
    return np.linalg.svd(q.T @ matrix, compute_uv=False), False


def _range(matrix: np.ndarray, k: int) -> np.ndarray:
    """An orthonormal basis of (approximately) the top-k column space: seeded, one power iteration."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(matrix @ rng.standard_normal((matrix.shape[1], k)))
    q, _ = np.linalg.qr(matrix @ (matrix.T @ q))
    return q


def estimate_rank(delta: np.ndarray, rtol: float = DEFAULT_RTOL) -> tuple[int, bool] | None:
    """(rank, exact) of a delta; ``exact`` False means "at least rank". None for 0/1-d deltas."""
    matrix = as_matrix(np.asarray(delta, dtype=np.float64))
    if matrix is None:
        return None
    s, complete = _singular_values(matrix)
    if not s.size or s[0] == 0:
        return 0, True
    rank = int(np.count_nonzero(s > rtol * s[0]))
    return rank, complete or rank < len(s)


def factorize(delta: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """U (m x rank) and V (rank x n), float32, with U @ V ~ delta (as a matrix)."""
    matrix = as_matrix(np.asarray(delta, dtype=np.float64))
    m, n = matrix.shape
    if not _exact(m, n) and min(m, n) <= EXACT_LIMIT:
        _, vectors, transposed = _gram(matrix)
        if transposed:  # M = U S V^T with U from M M^T: V^T rows = U^T M
            u = vectors[:, :rank]
            return u.astype(np.float32), (u.T @ matrix).astype(np.float32)
        v = vectors[:, :rank]
        return (matrix @ v).astype(np.float32), v.T.astype(np.float32)
    if not _exact(m, n):
        q = _range(matrix, rank + 10)
        ub, s, vt = np.linalg.svd(q.T @ matrix, full_matrices=False)
        u = q @ ub
    else:
        u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    return (u[:, :rank] * s[:rank]).astype(np.float32), vt[:rank].astype(np.float32)


def rebuild(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """U @ V in float64, the same bits on every machine (see the module docstring)."""
    out = np.zeros((u.shape[0], v.shape[1]), np.float64)
    u64, v64 = u.astype(np.float64), v.astype(np.float64)
    for k in range(u.shape[1]):
        out += np.multiply.outer(u64[:, k], v64[k])
    return out
