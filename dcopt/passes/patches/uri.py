"""Patch URIs: ``name?param=value&other=value``, parsed and checked before anything runs.

* Values are typed by the patch's :class:`~dcopt.passes.patches.registry.Param` declarations:
  ``ratio=0.25`` is a float, ``ends=Relu,Concat`` a list, ``bump_opset=false`` a bool; a bool
  given without a value (``?keep_bias``) is true.
* Characters with a meaning in the syntax (``&``, ``=``, ``?``, ``;``, ``%``) are written
  percent-encoded in values; :func:`format_uri` does so, which is what makes the ``;``-joined
  patch history in a model's metadata unambiguous.
* Every mistake is reported with what is valid: an unknown patch lists the patch names, an
  unknown or mistyped parameter lists the patch's parameters with their types and choices.
"""

from __future__ import annotations

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
            given[key] = param.parse(unquote(raw))
        except ValueError as exc:
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
