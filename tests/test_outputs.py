"""Output paths never lose user data (dcopt.outputs): what `-o` and `session.save` may replace."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import dcopt
from dcopt.outputs import OutputPathError, check_output_path, staged_directory


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _user_dir(root: Path) -> Path:
    docs = root / "mydocs"
    (docs / "sub").mkdir(parents=True)
    (docs / "thesis.txt").write_text("years of work")
    (docs / "sub" / "data.bin").write_bytes(b"\x00\x01")
    return docs


def _never_called(path):  # pragma: no cover - a replaceable() that must not be asked
    raise AssertionError(f"asked whether {path} may be replaced")


def dcopt_cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "dcopt", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize("path", ["", " ", ".", "./", "/"])
def test_paths_that_are_never_outputs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputPathError):
        check_output_path(path)


def test_cwd_its_parents_and_home_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for path in (work, work.parent, tmp_path, "..", tmp_path / "home", str(tmp_path / "home") + "/"):
        with pytest.raises(OutputPathError, match="working directory, the home directory"):
            check_output_path(path)
    assert check_output_path("new.dcopt") == work / "new.dcopt"


@pytest.mark.parametrize("path", ["/proc/dcopt_out", "/sys/dcopt_out", "/dev/dcopt_out"])
def test_pseudo_file_systems_are_refused(path):
    with pytest.raises(OutputPathError, match="pseudo file system"):
        check_output_path(path)


def test_a_path_below_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a directory"):
        check_output_path(tmp_path / "file.txt" / "out.dcopt")


def test_unrelated_directory_is_untouched(tmp_path):
    docs = _user_dir(tmp_path)
    before = _snapshot(docs)
    for force in (False, True):
        with pytest.raises(OutputPathError, match="is not a dcopt build"):
            with staged_directory(docs, replaceable=lambda p: False, force=force, what="dcopt build") as staging:
                (staging / "manifest.json").write_text("{}")
    assert _snapshot(docs) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mydocs"]  # no staging left behind


def test_a_file_or_symlink_at_the_target_is_never_replaced(tmp_path):
    (tmp_path / "f").write_text("keep")
    with pytest.raises(OutputPathError):
        with staged_directory(tmp_path / "f", replaceable=lambda p: True, force=True):
            pass
    docs = _user_dir(tmp_path)
    (tmp_path / "link").symlink_to(docs)
    with pytest.raises(OutputPathError):
        with staged_directory(tmp_path / "link", replaceable=lambda p: True, force=True):
            pass
    assert (tmp_path / "f").read_text() == "keep" and (docs / "thesis.txt").exists()


def test_interrupted_write_leaves_old_content_and_no_staging(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "manifest.json").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with staged_directory(target, replaceable=lambda p: True, force=True) as staging:
            (staging / "manifest.json").write_text("new, half")
            raise KeyboardInterrupt
    assert (target / "manifest.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replacing_needs_force_and_uses_the_umask(tmp_path):
    target = tmp_path / "out"
    old_mask = os.umask(0o022)
    try:
        with staged_directory(target, replaceable=_never_called) as staging:
            (staging / "a").write_text("1")
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    with pytest.raises(OutputPathError, match="--force"):
        with staged_directory(target, replaceable=lambda p: True) as staging:
            pass
    with staged_directory(target, replaceable=lambda p: True, force=True) as staging:
        (staging / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_session_save_never_replaces_a_user_directory(tmp_path, mlp_model):
    sess = dcopt.compile(mlp_model, cache_dir=tmp_path / "cache")
    docs = _user_dir(tmp_path)
    before = _snapshot(docs)
    with pytest.raises(OutputPathError, match="not a dcopt build"):
        sess.save(docs)
    with pytest.raises(OutputPathError, match="not a dcopt build"):
        sess.save(docs, force=True)
    assert _snapshot(docs) == before
    sess.save(tmp_path / "m.dcopt")
    with pytest.raises(OutputPathError, match="already holds a dcopt build"):
        sess.save(tmp_path / "m.dcopt")
    sess.save(tmp_path / "m.dcopt", force=True)
    assert dcopt.load(tmp_path / "m.dcopt", cache_dir=tmp_path / "cache").run(None, {"x": _ones()})[0].shape == (1, 3)


def _ones():
    import numpy as np

    return np.ones((1, 4), np.float32)


def test_cli_compile_refuses_user_dirs_and_cwd(tmp_path, tiny_resnet_path):
    docs = _user_dir(tmp_path)
    before = _snapshot(docs)
    env = {**os.environ, "DCOPT_CACHE_DIR": str(tmp_path / "cache")}
    for target in (docs, "."):
        result = dcopt_cli("compile", tiny_resnet_path, "-o", target, cwd=docs, env=env)
        assert result.returncode == 1, result.stderr
        assert "refusing" in result.stderr and "internal error" not in result.stderr
    assert _snapshot(docs) == before
    result = dcopt_cli("compile", tiny_resnet_path, "-o", docs / "thesis.txt" / "x", env=env)
    assert result.returncode == 1 and "is a file" in result.stderr
    out = tmp_path / "tiny.dcopt"
    assert dcopt_cli("compile", tiny_resnet_path, "-o", out, env=env).returncode == 0
    again = dcopt_cli("compile", tiny_resnet_path, "-o", out, env=env)
    assert again.returncode == 1 and "--force" in again.stderr
    assert dcopt_cli("compile", tiny_resnet_path, "-o", out, "--force", env=env).returncode == 0


def test_staged_file_is_all_or_nothing_with_umask_permissions(tmp_path):
    import os

    from dcopt.outputs import staged_file, write_file

    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with staged_file(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["model.onnx"]
    old = os.umask(0o022)
    try:
        write_file(target, "new")
    finally:
        os.umask(old)
    assert target.read_text() == "new"
    assert (target.stat().st_mode & 0o777) == 0o644  # not mkstemp's 0600
