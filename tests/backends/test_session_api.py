"""The session mirrors onnxruntime's InferenceSession; bad input names the input."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import dcopt.compiled as dc
from dcopt.errors import InputError
from dcopt.examples import TINY_RESNET


@pytest.fixture(scope="module")
def pair():
    model = onnx.load(str(TINY_RESNET))
    return dc.compile(str(TINY_RESNET)), ort.InferenceSession(model.SerializeToString(),
                                                              providers=["CPUExecutionProvider"])


def test_signature_matches_onnxruntime(pair):
    sess, ref = pair
    for ours, theirs in ((sess.get_inputs(), ref.get_inputs()), (sess.get_outputs(), ref.get_outputs())):
        assert [(a.name, a.shape, a.type) for a in ours] == [(a.name, a.shape, a.type) for a in theirs]


def test_run_none_and_named_outputs(pair):
    sess, ref = pair
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    (got,) = sess.run(None, {"image": x})
    (expected,) = ref.run(None, {"image": x})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(sess.run(["probs"], {"image": x})[0], got)
    got[:] = 0  # outputs are fresh arrays, not views of the runtime's buffers
    assert sess.run(None, {"image": x})[0].any()


@pytest.mark.parametrize("feeds, message", [
    ({"image": np.zeros((1, 3, 16, 32), np.float32)}, "axis 2: 32 vs 16"),
    ({"image": np.zeros((1, 3, 32), np.float32)}, "rank 4 vs 3"),
    ({"image": np.zeros((1, 3, 32, 32), np.float64)}, "dtype float32"),
    ({"picture": np.zeros((1, 3, 32, 32), np.float32)}, "unknown input"),
    ({}, "missing input"),
])
def test_bad_input(pair, feeds, message):
    sess, _ = pair
    with pytest.raises(InputError, match=message) as info:
        sess.run(None, feeds)
    if feeds and "picture" not in feeds:
        assert "input 'image'" in str(info.value)


def test_unknown_output_name(pair):
    sess, _ = pair
    with pytest.raises(InputError, match="unknown output"):
        sess.run(["nope"], {"image": np.zeros((1, 3, 32, 32), np.float32)})



def test_scalar_inputs_that_decide_sizes_keep_rank_zero(tmp_path):
    """Range's expanded form (a Loop whose trip count follows from start/limit/delta) sizes its
    output from input values, so the session compiles a variant with them as constants; a scalar
    constant must stay rank 0 (a (1,) start made every stacked element 1-D: (2, 1), not (2,))."""
    from dcopt.tools.conformance import collect_cases

    case = next(c for c in collect_cases() if c.name == "test_range_float_type_positive_delta_expanded")
    sess = dc.compile(case.model, cache_dir=str(tmp_path))
    for start, limit, delta in ((1.0, 5.0, 2.0), (0.5, 3.0, 0.5), (2.0, 1.0, 1.0)):
        feeds = {k: np.array(v, np.float32) for k, v in zip(("start", "limit", "delta"), (start, limit, delta))}
        (y,) = sess.run(None, feeds)
        want = np.arange(start, limit, delta, dtype=np.float32)
        assert y.shape == want.shape
        np.testing.assert_array_equal(y, want)
