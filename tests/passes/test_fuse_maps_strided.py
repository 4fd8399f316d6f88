"""Map fusion and transposes: a cheap transpose copy is not fused into a map whose tasklet calls a
transcendental function when the fused loop would read across rows (the tasklet would run element
by element instead of in vectors: SegFormer's Transpose -> Gelu ran 11x slower fused). Cheap
tasklets still fuse. Checked through the compiled path against onnxruntime on edge values."""

import numpy as np
import pytest
from onnx import TensorProto, helper

import dcopt
from dcopt.passes.fuse_maps import _expensive
from dcopt.testing import run_onnxruntime
from tests.conftest import make_model

F = TensorProto.FLOAT


def _kernel_steps(session) -> list[str]:
    return [s.label for s in session._current.program.steps if s.kind == "kernel"]


def _model(first: str, second: str):
    """x [1, 64, 300] -> first -> second -> y, one of them a Transpose(0, 2, 1)."""
    def node(op, a, b):
        return helper.make_node("Transpose", [a], [b], perm=[0, 2, 1]) if op == "Transpose" else \
            helper.make_node(op, [a], [b])
    out_shape = [1, 300, 64]
    return make_model([node(first, "x", "t"), node(second, "t", "y")], [("x", F, [1, 64, 300])],
                      [("y", F, out_shape)], opset=20)


def _feeds():
    x = np.random.default_rng(0).standard_normal((1, 64, 300)).astype(np.float32) * 4
    x.reshape(-1)[[0, 7, 99]] = np.nan, np.inf, -np.inf
    return {"x": x}


@pytest.mark.parametrize("first,second,fused", [
    ("Transpose", "Gelu", False),  # the consumer's erf ran on contiguous reads
    ("Exp", "Transpose", False),  # the producer's exp ran on contiguous reads
    ("Transpose", "Relu", True),  # cheap: one copy instead of two passes
    ("Transpose", "Neg", True),
])
def test_transposes_fuse_only_with_cheap_maps(first, second, fused, tmp_path):
    model = _model(first, second)
    session = dcopt.compile(model, cache_dir=tmp_path)
    assert len(_kernel_steps(session)) == (1 if fused else 2), _kernel_steps(session)
    feeds = _feeds()
    (want,) = run_onnxruntime(model, feeds)
    (got,) = session.run(None, feeds)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("code,expensive", [
    ("out = a + b", False), ("out = max(a, 0.0)", False), ("out = as_float32(a) * 2.0", False),
    ("out = abs(a)", False), ("out = erf(a * 0.7071)", True), ("out = exp(a)", True), ("out = a ** 3.0", True),
    ("f0 = a + b\nout = tanh(f0)", True),
])
def test_expensive_tasklets_are_the_transcendental_ones(code, expensive):
    assert _expensive(code) is expensive
