"""Checking the inputs a run is given, before anything executes: one function for the reference
executor (:func:`dcopt.api.run`) and the compiled session (``CpuSession.run``), so both accept and
refuse the same feeds.

* ``feeds`` must be a mapping ``{input name: array}`` (``sess.run(None, [x])`` is an
  :class:`~dcopt.errors.ArgumentError` naming ``feeds``, not a ``TypeError`` from inside);
* names: no unknown input, none missing;
* values: anything ``np.asarray`` turns into a numeric/bool/string array (lists and scalars, as
  onnxruntime takes them); object arrays of other things are refused naming the input;
* byte order: big-endian (or any non-native) arrays are converted to native order -- the values
  are the same numbers, and generated kernels read native order only;
* dtype and rank: when the expected inputs say (``NodeArg``-like objects with ``dtype``/``shape``),
  a mismatch is an InputError naming the input and both types. Sizes of symbolic dims are left to
  the caller (a session may recompile for them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np

from dcopt.errors import ArgumentError, InputError


def _expected(expected_inputs: Sequence[Any]) -> list[tuple[str, str | None, Sequence | None, bool]]:
    """(name, dtype or None, shape or None, is a tensor) for names, NodeArgs, or (name, type) pairs
    (a sequence or optional input keeps its list / None as the executor takes it)."""
    from dcopt.ir.types import TensorType

    out = []
    for item in expected_inputs:
        if isinstance(item, str):
            out.append((item, None, None, True))
        elif isinstance(item, tuple) and len(item) == 2:
            name, t = item
            tensor = isinstance(t, TensorType)
            out.append((name, t.dtype if tensor else None, t.shape if tensor else None, tensor))
        else:
            out.append((item.name, getattr(item, "dtype", None), getattr(item, "shape", None), True))
    return out


def native_order(array: np.ndarray) -> np.ndarray:
    """``array`` in the machine's byte order (a converted copy when it is not)."""
    if array.dtype.byteorder not in ("=", "|") and not array.dtype.isnative:
        return array.astype(array.dtype.newbyteorder("="))
    return array


def as_array(name: str, value: Any) -> np.ndarray:
    """One feed value as a native-order numpy array; InputError naming the input when it is not
    something an input can hold."""
    try:
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
    except Exception as exc:  # ragged nested lists, objects numpy cannot convert...
        raise InputError(f"cannot be turned into an array: {type(exc).__name__}: {exc}", input=name) from None
    if array.dtype == object:
        bad = next((v for v in array.flat if not isinstance(v, (str, bytes))), None)
        if bad is not None:
            raise InputError(f"holds {type(bad).__name__} objects; expected numbers, bools or strings",
                             input=name)
    elif array.dtype.kind not in "biufcUS" and array.dtype.name not in _EXTRA_DTYPES:
        raise InputError(f"has dtype {array.dtype}, which no model input can take", input=name)
    return native_order(array)


#: numpy dtypes of ml_dtypes (bfloat16, float8...) that inputs may have.
_EXTRA_DTYPES = {"bfloat16", "float8_e8m0fnu", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "int4", "uint4",
                 "float4_e2m1fn", "int2", "uint2"}


class FeedChecker:
    """:func:`check_feeds` against inputs fixed once (what a session does on every run): the
    expected names, numpy dtypes and ranks are computed here, and a call whose feeds are already
    native-order arrays of exactly those dtypes and ranks returns them after one pass of identity
    checks (microseconds matter on small models); anything else takes the full check."""

    def __init__(self, expected_inputs: Sequence[Any], *, argument: str = "feeds"):
        self._expected_inputs = list(expected_inputs)
        self._argument = argument
        fast = []
        for name, dtype, shape, tensor in _expected(self._expected_inputs):
            if not tensor or dtype in (None, "string") or shape is None:
                fast = None
                break
            fast.append((name, np.dtype(_numpy_dtype(dtype)), len(shape)))
        self._fast = fast

    def __call__(self, feeds: Any) -> dict[str, np.ndarray]:
        fast = self._fast
        if fast is not None and type(feeds) is dict and len(feeds) == len(fast):
            for name, dtype, rank in fast:
                value = feeds.get(name)
                if type(value) is not np.ndarray or value.dtype != dtype or value.ndim != rank \
                        or not value.dtype.isnative:
                    break
            else:
                return feeds
        return check_feeds(feeds, self._expected_inputs, argument=self._argument)


def check_feeds(feeds: Any, expected_inputs: Sequence[Any], *, argument: str = "feeds") -> dict[str, np.ndarray]:
    """``feeds`` checked against ``expected_inputs`` (input names, NodeArg-likes with ``name``,
    ``dtype``, ``shape``, or ``(name, TensorType)`` pairs); returns ``{name: native-order array}``."""
    if not isinstance(feeds, Mapping):
        raise ArgumentError(f"expected a mapping {{input name: array}}, got {type(feeds).__name__}"
                            + (" (pass a dict: {name: array})" if isinstance(feeds, (list, tuple)) else ""),
                            argument=argument)
    expected = _expected(expected_inputs)
    names = [name for name, _, _, _ in expected]
    bad_keys = [k for k in feeds if not isinstance(k, str)]
    if bad_keys:
        raise ArgumentError(f"input names must be strings, got {bad_keys[0]!r}", argument=argument)
    unknown = sorted(set(feeds) - set(names))
    if unknown:
        raise InputError(f"unknown input(s) {unknown}; the model's inputs are {names}")
    missing = [n for n in names if n not in feeds]
    if missing:
        raise InputError(f"missing input(s) {missing}")
    checked = {}
    for name, dtype, shape, tensor in expected:
        if not tensor:
            checked[name] = feeds[name]
            continue
        array = as_array(name, feeds[name])
        if dtype not in (None, "string") and array.dtype != np.dtype(_numpy_dtype(dtype)):
            raise InputError(f"expected dtype {dtype}, got {array.dtype}", input=name)
        if shape is not None and array.ndim != len(shape):
            raise InputError(f"expected shape {list(shape)}, got {list(array.shape)} (rank {len(shape)} vs "
                             f"{array.ndim})", input=name)
        checked[name] = array
    return checked


def _numpy_dtype(dtype: str):
    from dcopt.ir import dtypes

    return dtypes.to_numpy(dtype) if dtypes.is_dtype_name(dtype) else dtype
