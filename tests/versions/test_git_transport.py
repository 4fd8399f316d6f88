"""The store carried by plain git: ``dcopt git push-store``/``pull-store`` move store objects as
blobs on ``refs/dcopt/objects`` through a bare repository, including two clones pushing at once."""

import shutil

import pytest

from tests.versions.models import low_rank_update, mlp, sparse_update, weights
from tests.versions.test_git import dcopt, git

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def clone(tmp_path, remote, name):
    work = tmp_path / name
    git(tmp_path, "clone", "-q", "--no-checkout", str(remote), str(work))
    git(work, "config", "user.email", "t@example.com")
    git(work, "config", "user.name", "t")
    dcopt(work, "git", "install")
    return work


def test_store_travels_on_a_git_ref_through_a_bare_remote(tmp_path):
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    a = clone(tmp_path, remote, "a")
    dcopt(a, "git", "track", "*.onnx")
    base = weights()
    v0, v1 = mlp(base), mlp(low_rank_update(base, "w1"))
    (a / "model.onnx").write_bytes(v0)
    git(a, "add", ".")
    git(a, "commit", "-qm", "base")
    (a / "model.onnx").write_bytes(v1)
    git(a, "commit", "-qam", "tuned")
    git(a, "push", "-q", "origin", "main")
    pushed = dcopt(a, "git", "push-store", "origin").stdout
    assert "pushed" in pushed and "(0 already there)" in pushed, pushed
    assert "0 object(s)" in dcopt(a, "git", "push-store", "origin").stdout  # nothing new
    assert git(remote, "rev-parse", "refs/dcopt/objects").stdout.strip()

    b = clone(tmp_path, remote, "b")
    assert "pulled" in dcopt(b, "git", "pull-store", "origin").stdout
    git(b, "checkout", "-q", "main")
    assert (b / "model.onnx").read_bytes() == v1
    git(b, "checkout", "-q", "HEAD~1", "--", "model.onnx")
    assert (b / "model.onnx").read_bytes() == v0

    # both push new versions on their own branches: the second push merges the two store refs
    vb, va = mlp(sparse_update(base, "w2")), mlp(low_rank_update(base, "w2", seed=5))
    for work, branch, data in ((b, "from-b", vb), (a, "from-a", va)):
        git(work, "checkout", "-q", "-b", branch, "main")
        (work / "model.onnx").write_bytes(data)
        git(work, "commit", "-qam", branch)
        git(work, "push", "-q", "origin", branch)
        dcopt(work, "git", "push-store", "origin")
    assert len(git(remote, "log", "--format=%p", "-1", "refs/dcopt/objects").stdout.split()) == 2

    c = clone(tmp_path, remote, "c")
    dcopt(c, "git", "pull-store", "origin")
    for branch, data in (("origin/from-a", va), ("origin/from-b", vb), ("origin/main", v1)):
        git(c, "checkout", "-q", branch)
        assert (c / "model.onnx").read_bytes() == data, branch
