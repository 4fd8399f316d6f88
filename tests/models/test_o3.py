"""The O3 pipeline on real models: outputs stay within fp32 tolerance of onnxruntime (after export)
and the bytes moved between kernels shrink by the issue's bars (>= 25% CNNs, >= 40% transformers),
measured against the unoptimized graph with the sizes shape folding reveals."""

import numpy as np
import onnx
import pytest

from dcopt.frontends.onnx_export import export_model
from dcopt.frontends.onnx_import import import_model
from dcopt.frontends.onnx_shapes import fill_types_from_folding
from dcopt.ir.cost import graph_cost
from dcopt.passes.pipelines import build_pipeline
from dcopt.testing import (LIGHT_ZOO_NAMES, export_transformer, light_zoo_path, random_feeds, run_onnxruntime,
                           transformer_feeds, with_random_weights)

RTOL, ATOL = 1e-4, 1e-5


def check_o3(model: onnx.ModelProto, feeds: dict, min_reduction: float) -> float:
    graph = import_model(model)
    before = graph_cost(fill_types_from_folding(graph.copy())).transient_bytes
    optimized = build_pipeline("O3", verify=True)(graph).graph
    after_cost = graph_cost(optimized)
    assert after_cost.unknown_nodes == 0
    exported = export_model(optimized)
    for got, want in zip(run_onnxruntime(exported, feeds), run_onnxruntime(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    reduction = 1 - after_cost.transient_bytes / before
    assert reduction >= min_reduction, f"bytes between kernels only {100 * reduction:.1f}% less"
    return reduction


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_ZOO_NAMES)
def test_o3_on_light_zoo(name):
    model = with_random_weights(onnx.load(light_zoo_path(name)))
    check_o3(model, random_feeds(model), 0.25)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_o3_on_transformers(kind, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    path = export_transformer(kind, tmp_path / f"{kind}.onnx", hidden=64, layers=2, heads=4, seq=32)
    check_o3(onnx.load(path), transformer_feeds(kind, 32), 0.40)
