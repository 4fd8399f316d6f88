"""``dcopt builds ls|show|diff|gc`` on what ``dcopt compile`` writes and on the cache's builds."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from dcopt.cli import app
from dcopt.kernels.builds import BuildCatalog


@pytest.fixture
def env(tmp_path, monkeypatch, mlp_model):
    monkeypatch.setenv("DCOPT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "mlp.onnx"
    onnx.save_model(mlp_model, str(path))
    return tmp_path, path


def dcopt(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_two_compiles_are_listed_and_their_difference_explained(env):
    tmp, model = env
    dcopt("compile", model, "-o", tmp / "o3.dcopt")
    dcopt("compile", model, "-O", "1", "--dim", "N=4", "-o", tmp / "o1.dcopt")
    listed = json.loads(dcopt("builds", "ls", "--json"))
    outputs = {b["path"] for b in listed if b["kind"] == "output"}
    assert outputs == {str((tmp / "o3.dcopt").resolve()), str((tmp / "o1.dcopt").resolve())}
    assert sum(b["kind"] == "cache" for b in listed) == 2 and all(b["status"] == "ok" for b in listed)
    text = dcopt("builds", "diff", tmp / "o3.dcopt", tmp / "o1.dcopt")
    assert 'option pipeline: "O3" -> "O1"' in text and 'option bindings: {"N": 1} -> {"N": 4}' in text
    assert "pass decisions:" in text and "- fuse (only in a" in text
    as_json = json.loads(dcopt("builds", "diff", tmp / "o3.dcopt", tmp / "o1.dcopt", "--json"))
    assert {o["name"] for o in as_json["options"]} == {"pipeline", "bindings"} and as_json["model"] == "same"
    same = dcopt("builds", "diff", tmp / "o3.dcopt", tmp / "o3.dcopt")
    assert "same model, options, pass decisions, toolchain and kernels" in same


def test_a_weights_only_change_is_named_per_parameter(env, mlp_model):
    tmp, model = env
    tuned = onnx.ModelProto()
    tuned.CopyFrom(mlp_model)
    w = tuned.graph.initializer[2]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.01, w.name))
    onnx.save_model(tuned, str(tmp / "tuned.onnx"))
    dcopt("compile", model, "-o", tmp / "a.dcopt")
    dcopt("compile", tmp / "tuned.onnx", "-o", tmp / "b.dcopt")
    diff = json.loads(dcopt("builds", "diff", tmp / "a.dcopt", tmp / "b.dcopt", "--json"))
    assert diff["model"] == "weights" and len(diff["weights"]["changed"]) == 1 and not diff["options"]


def test_show_by_path_and_by_cache_key(env):
    tmp, model = env
    dcopt("compile", model, "-o", tmp / "m.dcopt")
    shown = dcopt("builds", "show", tmp / "m.dcopt")
    for needle in ("pipeline     O3", "model.onnx", "weights.bin", "kernels.py", "passes", "fuse"):
        assert needle in shown, needle
    key = next(b["key"] for b in json.loads(dcopt("builds", "ls", "--json")) if b["kind"] == "cache")
    assert json.loads(dcopt("builds", "show", key[:8], "--json"))["kind"] == "cache"


def test_diff_refuses_a_damaged_build(env):
    tmp, model = env
    dcopt("compile", model, "-o", tmp / "a.dcopt")
    dcopt("compile", model, "-o", tmp / "b.dcopt")
    (tmp / "b.dcopt" / "kernels.py").write_text("# tampered\n")
    result = CliRunner().invoke(app, ["builds", "diff", str(tmp / "a.dcopt"), str(tmp / "b.dcopt")])
    assert result.exit_code == 1 and "damaged build" in result.output and "kernels.py" in result.output


def test_gc_keeps_builds_in_use_and_never_touches_outputs(env):
    tmp, model = env
    dcopt("compile", model, "-o", tmp / "o3.dcopt")
    dcopt("compile", model, "-O", "1", "-o", tmp / "o1.dcopt")
    catalog = BuildCatalog(tmp / "cache")
    held_key = catalog.cached()[0].key
    held = catalog.hold(held_key)  # a process running that build
    try:
        dry = dcopt("builds", "gc", "--max-size", "0", "--dry-run")
        assert "would remove 2 build(s)" in dry and len(catalog.cached()) == 2
        done = dcopt("builds", "gc", "--max-size", "0")
        assert "removed 1 build(s)" in done
        assert [b.key for b in catalog.cached()] == [held_key]
    finally:
        held.close()
    assert (tmp / "o3.dcopt" / "weights.bin").is_file() and (tmp / "o1.dcopt" / "weights.bin").is_file()
    import dcopt as api

    x = np.ones((1, 4), np.float32)
    assert api.load(tmp / "o1.dcopt").run(None, {"x": x})[0].shape == (1, 3)  # hard links outlive the cache
    for level in ("1", "3"):  # the collected build's index row went with it: it is rebuilt, not half-found
        dcopt("compile", model, "-O", level, "-o", tmp / f"again{level}.dcopt")
    assert len(catalog.cached()) == 2


def test_gc_removes_only_directories_the_cache_made(env):
    """A user's directory put under ``cpu-builds``, and a build-key-named link to one, are not
    cache builds: gc, even at size 0, leaves both (and what the link points at) alone."""
    tmp, model = env
    dcopt("compile", model, "-o", tmp / "o3.dcopt")
    builds = tmp / "cache" / "cpu-builds"
    notes = builds / "my-notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine too")
    (builds / ("ab" * 12)).symlink_to(elsewhere, target_is_directory=True)
    assert "removed 1 build(s)" in dcopt("builds", "gc", "--max-size", "0")
    assert (notes / "keep.txt").read_text() == "mine" and (elsewhere / "keep.txt").read_text() == "mine too"
    assert (builds / ("ab" * 12)).is_symlink()


def test_ls_says_when_a_recorded_build_is_gone(env):
    import shutil

    tmp, model = env
    dcopt("compile", model, "-o", tmp / "gone.dcopt")
    shutil.rmtree(tmp / "gone.dcopt")
    listed = json.loads(dcopt("builds", "ls", "--json"))
    assert [b["status"] for b in listed if b["kind"] == "output"] == ["missing"]
    pruned = json.loads(dcopt("builds", "ls", "--json", "--prune"))
    assert not [b for b in pruned if b["kind"] == "output"]
