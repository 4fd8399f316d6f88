"""One build for every size (``dcopt.compile(..., dynamic=...)``): symbolic batch and sequence dims
stay symbolic through lowering, the kernels are compiled once, and each new size only binds the
build (buffers placed, weights-only steps run once). Checked through the compiled path against
onnxruntime at many sizes -- a partial GEMM chunk, an empty sequence, NaN/Inf and large values --
and the fallbacks: a convolution refuses (one build per size, said once), a saved build runs
other sizes without its source model."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import dcopt
import dcopt.api
from dcopt.errors import ArgumentError, InputError
from tests.conftest import make_model

RTOL, ATOL = 1e-4, 1e-5
HIDDEN, FFN, VOCAB = 32, 64, 50


def _encoder_layer():
    """Token + position embeddings (positions from ``Range(0, seq)``), rows ``[:seq]`` of a 64-row
    table (``min(64, seq)`` rows: valid up to 64 tokens, as BERT's 512), a flattened dense layer
    (``[batch*seq, hidden]`` through a Reshape whose target is computed from ``Shape``), GELU,
    a softmax over the sequence and a LayerNorm: the shapes a transformer export has."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    init = {
        "emb": rng.standard_normal((VOCAB, HIDDEN)).astype(f32), "pos": rng.standard_normal((64, HIDDEN)).astype(f32),
        "table": rng.standard_normal((64, HIDDEN)).astype(f32),
        "w1": (rng.standard_normal((HIDDEN, FFN)) / 6).astype(f32), "b1": rng.standard_normal(FFN).astype(f32),
        "w2": (rng.standard_normal((FFN, HIDDEN)) / 8).astype(f32), "b2": rng.standard_normal(HIDDEN).astype(f32),
        "gamma": rng.standard_normal(HIDDEN).astype(f32), "beta": rng.standard_normal(HIDDEN).astype(f32),
        "zero": np.array(0, np.int64), "one": np.array(1, np.int64), "axis0": np.array([0], np.int64),
        "minus1": np.array([-1], np.int64), "hidden": np.array([HIDDEN], np.int64),
    }
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["tok"]),
        helper.make_node("Shape", ["ids"], ["ids_shape"]),
        helper.make_node("Gather", ["ids_shape", "one"], ["seq_len"], axis=0),
        helper.make_node("Range", ["zero", "seq_len", "one"], ["positions"]),
        helper.make_node("Gather", ["pos", "positions"], ["pos_emb"]),
        helper.make_node("Shape", ["ids"], ["seq_1d"], start=1, end=2),
        helper.make_node("Slice", ["table", "axis0", "seq_1d", "axis0"], ["rows"]),  # [min(64, seq), hidden]
        helper.make_node("Add", ["tok", "pos_emb"], ["h00"]),
        helper.make_node("Add", ["h00", "rows"], ["h0"]),
        helper.make_node("Add", ["h0", "x"], ["h"]),
        helper.make_node("Shape", ["h"], ["h_shape"]),
        helper.make_node("Concat", ["minus1", "hidden"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["h", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w1"], ["f1"]),
        helper.make_node("Add", ["f1", "b1"], ["f1b"]),
        helper.make_node("Relu", ["f1b"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["f2"]),
        helper.make_node("Add", ["f2", "b2"], ["f2b"]),
        helper.make_node("Reshape", ["f2b", "h_shape"], ["back"]),
        helper.make_node("Softmax", ["back"], ["probs"], axis=1),
        helper.make_node("Add", ["probs", "h"], ["res"]),
        helper.make_node("LayerNormalization", ["res", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5),
    ]
    return make_model(nodes, [("ids", TensorProto.INT64, ["batch", "seq"]),
                              ("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
                      [("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])], init)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("dyn") / "encoder.onnx"
    path.write_bytes(_encoder_layer().SerializeToString())
    return path


def _feeds(batch, seq, seed=0, special=False):
    rng = np.random.default_rng(seed + 97 * batch + seq)
    x = rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32)
    if special and x.size:
        x.reshape(-1)[:: 7] = 3e4
        x.reshape(-1)[3:: 11] = -2e4
    return {"ids": rng.integers(0, VOCAB, (batch, seq)).astype(np.int64), "x": x}


def _check(session, reference, feeds):
    got = session.run(None, feeds)[0]
    want = reference.run(None, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * max(1.0, float(np.abs(want).max(initial=0))))
    return got


def test_one_build_serves_every_size(encoder, tmp_path):
    session = dcopt.compile(encoder, dynamic=True, dims={"batch": 1, "seq": 16}, cache_dir=tmp_path)
    reference = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    assert session.manifest["dynamic"] == ["batch", "seq"] and "dynamic_refused" not in session.manifest
    assert session.manifest["steps"].get("gemm", 0) == 2  # generated GEMMs, run in chunks of rows
    key = session.build_key
    entries = sorted(p.name for p in (tmp_path / "kernels").iterdir())
    # GEMM rows go in chunks of 32, then of 8, the rest through a padded 8-row copy: 16 = 8+8,
    # 33 = 32+1, 5 = a padded chunk only, 64 = 32+32, 200 = 6x32+8, 45 = 32+8+5
    for batch, seq in [(1, 16), (1, 33), (1, 5), (2, 32), (3, 1), (4, 50), (1, 45), (1, 64), (1, 16)]:
        _check(session, reference, _feeds(batch, seq))
        assert session.build_key == key
    assert not session.manifest["not_native"]  # the [:seq] rows broadcast in a kernel, checked per size
    with pytest.raises(InputError, match="broadcasts min\\(64,seq\\) = 64 against seq = 65"):
        session.run(None, _feeds(1, 65))  # beyond the table: refused, as onnxruntime refuses it
    with pytest.raises(Exception):
        reference.run(None, _feeds(1, 65))
    _check(session, reference, _feeds(2, 7))  # and the session still serves valid sizes
    from dcopt.backends.cpu.build import cached_build
    from dcopt.backends.cpu.source import load_source

    # a warm compile finds it from the file's digest and the options alone (no import), at the call's sizes
    hit = cached_build(load_source(encoder, tmp_path), dims={"batch": 3, "seq": 5}, dynamic=True, cache_dir=tmp_path)
    assert hit is not None and hit.directory.name == key and hit.bindings == {"batch": 3, "seq": 5}
    again = dcopt.compile(encoder, dynamic=True, dims={"batch": 3, "seq": 5}, cache_dir=tmp_path)  # a warm hit
    assert again.build_key == key and again.bindings == {"batch": 3, "seq": 5}
    _check(again, reference, _feeds(3, 5))
    assert sorted(p.name for p in (tmp_path / "kernels").iterdir()) == entries  # nothing compiled anew


def test_edge_values_and_an_empty_sequence(encoder, tmp_path):
    session = dcopt.compile(encoder, dynamic=["batch", "seq"], cache_dir=tmp_path)
    reference = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    _check(session, reference, _feeds(2, 40, special=True))  # large magnitudes through GEMM, softmax, LayerNorm
    feeds = _feeds(2, 40)
    feeds["x"][0, 3, 5], feeds["x"][1, 7, 0], feeds["x"][1, 9, 2] = np.nan, np.inf, -np.inf
    got, want = session.run(None, feeds)[0], reference.run(None, feeds)[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=RTOL, atol=ATOL * 10)
    empty = session.run(None, _feeds(2, 0))[0]
    assert empty.shape == (2, 0, HIDDEN)


def test_named_dims_fix_the_others(encoder, tmp_path):
    session = dcopt.compile(encoder, dynamic=["seq"], dims={"batch": 2, "seq": 8}, cache_dir=tmp_path)
    reference = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    assert session.manifest["dynamic"] == ["seq"] and session.manifest["bindings"]["batch"] == 2
    key = session.build_key
    _check(session, reference, _feeds(2, 21))
    assert session.build_key == key
    _check(session, reference, _feeds(3, 21))  # another batch: a build of its own
    assert session.build_key != key
    with pytest.raises(ArgumentError, match="argument 'dynamic'.*no symbolic dim 'sequence'; its symbolic dims are batch, seq"):
        dcopt.compile(encoder, dynamic=["sequence"], cache_dir=tmp_path)
    with pytest.raises(ArgumentError, match="dynamic"):
        dcopt.compile(encoder, dynamic=3, cache_dir=tmp_path)


def test_a_saved_build_runs_other_sizes_without_its_model(encoder, tmp_path):
    session = dcopt.compile(encoder, dynamic=True, cache_dir=tmp_path / "cache", warm=False)
    saved = session.save(tmp_path / "encoder.dcopt")
    assert not (saved / "model.onnx").exists()  # nothing to recompile from, and nothing needed
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["dynamic"] == ["batch", "seq"]
    loaded = dcopt.load(saved, cache_dir=tmp_path / "cache")
    reference = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    for batch, seq in [(1, 3), (2, 45)]:
        _check(loaded, reference, _feeds(batch, seq))
    with pytest.raises(InputError, match="symbolic dim 'seq' is 4 elsewhere but 5 here"):
        loaded.run(None, {"ids": np.zeros((1, 4), np.int64), "x": np.zeros((1, 5, HIDDEN), np.float32)})


def _conv_model(x_shape, y_shape):
    rng = np.random.default_rng(1)
    return make_model([helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                       helper.make_node("Relu", ["c"], ["y"])],
                      [("x", TensorProto.FLOAT, x_shape)], [("y", TensorProto.FLOAT, y_shape)],
                      {"w": rng.standard_normal((16, 8, 3, 3)).astype(np.float32),
                       "b": rng.standard_normal(16).astype(np.float32)})


def test_a_convolution_serves_every_batch(tmp_path):
    """Generated convolutions run image by image: a symbolic batch keeps one build."""
    path = tmp_path / "conv.onnx"
    path.write_bytes(_conv_model(["N", 8, 12, 12], ["N", 16, 12, 12]).SerializeToString())
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session = dcopt.compile(path, dynamic=True, dims={"N": 2}, cache_dir=tmp_path)
    assert session.manifest["dynamic"] == ["N"] and session.manifest["steps"] == {"conv": 1}
    key = session.build_key
    rng = np.random.default_rng(2)
    for n in (2, 1, 5):
        x = rng.standard_normal((n, 8, 12, 12)).astype(np.float32)
        x[0, 0, 0, :3] = [np.nan, np.inf, 3e30]
        got, want = session.run(None, {"x": x})[0], reference.run(None, {"x": x})[0]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=RTOL, atol=ATOL * 10)
        assert session.build_key == key


def test_symbolic_image_sizes_compile_per_size_and_say_why(tmp_path):
    path = tmp_path / "conv_hw.onnx"
    path.write_bytes(_conv_model(["N", 8, "H", "W"], ["N", 16, "H", "W"]).SerializeToString())
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    from dcopt.backends.cpu import build

    build._WARNED.clear()
    with pytest.warns(UserWarning, match="one build for every size is not possible.*fixed channel and image sizes"):
        session = dcopt.compile(path, dynamic=True, dims={"N": 1, "H": 10, "W": 10}, cache_dir=tmp_path)
    assert "image sizes" in session.manifest["dynamic_refused"] and "dynamic" not in session.manifest
    first = session.build_key
    rng = np.random.default_rng(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process
        for h in (10, 7):
            x = rng.standard_normal((1, 8, h, 9)).astype(np.float32)
            np.testing.assert_allclose(session.run(None, {"x": x})[0], reference.run(None, {"x": x})[0],
                                       rtol=RTOL, atol=ATOL * 10)
        assert session.build_key != first  # another size compiled a variant
        again = dcopt.compile(path, dynamic=True, dims={"N": 1, "H": 5, "W": 5}, cache_dir=tmp_path)
    assert "image sizes" in again.manifest["dynamic_refused"]  # the refusal is remembered, not retried


def test_cli_compiles_one_build_for_every_size(encoder, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from dcopt.cli import app

    monkeypatch.setenv("DCOPT_NO_RECORD", "1")
    monkeypatch.setenv("DCOPT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "enc.dcopt"
    result = CliRunner().invoke(app, ["compile", str(encoder), "-o", str(out), "--dynamic", "all"])
    assert result.exit_code == 0, result.output
    assert "every size of batch, seq" in result.output
    result = CliRunner().invoke(app, ["run", str(out), "--random-inputs", "--dim", "seq=19", "--dim", "batch=3",
                                       "-o", str(tmp_path / "outs")])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "outs" / "y.npy").shape == (3, 19, HIDDEN)


def test_steps_over_weights_and_sizes_run_once_per_size(encoder, tmp_path):
    """Shape, the position ids from Range(0, seq) and the position embeddings they gather follow
    from the sizes alone: computed when the build is bound to a size, by no run."""
    session = dcopt.compile(encoder, dynamic=True, dims={"batch": 2, "seq": 9}, cache_dir=tmp_path)
    at_bind = session.manifest["at_bind"]
    assert at_bind.get("Shape") and at_bind.get("Range")
    assert not session.manifest["not_native"]
    model = session._runnable()
    ops = {s.params.get("op") for s in model.call_steps}
    assert not ops & {"Shape", "Range"}
    reference = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    for _ in range(2):  # the bound values are not overwritten by a run (they live outside the arena)
        _check(session, reference, _feeds(2, 9, seed=5))
        _check(session, reference, _feeds(1, 30, seed=6))


def test_a_padded_pool_over_a_symbolic_batch_keeps_its_fast_loops(tmp_path):
    """The batch axis a kernel's param covers exactly needs no guard, so a padded stride-2 max
    pool over ``[N, C, H, W]`` keeps the border peeling and the unconditional clamped loads of the
    build for one size (the guards on N made ResNet's stem pool 10x slower)."""
    model = make_model([helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2],
                                         pads=[1, 1, 1, 1]),
                        helper.make_node("GlobalAveragePool", ["m"], ["y"])],
                       [("x", TensorProto.FLOAT, ["N", 8, 32, 32])], [("y", TensorProto.FLOAT, ["N", 8, 1, 1])])
    path = tmp_path / "pool.onnx"
    path.write_bytes(model.SerializeToString())
    session = dcopt.compile(path, dynamic=True, dims={"N": 2}, cache_dir=tmp_path)
    source = "\n".join(session._current.program.kernels.values())
    assert "_raw = " in source and "min(max(o0" not in source and "0 <= o0 <" not in source
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph = dcopt.api.load_graph(path)  # NaN in a max: onnxruntime drops it, dcopt's reference keeps it
    rng = np.random.default_rng(4)
    for n in (2, 1, 3):
        x = rng.standard_normal((n, 8, 32, 32)).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"x": x})[0], reference.run(None, {"x": x})[0],
                                   rtol=RTOL, atol=ATOL)
        x[0, 1, 0, 0], x[-1, 2, 5, 7], x[0, 3, 31, 31], x[-1, 4, 16, 16] = np.nan, np.inf, -np.inf, 3e38
        got, want = session.run(None, {"x": x})[0], dcopt.api.run(graph, {"x": x})["y"]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=RTOL, atol=ATOL)
