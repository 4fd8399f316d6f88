"""Build directories: written by ``dcopt compile``, loaded back by ``dcopt.load``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import dcopt.compiled as dc
from dcopt.cli import app
from dcopt.errors import ModelLoadError
from dcopt.examples import TINY_RESNET


def test_save_load_round_trip(tmp_path, mlp):
    sess = dc.compile(mlp)
    path = sess.save(tmp_path / "mlp.dcopt")
    assert {p.name for p in path.iterdir()} == {"manifest.json", "program.json", "kernels.py", "kernels.ll",
                                                "weights.bin", "model.onnx"}
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["target"] == "cpu" and manifest["pipeline"] == "O3" and manifest["patches"] == []
    assert len(manifest["model"]["sha256"]) == 64 and manifest["toolchain"]["numba"]
    source, llvm_ir = (path / "kernels.py").read_text(), (path / "kernels.ll").read_text()
    assert manifest["kernels"] and manifest["native_key"]
    for kernel in manifest["kernels"]:  # every listed kernel is in the build, numba source or LLVM IR
        assert (f"define void @{kernel['name']}(" in llvm_ir if kernel.get("language") == "llvm"
                else f"def {kernel['name']}(" in source), kernel
    loaded = dc.load(path)
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    np.testing.assert_array_equal(loaded.run(None, {"x": x})[0], sess.run(None, {"x": x})[0])


def test_weights_load_memory_mapped_and_writes_never_reach_the_file(tmp_path, mlp):
    path = dc.compile(mlp).save(tmp_path / "m.dcopt")
    before = (path / "weights.bin").read_bytes()
    built = dc.load(path)._built()
    for array in built.program.params.values():
        base = array
        while base is not None and not isinstance(base, np.memmap):
            base = base.base
        assert isinstance(base, np.memmap) and array.flags.writeable  # numba's signatures take writable arrays
    next(iter(built.program.params.values())).reshape(-1)[0] += 1.0  # copy-on-write: a private page
    assert (path / "weights.bin").read_bytes() == before
    index = json.loads((path / "program.json").read_text())["weights"]
    assert all(entry["offset"] % 64 == 0 for entry in index.values())


def test_build_of_an_older_format_says_how_to_rebuild(tmp_path, mlp):
    path = dc.compile(mlp).save(tmp_path / "m.dcopt")
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(ModelLoadError, match=r"build format 1; this dcopt reads 2\); rebuild it .*dcopt compile"):
        dc.load(path)


def test_damaged_build_names_the_problem(tmp_path, mlp):
    path = dc.compile(mlp).save(tmp_path / "m.dcopt")
    (path / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match="weights.bin is missing"):
        dc.load(path)
    assert not dc.is_build_dir(tmp_path)


def test_cli_compile(tmp_path):
    out = tmp_path / "tr.dcopt"
    result = CliRunner().invoke(app, ["compile", str(TINY_RESNET), "-o", str(out), "--dim", "N=2"])
    assert result.exit_code == 0, result.output
    summary = " ".join(result.output.split())  # rich wraps the line at the terminal width
    assert "13 steps: 3 generated kernel(s), 5 library call(s) (conv 4, gemm 1), 5 view/copy" in summary  # N=2: a GEMM
    assert "0 dynamic, 0 fallback (every op native)" in summary
    sess = dc.load(out)
    assert sess.bindings == {"N": 2}
    assert sess.run(None, {"image": np.zeros((2, 3, 32, 32), np.float32)})[0].shape == (2, 10)


def test_cli_compile_bad_dim(tmp_path):
    result = CliRunner().invoke(app, ["compile", str(TINY_RESNET), "-o", str(tmp_path / "x"), "--dim", "N"])
    assert result.exit_code != 0 and "SYMBOL=N" in result.output


def test_patches_are_applied_and_recorded(tmp_path):
    import onnx

    from tests.backends.conftest import assert_matches_reference

    model = onnx.load(str(TINY_RESNET))
    sess = dc.compile(model, patches=["fold_batchnorm"])
    assert sess.manifest["patches"] == ["fold_batchnorm"]
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    assert_matches_reference(model, sess, {"image": x})


def test_build_key_follows_the_optimizer_sources(monkeypatch):
    """A changed pass (or importer, or op) must not be answered with a build the old one made."""
    from dcopt.backends.cpu import build

    digest = "ab" * 32
    key = build.build_key(digest, "O3", [], {})
    monkeypatch.setattr(build, "_optimizer_version", lambda: "another pass version")
    assert build.build_key(digest, "O3", [], {}) != key


def test_every_kernel_of_a_build_has_its_source(tmp_path):
    """``builds diff --source`` and the viewer read each kernel's code: every numba kernel the
    manifest lists, not only the last one in kernels.py (a regular expression found one)."""
    from dcopt.kernels.sources import kernel_sources

    path = dc.compile(TINY_RESNET, cache_dir=tmp_path / "cache").save(tmp_path / "t.dcopt")
    manifest = json.loads((path / "manifest.json").read_text())
    sources = kernel_sources(path)
    numba = [k["name"] for k in manifest["kernels"] if k.get("language") != "llvm" and not k["name"].endswith("_task")]
    assert len(numba) >= 2
    for name in numba:
        assert sources[name].lstrip().startswith(("@", "def ")) and f"def {name}(" in sources[name], name
    for name in (k["name"] for k in manifest["kernels"] if k.get("language") == "llvm"):
        assert f"@{name}(" in sources[name] or f'@"{name}' in sources[name], name


def test_compile_writes_its_weights_once_and_leaves_no_temporary_file(tmp_path, mlp):
    """The generated weights go to one file as they are made; the cache's build links it and the
    session runs on copy-on-write maps of it (no second copy in memory, none left behind)."""
    cache = tmp_path / "cache"
    sess = dc.compile(mlp, cache_dir=cache)
    built = sess._built()
    weights = built.directory / "weights.bin"
    assert not list(cache.rglob("weights-*"))
    for array in built.program.params.values():
        if array.size:
            assert isinstance(array.base, np.memmap) or isinstance(array, np.memmap), type(array.base)
            assert array.flags.writeable  # the kernels' signatures take writable arrays
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    first = sess.run(None, {"x": x})[0]
    np.testing.assert_array_equal(dc.load(sess.save(tmp_path / "m.dcopt")).run(None, {"x": x})[0], first)
    assert weights.stat().st_size > 0
