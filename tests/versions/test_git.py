"""End to end in a real git repository: the filter, diff and merge drivers configured with
``dcopt git install`` and run by the real ``git`` binary (calling this interpreter)."""

import hashlib
import shutil
import subprocess
import sys

import pytest

from tests.versions.models import low_rank_update, mlp, sparse_update, weights

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def run(cwd, *args, check=True):
    result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def git(cwd, *args, check=True):
    return run(cwd, "git", *args, check=check)


def dcopt(cwd, *args, check=True):
    return run(cwd, sys.executable, "-m", "dcopt", *args, check=check)


def new_repo(path):
    """A fresh git repository at ``path`` with dcopt's filters installed."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "t@example.com")
    git(path, "config", "user.name", "t")
    dcopt(path, "git", "install")
    return path


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_versions_round_trip_diff_merge_and_damaged_store(tmp_path):
    repo = new_repo(tmp_path / "repo")
    assert "tracking: *.onnx" in dcopt(repo, "git", "track", "*.onnx").stdout
    model = repo / "model.onnx"
    base = weights()
    versions = {"base": mlp(base), "lowrank": mlp(low_rank_update(base, "w1")),
                "sparse": mlp(sparse_update(base, "w2"))}
    model.write_bytes(versions["base"])
    git(repo, "add", ".gitattributes", "model.onnx")
    git(repo, "commit", "-qm", "base")
    committed = git(repo, "cat-file", "blob", "HEAD:model.onnx").stdout
    assert committed.startswith('{"dcopt_model_manifest"') and len(committed) < len(versions["base"])

    model.write_bytes(versions["lowrank"])
    diff = git(repo, "diff").stdout
    assert "diff --dcopt a/model.onnx b/model.onnx" in diff and "~ w1" in diff and "rank 2" in diff
    assert "weights only" in diff
    git(repo, "commit", "-qam", "low-rank fine-tune of fc1")
    log = git(repo, "log", "-p", "-1").stdout  # textconv: one line per parameter, changed ones in the hunk
    assert "-param w1: float32[32, 64] dense sha256:" in log, log
    assert "+param w1: float32[32, 64] low-rank r=2 (+" in log, log
    assert "param w2" not in log.split("@@")[-1].replace(" param w2", "")  # unchanged: context only
    committed_diff = git(repo, "diff", "HEAD~1", "HEAD").stdout
    assert "stored low-rank r=2" in committed_diff, committed_diff

    git(repo, "checkout", "-q", "-b", "other", "HEAD~1")
    assert model.read_bytes() == versions["base"]
    model.write_bytes(versions["sparse"])
    git(repo, "commit", "-qam", "sparse fix of fc2")
    git(repo, "checkout", "-q", "main")
    assert model.read_bytes() == versions["lowrank"]
    merged = git(repo, "merge", "-q", "other", "-m", "merge other")
    assert "dcopt merge model.onnx" in merged.stderr
    both = mlp(sparse_update(low_rank_update(base, "w1"), "w2"))
    assert model.read_bytes() == both
    assert git(repo, "status", "--porcelain").stdout == ""

    # every committed version checks out byte-identical
    for rev, expected in (("HEAD~1", "lowrank"), ("other", "sparse"), ("other~1", "base")):
        git(repo, "checkout", "-q", rev)
        assert sha(model) == hashlib.sha256(versions[expected]).hexdigest(), rev
    git(repo, "checkout", "-q", "main")

    # a clone carries the store: pull-store before the first checkout
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--no-checkout", str(repo), str(clone))
    dcopt(clone, "git", "install")
    assert "pulled" in dcopt(clone, "git", "pull-store", "origin", "--transport", "files").stdout
    git(clone, "checkout", "-q", "main")
    assert (clone / "model.onnx").read_bytes() == both
    # the clone's store index starts empty: textconv finds older manifests in the history
    shutil.rmtree(clone / ".git" / "dcopt" / "objects" / "by-model")
    log = git(clone, "log", "-p", "--first-parent", "-3", "--", "model.onnx").stdout
    assert "+param w2: float32[64, 16] sparse (5 elements) sha256:" in log, log
    assert "+param w1: float32[32, 64] low-rank r=2" in log and "not in the store's index" not in log, log

    # a damaged store: git stops with the parameter and object named, no wrong model written
    store = repo / ".git" / "dcopt" / "objects"
    manifest = git(repo, "cat-file", "blob", "other:model.onnx").stdout
    import json
    w2 = next(p for p in json.loads(manifest)["params"] if p["name"] == "w2")["update"]
    target = next(f for f in store.rglob("*") if f.is_file() and f.name.startswith(w2["values"][2:]))
    target.write_bytes(b"garbage")
    model.unlink()
    failed = git(repo, "checkout", "other", "--", "model.onnx", check=False)
    assert failed.returncode != 0
    assert "parameter 'w2'" in failed.stderr and w2["values"] in failed.stderr, failed.stderr
    assert not model.exists() or model.read_bytes() != versions["sparse"]
