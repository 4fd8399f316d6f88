"""Typed patch parameters: what a URI's ``name=value`` pairs are checked and converted against.

A :class:`Param` has a name, a type (str, int, float, bool, or a list of one of those, written
comma-separated), a default (or :data:`REQUIRED`), a doc line, optional enum ``choices`` and an
optional further ``check``. Every way a value can be wrong produces a message that says what
was expected, so URI errors can list what is valid.
"""

from __future__ import annotations

import difflib
import keyword
import re
from dataclasses import dataclass
from typing import Any, Callable, get_args, get_origin

from dcopt.passes.match import describe_check

__all__ = ["NAME", "REQUIRED", "Param"]

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")  # patch and parameter names: no URI syntax characters
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_SCALARS = {str: "str", int: "int", float: "float", bool: "bool"}


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # default of a parameter that has none: the URI must give it


@dataclass(frozen=True)
class Param:
    """One typed parameter of a patch.

    ``type`` is ``str``, ``int``, ``float``, ``bool`` or ``list[...]`` of one of those (written
    comma-separated in a URI). ``choices`` makes a str (or list[str]) an enum. ``check`` is a
    further predicate on the parsed value; wrap it in :class:`~dcopt.passes.match.Predicate` so
    the error can say what it wanted (``Predicate(lambda r: 0 < r < 1, "0 < ratio < 1")``).
    """

    name: str
    type: Any = str
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple | None = None
    check: Callable[[Any], bool] | None = None

    def __post_init__(self):
        if not NAME.match(self.name):
            raise ValueError(f"bad parameter name {self.name!r}: use letters, digits and _")
        if self.scalar not in _SCALARS or (get_origin(self.type) not in (None, list)):
            raise TypeError(f"parameter '{self.name}': type must be str, int, float, bool or a list of one, "
                            f"not {self.type!r}")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.default is not REQUIRED:
            problem = self._problem(self.default)
            if problem:
                raise ValueError(f"parameter '{self.name}': default {self.default!r} is invalid: {problem}")

    @property
    def is_list(self) -> bool:
        return get_origin(self.type) is list

    @property
    def scalar(self) -> type:
        return get_args(self.type)[0] if get_origin(self.type) is list else self.type

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def py_name(self) -> str:
        """The keyword the patch function receives (``from`` -> ``from_``)."""
        return self.name + "_" if keyword.iskeyword(self.name) else self.name

    def type_name(self) -> str:
        """``int``, ``list[str]``, ``enum(Relu|Gelu)``, ``list[enum(a|b)]``."""
        base = f"enum({'|'.join(map(str, self.choices))})" if self.choices else _SCALARS[self.scalar]
        return f"list[{base}]" if self.is_list else base

    def describe(self) -> str:
        default = "" if self.required else f" = {self.format(self.default)}"
        return f"{self.name}: {self.type_name()}{default}" + (" (required)" if self.required else "")

    # -- values ---------------------------------------------------------------------------------
    def parse(self, text: str) -> Any:
        """A URI value -> a typed value; ValueError saying what was expected."""
        if self.is_list:
            items = [t.strip() for t in text.split(",")] if text.strip() else []
            value = [self._parse_scalar(t) for t in items]
        else:
            value = self._parse_scalar(text.strip())
        return self.coerce(value)

    def coerce(self, value: Any) -> Any:
        """A Python value (from the API or a default) -> the checked, normalized value."""
        if self.is_list and isinstance(value, tuple):
            value = list(value)
        if self.scalar is float and not self.is_list and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.scalar is float and self.is_list and isinstance(value, list):
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        problem = self._problem(value)
        if problem:
            raise ValueError(problem)
        return value

    def _parse_scalar(self, text: str) -> Any:
        want = self.scalar
        if want is str:
            return text
        if want is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError(f"expected a bool (true/false), got '{text}'")
        try:
            return want(text)
        except ValueError:
            raise ValueError(f"expected {'an' if want is int else 'a'} {_SCALARS[want]}, got '{text}'") from None

    def _problem(self, value: Any) -> str:
        items = value if self.is_list else [value]
        if self.is_list and not isinstance(value, list):
            return f"expected a list of {_SCALARS[self.scalar]}, got {value!r}"
        for item in items:
            if type(item) is not self.scalar:
                return f"expected {self.type_name()}, got {item!r}"
            if self.choices is not None and item not in self.choices:
                close = difflib.get_close_matches(str(item), [str(c) for c in self.choices], n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                return f"'{item}' is not one of {', '.join(map(str, self.choices))}{hint}"
        if self.check is not None and not self.check(value):
            return f"{self.format(value)} fails {describe_check(self.check)}"
        return ""

    def format(self, value: Any) -> str:
        if isinstance(value, list):
            return ",".join(self.format(v) for v in value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):  # shortest text that reads back the same: 3.0 -> "3", 1e-05 -> "1e-05"
            text = f"{value:g}"
            return text if float(text) == value else repr(value)
        return str(value)
