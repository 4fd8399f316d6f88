import numpy as np
import onnx
import pytest

from dcopt.errors import DcoptError
from dcopt.frontends.onnx_export import export_model
from dcopt.frontends.onnx_import import import_model
from dcopt.ir import serialize
from dcopt.ir.executor import run_graph
from dcopt.ir.groups import groups, is_convex, make_group, ungroup
from dcopt.ir.verify import verify
from dcopt.testing import run_onnxruntime


def _by_name(graph, *names):
    return [n for n in graph.nodes if n.name in names]


def test_group_runs_exports_and_ungroups(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = run_graph(graph, {"image": x})["probs"]
    before = [n.name for n in graph.nodes]
    group = make_group(graph, _by_name(graph, "stem/conv", "stem/bn", "stem/relu"), name="stem", kind="conv")
    make_group(graph, _by_name(graph, "head/fc", "head/softmax"), name="head", kind="gemm")
    verify(graph)
    assert group.inputs == ("image", "stem.w", "stem.bn.scale", "stem.bn.bias", "stem.bn.mean", "stem.bn.var")
    assert group.outputs == ("stem.out",)
    assert len(groups(graph)) == 2
    np.testing.assert_array_equal(run_graph(graph, {"image": x})["probs"], expected)
    assert serialize.loads(serialize.dumps(graph)).nodes[-1].attrs["body"].nodes[0].op == "Gemm"

    model = export_model(graph)
    onnx.checker.check_model(model, full_check=True)
    assert {f.name for f in model.functions} == {"stem", "head"}
    np.testing.assert_allclose(run_onnxruntime(model, {"image": x})[0], expected, rtol=1e-4, atol=1e-5)
    assert [n.op for n in import_model(model).nodes] == [n.op for n in import_model(tiny_resnet_path).nodes]

    ungroup(graph)
    assert [n.name for n in graph.nodes] == before and "dcopt" not in graph.opset


def test_group_exposes_intermediate_outputs_used_outside(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    group = make_group(graph, _by_name(graph, "block1a/conv", "block1a/bn", "block1a/relu",
                                       "block1b/conv", "block1b/bn"), name="g", kind="conv")
    assert group.outputs == ("block1b.bn",)
    graph2 = import_model(tiny_resnet_path)
    group2 = make_group(graph2, _by_name(graph2, "stem/conv", "stem/bn"), name="g", kind="conv")
    assert group2.outputs == ("stem.bn",)


def test_non_convex_set_is_refused(tiny_resnet_path):
    graph = import_model(tiny_resnet_path)
    members = _by_name(graph, "stem/relu", "block1/add")  # the path through block1a/b leaves and re-enters
    assert not is_convex(graph, members)
    with pytest.raises(DcoptError, match="convex"):
        make_group(graph, members, name="bad", kind="elementwise")
