"""The canonicalize pipeline on real models (ONNX light zoo), checked pass by pass on the
reference executor and end to end against the original graph."""

import numpy as np
import pytest

from dcopt.ir.executor import run_graph
from dcopt.passes import build_pipeline
from dcopt.passes.equivalence import compare_outputs, random_feeds

MODELS = ["squeezenet", "bvlc_alexnet", "inception_v1", "shufflenet", "resnet50", "inception_v2", "densenet121"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_canonicalize_preserves_numerics(light_model, name):
    graph = light_model(name)
    original = graph.copy()
    feeds = random_feeds(original, seed=1)
    expected = run_graph(original, feeds)

    result = build_pipeline("canonicalize", verify=True, check_equivalence=True)(graph)

    records = result.report.records
    assert result.report.converged
    assert all("verified" in r.checks and "equivalent" in r.checks for r in records if r.modified)
    assert len(graph.nodes) <= len(original.nodes)
    ops = graph.op_histogram()
    assert not {"Dropout", "Identity", "ConstantOfShape", "Constant"} & set(ops), ops
    problems = compare_outputs(expected, run_graph(graph, feeds), rtol=1e-5, atol=1e-6)
    assert not problems, [p.describe() for p in problems]


@pytest.mark.slow
def test_placeholder_weights_fold_and_identical_ones_merge(light_model):
    # as shipped, every weight is ConstantOfShape(shape, value=0.02): they must fold into
    # parameters, and identical ones may then share storage
    graph = light_model("squeezenet", random_weights=False)
    assert graph.op_histogram()["ConstantOfShape"] == 39
    result = build_pipeline("canonicalize", check_equivalence=True)(graph)
    assert "ConstantOfShape" not in graph.op_histogram()
    merged = sum(r.stats.get("parameters_merged", 0) for r in result.report.records)
    assert merged > 0 and len(graph.parameters) < 52
    out = run_graph(graph, random_feeds(graph))
    assert np.isfinite(next(iter(out.values()))).all()
