"""Every model of the ONNX light zoo imports, verifies, round-trips and runs on the
reference executor matching onnxruntime (fp32, rtol 1e-4, atol 1e-5), with random weights."""

import numpy as np
import onnx
import pytest

from dcopt.frontends.onnx_export import export_model
from dcopt.frontends.onnx_import import import_model
from dcopt.ir.executor import run_graph
from dcopt.ir.verify import verify
from dcopt.testing import LIGHT_ZOO_NAMES, light_zoo_path, random_feeds, run_onnxruntime, with_random_weights

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module", params=LIGHT_ZOO_NAMES)
def zoo_model(request):
    model = with_random_weights(onnx.load(light_zoo_path(request.param)), seed=0)
    feeds = random_feeds(model, seed=1)
    return request.param, model, feeds, run_onnxruntime(model, feeds)


@pytest.mark.slow
def test_reference_executor_matches_onnxruntime(zoo_model):
    name, model, feeds, expected = zoo_model
    graph = import_model(model)
    verify(graph)
    got = run_graph(graph, feeds)
    assert list(got) == [o.name for o in model.graph.output]
    for actual, want in zip(got.values(), expected):
        assert actual.dtype == want.dtype and actual.shape == want.shape
        np.testing.assert_allclose(actual, want, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.slow
def test_export_round_trip_runs_in_onnxruntime(zoo_model):
    name, model, feeds, expected = zoo_model
    exported = export_model(import_model(model))
    onnx.checker.check_model(exported)
    for actual, want in zip(run_onnxruntime(exported, feeds), expected):
        np.testing.assert_allclose(actual, want, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("name", LIGHT_ZOO_NAMES)
def test_original_light_zoo_model_imports_and_round_trips(name):
    """The unmodified file (ConstantOfShape weights, IR v3, opset 9) imports and re-exports."""
    model = onnx.load(light_zoo_path(name))
    graph = import_model(model)
    assert graph.opset_of("") == 9 and len(graph.inputs) == 1
    onnx.checker.check_model(export_model(graph))
