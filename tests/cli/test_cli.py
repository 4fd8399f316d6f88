"""The dcopt command, invoked as a user would: a subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest


def dcopt(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dcopt", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_help_lists_commands():
    result = dcopt("--help")
    assert result.returncode == 0
    for cmd in ("inspect", "run", "convert", "ops"):
        assert cmd in result.stdout


def test_inspect_shows_data_movement_view(tiny_resnet_path):
    result = dcopt("inspect", tiny_resnet_path, "--per-node")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in ("image", "[N, 3, 32, 32]", "probs", "Conv", "bytes moved", "parameters", "10,298", "FLOPs"):
        assert needle in out


def test_inspect_json_with_dim_binding(tiny_resnet_path):
    result = dcopt("inspect", tiny_resnet_path, "--json", "--dim", "N=4")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["bindings"] == {"N": 4}
    assert report["ops"]["Conv"] == 4
    one = json.loads(dcopt("inspect", tiny_resnet_path, "--json").stdout)
    assert report["cost"]["total_flops"] == pytest.approx(4 * one["cost"]["total_flops"], rel=0.01)


def test_run_writes_outputs(tmp_path, tiny_resnet_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "image.npy", x)
    result = dcopt("run", tiny_resnet_path, "--input", f"image={tmp_path / 'image.npy'}", "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    probs = np.load(tmp_path / "out" / "probs.npy")
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert "probs" in result.stdout


def test_run_random_inputs(tmp_path, tiny_resnet_path):
    result = dcopt("run", tiny_resnet_path, "--random-inputs", "--dim", "N=3", "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "probs.npy").shape == (3, 10)


def test_run_wrong_shape_is_one_clear_line(tmp_path, tiny_resnet_path):
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 16, 16), np.float32))
    result = dcopt("run", tiny_resnet_path, "--input", f"image={tmp_path / 'bad.npy'}", "-o", tmp_path / "o")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "input 'image'" in result.stderr and "axis 2: 32 vs 16" in result.stderr
    assert not (tmp_path / "o").exists()


def test_verbose_shows_traceback(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    quiet = dcopt("inspect", bad)
    loud = dcopt("--verbose", "inspect", bad)
    assert quiet.returncode == loud.returncode == 1
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr
    assert str(bad) in quiet.stderr


def test_unsupported_ops_listed_once(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    model = helper.make_model(helper.make_graph(
        [helper.make_node("Foo", ["x"], ["a"], name="n1", domain="acme"),
         helper.make_node("Bar", ["a"], ["y"], name="n2", domain="acme")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = dcopt("run", path, "--random-inputs", "-o", tmp_path / "o")
    assert result.returncode == 1
    assert "acme.Foo" in result.stderr and "acme.Bar" in result.stderr and "Traceback" not in result.stderr


def test_convert_round_trip(tmp_path, tiny_resnet_path):
    as_json = tmp_path / "m.json"
    back = tmp_path / "m.onnx"
    assert dcopt("convert", tiny_resnet_path, "-o", as_json).returncode == 0
    assert json.loads(as_json.read_text())["format"] == "dcopt-ir"
    assert dcopt("convert", as_json, "-o", back).returncode == 0
    import onnx

    onnx.checker.check_model(onnx.load(back))
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for model, out in ((tiny_resnet_path, "a"), (back, "b"), (as_json, "c")):
        assert dcopt("run", model, "-i", f"image={tmp_path / 'x.npy'}", "-o", tmp_path / out).returncode == 0
    a = np.load(tmp_path / "a" / "probs.npy")
    np.testing.assert_array_equal(a, np.load(tmp_path / "b" / "probs.npy"))
    np.testing.assert_array_equal(a, np.load(tmp_path / "c" / "probs.npy"))


def test_convert_bad_suffix_and_garbage_json(tmp_path, tiny_resnet_path):
    result = dcopt("convert", tiny_resnet_path, "-o", tmp_path / "m.txt")
    assert result.returncode == 1 and "must end in .onnx or .json" in result.stderr
    (tmp_path / "g.json").write_text("{not json")
    result = dcopt("convert", tmp_path / "g.json", "-o", tmp_path / "x.onnx")
    assert result.returncode == 1 and "not valid JSON" in result.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_compile_summary_counts_generated_library_and_reference_steps():
    from dcopt.cli.compile_cmd import step_summary

    assert step_summary({"kernel": 2, "conv": 3, "gemm": 1, "view": 1, "dynamic": 1, "fallback": 2}) == (
        "10 steps: 2 generated kernel(s), 4 library call(s) (conv 3, gemm 1), 1 view/copy, 1 dynamic, 2 fallback")
    assert step_summary({"kernel": 1}) == "1 steps: 1 generated kernel(s), 0 library call(s), 0 dynamic, 0 fallback"


def test_run_profile_shows_where_the_time_goes(tmp_path, tiny_resnet_path):
    result = dcopt("run", tiny_resnet_path, "--backend", "cpu", "--random-inputs", "--dim", "N=2", "--profile",
                   "--top", "3", "--profile-reps", "3", "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "median per step" in out and "conv step(s)" in out and "kernel step(s)" in out
    refused = dcopt("run", tiny_resnet_path, "--backend", "reference", "--random-inputs", "--profile", "-o", tmp_path)
    assert refused.returncode == 2 and "--profile" in refused.stderr and "--backend cpu" in refused.stderr


def test_profile_table_totals_kinds_and_lists_the_slowest_steps():
    from rich.console import Console

    from dcopt.cli.run_cmd import profile_table

    steps = [{"label": "conv_a", "kind": "conv", "seconds": 3e-3},
             {"label": "map_b", "kind": "kernel", "seconds": 1e-3},
             {"label": "conv_c", "kind": "conv", "seconds": 2e-3}]
    console = Console(width=200, record=True)
    console.print(profile_table(steps, 2, "m.dcopt"))
    text = " ".join(console.export_text().split())  # the title wraps at the table's width
    assert "m.dcopt: 3 timed steps (views take no time), 6.000 ms in total" in text
    assert "all 2 conv step(s)" in text and "83.3%" in text and "all 1 kernel step(s)" in text and "16.7%" in text
    assert "conv_a" in text and "conv_c" in text and "map_b" not in text  # the two slowest only
