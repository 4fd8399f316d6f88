"""The parameters a step takes, as form fields for the page, and the step a filled form makes.

Two kinds of steps take parameters: patches declare theirs (:class:`~dcopt.passes.patches.Param`)
and passes registered as a factory take keyword options (``get_pass("fuse", min_saving=4096)``).
Both are described with the same :class:`Param` type -- a pass's options are read from its
factory's signature, keeping those with a plain scalar default (int, float, bool, str), since
only those can be typed into a field and written back into a pipeline file -- so one parser and
one formatter serve both, and the page draws one kind of form.

A filled form becomes a canonical step: a patch URI written by
:func:`~dcopt.passes.patches.format_uri` (values checked by the patch's own parameters), or a pass
with typed options. Empty fields and values equal to the default are left out, so a form left
as it is gives the plain step.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Mapping

from dcopt.errors import InputError
from dcopt.passes.patches.params import Param
from dcopt.view.stages import Step

_SCALARS = (bool, int, float, str)  # bool first: it is an int too


def describe(params) -> list[dict]:
    """Form fields of ``params``: name, type, default (as text), doc, choices, required."""
    return [{"name": p.name, "type": p.type_name(), "default": None if p.required else p.format(p.default),
             "doc": p.doc, "choices": [str(c) for c in p.choices] if p.choices else None,
             "required": p.required, "bool": p.scalar is bool and not p.is_list} for p in params]


@lru_cache(maxsize=None)
def pass_options(name: str) -> tuple[Param, ...]:
    """The options of registered pass ``name`` that a form can set (none for a pass instance)."""
    from dcopt.passes.base import _PASSES, Pass, available_passes, resolve_name

    available_passes()
    factory = _PASSES.get(resolve_name(name))
    if factory is None or isinstance(factory, Pass):
        return ()
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return ()
    out = []
    for p in signature.parameters.values():
        kind = next((t for t in _SCALARS if type(p.default) is t), None)
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or kind is None:
            continue
        out.append(Param(p.name, kind, p.default, _doc_line(factory, p.name)))
    return tuple(out)


def _doc_line(factory, option: str) -> str:
    """The line of the factory's docstring that mentions ``option`` (``min_saving``: ...), if any."""
    doc = inspect.getdoc(factory) or ""
    for line in doc.splitlines():
        if f"``{option}``" in line or line.strip().startswith(option + ":") or line.strip().startswith(option + " "):
            return line.strip()
    return ""


def options_of(pass_: object) -> tuple[tuple[str, object], ...]:
    """The options a pass object of a pipeline file was built with, as far as it keeps them
    (most store each option under its own name): those that differ from the default. What an
    object does not keep cannot be read back; it shows (and exports) as the plain pass."""
    out = []
    for p in pass_options(getattr(pass_, "name", "")):
        value = getattr(pass_, p.name, p.default)
        if type(value) is type(p.default) and value != p.default:
            out.append((p.name, value))
    return tuple(out)


def all_pass_options(names) -> dict[str, list[dict]]:
    """Pass name -> its form fields, for the passes that have any."""
    return {n: describe(pass_options(n)) for n in names if pass_options(n)}


def step_from_form(kind: str, spec: str, values: Mapping[str, str] | None) -> Step:
    """The step a form gives: ``spec`` with the non-empty, non-default ``values`` (text) applied."""
    values = {k: v for k, v in (values or {}).items() if v is not None and str(v).strip() != ""}
    if kind == "patch":
        return Step("patch", _patch_uri(spec, values) if values else spec)
    if not values:
        return Step("pass", spec)
    options = {p.name: p for p in pass_options(spec)}
    unknown = sorted(set(values) - set(options))
    if unknown:
        raise InputError(f"pass '{spec}' has no option {', '.join(map(repr, unknown))}; its options: "
                         f"{', '.join(p.describe() for p in options.values()) or 'none'}")
    typed = []
    for name, param in options.items():  # declaration order: the label and the file read the same every time
        if name in values:
            try:
                value = param.parse(str(values[name]))
            except ValueError as exc:
                raise InputError(f"option '{name}' of pass '{spec}': {exc}") from None
            if value != param.default:
                typed.append((name, value))
    return Step("pass", spec, options=tuple(typed))


def _patch_uri(spec: str, values: Mapping[str, str]) -> str:
    from dcopt.passes.patches import format_uri, get_patch, parse_uri

    name = spec.partition("?")[0].strip()
    patch = get_patch(name)
    given = dict(parse_uri(spec).given) if "?" in spec else {}  # what the spec said; the form's fields win
    for key, text in values.items():
        param = patch.param(key)
        if param is None:
            raise InputError(f"patch '{name}' has no parameter '{key}'; its parameters: "
                             f"{', '.join(p.describe() for p in patch.params) or 'none'}")
        given[key] = text if isinstance(text, str) else param.format(text)
    text_given = {k: (v if isinstance(v, str) else patch.param(k).format(v)) for k, v in given.items()}
    defaults = {p.name: p.format(p.default) for p in patch.params if not p.required}
    kept = {k: v for k, v in text_given.items() if defaults.get(k) != v}
    return parse_uri(format_uri(patch, kept)).uri  # parsed again: every value checked by the patch's own parameters
