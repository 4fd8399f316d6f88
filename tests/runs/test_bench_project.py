"""``dcopt bench`` as recorded runs: a dcopt.yaml matrix, the regression gate, and charts."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dcopt.cli import app
from dcopt.errors import InputError
from dcopt.runs.bench import bench_metrics, check_regression, parse_percent
from dcopt.runs.project import load_project
from dcopt.runs.select import list_runs
from tests.runs.conftest import fake_run

PROJECT = """
models:
  tiny: {model}
pipelines:
  O2: O2
  O3: O3
patch-sets:
  none: []
bench:
  runtimes: dcopt,onnxruntime
  reps: 5
  quick: true
matrix:
  models: [tiny]
  pipelines: [O2, O3]
"""


def test_project_file_errors_name_file_and_field(tmp_path, tiny_resnet_path):
    path = tmp_path / "dcopt.yaml"
    path.write_text(PROJECT.format(model=tiny_resnet_path))
    cells = load_project(path).cells()
    assert [c.label for c in cells] == ["tiny/O2/none", "tiny/O3/none"]
    for text, message in (("matrix:\n  pipelines: [O9]\nmodels: {a: x.onnx}", "matrix.pipelines: O9 not defined"),
                          ("models: {a: x.onnx}\nbench: {reps: many}", "bench.reps: expected int, got 'many'"),
                          ("models: {a: x.onnx}\nextras: 1", "extras: unknown section"),
                          ("models: [a]", "models: expected a mapping of names, got list"),
                          ("models: {a: 1}", "models.a: expected a model file path")):
        path.write_text(text)
        with pytest.raises(InputError, match=message) as info:
            load_project(path)
        assert str(path) in str(info.value)
    with pytest.raises(InputError, match="no project file"):
        load_project(tmp_path / "missing.yaml")


def test_regression_gate_and_metrics():
    result = {"models": [{"name": "m", "runtimes": {
        "dcopt": {"status": "ok", "stats": {"reps": 3, "median_ms": 2.0, "p10_ms": 1.9, "p90_ms": 2.2, "iqr_ms": 0.1},
                  "prepare_s": 1.5, "correctness": {"valid": True}},
        "onnxruntime": {"status": "ok", "stats": {"reps": 3, "median_ms": 3.0}}},
        "speedups": {"onnxruntime": {"speedup": 1.5}}}]}
    metrics = bench_metrics(result)
    assert metrics["latency_ms"] == 2.0 and metrics["latency_ms.onnxruntime"] == 3.0
    assert metrics["speedup.onnxruntime"] == 1.5 and metrics["correct"] is True
    assert parse_percent("5%") == 0.05
    with pytest.raises(InputError, match="percentage"):
        parse_percent("five")

    class Base:
        metrics, short_id, label, kind = {"latency_ms": 1.9}, "abcd1234", "", "bench"

    assert check_regression(Base, metrics, 0.06, "") == []  # +5.3% within 6%
    (failure,) = check_regression(Base, metrics, 0.05, "")
    assert failure.startswith("latency_ms 1.9 -> 2 ms (+5.3%, limit +5.0%) vs baseline run abcd1234")


def test_matrix_records_every_cell_and_the_gate_fails_on_a_slowdown(home, tmp_path, tiny_resnet_path):
    project = tmp_path / "dcopt.yaml"
    project.write_text(PROJECT.format(model=tiny_resnet_path))
    fake_run("bench", {}, {"latency_ms": 1e-6}, home=home, label="impossible")
    result = CliRunner().invoke(app, ["bench", "--matrix", "--project", str(project), "--baseline", "impossible",
                                      "--fail-if-slower", "5%"])
    assert result.exit_code == 1, result.output
    assert "slower than the baseline: latency_ms 1e-06 ->" in result.output
    assert "[tiny/O2/none]" in result.output and "[tiny/O3/none]" in result.output
    cells = [r for r in list_runs(home) if r.label.startswith("tiny/")]
    assert [(r.label, r.status, r.options["pipeline"]) for r in cells] == [
        ("tiny/O3/none", "completed", "O3"), ("tiny/O2/none", "completed", "O2")]
    assert all(r.metrics["latency_ms"] > 0 and r.metrics["correct"] for r in cells)

    rows = json.loads(CliRunner().invoke(app, ["runs", "compare", "1:2", "--min", "latency", "--json"]).output)
    assert sorted(r["latency_ms"] for r in rows) == [r["latency_ms"] for r in rows]
    assert {r["pipeline"] for r in rows} == {"O2", "O3"}  # the varied option is a column
    for chart, name in (("latency", "lat.png"), ("speedup", "speedup.svg"), ("metric", "over.png")):
        out = CliRunner().invoke(app, ["runs", "plot", "1", "2", "--chart", chart, "-o", str(tmp_path / name)])
        assert out.exit_code == 0, out.output
        head = (tmp_path / name).read_bytes()[:64]
        assert head.startswith(b"\x89PNG") if name.endswith(".png") else b"<svg" in (tmp_path / name).read_bytes()
    bad = CliRunner().invoke(app, ["runs", "plot", "3", "-o", str(tmp_path / "x.png")])
    assert bad.exit_code == 1 and "has no benchmark result" in bad.output
