"""Warm hits: a repeated compile of the same file with the same options is answered from the
cache by the file's digest alone, with no import, shape inference or IR; anything that changes
the model (its bytes, its external data) or the options is a miss."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

import dcopt.compiled as dc
import dcopt.frontends.onnx_import as onnx_import
from dcopt.cli import app


@pytest.fixture
def model_file(tmp_path, mlp):
    path = tmp_path / "mlp.onnx"
    onnx.save_model(mlp, str(path))
    return path


@pytest.fixture
def no_import(monkeypatch):
    """Makes importing a model an error: a compile that still works was a warm hit."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was imported: not a warm hit")

    monkeypatch.setattr(onnx_import, "import_model", refuse)


def _x():
    return np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)


def test_second_compile_of_the_same_file_never_imports_it(tmp_path, model_file, monkeypatch):
    cache = tmp_path / "cache"
    first = dc.compile(model_file, cache_dir=cache).run(None, {"x": _x()})[0]
    with monkeypatch.context() as patched:
        patched.setattr(onnx_import, "import_model", lambda *a, **k: pytest.fail("imported on a warm hit"))
        again = dc.compile(model_file, cache_dir=cache)
        np.testing.assert_array_equal(again.run(None, {"x": _x()})[0], first)


def test_changed_bytes_or_options_are_a_miss(tmp_path, model_file, monkeypatch):
    cache = tmp_path / "cache"
    dc.compile(model_file, cache_dir=cache)
    imported = []
    real = onnx_import.import_model
    monkeypatch.setattr(onnx_import, "import_model", lambda *a, **k: imported.append(1) or real(*a, **k))
    dc.compile(model_file, cache_dir=cache, dims={"N": 2})  # other options
    assert imported == [1]
    model = onnx.load(str(model_file))
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(
        numpy_helper.to_array(model.graph.initializer[0]) * 2, model.graph.initializer[0].name))
    onnx.save_model(model, str(model_file))  # same path, other weights
    sess = dc.compile(model_file, cache_dir=cache)
    assert imported == [1, 1]
    reference = dc.compile(model, cache_dir=tmp_path / "fresh").run(None, {"x": _x()})[0]
    np.testing.assert_array_equal(sess.run(None, {"x": _x()})[0], reference)


def test_external_data_is_part_of_the_model(tmp_path, mlp, monkeypatch):
    cache = tmp_path / "cache"
    path = tmp_path / "ext.onnx"
    model = onnx.ModelProto()
    model.CopyFrom(mlp)  # saving with external data rewrites the proto it is given
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.bin",
                    size_threshold=0)
    first = dc.compile(path, cache_dir=cache).run(None, {"x": _x()})[0]
    assert dc.compile(path, cache_dir=cache).run(None, {"x": _x()})[0].tobytes() == first.tobytes()
    weights = np.frombuffer((tmp_path / "ext.bin").read_bytes(), np.float32)
    (tmp_path / "ext.bin").write_bytes((weights * 2).tobytes())  # other weights, same .onnx bytes
    imported = []
    real = onnx_import.import_model
    monkeypatch.setattr(onnx_import, "import_model", lambda *a, **k: imported.append(1) or real(*a, **k))
    changed = dc.compile(path, cache_dir=cache).run(None, {"x": _x()})[0]
    assert imported == [1] and not np.array_equal(changed, first)


def test_cli_compile_twice_writes_the_same_build_from_the_cache(tmp_path, model_file, monkeypatch):
    monkeypatch.setenv("DCOPT_CACHE_DIR", str(tmp_path / "cache"))
    out_a, out_b = tmp_path / "a.dcopt", tmp_path / "b.dcopt"
    first = CliRunner().invoke(app, ["compile", str(model_file), "-o", str(out_a)])
    assert first.exit_code == 0, first.output
    monkeypatch.setattr(onnx_import, "import_model", lambda *a, **k: pytest.fail("imported on a warm hit"))
    result = CliRunner().invoke(app, ["compile", str(model_file), "-o", str(out_b)])
    assert result.exit_code == 0, result.output
    a, b = (json.loads((p / "manifest.json").read_text()) for p in (out_a, out_b))
    assert a["files"] == b["files"] and a["files"]["model.onnx"]["size"] == os.path.getsize(model_file)
    assert (out_b / "model.onnx").read_bytes() == model_file.read_bytes()  # the user's bytes, not re-serialized
    np.testing.assert_array_equal(dc.load(out_b).run(None, {"x": _x()})[0], dc.load(out_a).run(None, {"x": _x()})[0])


def test_a_recompile_refuses_a_model_file_changed_since(tmp_path, model_file):
    """The session dropped the model's IR after building; a run at new sizes reads the file again
    and must not build other bytes under the first digest."""
    from dcopt.errors import ModelLoadError

    sess = dc.compile(model_file, cache_dir=tmp_path / "cache")
    sess.run(None, {"x": _x()})
    model = onnx.load(str(model_file))
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(
        numpy_helper.to_array(model.graph.initializer[0]) + 1, model.graph.initializer[0].name))
    onnx.save_model(model, str(model_file))
    with pytest.raises(ModelLoadError, match="changed after this session compiled it"):
        sess.run(None, {"x": np.zeros((3, 64), np.float32)})  # N=3: a recompile


def test_a_bad_warm_hit_row_never_deletes_outside_the_cache(tmp_path):
    """The warm-hit index is a file on disk: a row naming a path outside ``cpu-builds`` (or any
    name that is not a build key) is a miss, and the path it names is left alone."""
    from dcopt.backends.cpu.build import _cached

    cache = tmp_path / "cache"
    (cache / "cpu-builds").mkdir(parents=True)
    victim = tmp_path / "mine"
    (victim / "data").mkdir(parents=True)
    assert _cached(cache / "cpu-builds" / ".." / ".." / "mine", cache) is None
    (cache / "cpu-builds" / "notakey").mkdir()
    assert _cached(cache / "cpu-builds" / "notakey", cache) is None
    assert (victim / "data").is_dir() and (cache / "cpu-builds" / "notakey").is_dir()
    damaged = cache / "cpu-builds" / "0123abcd"
    damaged.mkdir()
    assert _cached(damaged, cache) is None and not damaged.exists()  # dcopt's own damaged entry goes
