"""``dcopt runs``: commands record runs; ls/show/compare/diff/label/tag/rm read and change them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dcopt.cli import app


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DCOPT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DCOPT_NO_RECORD", raising=False)
    return tmp_path / "home"


def dcopt(*args, ok=True):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_compiles_are_recorded_compared_and_diffed(home, tmp_path, tiny_resnet_path):
    dcopt("compile", tiny_resnet_path, "-o", tmp_path / "a.dcopt", "-O", "2")
    dcopt("compile", tiny_resnet_path, "-o", tmp_path / "b.dcopt", "--patch", "fold_batchnorm")
    dcopt("opt", tiny_resnet_path, "-O", "3")
    dcopt("compile", tiny_resnet_path, "-o", tmp_path / "c.dcopt", "--no-record")

    listed = json.loads(dcopt("runs", "ls", "--json").output)
    assert [(r["index"], r["kind"], r["status"]) for r in listed] == [(1, "opt", "completed"), (2, "compile", "completed"),
                                                                        (3, "compile", "completed")]
    assert listed[1]["build_key"] and listed[1]["build_key"] != listed[2]["build_key"]
    text = dcopt("runs", "ls").output
    assert "tiny_resnet" in text and "3 kernels" in text and "17 -> 8 nodes" in text

    rows = json.loads(dcopt("runs", "compare", "--kind", "compile", "--json").output)
    assert [(r["pipeline"], r["patches"]) for r in rows] == [("O3", ["fold_batchnorm"]), ("O2", [])]
    assert all(r["compile_s"] > 0 for r in rows)
    csv = dcopt("runs", "compare", "2", "3", "-c", "pipeline,compile_s", "--min", "compile_s", "--csv").output
    assert csv.splitlines()[0] == "#,pipeline,compile_s"

    diff = dcopt("runs", "diff", "3", "2").output
    assert 'option pipeline: "O2" -> "O3"' in diff and "patches: - -> ['fold_batchnorm']" in diff
    assert "passes that decided differently:" in diff and "build key:" in diff and "metrics:" in diff
    assert json.loads(dcopt("runs", "diff", "--json").output)["b"] == listed[0]["id"]  # no args: 2 -> 1

    dcopt("runs", "label", "3", "o2-baseline")
    dcopt("runs", "tag", "o2-baseline", "-a", "tiny", "-a", "keep")
    show = dcopt("runs", "show", "o2-baseline").output
    assert "label:    o2-baseline    tags: keep, tiny" in show and "outputs/build-manifest.json" in show
    assert "option" not in dcopt("runs", "diff", "o2-baseline", "3").output  # a run against itself
    record = json.loads(dcopt("runs", "show", "o2-baseline", "--json").output)
    assert record["build"]["pipeline_applied"] == "O2" and record["options"]["level"] == "2"

    dcopt("runs", "rm", "1", "-y")
    assert len(json.loads(dcopt("runs", "ls", "--json").output)) == 2


def test_failed_command_is_an_error_run_and_bad_refs_are_clear(home, tmp_path):
    result = dcopt("compile", tmp_path / "missing.onnx", "-o", tmp_path / "x.dcopt", ok=False)
    assert result.exit_code == 1
    (run,) = json.loads(dcopt("runs", "ls", "--json").output)
    assert run["status"] == "error"
    # an all-digit ref past the last index is also tried as an id prefix: pick one the id does not start with
    n = next(d for d in "789" if not run["id"].startswith(d))
    bad = dcopt("runs", "show", n, ok=False)
    assert bad.exit_code == 1 and f"run {n}: there are 1 run(s)" in bad.output
    bad = dcopt("runs", "compare", "-c", "nope", ok=False)
    assert "no column 'nope'" in bad.output
