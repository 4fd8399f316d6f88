"""One-op ONNX models run three ways (reference, lowered IR, compiled), for expansion tests.

Data inputs are graph inputs (so nothing folds away); parameter inputs (shapes, axes, pads, k)
are initializers, as value specialization makes them. ``""`` in ``inputs`` omits an optional one.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import helper

from dcopt.frontends.onnx_import import import_model
from dcopt.ir.loops import find_loop_problems, is_loop_node
from dcopt.passes import get_pass
from dcopt.passes.expand import expand
from dcopt.testing import run_three_ways
from tests.conftest import make_model


def elem(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def run_one_op(cache, op, inputs: dict, params: dict | None = None, out_dtypes=None, n_out: int = 1,
               opset: int = 18, order=None, rtol=1e-4, atol=1e-6, verify_loops: bool = False, **attrs):
    """Run ``op`` on graph inputs ``inputs`` and initializers ``params`` (name -> array); the node
    takes them in ``order`` (default: inputs, then params). Asserts no op fell back to numpy and
    returns the compiled outputs (already checked against the reference). ``verify_loops``: also
    :func:`assert_loops_verify`."""
    params = dict(params or {})
    order = list(order or [*inputs, *params])
    outs = [f"y{k}" for k in range(n_out)]
    first = next(iter(inputs.values()), None)
    out_dtypes = list(out_dtypes or [first.dtype] * n_out)
    node = helper.make_node(op, order, outs, **attrs)
    model = make_model([node], [(k, elem(v.dtype), list(v.shape)) for k, v in inputs.items()],
                       [(o, elem(d), None) for o, d in zip(outs, out_dtypes)], params, opset=opset)
    _, _, got, manifest = run_three_ways(model, dict(inputs), rtol=rtol, atol=atol, cache_dir=cache)
    assert "fallback" not in manifest["steps"], manifest.get("not_native")
    if verify_loops:
        assert_loops_verify(model)
    return [got[o] for o in outs]


def assert_loops_verify(model) -> None:
    """The op expanded on its own (no folding first) passes the loop-node checks: subset ranks,
    reads in bounds over the whole iteration space, complete single writes."""
    graph = get_pass("infer-shapes")(import_model(model)).graph  # shapes from initializer values
    result = expand(graph)
    assert all(is_loop_node(n) for n in graph.nodes), result.refusals
    assert [p for n in graph.nodes if is_loop_node(n) for p in find_loop_problems(graph, n)] == []


def sample(shape, dtype="float32", seed=0):
    """Distinct-ish values of ``dtype``: normals for floats, small integers, alternating bools."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    if dtype == bool:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100), shape, endpoint=True).astype(dtype)
    return (rng.standard_normal(shape) * 10).astype(dtype)
