"""fold-batchnorm: Conv/Gemm/MatMul + BatchNormalization folded and checked numerically; the
refusals (training mode, shared conv output, computed statistics, wrong feature axis); and real
CNNs from the ONNX light zoo against onnxruntime."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dcopt.frontends.onnx_export import export_model
from dcopt.frontends.onnx_import import import_model
from dcopt.passes import build_pipeline, get_pass
from dcopt.passes.fold_batchnorm import FOLD_BATCHNORM
from dcopt.testing import light_zoo_path, random_feeds, run_onnxruntime, with_random_weights
from tests.conftest import make_model
from tests.passes.rule_checks import apply_and_check, refusal

F = TensorProto.FLOAT
RNG = np.random.default_rng(0)


def _bn_params(c: int, prefix: str = "bn") -> dict:
    values = {"g": RNG.uniform(0.5, 2, c), "b": RNG.standard_normal(c), "m": RNG.standard_normal(c),
              "v": RNG.uniform(0.2, 3, c)}
    return {f"{prefix}_{k}": v.astype(np.float32) for k, v in values.items()}


def _bn(src: str, out: str = "y", **attrs):
    return helper.make_node("BatchNormalization", [src, "bn_g", "bn_b", "bn_m", "bn_v"], [out], name="bn", **attrs)


def conv_bn(bias=True, group=1, extra_reader=False, bn_attrs=None, stats_input=False, opset=17):
    w = (RNG.standard_normal((8, 4 // group, 3, 3)) * 0.3).astype(np.float32)
    inits = {"w": w, **_bn_params(8)}
    conv_inputs = ["x", "w"]
    if bias:
        inits["cb"] = RNG.standard_normal(8).astype(np.float32)
        conv_inputs.append("cb")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], name="conv", pads=[1, 1, 1, 1], group=group),
             _bn("c", **(bn_attrs or {}))]
    inputs, outputs = [("x", F, ["N", 4, 6, 6])], [("y", F, ["N", 8, 6, 6])]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["c"], ["z"], name="other"))
        outputs.append(("z", F, ["N", 8, 6, 6]))
    if stats_input:
        del inits["bn_m"]
        inputs.append(("bn_m", F, [8]))
    return import_model(make_model(nodes, inputs, outputs, inits, opset=opset))


def gemm_bn(trans_b=0, with_c=True):
    w = RNG.standard_normal((6, 5) if trans_b else (5, 6)).astype(np.float32)
    inits = {"w": w, **_bn_params(6)}
    inputs = ["x", "w"] + (["gc"] if with_c else [])
    if with_c:
        inits["gc"] = RNG.standard_normal(6).astype(np.float32)
    nodes = [helper.make_node("Gemm", inputs, ["g"], name="gemm", transB=trans_b, alpha=0.5, beta=2.0), _bn("g")]
    return import_model(make_model(nodes, [("x", F, ["N", 5])], [("y", F, ["N", 6])], inits))


def matmul_bn(rank=2, bias=True):
    shape = ["N", 5] if rank == 2 else ["N", 6, 5]
    inits = {"w": RNG.standard_normal((5, 6)).astype(np.float32), **_bn_params(6)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="matmul")]
    src = "mm"
    if bias:
        inits["mb"] = RNG.standard_normal(6).astype(np.float32)
        nodes.append(helper.make_node("Add", ["mm", "mb"], ["ma"], name="bias"))
        src = "ma"
    nodes.append(_bn(src))
    return import_model(make_model(nodes, [("x", F, shape)], [("y", F, shape[:-1] + [6])], inits))


POSITIVE = {
    "conv+bias": lambda: conv_bn(),
    "conv-no-bias": lambda: conv_bn(bias=False),
    "grouped-conv": lambda: conv_bn(group=2),
    "conv-opset-9": lambda: conv_bn(opset=9),
    "gemm": lambda: gemm_bn(),
    "gemm-transB-no-C": lambda: gemm_bn(trans_b=1, with_c=False),
    "matmul+add": lambda: matmul_bn(),
    "matmul": lambda: matmul_bn(bias=False),
}


@pytest.mark.parametrize("case", list(POSITIVE))
def test_batchnorm_folds_and_values_match(case):
    graph = POSITIVE[case]()
    report = apply_and_check(graph, FOLD_BATCHNORM)
    assert report.counts() == {"fold-batchnorm": 1}, report.format()
    assert "BatchNormalization" not in graph.op_histogram()


NEAR_MISSES = {
    "conv output has a second reader": (lambda: conv_bn(extra_reader=True), "also read by 'other' (Relu)"),
    "computed statistics": (lambda: conv_bn(stats_input=True), "expected a constant for 'mean' ('bn_m')"),
    "matmul rank 3": (lambda: matmul_bn(rank=3), "features are its last axis (result rank 3"),
}


@pytest.mark.parametrize("case", list(NEAR_MISSES))
def test_near_miss_is_refused_with_its_reason(case):
    build, reason = NEAR_MISSES[case]
    graph = build()
    report = apply_and_check(graph, FOLD_BATCHNORM)
    assert not report.modified
    assert reason in refusal(report, "fold-batchnorm"), report.format()


def test_training_outputs_in_use_block_the_fold():
    model = make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("BatchNormalization", ["c", "bn_g", "bn_b", "bn_m", "bn_v"], ["y", "rm", "rv"],
                          name="bn", training_mode=1)],
        [("x", F, [2, 4, 5, 5])], [("y", F, [2, 8, 5, 5]), ("rm", F, [8]), ("rv", F, [8])],
        {"w": RNG.standard_normal((8, 4, 1, 1)).astype(np.float32), **_bn_params(8)})
    graph = import_model(model)
    result = get_pass("fold-bn")(graph)
    # (a single-output training-mode BN is an invalid model: import refuses it before any pass)
    assert not result.modified
    assert any("training mode (training_mode=1)" in why for _, why in result.refusals), result.refusals


# -- real models ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name, folded, kept", [("resnet50", 53, 0), ("densenet121", 59, 62)])
def test_light_zoo_folds_match_onnxruntime(name, folded, kept):
    path = light_zoo_path(name)
    if not path.exists():
        pytest.skip(f"light-zoo model {name} is not installed with this onnx")
    model = with_random_weights(onnx.load(path), seed=0)
    feeds = random_feeds(model, seed=1)
    expected = run_onnxruntime(model, feeds)
    graph = import_model(model)
    build_pipeline("canonicalize")(graph)
    result = get_pass("fold-batchnorm")(graph)
    assert result.stats.get("fold-batchnorm", 0) == folded
    assert graph.op_histogram().get("BatchNormalization", 0) == kept
    # what stays is a BN after a Concat or pooling (DenseNet's pre-activation): refused by name
    assert all("expected op Conv" in why for _, why in result.refusals if "fold-batchnorm" in why)
    actual = run_onnxruntime(export_model(graph), feeds)
    for want, got in zip(expected, actual):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
