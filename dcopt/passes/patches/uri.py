"""Patch URIs: ``name?param=value&other=value``, parsed and checked before anything runs.

* Values are typed by the patch's :class:`~dcopt.passes.patches.registry.Param` declarations:
  ``ratio=0.25`` is a float, ``ends=Relu,Concat`` a list, ``bump_opset=false`` a bool; a bool
  given without a value (``?keep_bias``) is true.
* Characters with a meaning in the syntax (``&``, ``=``, ``?``, ``;``, ``%``) are written
  percent-encoded in values; :func:`format_uri` does so, which is what makes the ``;``-joined
  patch history in a model's metadata unambiguous.
* Every mistake is reported with what is valid: an unknown patch lists the patch names, an
  unknown or mistyped parameter lists the patch's parameters with their types and choices.
* Values are held to what a patch can use (:func:`value_problem`): numbers in ASCII digits, ints
  within int64, floats finite and written with no more digits than a float64 keeps (a 40-digit
  ``ratio=`` would silently become another number), lists with at least one non-empty item
  (``ends=`` is not "no ends"), no control characters.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote, unquote

from dcopt.passes.patches.registry import Patch, PatchError, get_patch

__all__ = ["PatchCall", "PatchURIError", "format_uri", "make_call", "parse_uri"]

_SAFE = ",.-_:/+*[]()"  # kept as is in values; everything else special is percent-encoded


class PatchURIError(PatchError, ValueError):
    """A patch URI that names no patch, an unknown parameter, or a value of the wrong type."""


@dataclass(frozen=True)
class PatchCall:
    """A patch with its resolved arguments (defaults filled in); ``given`` holds only what the
    URI (or caller) said explicitly, which is what :attr:`uri` and the patch history record."""

    patch: Patch
    args: Mapping[str, Any]
    given: Mapping[str, Any]

    @property
    def uri(self) -> str:
        return format_uri(self.patch, self.given)

    def __str__(self) -> str:
        return self.uri


def params_help(p: Patch) -> str:
    if not p.params:
        return f"patch '{p.name}' takes no parameters"
    return f"parameters of '{p.name}': " + "; ".join(param.describe() for param in p.params)


INT64 = (-(2**63), 2**63 - 1)
#: Significant digits a float64 round-trips (more are silently lost).
FLOAT_DIGITS = 17
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def text_problem(param, raw: str) -> str:
    """What is wrong with the text of a value that Python would still read as a number ('' when
    nothing; text that is no number at all is left to the parameter's own message): numbers must
    be plain ASCII (Python's int() also takes '1_000' and Arabic-Indic digits), floats no longer
    than a float64 holds."""
    if param.scalar not in (int, float):
        return ""
    for item in (raw.split(",") if param.is_list else [raw]):
        item = item.strip()
        try:
            param.scalar(item)
        except ValueError:
            continue  # not a number: the parameter says what it expected
        words = ("nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity")
        if not _NUMBER.fullmatch(item) and item.lower() not in words:
            return f"'{item[:40]}' is not a plain number (ASCII digits, no '_')"
        if param.scalar is float and _NUMBER.fullmatch(item):
            mantissa = re.split(r"[eE]", item)[0]
            digits = re.sub(r"[^0-9]", "", mantissa).lstrip("0")
            if len(digits.rstrip("0") if "." in mantissa else digits) > FLOAT_DIGITS:
                return (f"'{item[:40]}{'...' if len(item) > 40 else ''}' has more significant digits than a float64 "
                        f"keeps ({FLOAT_DIGITS}); it would silently become another number")
    return ""


def value_problem(param, value) -> str:
    """What is wrong with a typed value ('' when nothing): ints within int64, finite floats,
    non-empty lists of non-empty items, no control characters in text."""
    if param.is_list:
        if not value:
            return "needs at least one value (an empty list is not accepted)"
        items = value
    else:
        items = [value]
    for item in items:
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not INT64[0] <= item <= INT64[1]:
            return f"{item} does not fit in int64"
        if isinstance(item, float) and not math.isfinite(item):
            return f"{item} is not a finite number"
        if isinstance(item, str):
            if param.is_list and not item.strip():
                return "has an empty item"
            if _CONTROL.search(item):
                return f"{item!r} contains control characters"
    return ""


def parse_uri(text: str) -> PatchCall:
    """``"swap_activation?from=Relu&to=Gelu"`` -> a checked :class:`PatchCall`."""
    if not isinstance(text, str) or not text.strip():
        raise PatchURIError(f"empty patch URI {text!r}; expected name?param=value&...")
    name, _, query = text.strip().partition("?")
    p = get_patch(unquote(name.strip()))
    given: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, has_value, raw = part.partition("=")
        key = unquote(key.strip())
        param = p.param(key)
        if param is None:
            raise PatchURIError(f"in '{text}': patch '{p.name}' has no parameter '{key}'; {params_help(p)}")
        if key in given:
            raise PatchURIError(f"in '{text}': parameter '{key}' is given twice")
        if not has_value:
            if param.scalar is not bool or param.is_list:
                raise PatchURIError(f"in '{text}': parameter '{key}' needs a value ({key}=<{param.type_name()}>)")
            raw = "true"
        try:
            value = unquote(raw, errors="strict")
            problem = text_problem(param, value)
            if problem:
                raise ValueError(problem)
            given[key] = param.parse(value)
            problem = value_problem(param, given[key])
            if problem:
                raise ValueError(problem)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PatchURIError(f"in '{text}': parameter '{key}' of patch '{p.name}': {exc}; "
                                f"{params_help(p)}") from None
    return _resolve(p, given, text)


def make_call(patch: str | Patch, given: Mapping[str, Any] | None = None) -> PatchCall:
    """The Python-API form of :func:`parse_uri`: values are Python objects, checked the same way."""
    p = patch if isinstance(patch, Patch) else get_patch(patch)
    typed = {}
    for key, value in dict(given or {}).items():
        param = p.param(key)
        if param is None:
            raise PatchURIError(f"patch '{p.name}' has no parameter '{key}'; {params_help(p)}")
        try:
            typed[key] = param.coerce(value)
            problem = value_problem(param, typed[key])
            if problem:
                raise ValueError(problem)
        except ValueError as exc:
            raise PatchURIError(f"parameter '{key}' of patch '{p.name}': {exc}; {params_help(p)}") from None
    return _resolve(p, typed, p.name)


def _resolve(p: Patch, given: dict[str, Any], text: str) -> PatchCall:
    try:
        args = p.resolve(given)
    except ValueError as exc:
        raise PatchURIError(f"in '{text}': {exc}; {params_help(p)}") from None
    return PatchCall(p, args, given)


def format_uri(patch: Patch | str, given: Mapping[str, Any]) -> str:
    """The canonical text of a call: parameters in declaration order, values percent-encoded."""
    p = patch if isinstance(patch, Patch) else get_patch(patch)
    parts = [f"{param.name}={quote(param.format(given[param.name]), safe=_SAFE)}"
             for param in p.params if param.name in given]
    return p.name + ("?" + "&".join(parts) if parts else "")
