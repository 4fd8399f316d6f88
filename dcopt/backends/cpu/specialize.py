"""Specialize a graph to concrete sizes before code generation.

Why: generated kernels, buffer plans and library calls want static shapes, while imported models
carry symbolic dims (``N``). The sizes come from each op's shape rule (:mod:`dcopt.ops.shapes`,
through :func:`dcopt.ir.shape_inference.infer`, which folds shape arithmetic on the way:
``Shape -> Gather -> Concat -> Reshape`` chains become constants) -- milliseconds for BERT, where
the old way, a full reference run on random inputs, took seconds and specialized value-dependent
sizes from random data.

Inputs whose values decide sizes are constants by now (:mod:`dcopt.ir.specialization`); values
sized by data contents (NonZero's output and everything computed from it) are left with unknown
shapes, never the example's: they run as dynamic steps.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dcopt.errors import UnsupportedError
from dcopt.ir.graph import Graph
from dcopt.ir.types import TensorType

def input_bindings(graph: Graph, dims: Mapping[str, int] | None = None) -> dict[str, int]:
    """Symbol -> size for every symbolic input dim (unbound symbols default to 1: batch 1). A
    size given for a symbol no input has is an error (a typo would silently compile batch 1)."""
    bindings = {}
    for name in graph.inputs:
        for d in graph.containers[name].type.shape or ():
            if isinstance(d, str):
                bindings[d] = int((dims or {}).get(d, 1))
    check_dim_names(dims or {}, bindings)
    return bindings


def check_dim_names(given: Mapping[str, int], known, argument: str = "dims") -> None:
    """ArgumentError naming each given dim that is not one of ``known`` and listing the model's."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        from dcopt.errors import ArgumentError

        have = f"its symbolic dims are {', '.join(sorted(known))}" if known else "it has no symbolic dims"
        raise ArgumentError(f"the model has no symbolic dim {', '.join(repr(u) for u in unknown)}; {have}",
                            argument=argument)


def concrete_input_shapes(graph: Graph, bindings: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name in graph.inputs:
        t = graph.containers[name].type
        if t.shape is None or any(d is None for d in t.shape):
            raise UnsupportedError(f"input '{name}' has unknown dims {t.shape_str()}; pass its shape", input=name)
        shapes[name] = tuple(bindings.get(d, d) if isinstance(d, str) else d for d in t.shape)
    return shapes


def specialize(graph: Graph, bindings: Mapping[str, int],
               example_feeds: Mapping[str, np.ndarray] | None = None, keep: frozenset = frozenset()) -> Graph:
    """A copy of ``graph`` where every container has the concrete type it takes at ``bindings``,
    from dcopt's own shape rules (:mod:`dcopt.ir.shape_inference`): no model run, no ONNX round
    trip. Symbolic dims of inputs given in ``example_feeds`` take those feeds' sizes. Values whose
    sizes follow from data contents (NonZero's output and what is computed from it) keep unknown
    shapes: they run as dynamic steps.

    ``keep``: input symbols left symbolic (a build for every size of them): types over them keep
    exact polynomial dims (``N*S``), and shape arithmetic over them folds to symbolic values."""
    from dcopt.ir.shape_inference import infer

    out = graph.copy()
    bindings = {k: v for k, v in bindings.items() if k not in keep}
    for name in out.inputs:  # example inputs decide the sizes they have
        t, feed = out.containers[name].type, (example_feeds or {}).get(name)
        if feed is not None and isinstance(t, TensorType) and t.shape is not None:
            bindings.update((d, int(n)) for d, n in zip(t.shape, np.shape(feed)) if isinstance(d, str) and d not in keep)
    report = infer(out, bindings)
    if report.missing_rules:
        raise UnsupportedError(f"ops dcopt can neither run nor size (no reference implementation, no shape rule): "
                               f"{sorted(report.missing_rules)}")
    unknown_to_dynamic(out, keep)
    return out


def unknown_to_dynamic(graph: Graph, keep: frozenset = frozenset()) -> None:
    """Types that are still not static (their sizes follow from data contents: fresh symbols of the
    shape rules) become unknown-shaped: sized at run time, by dynamic steps. Types whose dims are
    polynomials over the ``keep`` symbols stay: their sizes are known once a run binds those."""
    for c in graph.containers.values():
        if isinstance(c.type, TensorType) and c.type.shape is not None and not c.type.is_static and not (
                keep and over_symbols(c.type.shape, keep)):
            c.type = TensorType(c.type.dtype, None)
    for node in graph.nodes:
        for body in node.subgraphs:
            unknown_to_dynamic(body, keep)


def over_symbols(shape, symbols) -> bool:
    """Whether every dim of ``shape`` is an int or a function of ``symbols`` only (``N*S``,
    ``min(512,S)``; no unknown, no fresh symbol): sized once those are bound."""
    from dcopt.ops.shapes.dims import substitute

    probe = {s: 1 for s in symbols}
    return all(isinstance(d, int) or (isinstance(d, str) and isinstance(substitute(d, probe), int))
               for d in shape)
