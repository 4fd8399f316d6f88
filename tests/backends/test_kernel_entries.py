"""One kernel-store entry per generated kernel: builds share the entries of the kernels they have
in common (a second build compiles only its new kernels), gc never collects an entry a loaded
build uses, and a damaged entry is rebuilt before anything of it runs."""

from __future__ import annotations

import gc
import logging

import numpy as np
import onnx
import pytest
from onnx import helper

import dcopt.compiled as dc
from dcopt.backends.cpu import compiler
from dcopt.kernels import KernelStore
from dcopt.kernels import native
from tests.backends.conftest import assert_matches_reference


def _x():
    return np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)


def _with_tanh(model):
    """The same network with a Tanh after its output: one kernel changes, the rest are the same."""
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    graph = extended.graph
    graph.node.append(helper.make_node("Tanh", [graph.output[0].name], ["z"]))
    out = graph.output[0]
    graph.output.pop()
    graph.output.append(helper.make_tensor_value_info("z", out.type.tensor_type.elem_type, ["N", 10]))
    return extended


def _keys(sess) -> dict[str, str]:
    return {k["name"]: k["key"] for k in sess.manifest["kernels"]}


def _of(compiles, names):
    """The compiles of a build's kernels (not, say, the thread pool's own code)."""
    return [c for c in compiles if set(c) & set(names)]


@pytest.fixture
def fresh_process(monkeypatch):
    """As a new process sees the store: nothing loaded yet (kernels come from their entries)."""
    for name in ("_LOADED", "_OBJECTS", "_ENGINES"):
        monkeypatch.setattr(compiler, name, {})


@pytest.fixture
def compiles(monkeypatch):
    """The functions each kernel compile built (numba modules and LLVM objects), in order."""
    built = []
    numba, llvm = native.compile_numba_module, native.emit_llvm_object

    def compile_numba(staging, source, signatures, *, digest):
        built.append(sorted(signatures))
        return numba(staging, source, signatures, digest=digest)

    def emit(staging, llvm_ir, name="kernel", opt_level=3):
        built.append([line.split("@", 1)[1].split("(")[0] for line in llvm_ir.splitlines()
                      if line.startswith("define void")])
        return llvm(staging, llvm_ir, name, opt_level)

    monkeypatch.setattr(native, "compile_numba_module", compile_numba)
    monkeypatch.setattr(native, "emit_llvm_object", emit)
    return built


def test_each_kernel_is_an_entry_and_a_second_build_compiles_only_its_new_kernels(
        tmp_path, mlp, fresh_process, compiles):
    cache = tmp_path / "cache"
    store = KernelStore(cache / "kernels")
    first = dc.compile(mlp, cache_dir=cache)
    first.run(None, {"x": _x()})
    keys = _keys(first)
    entries = {e.key: e for e in store.entries()}
    assert all(keys.values()) and set(keys.values()) <= set(entries)
    languages = {k["name"]: k.get("language", "numba") for k in first.manifest["kernels"]}
    assert set(languages.values()) == {"numba", "llvm"}  # both kinds are split
    for name, key in keys.items():  # a kernel and its pool-task wrapper: one entry; two kernels: two
        owner = name.removesuffix("_task") if name.removesuffix("_task") in keys else name
        assert key == keys[owner]
        others = [n for n in keys if keys[n] != key and n != owner]
        source = entries[key].source()
        assert (f"def {name}(" if languages[name] == "numba" else f"define void @{name}(") in source
        assert not any(f"def {o}(" in source or f"@{o}(" in source for o in others), name
    assert len(_of(compiles, keys)) == len(set(keys.values()))  # each entry compiled once, on its own

    compiles.clear()
    ids = {key: entries[key].meta["build_id"] for key in keys.values()}
    for name in ("_LOADED", "_OBJECTS", "_ENGINES"):  # a new process
        getattr(compiler, name).clear()
    extended = _with_tanh(mlp)
    second = dc.compile(extended, cache_dir=cache)
    assert_matches_reference(extended, second, {"x": _x()})
    shared = set(_keys(second).values()) & set(keys.values())
    new = set(_keys(second).values()) - set(keys.values())
    assert shared and new
    assert len(_of(compiles, _keys(second))) == len(new)  # only the kernels the first build did not have
    entries = {e.key: e for e in store.entries()}
    assert all(entries[key].meta["build_id"] == ids[key] for key in shared)  # reused, not rebuilt


def test_gc_keeps_the_kernel_entries_of_a_loaded_build(tmp_path, mlp, fresh_process):
    cache = tmp_path / "cache"
    store = KernelStore(cache / "kernels")
    sess = dc.compile(mlp, cache_dir=cache)
    mine = set(_keys(sess).values())
    assert not mine & {r.entry.key for r in store.gc(max_bytes=0) if r.entry is not None}
    assert mine <= {e.key for e in store.entries()} and all(store.in_use(k) for k in mine)

    path = sess.save(tmp_path / "m.dcopt")  # an output build loaded elsewhere holds them too
    del sess
    gc.collect()
    loaded = dc.load(path, cache_dir=cache)
    store.gc(max_bytes=0)
    assert mine <= {e.key for e in store.entries()}
    np.testing.assert_array_equal(loaded.run(None, {"x": _x()})[0], loaded.run(None, {"x": _x()})[0])

    del loaded
    gc.collect()
    removed = {r.entry.key for r in store.gc(max_bytes=0) if r.entry is not None}
    assert mine <= removed and not mine & {e.key for e in store.entries()}


@pytest.mark.parametrize("victim", ["source.py", ".nbc", "kernel.o"])
def test_a_damaged_kernel_entry_is_rebuilt_and_never_run(tmp_path, mlp, fresh_process, compiles, caplog, victim):
    cache = tmp_path / "cache"
    store = KernelStore(cache / "kernels")
    sess = dc.compile(mlp, cache_dir=cache)
    want = sess.run(None, {"x": _x()})[0]
    path = sess.save(tmp_path / "m.dcopt")
    keys = _keys(sess)
    entries = [e for e in (store.find(k) for k in sorted(set(keys.values())))
               if any(f.endswith(victim) for f in e.meta["files"])]
    entry = entries[0]
    file = entry.path / next(f for f in sorted(entry.meta["files"]) if f.endswith(victim))
    marker = tmp_path / "ran"
    if victim == "source.py":  # code that would leave a mark if it were ever imported
        file.write_text(file.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    else:
        data = bytearray(file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        file.write_bytes(bytes(data))
    del sess
    gc.collect()
    for name in ("_LOADED", "_OBJECTS", "_ENGINES"):
        getattr(compiler, name).clear()
    compiles.clear()
    with caplog.at_level(logging.WARNING, logger="dcopt.kernels"):
        got = dc.load(path, cache_dir=cache).run(None, {"x": _x()})[0]
    np.testing.assert_array_equal(got, want)
    assert f"kernel {entry.key[:12]} is damaged" in caplog.text
    assert len(_of(compiles, keys)) == 1  # that kernel only
    assert not marker.exists()
    assert store.verify(entry.key) is None and store.find(entry.key).meta["build_id"] != entry.meta["build_id"]


def test_kernels_ls_lists_a_builds_entries_and_who_uses_them(tmp_path, mlp, fresh_process):
    import json

    from click.testing import CliRunner

    from dcopt.cli.kernels_cmd import kernels

    cache = tmp_path / "cache"
    sess = dc.compile(mlp, cache_dir=cache)
    path = sess.save(tmp_path / "m.dcopt")  # recorded: a second build listing the same kernels
    result = CliRunner().invoke(kernels, ["ls", "--store", str(cache / "kernels"), "--build", str(path), "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert {e["key"] for e in listed} == set(_keys(sess).values())
    for entry in listed:
        assert str(path.resolve()) in entry["builds"] and len(entry["builds"]) == 2  # the cache's build and m.dcopt
    shown = CliRunner(env={"COLUMNS": "250"}).invoke(kernels, ["show", listed[0]["key"][:12], "--store",
                                                                str(cache / "kernels"), "--no-source"])
    assert "in use     yes" in shown.output and str(path.resolve()) in shown.output
