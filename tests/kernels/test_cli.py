"""``dcopt kernels`` through click's CliRunner (and once as a subprocess); ``dcopt builds`` is
tested on real compiles in ``tests/cli/test_builds_cmd.py``."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from dcopt.cli.kernels_cmd import kernels
from tests.kernels.conftest import FakeBuild, age_entry, make_key


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


def _dcopt(*args):
    return subprocess.run([sys.executable, "-m", "dcopt", *map(str, args)], capture_output=True, text=True, timeout=120)


def test_wired_into_the_dcopt_command(filled):
    assert make_key("one").short in _dcopt("kernels", "ls", "--store", filled.root).stdout
