"""``dcopt patch`` and ``dcopt patches ls``: through click's runner on the command objects, and
end to end as ``python -m dcopt`` with a patch written in a user's file."""

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from dcopt.cli.patch_cmd import patch_command, patches_group
from dcopt.errors import DcoptError
from dcopt.examples import TINY_RESNET

REPO = Path(__file__).resolve().parents[2]


def invoke(command, *args):
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=True)


def test_patches_ls_lists_names_kinds_and_parameters():
    result = invoke(patches_group, "ls")
    assert result.exit_code == 0
    assert "swap_activation  (idea)" in result.output and "fold_batchnorm  (exact)" in result.output
    assert "ratio: float = 0.25" in result.output and "dtype: enum(fp16|bf16) = fp16" in result.output
    detail = invoke(patches_group, "ls", "fuse_gelu")
    assert "opset 20" in detail.output and "swap_activation" not in detail.output
    listed = json.loads(invoke(patches_group, "ls", "--json").output)
    assert {p["name"] for p in listed} >= {"cast_weights", "prune_attention_heads"}


def test_patch_dry_run_with_explain(tmp_path):
    result = invoke(patch_command, TINY_RESNET, "-p", "fold_batchnorm", "-p", "insert_squeeze_excitation?ratio=4",
                    "--explain")
    assert result.exit_code == 0, result.output
    assert "at 'stem/bn' (stem/bn, stem/conv)" in result.output
    assert "refused squeeze-excitation at 'stem/relu'" in result.output  # the near miss, with its reason
    assert "parameters 10,058 -> 10,758 (+700)" in result.output and "FLOPs" in result.output
    assert "dry run" in result.output


def test_patch_writes_model_with_history(tmp_path):
    out = tmp_path / "out.onnx"
    result = invoke(patch_command, TINY_RESNET, "-p", "swap_activation?from=Relu&to=Silu", "-o", out)
    assert result.exit_code == 0, result.output
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["dcopt.patches"] == "swap_activation?from=Relu&to=Silu"


def test_bad_uri_fails_before_loading_the_model():
    result = invoke(patch_command, "/does/not/exist.onnx", "-p", "swap_activation?to=Geluu")
    assert isinstance(result.exception, DcoptError) and "did you mean 'Gelu'" in str(result.exception)


def test_strict_fails_when_a_patch_changes_nothing():
    result = invoke(patch_command, TINY_RESNET, "-p", "fuse_layernorm", "--strict")
    assert isinstance(result.exception, DcoptError) and "changed nothing: fuse_layernorm" in str(result.exception)


# -- end to end: python -m dcopt ------------------------------------------------------------------

MY_IDEAS = '''
"""A team's idea, written for no model in particular."""
from dcopt.passes import Op, RewriteRule, Var, fuse_to
from dcopt.passes.patches import Param, patch


@patch("relu_to_leaky", kind="idea", params=[Param("alpha", float, 0.01, "slope for x < 0")])
def relu_to_leaky(graph, *, alpha):
    """Replace Relu by LeakyRelu."""
    return RewriteRule("relu->leaky", Op("Relu", Var("x")), fuse_to("LeakyRelu", "x", alpha=alpha))
'''


def dcopt(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dcopt", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=300)


@pytest.fixture
def ideas_file(tmp_path):
    folder = tmp_path / "x"
    folder.mkdir()
    path = folder / "my_ideas.py"
    path.write_text(MY_IDEAS)
    return path


def test_cli_applies_a_patch_from_a_user_file(ideas_file, tmp_path):
    out = tmp_path / "leaky.onnx"
    done = dcopt("patch", TINY_RESNET, "--patch-file", ideas_file, "-p", "relu_to_leaky?alpha=0.2", "-p",
                 "fold_batchnorm", "-o", out)
    assert done.returncode == 0, done.stderr
    assert "relu_to_leaky?alpha=0.2 (idea): applied at 4 site(s)" in done.stdout
    model = onnx.load(out)
    leaky = [n for n in model.graph.node if n.op_type == "LeakyRelu"]
    assert len(leaky) == 4 and abs(leaky[0].attribute[0].f - 0.2) < 1e-7
    assert {p.key: p.value for p in model.metadata_props}["dcopt.patches"] == "relu_to_leaky?alpha=0.2;fold_batchnorm"
    shown = dcopt("inspect", out)
    assert "patch history: relu_to_leaky?alpha=0.2;fold_batchnorm" in shown.stdout
    listed = dcopt("patches", "ls", "--patch-file", ideas_file)
    assert "relu_to_leaky  (idea)  Replace Relu by LeakyRelu." in listed.stdout


def test_cli_rejects_a_bad_uri_in_one_line(ideas_file):
    done = dcopt("patch", TINY_RESNET, "--patch-file", ideas_file, "-p", "relu_to_leaky?alpah=0.2")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: in 'relu_to_leaky?alpah=0.2': patch 'relu_to_leaky' has no "
                                          "parameter 'alpah'; parameters of 'relu_to_leaky': alpha: float = 0.01")
