"""Specialize a graph to concrete sizes before code generation.

Why: generated kernels, buffer plans and BLAS calls all want static shapes, while imported
models carry symbolic dims (``N``) and transients whose shapes shape inference could not pin
down. Rather than re-deriving shape rules for every op, we run the reference executor (the
ground truth) once on random inputs of the bound sizes and read every container's concrete
type off the values. Shape arithmetic then folds away (``Shape -> Gather -> Concat ->
Reshape`` chains collapse once ``Shape`` sees a static type).

Inputs whose values decide sizes are constants by now (:mod:`dcopt.ir.specialization`); values
sized by data contents (NonZero's output and everything computed from it) are left with unknown
shapes, never the example's: they run as dynamic steps.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dcopt.errors import UnsupportedError
from dcopt.ir.executor import run_graph
from dcopt.ir.graph import Graph
from dcopt.ir.groups import is_group, ungroup
from dcopt.ir.types import TensorType

def input_bindings(graph: Graph, dims: Mapping[str, int] | None = None) -> dict[str, int]:
    """Symbol -> size for every symbolic input dim (unbound symbols default to 1: batch 1)."""
    bindings = {}
    for name in graph.inputs:
        for d in graph.containers[name].type.shape or ():
            if isinstance(d, str):
                bindings[d] = int((dims or {}).get(d, 1))
    return bindings


def concrete_input_shapes(graph: Graph, bindings: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name in graph.inputs:
        t = graph.containers[name].type
        if t.shape is None or any(d is None for d in t.shape):
            raise UnsupportedError(f"input '{name}' has unknown dims {t.shape_str()}; pass its shape", input=name)
        shapes[name] = tuple(bindings.get(d, d) if isinstance(d, str) else d for d in t.shape)
    return shapes


def specialize(graph: Graph, bindings: Mapping[str, int],
               example_feeds: Mapping[str, np.ndarray] | None = None) -> Graph:
    """A copy of ``graph`` where every container has the concrete type it takes at ``bindings``.

    ``example_feeds`` (real inputs of those sizes) are used when given: inputs that carry sizes
    or indices (frontends pass symbolic sizes as int64 inputs) then hold consistent values."""
    from dcopt.ir.feeds import random_inputs
    from dcopt.ir.specialization import dynamic_values

    flat = ungroup(graph.copy())
    if example_feeds is not None:
        feeds = {k: np.asarray(v) for k, v in example_feeds.items() if k in flat.inputs}
    else:
        feeds = random_inputs(flat, seed=0, bindings=dict(bindings))
        # Integer inputs are usually indices (token ids into a 2-row type embedding...): zeros are
        # valid for every table, and sizes here never depend on values (checked above).
        feeds = {k: np.zeros_like(v) if v.dtype.kind in "iu" else v for k, v in feeds.items()}
    wanted = list(dict.fromkeys(o for n in flat.nodes for o in n.outputs if o))
    values = run_graph(flat, feeds, outputs=wanted + [o for o in flat.outputs if o not in wanted])
    values.update(feeds)
    out = graph.copy()
    _retype(out, values)
    for name in dynamic_values(flat):  # sized by data at run time: not from this feed
        c = out.containers.get(name)
        if c is not None and isinstance(c.type, TensorType):
            c.type = TensorType(c.type.dtype, None)
    return out


def _retype(graph: Graph, values: Mapping[str, np.ndarray]) -> None:
    for name, c in graph.containers.items():
        value = values.get(name)
        if isinstance(value, np.ndarray) and c.data is None:
            c.type = TensorType.of(value) if value.dtype != object else c.type
    for node in graph.nodes:
        if is_group(node):
            _retype(node.attrs["body"], values)
