"""The CLI as people expect it (issue 16 item 4): progress, piped output, checks that say what
they checked, errors naming the file, unknown --dim names, patches that fold constants first."""

import io
import subprocess
import sys
import time

import numpy as np
import pytest
from onnx import TensorProto, helper

from dcopt.cli import progress_display
from dcopt.progress import reporting, step
from tests.cli.test_cli import dcopt
from tests.conftest import make_model


def test_help_lists_each_command_with_its_whole_first_sentence():
    out = dcopt("--help").stdout  # piped: 80 columns, where click used to cut summaries with '...'
    assert "..." not in out.split("Commands:")[1]
    assert "Benchmark MODELS (.onnx) with dcopt and onnxruntime/torch/OpenVINO side by side." in " ".join(out.split())


@pytest.mark.parametrize("command", [["inspect"], ["run", "--random-inputs", "-o", "{tmp}/o"],
                                     ["compile", "-o", "{tmp}/b.dcopt"]])
def test_unknown_dim_names_are_an_error_listing_the_models_dims(command, tmp_path, tiny_resnet_path):
    args = [a.format(tmp=tmp_path) for a in command]
    result = dcopt(args[0], tiny_resnet_path, *args[1:], "--dim", "Batch=4")
    assert result.returncode == 1
    assert "no symbolic dim 'Batch'; its symbolic dims are N" in result.stderr
    assert not (tmp_path / "b.dcopt").exists() and not (tmp_path / "o").exists()


def test_pipeline_file_with_an_unknown_pass_names_the_file(tmp_path, tiny_resnet_path):
    bad = tmp_path / "mine.py"
    bad.write_text('PIPELINE = ["fold-constants", "fuze"]\n')
    result = dcopt("opt", tiny_resnet_path, "--pipeline", bad)
    assert result.returncode == 1
    assert f"file {bad}" in result.stderr and "unknown pass 'fuze'" in result.stderr


def _leaf_passes(name: str) -> list[str]:
    """The passes a pipeline runs once through (nested pipelines flattened)."""
    from dcopt.passes.pipelines import PIPELINES

    return [leaf for step in PIPELINES[name].steps
            for leaf in (_leaf_passes(step) if step in PIPELINES else [step])]


def test_verify_and_check_say_what_they_checked(tiny_resnet_path):
    result = dcopt("opt", tiny_resnet_path, "-O", "3", "--verify", "--check")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    verify = next(line for line in lines if line.startswith("verify:"))
    check = next(line for line in lines if line.startswith("check:"))
    steps = len(_leaf_passes("O3"))
    assert f"IR is valid after all {steps} of {steps} passes" in verify
    assert "equal before and after each of the 3 modifying passes (rtol 0.0001, atol 1e-05" in check
    assert not any(line.startswith(("verify:", "check:")) for line in dcopt("opt", tiny_resnet_path).stdout.splitlines())


@pytest.mark.parametrize("command", ["inspect {m} --per-node", "opt {m} -O 3"])  # rich; click.echo
def test_output_into_a_closed_pipe_is_not_an_error(command, tiny_resnet_path):
    args = command.format(m=f'"{tiny_resnet_path}"')
    # `true` reads nothing and exits at once: every write dcopt makes meets a closed pipe
    result = subprocess.run(f'"{sys.executable}" -m dcopt {args} | true', shell=True, capture_output=True,
                            text=True, timeout=120)
    assert result.stderr == ""


def _computed_weight_conv_bn():
    """Conv whose weight is computed (Reshape of a constant, as exporters emit), then BatchNorm."""
    rng = np.random.default_rng(0)
    flat = rng.standard_normal(4 * 3 * 3 * 3).astype(np.float32)
    nodes = [helper.make_node("Reshape", ["w_flat", "w_shape"], ["w"], name="make_w"),
             helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn")]
    inits = {"w_flat": flat, "w_shape": np.array([4, 3, 3, 3], np.int64),
             "s": rng.uniform(0.5, 2, 4).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32),
             "m": rng.standard_normal(4).astype(np.float32), "v": rng.uniform(0.5, 2, 4).astype(np.float32)}
    return make_model(nodes, [("x", TensorProto.FLOAT, [1, 3, 8, 8])], [("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)


def test_fold_batchnorm_patch_folds_computed_weights_first(tmp_path):
    import onnx

    from dcopt import api
    from dcopt.passes.patches import apply_patches

    path = tmp_path / "m.onnx"
    onnx.save(_computed_weight_conv_bn(), path)
    report = apply_patches(api.load_graph(path), ["fold_batchnorm"])
    assert report.graph.op_histogram() == {"Conv": 1}
    assert "numerically equivalent" in report.steps[0].validation


class _Console(io.StringIO):
    is_terminal = False

    def print(self, text, **_):
        self.write(text + "\n")


def test_live_steps_leave_a_line_for_slow_steps_naming_their_path(monkeypatch):
    monkeypatch.setattr(progress_display, "LASTING", 0.05)
    console = _Console()
    with reporting(progress_display.LiveSteps(console, lambda: True)):
        with step("O3"):
            with step("O3"):  # a pipeline run as a step of itself: one name
                with step("fold-constants"):
                    time.sleep(0.1)
        with step("compile 2 kernel(s)", total=2) as s:
            s.advance()
            time.sleep(0.1)
            s.advance()
    lines = [line.split("  ")[0] for line in console.getvalue().splitlines()]
    assert lines == ["✓ O3 › fold-constants", "✓ compile 2 kernel(s)"]  # O3's time is its pass's: no line


def test_quiet_and_non_terminal_show_no_progress(monkeypatch):
    monkeypatch.setattr(progress_display, "LASTING", 0.0)
    for wanted in (False, None):  # -q; not asked and stderr not a terminal
        console = _Console()
        with reporting(progress_display.LiveSteps(console, lambda: wanted)):
            with step("import m.onnx"):
                pass
        assert console.getvalue() == ""


def test_compile_takes_p_for_patch_like_patch_does(tmp_path, tiny_resnet_path):
    result = dcopt("compile", tiny_resnet_path, "-o", tmp_path / "b.dcopt", "-p", "fold_batchnorm", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
