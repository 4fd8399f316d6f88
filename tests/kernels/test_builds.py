"""Builds: atomic write, verified read with clear errors on damage, diffs, the record of builds."""

import json
import shutil

import numpy as np
import pytest

from dcopt.errors import DcoptError, ModelLoadError
from dcopt.kernels import BuildKernel, diff_builds, list_builds, read_build, write_build
from tests.kernels.conftest import FakeBuild, make_key


def manifest(**changes):
    m = {"model": {"name": "mlp", "hash": "m" * 64}, "pipeline": ["fold_constants", "fuse_elementwise", "plan_memory"],
         "patches": ["gelu_tanh"], "target": "cpu", "benchmark": {"latency_ms": 2.0, "throughput": 500}}
    m.update(changes)
    return m


KERNELS = {"fc1": BuildKernel("a" * 64, "def fc1():\n    return 1\n"),
           "relu": BuildKernel("b" * 64, "def relu():\n    pass\n")}
WEIGHTS = {"w1": np.arange(12, dtype=np.float32).reshape(3, 4), "b1": np.ones(4, np.float32)}


def test_write_then_read(tmp_path, store):
    path = tmp_path / "mlp.dcopt"
    written = write_build(path, manifest(), KERNELS, WEIGHTS, store=store)
    build = read_build(path)
    assert build.manifest == written.manifest
    assert build.manifest["format"] == 1 and "numba" in build.manifest["toolchain"]
    assert [k["name"] for k in build.manifest["kernels"]] == ["fc1", "relu"]
    assert build.kernel_source("relu") == KERNELS["relu"].source
    w = build.weights()
    assert set(w) == {"w1", "b1"} and np.array_equal(w["w1"], WEIGHTS["w1"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.dcopt", "store"]  # no temp litter


def test_kernels_from_the_store(tmp_path, store):
    entry = store.get_or_build(make_key(), FakeBuild()).entry
    build = write_build(tmp_path / "b.dcopt", manifest(), {"k": entry})
    assert build.kernels["k"]["key"] == entry.key and read_build(build.path).kernel_source("k") == entry.source()


def test_rewrite_replaces_a_build_but_never_another_directory(tmp_path):
    path = tmp_path / "mlp.dcopt"
    write_build(path, manifest(), KERNELS)
    write_build(path, manifest(patches=[]), {"fc1": KERNELS["fc1"]})
    assert list(read_build(path).kernels) == ["fc1"]
    assert not (path / "kernels" / "relu.py").exists()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(DcoptError, match="not a dcopt build"):
        write_build(other, manifest(), KERNELS)
    assert (other / "cat.jpg").read_bytes() == b"meow"


def test_failed_write_leaves_the_old_build(tmp_path):
    path = tmp_path / "mlp.dcopt"
    write_build(path, manifest(), KERNELS)
    with pytest.raises(ValueError):
        write_build(path, manifest(), {"../escape": KERNELS["fc1"]})
    with pytest.raises(ValueError, match="lacks pipeline"):
        write_build(path, {"model": {"hash": "x"}, "patches": [], "target": "cpu"}, KERNELS)
    assert list(read_build(path).kernels) == ["fc1", "relu"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.dcopt"]


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    (lambda p: _flip(p / "kernels" / "fc1.py"), "kernels/fc1.py does not match its sha256"),
    (lambda p: (p / "weights.npz").write_bytes(b"PK\x03\x04"), "weights.npz has 4 bytes"),
    (lambda p: (p / "kernels" / "relu.py").unlink(), "kernels/relu.py is missing"),
    (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
    (lambda p: (p / "manifest.json").write_text("{trunc"), "manifest.json is unreadable"),
    (lambda p: (p / "manifest.json").write_text(json.dumps({**json.loads((p / "manifest.json").read_text()),
                                                           "format": 99})), "unsupported build format 99"),
    (lambda p: (p / "manifest.json").write_text(json.dumps({"format": 1})), "lacks model, pipeline"),
])
def test_damaged_build_is_a_clear_error(tmp_path, damage, message):
    path = tmp_path / "mlp.dcopt"
    write_build(path, manifest(), KERNELS, WEIGHTS)
    damage(path)
    with pytest.raises(ModelLoadError, match=message) as info:
        read_build(path)
    assert str(path) in str(info.value)


def test_not_a_build(tmp_path):
    with pytest.raises(ModelLoadError, match="no such directory"):
        read_build(tmp_path / "nope.dcopt")


def test_diff(tmp_path):
    a = write_build(tmp_path / "a.dcopt", manifest(), KERNELS)
    kernels_b = {"fc1": BuildKernel("c" * 64, "def fc1():\n    return 2\n"), "gelu": BuildKernel("d" * 64, "pass\n")}
    b = write_build(tmp_path / "b.dcopt", manifest(pipeline=["fold_constants", "fuse_gemm_epilogue", "plan_memory"],
                                                   patches=["gelu_tanh", "fast_softmax"], target="cuda",
                                                   benchmark={"latency_ms": 1.5, "throughput": 650}), kernels_b)
    d = diff_builds(a.path, b.path)
    assert d.kernels_added == ["gelu"] and d.kernels_removed == ["relu"]
    assert d.kernels_changed == [("fc1", "a" * 64, "c" * 64)]
    assert d.pipeline == ["- fuse_elementwise (step 2)", "+ fuse_gemm_epilogue (step 2)"]
    assert d.patches_added == ["fast_softmax"] and d.patches_removed == []
    assert d.settings == [("target", "cpu", "cuda")]
    assert d.benchmark == {"latency_ms": (2.0, 1.5), "throughput": (500, 650)}
    text = "\n".join(d.lines())
    assert "benchmark latency_ms: 2 -> 1.5, delta -0.5 (-25.0%)" in text
    assert "~ fc1 (aaaaaaaaaaaa -> cccccccccccc)" in text
    assert "-    return 1\n+    return 2" in d.source_diff("fc1")
    assert json.loads(json.dumps(d.to_json()))["kernels_changed"][0]["name"] == "fc1"


def test_diff_of_identical_builds_and_missing_benchmark(tmp_path):
    a = write_build(tmp_path / "a.dcopt", manifest(), KERNELS)
    m = manifest()
    del m["benchmark"]
    b = write_build(tmp_path / "b.dcopt", m, KERNELS)
    d = diff_builds(a, b)
    assert d.empty and d.benchmark == {} and d.kernels_unchanged == 2
    assert "same kernels (2)" in "\n".join(d.lines())


def test_record_of_builds(tmp_path, store):
    a = write_build(tmp_path / "a.dcopt", manifest(), KERNELS, store=store)
    b = write_build(tmp_path / "b.dcopt", manifest(target={"name": "cpu", "threads": 2}), KERNELS, store=store)
    write_build(tmp_path / "unrecorded.dcopt", manifest(), KERNELS)
    records = {r.path.name: r for r in list_builds(store)}
    assert set(records) == {"a.dcopt", "b.dcopt"}
    assert records["a.dcopt"].model == "mlp" and records["a.dcopt"].n_kernels == 2
    assert records["b.dcopt"].target == '{"name": "cpu", "threads": 2}'
    assert all(r.status() == "ok" for r in records.values())
    write_build(a.path, manifest(patches=[]), KERNELS)  # rewritten without the store
    shutil.rmtree(b.path)
    status = {r.path.name: r.status() for r in list_builds(store)}
    assert status == {"a.dcopt": "replaced", "b.dcopt": "missing"}
    assert [r.path.name for r in list_builds(store, prune=True)] == ["a.dcopt"]
    assert [r.path.name for r in list_builds(store)] == ["a.dcopt"]
