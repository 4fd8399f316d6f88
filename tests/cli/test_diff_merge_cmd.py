"""``dcopt diff`` and ``dcopt merge`` as a user runs them."""

import json
import subprocess
import sys

import numpy as np

from tests.versions.models import load_params, low_rank_update, mlp, sparse_update, weights


def dcopt(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dcopt", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _files(tmp_path, **versions):
    out = {}
    for name, params in versions.items():
        out[name] = tmp_path / f"{name}.onnx"
        out[name].write_bytes(mlp(**params) if isinstance(params, dict) and "params" in params else mlp(params))
    return out


def test_diff_text_and_json(tmp_path):
    base = weights()
    f = _files(tmp_path, base=base, tuned=low_rank_update(base, "w1"), sigmoid={"params": base, "act": "Sigmoid"})
    text = dcopt("diff", f["base"], f["tuned"])
    assert text.returncode == 0, text.stderr
    assert "model: weights only" in text.stdout and "~ w1  float32[32, 64]" in text.stdout
    assert "rank 2" in text.stdout and "3 unchanged" in text.stdout
    built = dcopt("diff", f["base"], f["tuned"], "--compile")  # weights only: the second build reuses every kernel
    assert built.returncode == 0, built.stderr
    line = next(x for x in built.stdout.splitlines() if x.startswith("builds:"))
    reused, total = line.split()[1], line.split()[3]
    assert reused == total and ", 0 changed" in line, line
    result = dcopt("diff", f["base"], f["sigmoid"], "--json")
    report = json.loads(result.stdout)
    assert report["model"] == "structure" and report["nodes"][0]["details"] == ["op Relu -> Sigmoid"]
    missing = dcopt("diff", f["base"], tmp_path / "nope.onnx")
    assert missing.returncode == 1 and "argument 'B', file" in missing.stderr and "nope.onnx" in missing.stderr


def test_merge_writes_checks_and_refuses_conflicts(tmp_path):
    base = weights()
    f = _files(tmp_path, base=base, ours=sparse_update(base, "w2"), theirs=low_rank_update(base, "w1"),
               both={**base, "w2": base["w2"] * 2}, other={"params": base, "act": "Tanh"},
               struct={"params": base, "act": "Sigmoid"})
    out = tmp_path / "merged.onnx"
    ok = dcopt("merge", f["base"], f["ours"], f["theirs"], "-o", out, "--check")
    assert ok.returncode == 0, ok.stderr
    assert "1 ours, 1 theirs" in ok.stdout and "outputs match onnxruntime" in ok.stdout
    got = load_params(out.read_bytes())
    assert got["w1"].tobytes() == low_rank_update(base, "w1")["w1"].tobytes()

    conflict = dcopt("merge", f["base"], f["ours"], f["both"], "-o", tmp_path / "c.onnx")
    assert conflict.returncode == 1 and "parameter 'w2'" in conflict.stderr
    assert not (tmp_path / "c.onnx").exists()
    avg = dcopt("merge", f["base"], f["ours"], f["both"], "-o", tmp_path / "c.onnx", "-s", "average")
    assert avg.returncode == 0, avg.stderr
    np.testing.assert_allclose(load_params((tmp_path / "c.onnx").read_bytes())["w2"],
                               (sparse_update(base, "w2")["w2"] + base["w2"] * 2) / 2, rtol=1e-6, atol=1e-8)

    structural = dcopt("merge", f["base"], f["struct"], f["other"], "-o", tmp_path / "s.onnx", "-s", "average")
    assert structural.returncode == 1
    assert "ours: node act: op Relu -> Sigmoid" in structural.stderr and "nothing written" in structural.stderr
    assert not (tmp_path / "s.onnx").exists()
    bad = dcopt("merge", f["base"], f["ours"], f["theirs"], "-o", tmp_path / "x.onnx", "-s", "median")
    assert bad.returncode == 1 and "unknown merge strategy 'median'" in bad.stderr
