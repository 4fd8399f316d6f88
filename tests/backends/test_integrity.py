"""A tampered build or cache entry is never run (dcopt.integrity + the build loader)."""

from __future__ import annotations

import numpy as np
import pytest

import dcopt
from dcopt import integrity
from dcopt.errors import ModelLoadError


def _feeds():
    return {"x": np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)}


def _cached_build(cache):
    builds = [p for p in (cache / "cpu-builds").iterdir() if (p / "manifest.json").is_file()]
    assert len(builds) == 1
    return builds[0]


def test_tampered_cache_entry_is_rebuilt_not_run(tmp_path, mlp_model):
    cache = tmp_path / "cache"
    want = dcopt.compile(mlp_model, cache_dir=cache).run(None, _feeds())[0]
    entry = _cached_build(cache)
    source = (entry / "kernels.py").read_text()
    (entry / "kernels.py").write_text(source.replace("+", "-"))  # a wrong kernel, same name
    got = dcopt.compile(mlp_model, cache_dir=cache).run(None, _feeds())[0]
    np.testing.assert_array_equal(got, want)
    assert (_cached_build(cache) / "kernels.py").read_text() == source  # rebuilt from the model


@pytest.mark.parametrize("victim", ["program.json", "weights.bin", "kernels.py", "model.onnx"])
def test_tampered_build_directory_is_refused_naming_the_file(tmp_path, mlp_model, victim):
    cache = tmp_path / "cache"
    path = dcopt.compile(mlp_model, cache_dir=cache).save(tmp_path / "m.dcopt")
    with open(path / victim, "ab") as f:
        f.write(b"\n#")
    with pytest.raises(ModelLoadError, match=victim):
        dcopt.load(path, cache_dir=cache)


def test_extra_file_in_build_is_refused(tmp_path, mlp_model):
    path = dcopt.compile(mlp_model, cache_dir=tmp_path / "c").save(tmp_path / "m.dcopt")
    (path / "evil.py").write_text("import os")
    with pytest.raises(ModelLoadError, match="evil.py is not part of the build"):
        dcopt.load(path, cache_dir=tmp_path / "c")


def test_interrupted_compile_leaves_nothing_trusted(tmp_path, mlp_model):
    cache = tmp_path / "cache"
    dcopt.compile(mlp_model, cache_dir=cache)
    entry = _cached_build(cache)
    (entry / "manifest.json").unlink()  # a build killed before its manifest was written
    stray = cache / "cpu-builds" / f".{entry.name}.tmp-dead"
    stray.mkdir()
    (stray / "kernels.py").write_text("garbage")
    out = dcopt.compile(mlp_model, cache_dir=cache).run(None, _feeds())[0]
    assert np.isfinite(out).all() and (entry / "manifest.json").is_file()


def test_second_load_trusts_unchanged_files_without_rehashing(tmp_path, mlp_model, monkeypatch):
    cache = tmp_path / "cache"
    path = dcopt.compile(mlp_model, cache_dir=cache).save(tmp_path / "m.dcopt")
    dcopt.load(path, cache_dir=cache)  # verifies and remembers
    hashed = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(p) or real(p))
    dcopt.load(path, cache_dir=cache)
    assert hashed == []
    weights = path / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # same size, other bytes
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="weights.bin"):
        dcopt.load(path, cache_dir=cache)
