"""Kernel keys: every component changes the key, identical inputs give the same key everywhere."""

import subprocess
import sys
import textwrap

import pytest

from dcopt.kernels import KernelKey, host_cpu_features, source_hash, toolchain_versions
from dcopt.kernels.keys import describe_differences
from tests.kernels.conftest import make_key


def test_same_inputs_same_key():
    assert make_key() == make_key()
    assert make_key().digest == make_key(options={"fastmath": True}).digest
    assert make_key(ir=b"ir-v1") == make_key(ir="ir-v1")


@pytest.mark.parametrize("change", [
    {"ir": "ir-v2"},
    {"options": {"fastmath": False}},
    {"options": {"fastmath": True, "tile": [6, 32]}},
    {"codegen_version": "cg-2"},
    {"target": "cuda", "target_features": {"cc": "9.0"}},
    {"target_features": {"cpu": "testcpu", "features": "+avx2,-fma"}},
    {"target_features": {"cpu": "othercpu", "features": "+avx2,+fma"}},
    {"toolchain": {"python": "3.x", "numba": "0.2", "llvmlite": "0.1", "numpy": "2.0"}},
    {"toolchain": {"python": "3.y", "numba": "0.1", "llvmlite": "0.1", "numpy": "2.0"}},
])
def test_every_component_changes_the_key(change):
    assert make_key(**change).digest != make_key().digest


def test_option_order_does_not_matter_but_values_do():
    assert make_key(options={"a": 1, "b": 2}) == make_key(options={"b": 2, "a": 1})
    assert make_key(options={"a": 1}) != make_key(options={"a": 1.5})


def test_options_must_be_json():
    with pytest.raises(TypeError):
        make_key(options={"tiles": {1, 2}})


def test_non_cpu_target_needs_features():
    with pytest.raises(ValueError, match="target_features"):
        KernelKey.make("ir", codegen_version="x", target="cuda")


def test_defaults_describe_this_machine():
    key = KernelKey.make("ir", codegen_version="x")
    assert key.target_features == host_cpu_features()
    assert key.target_features["cpu"] and "," in key.target_features["features"]
    assert set(key.toolchain) == {"python", "numba", "llvmlite", "numpy"}
    assert key.toolchain == toolchain_versions()


def test_components_round_trip():
    key = make_key()
    assert KernelKey.from_components(key.components()) == key


def test_key_is_stable_across_processes():
    code = textwrap.dedent("""
        from dcopt.kernels import KernelKey, source_hash
        cg = source_hash(["dcopt.kernels"])
        print(KernelKey.make("ir-v1", codegen_version=cg, options={"b": [1, 2], "a": 0.5}).digest)
    """)
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
           for _ in range(2)]
    here = KernelKey.make("ir-v1", codegen_version=source_hash(["dcopt.kernels"]), options={"a": 0.5, "b": [1, 2]})
    assert out[0] == out[1] == here.digest


def test_source_hash_follows_contents_not_location(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d / "gen").mkdir(parents=True)
        (tmp_path / d / "gen" / "render.py").write_text("X = 1\n")
    ha, hb = source_hash([tmp_path / "a" / "gen"]), source_hash([tmp_path / "b" / "gen"])
    assert ha == hb
    (tmp_path / "b" / "gen" / "render.py").write_text("X = 2\n")
    assert source_hash([tmp_path / "b" / "gen"]) != ha
    (tmp_path / "a" / "gen" / "extra.py").write_text("")
    assert source_hash([tmp_path / "a" / "gen"]) != ha


def test_source_hash_of_modules_and_packages():
    import dcopt.kernels.keys as keys_module

    assert source_hash([keys_module]) == source_hash(["dcopt.kernels.keys"])
    assert source_hash(["dcopt.kernels"]) != source_hash(["dcopt.kernels.keys"])
    with pytest.raises(ValueError):
        source_hash(["dcopt.no_such_module_here"])


def test_differences_are_readable():
    a = make_key().components()
    b = make_key(options={"fastmath": False}, codegen_version="cg-2",
                 target_features={"cpu": "testcpu", "features": "+avx2,-fma"}).components()
    lines = describe_differences(a, b)
    assert "options.fastmath: true -> false" in lines
    assert 'codegen_version: "cg-1" -> "cg-2"' in lines
    assert any(l.startswith("target_features.features") and "+fma" in l and "-fma" in l for l in lines)
    assert describe_differences(a, a) == []
