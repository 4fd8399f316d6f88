"""Size limits: a tensor is checked before anything allocates it.

Why a check of our own: numpy reports an impossible size late and in its own words
(``MemoryError: Unable to allocate 8.00 TiB``, ``array is too big``, ``negative dimensions are
not allowed``), or not at all -- a lazily zeroed 200 GiB buffer on a 128 GiB machine is "allocated"
and the process is killed when it is touched. A model or a ``--dim`` that asks for such a tensor is
bad input, and the error should name the tensor, its shape and its size.

Two limits, checked by :func:`check_tensor_size`:

* **int64**: every dim is a non-negative integer below 2**63, and so are the element count and
  the byte size (what ONNX, numpy and the generated kernels index with). A model breaking this is
  invalid everywhere.
* **the memory cap**: no single tensor may need more bytes than :func:`max_tensor_bytes`. The
  default is three quarters of the machine's physical memory (a tensor larger than that cannot
  coexist with anything else); ``DCOPT_MAX_TENSOR_BYTES`` (``"64GiB"``, ``"5e9"``, ``"50%"`` of
  physical memory) or :func:`set_max_tensor_bytes` / :func:`max_tensor_bytes_set` change it.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator, Sequence

import numpy as np

from dcopt.errors import DcoptError

INT64_MAX = 2**63 - 1
DEFAULT_FRACTION = 0.75
ENV_VAR = "DCOPT_MAX_TENSOR_BYTES"

_override: int | None = None
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class SizeLimitError(DcoptError):
    """A tensor whose shape is invalid (negative, beyond int64) or needs more memory than allowed."""


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the platform does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def parse_size(text: str) -> int:
    """``"64GiB"`` / ``"5e9"`` / ``"1.5 GB"`` / ``"50%"`` (of physical memory) -> bytes; DcoptError
    when the text is none of those or not positive."""
    raw = str(text).strip().lower()
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?(?:e[0-9]+)?)\s*(%|[kmgt]i?b?|b)?", raw)
    if not match:
        raise DcoptError(f"memory limit '{text}' is not a size (examples: 64GiB, 5e9, 50%)")
    number, unit = float(match.group(1)), match.group(2) or ""
    if unit == "%":
        total = physical_memory()
        if total is None:
            raise DcoptError(f"memory limit '{text}': this platform does not report its physical memory")
        value = total * number / 100
    else:
        value = number * _UNITS[unit]
    if not 1 <= value <= INT64_MAX:
        raise DcoptError(f"memory limit '{text}' must lie between 1 byte and 2**63-1 bytes")
    return int(value)


def max_tensor_bytes() -> int:
    """The memory cap in bytes: :func:`set_max_tensor_bytes`, else ``DCOPT_MAX_TENSOR_BYTES``,
    else :data:`DEFAULT_FRACTION` of physical memory (64 GiB where that is unknown)."""
    if _override is not None:
        return _override
    env = os.environ.get(ENV_VAR)
    if env:
        try:
            return parse_size(env)
        except DcoptError as exc:
            raise DcoptError(f"{ENV_VAR}: {exc.message}") from None
    total = physical_memory()
    return int(total * DEFAULT_FRACTION) if total else 64 * 2**30


def set_max_tensor_bytes(limit: int | str | None) -> None:
    """Set the memory cap for this process (bytes, or a size text as in :func:`parse_size`);
    None goes back to the environment / default."""
    global _override
    if limit is None:
        _override = None
    elif isinstance(limit, str):
        _override = parse_size(limit)
    elif isinstance(limit, (int, np.integer)) and not isinstance(limit, bool) and 1 <= limit <= INT64_MAX:
        _override = int(limit)
    else:
        raise DcoptError(f"memory limit must be a positive number of bytes or a size text, got {limit!r}")


@contextlib.contextmanager
def max_tensor_bytes_set(limit: int | str | None) -> Iterator[None]:
    """``with max_tensor_bytes_set("1GiB"): ...`` -- the cap for a block (tests, one compile)."""
    global _override
    saved = _override
    set_max_tensor_bytes(limit)
    try:
        yield
    finally:
        _override = saved


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB' (binary prefixes, as numpy's allocation errors use)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def itemsize(dtype) -> int:
    """Bytes numpy allocates per element of ``dtype`` (a dcopt dtype name or anything numpy takes):
    sub-byte types take one byte each, strings a pointer."""
    from dcopt.ir import dtypes

    if dtypes.is_dtype_name(dtype):
        return int(dtypes.to_numpy(dtype).itemsize) or 1
    return int(np.dtype(dtype).itemsize) or 1


def _describe(name: str, shape: Sequence, dtype) -> str:
    return f"'{name}' of shape [{', '.join(str(d) for d in shape)}] ({dtype})"


def check_shape(name: str, shape: Sequence, *, where: str = "tensor") -> tuple[int, ...]:
    """Every dim a non-negative int below 2**63 and the element count too; returns the shape as
    ints. Dims that are not ints (symbols, None) are skipped -- check again once they are bound."""
    dims = []
    for axis, d in enumerate(shape):
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)):
            continue
        d = int(d)
        if d < 0:
            raise SizeLimitError(f"{where} '{name}' has a negative dim {d} (axis {axis}) in shape "
                                 f"[{', '.join(map(str, shape))}]")
        if d > INT64_MAX:
            raise SizeLimitError(f"{where} '{name}': dim {d} (axis {axis}) does not fit in int64")
        dims.append(d)
    count = 1
    for d in dims:
        count *= d
    if count > INT64_MAX:
        raise SizeLimitError(f"{where} '{name}' of shape [{', '.join(map(str, shape))}] has {count} elements, "
                             "more than int64 can count")
    return tuple(dims)


def check_tensor_size(name: str, shape: Sequence, dtype, *, where: str = "tensor",
                      limit: int | None = None) -> int:
    """Raise :class:`SizeLimitError` unless a ``dtype`` tensor of ``shape`` can be allocated here:
    dims and element count within int64, bytes within int64 and the memory cap (``limit``, default
    :func:`max_tensor_bytes`). ``where`` names the kind of tensor in the message ("input",
    "initializer", "output of ConstantOfShape"...). Returns the byte size (0 when a dim is not
    an int yet: symbolic dims are checked once bound)."""
    check_shape(name, shape, where=where)
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_)) for d in shape):
        return 0
    count = 1
    for d in shape:
        count *= int(d)
    nbytes = count * itemsize(dtype)
    if nbytes > INT64_MAX:
        raise SizeLimitError(f"{where} {_describe(name, shape, dtype)} needs {nbytes} bytes, more than int64 "
                             "can address")
    cap = max_tensor_bytes() if limit is None else limit
    if nbytes > cap:
        raise SizeLimitError(f"{where} {_describe(name, shape, dtype)} needs {human_bytes(nbytes)}, more than "
                             f"the memory limit of {human_bytes(cap)} per tensor (set {ENV_VAR} or "
                             "dcopt.limits.set_max_tensor_bytes to change it)")
    return nbytes


def check_dim_value(symbol: str, value, *, what: str = "dim") -> int:
    """A size given for a symbolic dim (``--dim N=...``, ``dims={...}``): a non-negative int that on its
    own does not exceed int64 or the memory cap (any tensor with that dim holds at least ``value``
    bytes). The full check of each tensor follows once shapes are bound."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise SizeLimitError(f"{what} '{symbol}' must be an integer, got {value!r}")
    value = int(value)
    if value < 0:
        raise SizeLimitError(f"{what} '{symbol}' must be >= 0, got {value}")
    if value > INT64_MAX:
        raise SizeLimitError(f"{what} '{symbol}' = {value} does not fit in int64")
    cap = max_tensor_bytes()
    if value > cap:
        raise SizeLimitError(f"{what} '{symbol}' = {value}: a tensor with that dim needs at least "
                             f"{human_bytes(value)}, more than the memory limit of {human_bytes(cap)} per tensor "
                             f"(set {ENV_VAR} or dcopt.limits.set_max_tensor_bytes to change it)")
    return value


def bound_shape(shape: Sequence, bindings, default: int | None = None) -> tuple:
    """``shape`` with symbolic dims replaced by ``bindings`` (else ``default``; None leaves them)."""
    out = []
    for d in shape:
        if isinstance(d, str):
            d = bindings.get(d, default)
        elif d is None:
            d = default
        out.append(d)
    return tuple(out)


def check_graph_sizes(graph, bindings=None, *, default: int | None = 1, containers=None,
                      file: str | None = None, check_memory: bool = True) -> None:
    """Every tensor container of ``graph`` (or just ``containers``) with symbols bound from ``bindings``
    (unbound ones: ``default``): :func:`check_tensor_size` with the container named. The check a
    compile runs once sizes are known, before specializing allocates example inputs.
    ``check_memory=False`` checks the int64 limits only."""
    from dcopt.ir.types import TensorType

    bindings = dict(bindings or {})
    names = graph.containers if containers is None else containers
    for name in names:
        c = graph.containers[name]
        t = c.type
        if not isinstance(t, TensorType) or t.shape is None:
            continue
        kind = "input" if name in graph.inputs else "parameter" if c.data is not None else \
            "output" if name in graph.outputs else "value"
        try:
            check_tensor_size(name, bound_shape(t.shape, bindings, default), t.dtype, where=kind,
                              limit=None if check_memory else INT64_MAX)
        except SizeLimitError as exc:
            raise exc.at(file=file, input=name if kind == "input" else None)
