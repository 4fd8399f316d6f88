"""Bad input gets a clear DcoptError naming the problem and where it is — never a crash."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dcopt.errors import InputError, ModelLoadError, UnsupportedError, VerificationError
from dcopt.frontends.onnx_import import import_model
from dcopt.ir.executor import check_supported, run_graph
from tests.conftest import make_model


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="file not found"):
        import_model(tmp_path / "nope.onnx")


def test_truncated_model(tmp_path, tiny_resnet_path):
    data = tiny_resnet_path.read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError) as info:
        import_model(bad)
    assert "truncated" in str(info.value) and str(bad) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"\x00\xff garbage \x13\x37" * 50, b"hello world, not a model"])
def test_garbage_file(tmp_path, content):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(content)
    with pytest.raises(ModelLoadError):
        import_model(bad)


def test_cycle_is_reported_with_node_names():
    model = make_model([helper.make_node("Relu", ["b"], ["a"], name="first"),
                        helper.make_node("Relu", ["a"], ["b"], name="second"),
                        helper.make_node("Add", ["x", "a"], ["y"], name="out")],
                       [("x", TensorProto.FLOAT, [2])], [("y", TensorProto.FLOAT, [2])])
    with pytest.raises((VerificationError, ModelLoadError)) as info:
        import_model(model, shape_inference=False)
    assert "cycle" in str(info.value) and "first" in str(info.value)


def test_unknown_ops_are_listed_all_at_once():
    model = make_model([helper.make_node("FancyOp", ["x"], ["a"], name="f1", domain="acme"),
                        helper.make_node("OtherOp", ["a"], ["y"], name="f2", domain="acme")],
                       [("x", TensorProto.FLOAT, [2])], [("y", TensorProto.FLOAT, [2])])
    model.opset_import.append(helper.make_opsetid("acme", 1))
    g = import_model(model, validate=False)
    with pytest.raises(UnsupportedError) as info:
        check_supported(g, file="m.onnx")
    text = str(info.value)
    assert "2 node(s)" in text and "node 'f1': op acme.FancyOp" in text and "node 'f2': op acme.OtherOp" in text


def test_wrong_input_shape_names_input_and_shapes(mlp_model):
    g = import_model(mlp_model)
    with pytest.raises(InputError) as info:
        run_graph(g, {"x": np.zeros((2, 5), np.float32)})
    assert "input 'x'" in str(info.value) and "expected shape [N, 4], got (2, 5)" in str(info.value)
    with pytest.raises(InputError, match="expected dtype float32, got float64"):
        run_graph(g, {"x": np.zeros((2, 4))})
    with pytest.raises(InputError, match="missing input"):
        run_graph(g, {})
    with pytest.raises(InputError, match="unknown input"):
        run_graph(g, {"x": np.zeros((2, 4), np.float32), "z": np.zeros(1)})


def _model_with_external_data(tmp_path, location):
    tensor = onnx.numpy_helper.from_array(np.ones(4, np.float32), "w")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    model = make_model([helper.make_node("Add", ["x", "w"], ["y"])],
                       [("x", TensorProto.FLOAT, [4])], [("y", TensorProto.FLOAT, [4])])
    model.graph.initializer.append(tensor)
    path = tmp_path / "model" / "m.onnx"
    path.parent.mkdir()
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_model_folder_is_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 16)
    path = _model_with_external_data(tmp_path, location)
    with pytest.raises(ModelLoadError) as info:
        import_model(path)
    assert "external data" in str(info.value) and "'w'" in str(info.value)


def test_external_data_inside_folder_loads_and_missing_file_is_clear(tmp_path):
    path = _model_with_external_data(tmp_path, "weights.bin")
    with pytest.raises(ModelLoadError, match="not found"):
        import_model(path)
    (path.parent / "weights.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    g = import_model(path)
    np.testing.assert_array_equal(g.parameters["w"].data, [0, 1, 2, 3])


def test_failing_op_reports_node_and_input_shapes():
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["y"], name="bad_mm")],
                       [("x", TensorProto.FLOAT, None), ("w", TensorProto.FLOAT, None)],
                       [("y", TensorProto.FLOAT, None)])
    g = import_model(model)
    with pytest.raises(Exception) as info:
        run_graph(g, {"x": np.zeros((2, 3), np.float32), "w": np.zeros((4, 5), np.float32)})
    text = str(info.value)
    assert "node 'bad_mm'" in text and "op MatMul" in text and "[2, 3]" in text


def test_too_old_opset_is_upgraded_or_refused():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])],
                       [("x", TensorProto.FLOAT, [2])], [("y", TensorProto.FLOAT, [2])], opset=6)
    graph = import_model(model)
    assert graph.opset_of("") == 7
    broken = make_model([helper.make_node("Upsample", ["x"], ["y"], scales=[1.0, 2.0])],
                        [("x", TensorProto.FLOAT, [1, 2])], [("y", TensorProto.FLOAT, [1, 4])], opset=1)
    broken.ir_version = 3
    with pytest.raises(UnsupportedError, match="opset 1 is older"):
        import_model(broken)
