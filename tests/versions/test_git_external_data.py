"""ONNX models saved with external data, versioned by the real ``git`` binary: the side file is
tracked too, stored per tensor (a fine-tune stores only the changed tensor, as a delta), diffed,
merged, and both files check out byte-identical."""

import json
import shutil

import onnx
import pytest

from tests.versions.models import low_rank_update, mlp, sparse_update, weights
from tests.versions.test_git import dcopt, git, new_repo

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def save_external(path, params) -> tuple[bytes, bytes]:
    """Save the test MLP with every raw tensor in ``<name>.data``; (model bytes, data bytes)."""
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()  # onnx appends to an existing data file
    model = onnx.ModelProto()
    model.ParseFromString(mlp(params))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=0)
    return path.read_bytes(), data.read_bytes()


def store_size(repo) -> int:
    return sum(f.stat().st_size for f in (repo / ".git" / "dcopt" / "objects").rglob("*") if f.is_file())


def test_external_data_is_stored_per_tensor_diffed_merged_and_checked_out(tmp_path):
    repo = new_repo(tmp_path / "repo")
    model, side = repo / "model.onnx", repo / "model.onnx.data"
    base = weights()
    v0 = save_external(model, base)
    tracked = dcopt(repo, "git", "track", "*.onnx").stdout
    assert "tracking: *.onnx.data (ONNX external data)" in tracked, tracked
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    manifest = json.loads(git(repo, "cat-file", "blob", "HEAD:model.onnx.data").stdout)
    assert manifest["format"] == "onnx-external-data"
    assert {p["name"]: p["update"]["type"] for p in manifest["params"]} == {"w1": "dense", "b1": "dense", "w2": "dense"}

    tuned = low_rank_update(base, "w1")
    v1 = save_external(model, tuned)
    assert v1[0] == v0[0]  # same layout: only the data file changed
    diff = git(repo, "diff").stdout
    assert "diff --dcopt a/model.onnx.data b/model.onnx.data" in diff and "~ w1" in diff and "rank 2" in diff, diff
    before = store_size(repo)
    git(repo, "commit", "-qam", "low-rank fine-tune of w1")
    growth = store_size(repo) - before
    assert growth < base["w1"].nbytes / 2, growth  # w1 as factors + fixes; b1 and w2 not stored again
    tuned_manifest = json.loads(git(repo, "cat-file", "blob", "HEAD:model.onnx.data").stdout)
    recipes = {p["name"]: p["update"] for p in tuned_manifest["params"]}
    assert recipes["w1"]["type"] == "low-rank"
    assert recipes["w2"] == next(p["update"] for p in manifest["params"] if p["name"] == "w2")  # not stored again
    log = git(repo, "log", "-p", "-1").stdout
    assert "+param w1: float32[32, 64] low-rank r=2" in log, log

    # a branch fixing w2, merged by the merge driver on the data file
    git(repo, "checkout", "-q", "-b", "other", "HEAD~1")
    assert (model.read_bytes(), side.read_bytes()) == v0
    v2 = save_external(model, sparse_update(base, "w2"))
    git(repo, "commit", "-qam", "sparse fix of w2")
    git(repo, "checkout", "-q", "main")
    assert (model.read_bytes(), side.read_bytes()) == v1
    merged = git(repo, "merge", "-q", "other", "-m", "merge other")
    assert "dcopt merge model.onnx.data" in merged.stderr, merged.stderr
    both = save_external(tmp_path / "expected.onnx", sparse_update(tuned, "w2"))
    assert side.read_bytes() == both[1] and git(repo, "status", "--porcelain").stdout == ""

    for rev, expected in (("HEAD~1", v1), ("other", v2), ("other~1", v0)):
        git(repo, "checkout", "-q", rev)
        assert (model.read_bytes(), side.read_bytes()) == expected, rev
