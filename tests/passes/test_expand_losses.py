"""Loss expansions (dcopt/passes/expansions/losses.py) run three ways: the reference executor, the
lowered IR on it, and the compiled kernels -- agreeing at fp32 rtol 1e-4 for every reduction, with
and without weights and ignore_index (negative, inside the classes, beyond them), on 2-D and N-D
scores holding edge values, with no fallback step.

Each case is one model holding the loss under several attribute combinations (one compile).
"""

import numpy as np
import pytest
from onnx import helper

from dcopt import driver
from dcopt.frontends.onnx_import import import_model
from dcopt.testing import run_three_ways
from tests.conftest import make_model

RTOL = {"float16": 2e-3, "float32": 1e-4, "float64": 1e-9}
#: ignore_index variants and the label input each reads (labels holding that index)
IGNORED = {None: "t", -1: "t_neg", 2: "t", 9: "t_high"}
#: (reduction, weighted, ignore_index): each reduction with and without weights, each ignore variant
COMBINATIONS = [("none", False, None), ("none", True, -1), ("none", True, 9), ("sum", False, 2), ("sum", True, None),
                ("mean", True, 2), ("mean", False, -1), ("mean", True, 9)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def elem(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def feeds_for(shape, dtype, label_dtype, seed=0):
    """Scores x100 with +inf, -inf and NaN planted; labels valid, with -1 and 9 planted (C < 9)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    flat = x.reshape(-1)
    flat[3], flat[-1], flat[x.size // 2] = np.inf, -np.inf, np.nan
    labels_shape = (shape[0], *shape[2:])
    t = rng.integers(0, shape[1], labels_shape).astype(label_dtype)
    t.reshape(-1)[:2] = 2  # ignored by ignore_index=2
    t_neg, t_high = t.copy(), t.copy()
    t_neg.reshape(-1)[::3], t_high.reshape(-1)[1::3] = -1, 9
    return {"x": x, "t": t, "t_neg": t_neg, "t_high": t_high}


def run_losses(cache, op, shape, dtype="float32", label_dtype="int64", log_prob=False, combinations=COMBINATIONS):
    """``op`` under each (reduction, weight, ignore_index) of ``combinations``, in one model."""
    feeds = feeds_for(shape, dtype, label_dtype)
    weight = np.random.default_rng(1).uniform(0.5, 2.0, shape[1]).astype(dtype)
    nodes, outputs = [], {}
    labels_shape = list(feeds["t"].shape)
    for k, (reduction, weighted, ignore) in enumerate(combinations):
        attrs = {"reduction": reduction, **({"ignore_index": ignore} if ignore is not None else {})}
        outs = [f"loss{k}"] + ([f"lp{k}"] if log_prob else [])
        nodes.append(helper.make_node(op, ["x", IGNORED[ignore]] + (["w"] if weighted else []), outs, **attrs))
        outputs[f"loss{k}"] = labels_shape if reduction == "none" else []
        if log_prob:
            outputs[f"lp{k}"] = list(shape)
    model = make_model(nodes, [(k, elem(v.dtype), list(v.shape)) for k, v in feeds.items()],
                       [(k, elem(dtype), s) for k, s in outputs.items()], {"w": weight}, opset=13)
    rtol = RTOL[dtype]
    ref, _, got, manifest = run_three_ways(model, feeds, rtol=rtol, atol=rtol * 1e-2, cache_dir=cache)
    assert "fallback" not in manifest["steps"], manifest
    return ref, got


@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2, 3)])
@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
def test_losses(cache, op, shape):
    run_losses(cache, op, shape)


@pytest.mark.parametrize("dtype,label_dtype", [("float16", "int64"), ("float64", "int32")])
def test_softmax_cross_entropy_dtypes_and_log_prob(cache, dtype, label_dtype):
    run_losses(cache, "SoftmaxCrossEntropyLoss", (3, 4, 5), dtype, label_dtype, log_prob=True,
               combinations=COMBINATIONS[1::3])


def test_nll_in_float16(cache):
    run_losses(cache, "NegativeLogLikelihoodLoss", (6, 4, 3), "float16", combinations=COMBINATIONS[::2])


def test_all_labels_ignored_give_nan_for_mean(cache):
    x = np.log(np.full((2, 3), 1 / 3, np.float32))
    model = make_model([helper.make_node("NegativeLogLikelihoodLoss", ["x", "t"], ["y"], ignore_index=1)],
                       [("x", elem("float32"), [2, 3]), ("t", elem("int64"), [2])], [("y", elem("float32"), [])],
                       opset=13)
    _, _, got, _ = run_three_ways(model, {"x": x, "t": np.array([1, 1])}, cache_dir=cache)
    assert np.isnan(got["y"])


def test_cross_entropy_without_reduction_is_one_kernel():
    """Classes innermost: the row statistics and the picked loss in one pass per sample."""
    model = make_model([helper.make_node("SoftmaxCrossEntropyLoss", ["x", "t"], ["y"], reduction="none")],
                       [("x", elem("float32"), [8, 10]), ("t", elem("int64"), [8])], [("y", elem("float32"), [8])],
                       opset=13)
    (kernel,) = driver.lower(import_model(model), bindings={}).graph.nodes
    assert kernel.attrs["outer"] == 1 and len(kernel.attrs["locals"]) == 2
