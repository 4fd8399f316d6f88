"""The op registry: one line per op, reference semantics in numpy.

An op's reference implementation is a plain function taking input arrays positionally and
attributes as keyword arguments::

    @reference("LeakyRelu")
    def leaky_relu(x, *, alpha):
        return np.where(x >= 0, x, x * alpha).astype(x.dtype)

The wrapper does the shared work once, for every op: it fills attribute defaults from the ONNX
schema of the node's opset (so ``alpha`` is always set), passes ``opset=`` when the function
asks for it, drops omitted optional inputs at the end of the argument list (passing ``None``
for ones in the middle), passes ``n_outputs=`` (how many outputs the node wires) to functions
that declare it, and normalizes the result to a tuple of ndarrays.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx.defs
from onnx import helper

from dcopt.errors import UnsupportedError


@dataclass(frozen=True)
class OpDef:
    name: str
    domain: str
    impl: Callable[..., Any]
    accepts: frozenset[str] | None  # keyword names accepted; None = takes **kwargs
    wants_opset: bool
    wants_graph: bool  # subgraph-executing ops get a callback to run subgraphs
    wants_n_outputs: bool  # variadic-output ops (Split) learn how many outputs the node wires


_REGISTRY: dict[tuple[str, str], OpDef] = {}


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def reference(*names: str, domain: str = ""):
    """Register a numpy reference implementation for one or more op names."""

    def register(fn):
        sig = inspect.signature(fn)
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        accepts = None if has_var_kw else frozenset(
            p.name for p in sig.parameters.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        for name in names:
            _REGISTRY[(_norm_domain(domain), name)] = OpDef(
                name, _norm_domain(domain), fn, accepts, "opset" in sig.parameters, "run_subgraph" in sig.parameters,
                "n_outputs" in sig.parameters,
            )
        return fn

    return register


def _load_all() -> None:
    """Import every module that registers ops (done lazily to keep `import dcopt` cheap)."""
    from dcopt.ops import catalog  # noqa: F401  (imports the op modules)


@functools.lru_cache(maxsize=None)
def _ensure_loaded() -> bool:
    _load_all()
    return True


def lookup(op: str, domain: str = "") -> OpDef | None:
    _ensure_loaded()
    return _REGISTRY.get((_norm_domain(domain), op))


def registered_ops() -> list[tuple[str, str]]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def is_supported(op: str, domain: str = "") -> bool:
    return lookup(op, domain) is not None


@functools.lru_cache(maxsize=None)
def schema_defaults(op: str, domain: str, opset: int) -> dict[str, Any]:
    """Default attribute values from the ONNX schema valid at ``opset``; {} if unknown."""
    try:
        schema = onnx.defs.get_schema(op, opset, domain)
    except Exception:  # not an ONNX op (custom domain) or not defined at that opset
        return {}
    defaults = {}
    for name, attr in schema.attributes.items():
        if attr.default_value is not None and attr.default_value.type != 0:
            value = helper.get_attribute_value(attr.default_value)
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, list):
                value = tuple(value)
            defaults[name] = value
    return defaults


def call(opdef: OpDef, inputs: list[np.ndarray | None], attrs: dict[str, Any], opset: int,
         run_subgraph: Callable | None = None, n_outputs: int = 1) -> tuple[np.ndarray, ...]:
    """Run an op's reference implementation with defaults filled and results normalized."""
    kwargs = dict(schema_defaults(opdef.name, opdef.domain, opset))
    kwargs.update((k, v) for k, v in attrs.items() if not k.startswith("dcopt."))  # schedule props: dcopt.ir.schedule
    if opdef.accepts is not None:
        unknown = set(kwargs) - opdef.accepts
        for name in unknown:
            if name in attrs:
                raise UnsupportedError(f"attribute '{name}' of {opdef.name} is not supported by the reference executor")
            kwargs.pop(name)
    if opdef.wants_opset:
        kwargs["opset"] = opset
    if opdef.wants_graph:
        kwargs["run_subgraph"] = run_subgraph
    if opdef.wants_n_outputs:
        kwargs["n_outputs"] = n_outputs
    args = list(inputs)
    while args and args[-1] is None:
        args.pop()
    result = opdef.impl(*args, **kwargs)
    if not isinstance(result, (tuple, list)):
        result = (result,)
    return tuple(r if r is None or isinstance(r, (np.ndarray, list)) else np.asarray(r) for r in result)
