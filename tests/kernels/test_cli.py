"""``dcopt kernels`` and ``dcopt builds`` through click's CliRunner (and once as a subprocess)."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from dcopt.cli.builds_cmd import builds
from dcopt.cli.kernels_cmd import kernels
from dcopt.kernels import write_build
from tests.kernels.conftest import FakeBuild, age_entry, make_key
from tests.kernels.test_builds import KERNELS, manifest


def invoke(cmd, *args):
    return CliRunner(env={"COLUMNS": "250"}).invoke(cmd, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def filled(store):
    store.get_or_build(make_key("one"), FakeBuild("def one():\n    return 1\n"),
                       provenance={"model": "bert", "node": "gelu_3"})
    store.get_or_build(make_key("two"), FakeBuild())
    return store


def test_kernels_ls(filled):
    result = invoke(kernels, "ls", "--store", filled.root)
    assert result.exit_code == 0, result.output
    assert "2 kernel(s)" in result.output and "bert/gelu_3" in result.output
    assert make_key("one").short in result.output and "cpu" in result.output
    listed = json.loads(invoke(kernels, "ls", "--store", filled.root, "--json").output)
    assert {e["key"] for e in listed} == {make_key("one").digest, make_key("two").digest}


def test_kernels_show(filled):
    result = invoke(kernels, "show", make_key("one").digest[:8], "--store", filled.root)
    assert result.exit_code == 0, result.output
    for needle in (make_key("one").digest, "integrity  ok", "options: {\"fastmath\": true}", "model: bert",
                   "source.py", "kernel.o", "def one():"):
        assert needle in result.output, needle


def test_kernels_show_unknown_prefix_is_a_dcopt_error(filled):
    from dcopt.errors import DcoptError

    with pytest.raises(DcoptError, match="no kernel with key prefix"):
        invoke(kernels, "show", "ffffffff", "--store", filled.root)


def test_kernels_gc(filled):
    meta = filled.entry_dir(make_key("one").digest) / "meta.json"
    age_entry(filled.get(make_key("one")), 40)
    dry = invoke(kernels, "gc", "--store", filled.root, "--older-than", 30, "--dry-run")
    assert dry.exit_code == 0 and "would remove 1 item(s)" in dry.output and meta.exists()
    done = invoke(kernels, "gc", "--store", filled.root, "--older-than", 30)
    assert "removed 1 item(s)" in done.output and "unused for 40" in done.output and not meta.exists()
    assert "removed 1 item(s)" in invoke(kernels, "gc", "--store", filled.root, "--max-size", 0).output


def test_builds_ls_and_diff(tmp_path, store):
    a = write_build(tmp_path / "a.dcopt", manifest(), KERNELS, store=store)
    b = write_build(tmp_path / "b.dcopt", manifest(benchmark={"latency_ms": 1.0}), {"fc1": KERNELS["fc1"]}, store=store)
    listed = invoke(builds, "ls", "--store", store.root)
    assert listed.exit_code == 0 and "2 build(s)" in listed.output and "a.dcopt" in listed.output
    result = invoke(builds, "diff", a.path, b.path)
    assert result.exit_code == 0, result.output
    assert "- relu" in result.output and "benchmark latency_ms: 2 -> 1, delta -1 (-50.0%)" in result.output
    as_json = json.loads(invoke(builds, "diff", a.path, b.path, "--json").output)
    assert as_json["kernels_removed"] == ["relu"]


def _dcopt(*args):
    return subprocess.run([sys.executable, "-m", "dcopt", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_wired_into_the_dcopt_command(tmp_path, filled):
    if "kernels" not in _dcopt("--help").stdout:
        pytest.skip("dcopt kernels/builds not registered in dcopt/cli/__init__.py yet")
    assert make_key("one").short in _dcopt("kernels", "ls", "--store", filled.root).stdout
    write_build(tmp_path / "a.dcopt", manifest(), KERNELS)
    (tmp_path / "a.dcopt" / "kernels" / "fc1.py").write_text("tampered")
    write_build(tmp_path / "b.dcopt", manifest(), KERNELS)
    result = _dcopt("builds", "diff", tmp_path / "a.dcopt", tmp_path / "b.dcopt")
    assert result.returncode == 1 and result.stderr.count("\n") <= 3
    assert "damaged build" in result.stderr and "kernels/fc1.py" in result.stderr
