"""One-op ONNX models run three ways (reference, lowered IR, compiled kernels) for the expansion tests
of the pooling and image families, asserting nothing fell back to a reference step."""

import numpy as np
from onnx import TensorProto, helper

from dcopt.testing import run_three_ways
from tests.conftest import make_model

ELEM = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "float16": TensorProto.FLOAT16,
        "bfloat16": TensorProto.BFLOAT16, "bool": TensorProto.BOOL, "int8": TensorProto.INT8,
        "uint8": TensorProto.UINT8, "int16": TensorProto.INT16, "int32": TensorProto.INT32,
        "int64": TensorProto.INT64}


def run_one_op(cache, op, inputs, attrs, *, n_out=1, out_dtypes=None, initializers=None, opset=19, rtol=1e-4,
               atol=1e-6, input_names=None):
    """``op`` on graph inputs ``inputs`` (name -> array, in order) then ``initializers``; outputs
    ``y`` (the first input's dtype unless ``out_dtypes`` says) and ``i``, ``j``... Returns the
    reference outputs and the compiled ones."""
    names = input_names or [*inputs, *(initializers or {})]
    outs = ["y", "i", "j"][:n_out]
    first = next(iter(inputs.values()))
    dtypes = out_dtypes or [str(first.dtype)] + ["int64"] * (n_out - 1)
    node = helper.make_node(op, names, outs, **attrs)
    model = make_model([node], [(k, ELEM[str(v.dtype)], list(v.shape)) for k, v in inputs.items()],
                       [(o, ELEM[d], None) for o, d in zip(outs, dtypes)], initializers or {}, opset=opset)
    ref, _, got, manifest = run_three_ways(model, dict(inputs), rtol=rtol, atol=atol, cache_dir=cache)
    assert "fallback" not in manifest["steps"], manifest
    return ref, got


def rand(shape, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100), shape).astype(dtype)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "bfloat16":
        import ml_dtypes

        return rng.standard_normal(shape).astype(ml_dtypes.bfloat16)
    return rng.standard_normal(shape).astype(dtype)
