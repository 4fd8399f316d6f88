"""Patches: named, parameterized rewrites, their typed parameters, and where they come from.

Like PyGlove's symbolic patching, a patch is written once by someone who knows an idea ("fold
BatchNorm into the conv before it", "put squeeze-excitation after every stage") and applied by
anyone, by name, to models its author never saw::

    @patch("swap_activation", kind="idea", params=[
        Param("from", str, "Relu", "activation to replace", choices=ACTIVATIONS),
        Param("to", str, "Gelu", "activation to put in its place", choices=ACTIVATIONS)])
    def swap_activation(graph, *, from_, to):
        \"\"\"Replace every `from` activation by `to`.\"\"\"
        return RuleSet([...])

Parameters are declared explicitly (not read from type hints) because URIs want names that are
Python keywords (``from``) and types a hint cannot carry (enum choices, range checks). A
parameter whose name is a keyword reaches the function with a trailing underscore.

A patch function edits the graph it is given, in place, and returns either rewrite rules (the
framework applies them and collects matches and refusals) or a :class:`PatchOutcome`.

Patches come from three places, looked up the first time the registry is asked for a name:
dcopt's own modules (:data:`BUILTIN_PATCH_MODULES`), installed packages that declare an entry
point in the group ``dcopt.patches`` (a module, a :class:`Patch`, or a list of patches), and
Python files a user names (:func:`load_patch_file`, ``--patch-file``).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from dcopt.errors import DcoptError
from dcopt.ir.graph import Graph
from dcopt.passes.patches.params import NAME, REQUIRED, Param
from dcopt.passes.rewrite import Application, Refusal, RewriteReport, RewriteRule, RuleSet, apply_rules

__all__ = [
    "BUILTIN_PATCH_MODULES", "ENTRY_POINT_GROUP", "KINDS", "REQUIRED", "Param", "Patch", "PatchError",
    "PatchOutcome", "UnknownPatchError", "available_patches", "discovery_errors", "get_patch",
    "load_entry_points", "load_patch_file", "patch", "register_patch", "unregister_patch",
]

#: How a patch relates to the model it changes; decides its default validator.
#: exact: computes the same function (checked numerically, fp32 tolerances);
#: approximate: the same function up to a documented tolerance (checked numerically, looser);
#: idea: changes the model on purpose (checked structurally: same outputs, valid, runs).
KINDS = ("exact", "approximate", "idea")

ENTRY_POINT_GROUP = "dcopt.patches"

#: Modules whose import registers dcopt's built-in patches.
BUILTIN_PATCH_MODULES = [
    "dcopt.passes.patches.batchnorm",
    "dcopt.passes.patches.gelu",
    "dcopt.passes.patches.layernorm",
    "dcopt.passes.patches.cleanup",
    "dcopt.passes.patches.activations",
    "dcopt.passes.patches.skip",
    "dcopt.passes.patches.squeeze_excite",
    "dcopt.passes.patches.cast_weights",
    "dcopt.passes.patches.attention",
]


class PatchError(DcoptError):
    """A patch could not be found, parsed, registered, loaded, applied or validated."""


class UnknownPatchError(PatchError, LookupError):
    """A patch name nothing registered; the message lists the valid names."""


# -- patches ------------------------------------------------------------------------------------


@dataclass
class PatchOutcome:
    """What one application of a patch did: where it matched, where it refused and why, notes
    (an opset bump, what was zeroed), and the patched graph (the input graph, edited in place,
    unless the patch had to rebuild it, e.g. to raise the opset)."""

    graph: Graph
    applications: list[Application] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_rewrites(cls, graph: Graph, report: RewriteReport, notes: Iterable[str] = ()) -> "PatchOutcome":
        return cls(graph, list(report.applications), list(report.refusals), list(notes))

    @property
    def modified(self) -> bool:
        return bool(self.applications)

    def applied(self, rule: str, root: str, nodes: Iterable[str] = ()) -> None:
        self.applications.append(Application(rule, root, tuple(nodes) or (root,), 0))

    def refuse(self, rule: str, root: str, reason: str, depth: int = 1) -> None:
        self.refusals.append(Refusal(rule, root, reason, depth))


@dataclass
class Patch:
    """A registered patch. Calling it applies it in place: ``fold_batchnorm(graph)``."""

    name: str
    fn: Callable[..., Any]
    params: tuple[Param, ...] = ()
    kind: str = "exact"
    doc: str = ""
    validator: Any = None  # see dcopt.passes.patches.validate; None: the kind's default
    sweeps: int = 10  # how many rewrite sweeps when ``fn`` returns rules (1 for additive idea patches)
    check_args: Callable[[dict], str | None] | None = None  # cross-parameter check: a reason or None
    source: str = ""
    needs_constants: bool = False  # its rules match constant operands: fold computed constants first

    @property
    def summary(self) -> str:
        return self.doc.strip().split("\n")[0] if self.doc else ""

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Given values (already typed) plus defaults; ValueError if one is missing or the
        combination is refused by ``check_args``."""
        missing = [p.name for p in self.params if p.required and p.name not in given]
        if missing:
            raise ValueError(f"missing required parameter(s): {', '.join(missing)}")
        args = {p.name: given.get(p.name, p.default) for p in self.params}
        problem = self.check_args(args) if self.check_args else None
        if problem:
            raise ValueError(problem)
        return args

    def run(self, graph: Graph, args: Mapping[str, Any], *, explain: bool = True) -> PatchOutcome:
        """Apply to ``graph`` in place with resolved ``args`` (keyed by parameter name)."""
        result = self.fn(graph, **{p.py_name: args[p.name] for p in self.params})
        if isinstance(result, PatchOutcome):
            return result
        rules = _as_rules(result)
        if rules is None:
            raise PatchError(f"patch '{self.name}' returned {type(result).__name__}; expected rewrite rules "
                             "(RewriteRule, RuleSet, list of rules) or a PatchOutcome")
        notes = _no_candidates(graph, rules)
        report = apply_rules(graph, rules, max_iterations=self.sweeps, explain=explain)
        return PatchOutcome.from_rewrites(graph, report, notes)

    def __call__(self, graph: Graph, **given) -> PatchOutcome:
        """Apply in place from Python, parameters as keywords (``from_`` or ``from``), checked like a URI's."""
        typed = {}
        for key, value in given.items():
            param = next((p for p in self.params if key in (p.name, p.py_name)), None)
            if param is None:
                raise TypeError(f"patch '{self.name}' has no parameter '{key}'")
            typed[param.name] = param.coerce(value)
        return self.run(graph, self.resolve(typed))

    def __repr__(self) -> str:
        return f"<patch {self.name} ({self.kind})>"


def _as_rules(result: Any) -> RuleSet | None:
    if isinstance(result, RuleSet):
        return result
    if isinstance(result, RewriteRule):
        return RuleSet([result])
    if isinstance(result, (list, tuple)) and all(isinstance(r, RewriteRule) for r in result):
        return RuleSet(result)
    return None


def _no_candidates(graph: Graph, rules: RuleSet) -> list[str]:
    """A note when no node could even root one of the rules (so ``--explain`` is not silent)."""
    ops = set()
    for rule in rules:
        roots = rule.pattern.root_ops()
        if roots is None:
            return []
        ops |= roots
    if any(n.op in ops for n in graph.nodes):
        return []
    return [f"no node has op {'/'.join(sorted(ops))}, so there was nothing to try"]


# -- the registry -------------------------------------------------------------------------------

_PATCHES: dict[str, Patch] = {}
_ERRORS: list[str] = []
_discovered = False


def patch(name: str, *, params: Iterable[Param] = (), kind: str = "exact", validator: Any = None,
          sweeps: int | None = None, check_args: Callable[[dict], str | None] | None = None,
          replace: bool = False, needs_constants: bool = False):
    """Decorator: register ``fn(graph, **params)`` as a patch called ``name``; returns the
    :class:`Patch`. The function's docstring is the patch's documentation (first line: summary).
    ``needs_constants``: the patch matches weights as constants, so computed constants (weights
    built by ``ConstantOfShape``/``Reshape`` of constants, as exporters and the ONNX zoo emit
    them) are folded before it runs."""
    if kind not in KINDS:
        raise ValueError(f"patch '{name}': kind must be one of {', '.join(KINDS)}, not {kind!r}")

    def register(fn: Callable) -> Patch:
        declared = tuple(params)
        _check_signature(name, fn, declared)
        p = Patch(name, fn, declared, kind, inspect.getdoc(fn) or "", validator,
                  sweeps if sweeps is not None else (1 if kind == "idea" else 10), check_args,
                  getattr(fn, "__module__", "") or "", needs_constants)
        return register_patch(p, replace=replace)

    return register


def _check_signature(name: str, fn: Callable, params: tuple[Param, ...]) -> None:
    """Catch a declared parameter the function cannot receive (a typo) at registration time."""
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise ValueError(f"patch '{name}' declares a parameter twice: {names}")
    sig = inspect.signature(fn)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    accepted = set(list(sig.parameters)[1:])
    missing = [p.py_name for p in params if p.py_name not in accepted]
    if missing:
        raise TypeError(f"patch '{name}': function {fn.__name__}{sig} does not take declared parameter(s) "
                        f"{', '.join(missing)}")


def register_patch(p: Patch, *, replace: bool = False) -> Patch:
    """Add ``p`` to the registry. A name taken by another source raises unless ``replace``;
    re-registering from the same source (a patch file loaded twice) replaces silently."""
    if not NAME.match(p.name):
        raise ValueError(f"bad patch name {p.name!r}: use letters, digits, '_', '.' and '-'")
    old = _PATCHES.get(p.name)
    if old is not None and not replace and old.source != p.source:
        raise PatchError(f"a patch named '{p.name}' is already registered (by {old.source or 'unknown'}); "
                         "choose another name or pass replace=True")
    _PATCHES[p.name] = p
    return p


def unregister_patch(name: str) -> None:
    _PATCHES.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in BUILTIN_PATCH_MODULES:
        importlib.import_module(module)
    load_entry_points()


def available_patches() -> dict[str, Patch]:
    """Every registered patch, by name (built-ins and installed plugins are loaded first)."""
    _discover()
    return dict(sorted(_PATCHES.items()))


def get_patch(name: str) -> Patch:
    _discover()
    p = _PATCHES.get(name)
    if p is None:
        close = difflib.get_close_matches(name, list(_PATCHES), n=3)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise UnknownPatchError(f"unknown patch '{name}'{hint}; available patches: {', '.join(sorted(_PATCHES))}")
    return p


def discovery_errors() -> list[str]:
    """Plugins (entry points) that failed to load; they are skipped, not fatal."""
    _discover()
    return list(_ERRORS)


def load_entry_points(entry_points: Iterable[Any] | None = None) -> list[str]:
    """Load the ``dcopt.patches`` entry points of installed packages; returns the names of the
    patches they added. An entry point may name a module (importing it registers its patches),
    a :class:`Patch`, or a list of them. A broken plugin is recorded in :func:`discovery_errors`."""
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    added = []
    for ep in entry_points:
        before = dict(_PATCHES)
        try:
            obj = ep.load()
            for item in obj if isinstance(obj, (list, tuple)) else [obj]:
                if isinstance(item, Patch) and _PATCHES.get(item.name) is not item:
                    register_patch(item)
                elif not isinstance(item, (Patch, type(sys))):
                    raise PatchError(f"it names a {type(item).__name__}; expected a module, a Patch or a list of them")
        except Exception as exc:
            _ERRORS.append(f"entry point '{ep.name}' ({ep.value}) of group {ENTRY_POINT_GROUP}: "
                           f"{type(exc).__name__}: {exc}")
            continue
        added += sorted(n for n, p in _PATCHES.items() if before.get(n) is not p)
    return added


def load_patch_file(path: str | Path) -> list[str]:
    """Import a user's Python file so that its ``@patch`` functions register; returns their names.

    The module gets a name derived from the file's absolute path, so loading the same file twice
    replaces its patches instead of clashing with them."""
    from dcopt.passes.user_files import load_user_file

    _discover()
    before = {n: p for n, p in _PATCHES.items()}
    load_user_file(path, "patch file", reload=True, error=PatchError)
    return sorted(n for n, p in _PATCHES.items() if before.get(n) is not p)
