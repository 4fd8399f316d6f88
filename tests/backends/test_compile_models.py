"""Compiled models match the reference executor (the issue's correctness bar)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import dcopt.compiled as dc
from dcopt.examples import TINY_RESNET
from dcopt.testing import light_zoo_path, random_feeds, run_onnxruntime, with_random_weights
from tests.backends.conftest import RTOL, ATOL, assert_matches_reference


@pytest.mark.parametrize("batch", [1, 2])
def test_tiny_resnet(batch):
    model = onnx.load(str(TINY_RESNET))
    sess = dc.compile(model, dims={"N": batch})
    x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    assert_matches_reference(model, sess, {"image": x})
    assert sess.manifest["steps"]["conv"] == 4
    assert "fallback" not in sess.manifest["steps"]  # every op of the model has a compiled step


def test_mlp(mlp):
    sess = dc.compile(mlp)
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    assert_matches_reference(mlp, sess, {"x": x})
    # bias + relu ride in the GEMMs' epilogues: 3 BLAS calls, 3 fused elementwise kernels.
    assert sess.manifest["steps"] == {"ew": 3, "matmul": 3, "softmax": 1}


def test_transformer_block(transformer_block):
    sess = dc.compile(transformer_block)
    rng = np.random.default_rng(0)
    mask = np.where(rng.random((1, 1, 1, 8)) < 0.25, -1e4, 0).astype(np.float32)
    feeds = {"x": rng.standard_normal((1, 8, 32)).astype(np.float32), "mask": mask}
    assert_matches_reference(transformer_block, sess, feeds)
    assert "fallback" not in sess.manifest["steps"]


def test_recompiles_for_new_batch(mlp):
    sess = dc.compile(mlp)
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    assert_matches_reference(mlp, sess, {"x": x})
    assert sess.bindings == {"N": 3}


@pytest.mark.slow
def test_light_zoo_squeezenet_matches_onnxruntime():
    model = with_random_weights(onnx.load(str(light_zoo_path("squeezenet"))))
    feeds = random_feeds(model)
    expected = run_onnxruntime(model, feeds, threads=2)
    got = dc.compile(model).run(None, feeds)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)
