"""The pass contract, the function-pass decorator, and the registry of passes by name.

A pass is an object with a ``name`` and an ``in_place`` flag, called as ``pass_(graph, ctx)``
and returning a :class:`PassResult`. The flag is a promise the framework checks (cheaply, by
node and container identity) on every call unless ``ctx.check_contract`` is off:

* ``in_place=True``: the pass mutates the graph it is given and returns that same object. If it
  reports ``modified=False`` the graph must be unchanged, because fixed-point iteration stops on
  that word.
* ``in_place=False``: the pass leaves its input untouched and returns a new graph (it may return
  the input itself only when it reports ``modified=False``).

Passes are found by name through a registry that users extend without touching dcopt::

    @register_pass
    @function_pass("drop-doc-strings")
    def drop_doc_strings(graph, ctx):
        changed = bool(graph.doc)
        graph.doc = ""
        return changed
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import difflib
import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from dcopt.errors import DcoptError, PassError
from dcopt.ir.graph import Graph

log = logging.getLogger("dcopt.passes")


@dataclass
class PassResult:
    """What a pass returns.

    ``stats`` holds counters for reports (``{"removed": 3}``); ``refusals`` lists
    ``(node label, reason)`` for rewrites that matched but were refused, so that "why did my
    node survive?" has an answer.
    """

    graph: Graph
    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)
    refusals: list[tuple[str, str]] = field(default_factory=list)


class Pass(ABC):
    """Base class of every pass. Subclasses set ``name``/``in_place`` and implement :meth:`run`."""

    name: str = ""
    in_place: bool = True
    description: str = ""

    @abstractmethod
    def run(self, graph: Graph, ctx) -> PassResult:
        """Rewrite ``graph`` (in place when ``in_place``) and say whether it changed."""

    def __call__(self, graph: Graph, ctx=None) -> PassResult:
        if ctx is None:
            from dcopt.passes.context import PassContext

            ctx = PassContext()
        check = getattr(ctx, "check_contract", True)
        before = _Snapshot(graph) if check else None
        result = self.run(graph, ctx)
        if not isinstance(result, PassResult):
            raise PassError(f"pass '{self.name}' returned {type(result).__name__}, not a PassResult")
        if before is not None:
            self._check_contract(graph, before, result)
        return result

    def _check_contract(self, graph: Graph, before: "_Snapshot", result: PassResult) -> None:
        if self.in_place:
            if result.graph is not graph:
                raise PassError(f"pass '{self.name}' declares in_place=True but returned a different graph object")
            if not result.modified:
                what = before.changes(graph)
                if what:
                    raise PassError(f"pass '{self.name}' reported modified=False but changed the graph ({what})")
        else:
            what = before.changes(graph)
            if what:
                raise PassError(f"pass '{self.name}' declares in_place=False but mutated its input graph ({what})")
            if result.graph is graph and result.modified:
                raise PassError(f"pass '{self.name}' declares in_place=False and modified=True "
                                "but returned its input graph")

    def __repr__(self) -> str:
        return f"<pass {self.name}{'' if self.in_place else ' (functional)'}>"


class _Snapshot:
    """References to everything a pass may change, compared by identity (O(size), no copying).

    Nodes are immutable and parameter arrays are treated as immutable (see ``Graph.copy``), so
    identity of nodes, containers, their types and data arrays catches every structural edit.
    """

    def __init__(self, graph: Graph):
        self.nodes = tuple(graph.nodes)
        self.containers = tuple((k, c, c.type, c.data) for k, c in graph.containers.items())
        self.io = (tuple(graph.inputs), tuple(graph.outputs), graph.name, tuple(graph.opset.items()))

    def changes(self, graph: Graph) -> str:
        """'' when ``graph`` matches the snapshot, else what differs."""
        if len(self.nodes) != len(graph.nodes) or any(a is not b for a, b in zip(self.nodes, graph.nodes)):
            return "node list changed"
        now = tuple((k, c, c.type, c.data) for k, c in graph.containers.items())
        if len(now) != len(self.containers) or any(
            a[0] != b[0] or any(x is not y for x, y in zip(a[1:], b[1:])) for a, b in zip(self.containers, now)
        ):
            return "containers changed"
        if self.io != (tuple(graph.inputs), tuple(graph.outputs), graph.name, tuple(graph.opset.items())):
            return "graph inputs/outputs/name/opset changed"
        return ""


class FunctionPass(Pass):
    """A pass written as a function ``fn(graph, ctx)`` (see :func:`function_pass`)."""

    def __init__(self, fn: Callable, name: str, in_place: bool = True, description: str = ""):
        self.fn = fn
        self.name = name
        self.in_place = in_place
        self.description = description or (fn.__doc__ or "").strip().split("\n")[0]

    def run(self, graph: Graph, ctx) -> PassResult:
        out = self.fn(graph, ctx)
        if isinstance(out, PassResult):
            return out
        if isinstance(out, bool):
            return PassResult(graph, out)
        if isinstance(out, dict):
            return PassResult(graph, any(bool(v) for v in out.values()), dict(out))
        raise PassError(f"function pass '{self.name}' returned {type(out).__name__}; "
                        "expected a PassResult, a bool (modified), or a dict of counters")


def function_pass(name: str, *, in_place: bool = True, description: str = ""):
    """Decorator: turn ``fn(graph, ctx)`` into a :class:`Pass`.

    The function may return a :class:`PassResult`, a bool (``modified``), or a dict of counters
    (``modified`` is true when any counter is non-zero). A pass with ``in_place=False`` must
    return a PassResult holding its new graph.
    """

    def wrap(fn: Callable) -> FunctionPass:
        return FunctionPass(fn, name, in_place, description)

    return wrap


# -- registry ---------------------------------------------------------------------------------


class UnknownPassError(DcoptError, LookupError):
    """A pass or pipeline name that nothing registered. The message lists the valid names."""


_PASSES: dict[str, Callable[..., Pass]] = {}
_ALIASES: dict[str, str] = {}

#: Modules whose import registers dcopt's own passes (imported on first registry lookup).
BUILTIN_PASS_MODULES = [
    "dcopt.passes.fold_constants",
    "dcopt.passes.remove_noops",
    "dcopt.passes.cse",
    "dcopt.passes.dce",
    "dcopt.passes.infer_shapes",
    "dcopt.passes.algebraic",
    "dcopt.passes.chains",
    "dcopt.passes.fold_batchnorm",
    "dcopt.passes.recognize",
    "dcopt.passes.expand",
    "dcopt.passes.fuse",
    "dcopt.passes.memory_plan",
    "dcopt.passes.eliminate_transients",
    "dcopt.passes.layout",
    "dcopt.passes.select_impl",
    "dcopt.passes.fuse_epilogues",
    "dcopt.passes.fuse_maps",
    "dcopt.passes.simplify_maps",
    "dcopt.passes.merge_siblings",
    "dcopt.passes.subsample_convs",
    "dcopt.passes.fold_pad",
    "dcopt.passes.kernels",
    "dcopt.passes.collapse_dims",
]
_loaded = False


def _ensure_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_PASS_MODULES:
            importlib.import_module(module)


def register_pass(pass_or_factory=None, *, name: str | None = None, aliases: tuple[str, ...] = (),
                  replace: bool = False):
    """Register a pass under its name (and short aliases). Usable as a decorator.

    Accepts a :class:`Pass` instance (returned as is by :func:`get_pass`) or a Pass subclass /
    factory (called with the options given to :func:`get_pass`). Registering a taken name
    raises unless ``replace=True``.
    """

    def register(obj):
        key = name or getattr(obj, "name", "")
        if not key:
            raise ValueError(f"cannot register {obj!r}: it has no name")
        taken = key in _PASSES or key in _ALIASES
        if taken and not replace:
            raise ValueError(f"a pass named '{key}' is already registered (pass replace=True to override)")
        _PASSES[key] = obj
        for alias in aliases:
            if (alias in _PASSES or alias in _ALIASES) and not replace:
                raise ValueError(f"alias '{alias}' is already taken")
            _ALIASES[alias] = key
        return obj

    return register if pass_or_factory is None else register(pass_or_factory)


def unregister_pass(name: str) -> None:
    """Remove a pass and its aliases (for tests and plugin reloads)."""
    _PASSES.pop(name, None)
    for alias in [a for a, target in _ALIASES.items() if target == name]:
        del _ALIASES[alias]


def resolve_name(name: str) -> str:
    _ensure_builtins()
    return _ALIASES.get(name, name)


def get_pass(name: str, **options) -> Pass:
    """The registered pass called ``name`` (or an alias of it), built with ``options``."""
    key = resolve_name(name)
    obj = _PASSES.get(key)
    if obj is None:
        raise UnknownPassError(unknown_name_message(name, "pass"))
    if isinstance(obj, Pass):
        if options:
            raise TypeError(f"pass '{key}' takes no options (got {sorted(options)})")
        return obj
    return obj(**options)


def available_passes() -> dict[str, tuple[str, ...]]:
    """``{name: aliases}`` of every registered pass, sorted by name."""
    _ensure_builtins()
    return {k: tuple(sorted(a for a, t in _ALIASES.items() if t == k)) for k in sorted(_PASSES)}


def valid_names(extra: dict[str, tuple[str, ...]] | None = None) -> str:
    """'cse, dce, fold-constants (fold), ...': every registered name with its aliases."""
    names = dict(available_passes())
    names.update(extra or {})
    return ", ".join(f"{k} ({', '.join(a)})" if a else k for k, a in sorted(names.items()))


def unknown_name_message(name: str, what: str, extra: dict[str, tuple[str, ...]] | None = None) -> str:
    """"unknown pass 'x' (did you mean ...?); valid names: ..." — shared with the spec parser."""
    names = dict(available_passes())
    names.update(extra or {})
    everything = list(names) + [a for al in names.values() for a in al]
    close = difflib.get_close_matches(name, everything, n=3)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown {what} '{name}'{hint}; valid names: {valid_names(extra)}"
