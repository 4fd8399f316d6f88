"""Weights read in place: an ONNX file's large initializers become read-only maps of the file
(:mod:`dcopt.frontends.onnx_mapped`, :mod:`dcopt.ir.file_maps`), equal to what onnx reads, with
small tensors, other element types and attribute tensors read as before."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import dcopt
from dcopt.errors import ModelLoadError
from dcopt.frontends.onnx_import import import_model
from dcopt.frontends.onnx_load import load_onnx
from dcopt.frontends.onnx_mapped import MAPPED_MIN_BYTES, parse_mapped
from dcopt.ir.file_maps import FileMaps, release_pages


def _model(path: Path, *, external: bool = False, edge_values: bool = True) -> dict[str, np.ndarray]:
    """y = (x @ W1 + b) @ W2 + shape-constant reshape; W1/W2 large (mapped), b and the shape
    small (inline). Returns the initializers as written."""
    rng = np.random.default_rng(0)
    weights = {"W1": rng.standard_normal((128, 256)).astype(np.float32),  # 128 KiB: mapped
               "W2": (rng.standard_normal((256, 64)) * 1e30).astype(np.float32),  # large magnitudes
               "b": rng.standard_normal(256).astype(np.float32),
               "shape": np.array([-1, 64], np.int64)}
    if edge_values:
        weights["W2"][0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Add", ["h", "b"], ["hb"]),
             helper.make_node("MatMul", ["hb", "W2"], ["y0"]), helper.make_node("Reshape", ["y0", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "mapped", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 128])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return weights


def test_large_initializers_become_references_to_their_own_bytes(tmp_path):
    path = tmp_path / "m.onnx"
    weights = _model(path)
    proto = parse_mapped(path)
    assert proto.ByteSize() < 4096  # the weights are not in the parsed model
    by_name = {t.name: t for t in proto.graph.initializer}
    for name in ("W1", "W2"):
        entries = {e.key: e.value for e in by_name[name].external_data}
        assert by_name[name].data_location == TensorProto.EXTERNAL and entries["location"] == "m.onnx"
        offset, length = int(entries["offset"]), int(entries["length"])
        assert path.read_bytes()[offset:offset + length] == weights[name].tobytes()
    for name in ("b", "shape"):  # below MAPPED_MIN_BYTES: inline, as written
        assert by_name[name].data_location == TensorProto.DEFAULT
        np.testing.assert_array_equal(numpy_helper.to_array(by_name[name]), weights[name])
    assert weights["b"].nbytes < MAPPED_MIN_BYTES <= weights["W1"].nbytes


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
def test_import_maps_weights_read_only_and_equal_to_onnx(tmp_path, external):
    path = tmp_path / "m.onnx"
    weights = _model(path, external=external)
    graph = import_model(path)
    for name in ("W1", "W2"):
        data = graph.containers[name].data
        np.testing.assert_array_equal(data, weights[name])  # NaN, Inf and 1e30 included, bit for bit
        assert not data.flags.writeable and not data.flags.owndata  # a view of the file
        with pytest.raises(ValueError):
            data[0, 0] = 1.0  # a pass writing in place fails loudly instead of corrupting the model
    np.testing.assert_array_equal(graph.containers["shape"].data, weights["shape"])
    assert load_onnx(path, [], mapped=True).ByteSize() < 4096


def test_compiled_run_of_a_mapped_model_matches_onnxruntime(tmp_path):
    path = tmp_path / "m.onnx"
    _model(path, edge_values=False)  # finite products (the import test checks NaN/Inf bit for bit)
    x = np.random.default_rng(1).standard_normal((2, 128)).astype(np.float32)
    ours = dcopt.compile(path, cache_dir=tmp_path / "cache").run(None, {"x": x})[0]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(ours), finite)
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-4, atol=1e-5 * np.abs(ref[finite]).max())
    assert not list((tmp_path / "cache").rglob("weights-*"))  # the generated weights file was linked, then removed


def test_released_pages_read_back_the_same_values(tmp_path):
    path = tmp_path / "m.onnx"
    weights = _model(path)
    data = import_model(path).containers["W1"].data
    assert float(data.sum()) == pytest.approx(float(weights["W1"].sum()), rel=1e-6)  # pages touched
    release_pages([data, np.ones(3)])  # a plain array is left alone
    np.testing.assert_array_equal(data, weights["W1"])


def test_copy_on_write_maps_are_never_released(tmp_path):
    """Dropping a written private page would lose the write: only read-only maps are released."""
    file = tmp_path / "w.bin"
    file.write_bytes(np.zeros(4 * mmap.PAGESIZE, np.uint8).tobytes())
    cow = np.memmap(file, dtype=np.uint8, mode="c")
    cow[:] = 7
    release_pages([cow, cow[mmap.PAGESIZE:]])
    assert (cow == 7).all()


def test_file_maps_share_one_map_per_file(tmp_path):
    file = tmp_path / "w.bin"
    values = np.arange(3 * 4096, dtype=np.float32)
    file.write_bytes(values.tobytes())
    maps = FileMaps(tmp_path)
    a = maps.array("w.bin", 0, np.float32, (4096,))
    b = maps.array("w.bin", 4096 * 4, np.float32, (2, 4096))
    assert len(maps._maps) == 1
    np.testing.assert_array_equal(b.reshape(-1), values[4096:])
    assert maps.array("w.bin", 0, np.float32, (0, 5)).shape == (0, 5)
    del a
    np.testing.assert_array_equal(b[1], values[2 * 4096:])  # a neighbour's release leaves b intact


def test_truncated_file_still_gets_the_clear_error(tmp_path):
    path = tmp_path / "m.onnx"
    _model(path)
    path.write_bytes(path.read_bytes()[:-1000])  # cuts into the last weight
    with pytest.raises(ModelLoadError, match="m.onnx"):
        import_model(path)
