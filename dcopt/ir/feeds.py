"""Random inputs for a graph, drawn from its input types.

Used wherever dcopt must run a graph without user data: ``dcopt run --random-inputs``, the pass
manager's equivalence checks, patch validation, backend self-checks. Floats are standard normal;
integers lie in [0, 4) so they are valid as small indices or sizes; bools are coin flips.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dcopt.errors import InputError
from dcopt.ir import dtypes
from dcopt.ir.graph import Graph


def random_inputs(graph: Graph, *, seed: int = 0, bindings: Mapping[str, int] | None = None,
                  dim_size: int = 1) -> dict[str, np.ndarray]:
    """One random array per graph input; symbolic dims take ``bindings`` (else ``dim_size``), as do
    unknown dims. An input of unknown rank raises InputError naming it."""
    rng = np.random.default_rng(seed)
    bindings = dict(bindings or {})
    feeds = {}
    for name in graph.inputs:
        t = graph.containers[name].type
        if t.shape is None:
            raise InputError(f"input '{name}' has unknown rank; pass it explicitly", input=name)
        shape = tuple(d if isinstance(d, int) else bindings.get(d, dim_size) if isinstance(d, str) else dim_size
                      for d in t.shape)
        np_dtype = dtypes.to_numpy(t.dtype)
        if t.dtype == "bool":
            value = rng.random(shape) < 0.5
        elif np.issubdtype(np_dtype, np.integer):
            value = rng.integers(0, 4, size=shape).astype(np_dtype)
        elif t.dtype == "string":
            value = np.array(rng.choice(["a", "b", "c"], size=shape), dtype=object)
        else:
            value = rng.standard_normal(shape).astype(np_dtype)
        feeds[name] = value
    return feeds
