"""dcopt opt / dcopt report as a user runs them, including a user pipeline file with its own pass."""

import json
import textwrap

import numpy as np
import onnx

from dcopt.testing import light_zoo_path, run_onnxruntime
from tests.cli.test_cli import dcopt


def test_opt_with_spec_writes_a_model_onnxruntime_runs(tmp_path, tiny_resnet_path):
    out = tmp_path / "o.onnx"
    result = dcopt("opt", tiny_resnet_path, "--passes", "fold,cse,dce", "--verify", "--check", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "fold-constants" in result.stdout and "wrote" in result.stdout
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(run_onnxruntime(onnx.load(out), {"image": x})[0],
                               run_onnxruntime(onnx.load(tiny_resnet_path), {"image": x})[0], rtol=1e-5)


def test_opt_unknown_pass_lists_valid_names(tiny_resnet_path):
    result = dcopt("opt", tiny_resnet_path, "--passes", "fold,bogus")
    assert result.returncode == 1
    assert "unknown pass 'bogus'" in result.stderr and "cse" in result.stderr and "Traceback" not in result.stderr


def test_opt_rejects_two_pipeline_choices(tiny_resnet_path):
    result = dcopt("opt", tiny_resnet_path, "--passes", "cse", "-O", "1")
    assert result.returncode == 1 and "only one of" in result.stderr


def test_user_pipeline_file_registers_its_own_pass(tmp_path, tiny_resnet_path):
    pipeline = tmp_path / "my_pipeline.py"
    pipeline.write_text(textwrap.dedent('''
        from dcopt.passes import function_pass, register_pass

        @function_pass("rename-softmax-node")
        def rename(graph, ctx):
            graph.nodes = [n.replace(name="my_softmax") if n.op == "Softmax" else n for n in graph.nodes]
            return True

        register_pass(rename)
        PIPELINE = ["canonicalize", "rename-softmax-node"]
    '''))
    out = tmp_path / "o.json"
    result = dcopt("opt", tiny_resnet_path, "--pipeline", pipeline, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "rename-softmax-node" in result.stdout
    nodes = json.loads(out.read_text())["graph"]["nodes"]
    assert any(n["name"] == "my_softmax" for n in nodes)


def test_broken_pipeline_file_is_one_clear_line(tmp_path, tiny_resnet_path):
    bad = tmp_path / "bad.py"
    bad.write_text("PIPELINE = ['fold'\n")
    result = dcopt("opt", tiny_resnet_path, "--pipeline", bad)
    assert result.returncode == 1 and "SyntaxError" in result.stderr and str(bad) in result.stderr
    (tmp_path / "empty.py").write_text("x = 1\n")
    result = dcopt("opt", tiny_resnet_path, "--pipeline", tmp_path / "empty.py")
    assert result.returncode == 1 and "must define PIPELINE" in result.stderr


def test_report_table_json_and_html(tmp_path):
    model = light_zoo_path("squeezenet")
    result = dcopt("report", model, "-O", "1", "--json", tmp_path / "r.json", "--html", tmp_path / "r.html")
    assert result.returncode == 0, result.stderr
    assert "bytes moved between kernels" in result.stdout and "fold-constants" in result.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["passes"][0]["after"] == "input"
    assert data["totals"]["after"]["kernels"] == len(data["kernels"])
    assert all(k["flops"] is not None for k in data["kernels"])
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!doctype html>") and "window.DCOPT_DATA" in page and "cytoscape" in page and "Conv" in page


def test_bench_runs_dcopt_beside_onnxruntime(tmp_path, tiny_resnet_path):
    out = tmp_path / "bench.json"
    result = dcopt("bench", tiny_resnet_path, "--quick", "--reps", "3", "--runtimes", "dcopt,onnxruntime",
                   "--json", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dcopt speedup" in result.stdout
    data = json.loads(out.read_text())
    text = json.dumps(data)
    assert "onnxruntime" in text and "tiny_resnet" in text
