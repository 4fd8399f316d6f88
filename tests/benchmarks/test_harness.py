"""The benchmark harness measures and reports correctly (never how fast anything is).

Tiny models and few reps only; fake runtimes where the point is the harness's own logic
(interleaving order, invalid results kept and flagged, failures reported). These tests never
touch the OPENBLAS_* environment: every in-process ``main`` call passes
``--no-unset-openblas-env``, and numpy is already loaded here anyway.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from benchmarks import measure, models, report, run, runners


@pytest.fixture
def tiny_mlp(tmp_path):
    return models.build_mlp(tmp_path, width=16, layers=2, name="tiny_mlp")


def _fake(outputs, *, fail_after=None, log=None, name="fake"):
    """A preparer whose call returns ``outputs`` (and can start raising after N calls)."""
    def prepare(model, threads):
        count = {"n": 0}

        def call():
            count["n"] += 1
            if log is not None:
                log.append(name)
            if fail_after is not None and count["n"] > fail_after:
                raise RuntimeError("boom")
            return [np.array(o, copy=True) for o in outputs]
        return runners.Prepared(name, f"fake {name}", call)
    return prepare


def test_summarize_percentiles():
    s = measure.summarize([0.001 * i for i in range(1, 11)])  # 1..10 ms
    assert s["reps"] == 10 and s["median_ms"] == pytest.approx(5.5)
    assert s["p10_ms"] < s["p25_ms"] < s["median_ms"] < s["p75_ms"] < s["p90_ms"]
    assert s["min_ms"] == pytest.approx(1.0) and s["max_ms"] == pytest.approx(10.0)
    assert measure.summarize([]) == {"reps": 0}


def test_compare_outputs_tolerance():
    ref = [np.array([1.0, -2.0, 0.0], np.float32)]
    ok = measure.compare_outputs([ref[0] + np.float32(1e-6)], ref)
    assert ok["valid"] and ok["tol_ratio"] < 1 and ok["max_abs"] == pytest.approx(1e-6, rel=0.1)
    bad = measure.compare_outputs([ref[0] + np.float32(1e-2)], ref)
    assert not bad["valid"] and bad["tol_ratio"] > 1 and "outside tolerance" in bad["problems"][0]
    shape = measure.compare_outputs([np.zeros(4, np.float32)], ref)
    assert not shape["valid"] and "shape" in shape["problems"][0]
    assert not measure.compare_outputs([], ref)["valid"]
    nan = measure.compare_outputs([np.array([np.nan, -2.0, 0.0], np.float32)], ref)
    assert not nan["valid"]


def test_interleaving_rotates_and_bursts():
    log = []
    calls = {n: (lambda n=n: log.append(n)) for n in "ABC"}
    times, errors = measure.interleaved_times(calls, warmup=1, reps=4, burst=2, lead_in_s=0.0)
    assert not errors
    assert all(len(times[n]) == 2 and all(len(b) == 2 for b in times[n]) for n in "ABC")  # 2 rounds x burst 2
    # each visit: 1 lead-in call + 2 timed calls; rounds rotate the starting runtime
    visits = [log[i] for i in range(0, len(log), 3)]
    assert visits == list("ABC" "BCA" "CAB")
    assert all(log[i] == log[i + 1] == log[i + 2] for i in range(0, len(log), 3))


def test_slow_runtime_gets_shorter_bursts():
    calls = {"fast": lambda: None, "slow": lambda: None}
    times, _ = measure.interleaved_times(calls, warmup=0, reps=10, burst=5, lead_in_s=0.0, burst_s=1.0,
                                         est_call_s={"fast": 1e-6, "slow": 0.5})
    assert [len(b) for b in times["fast"]] == [5, 5] and [len(b) for b in times["slow"]] == [2, 2]


def test_time_budget_keeps_min_rounds():
    calls = {"A": lambda: None}
    times, _ = measure.interleaved_times(calls, warmup=0, reps=1000, burst=1, lead_in_s=0.0, time_budget_s=0.0,
                                         min_rounds=3)
    assert len(times["A"]) == 3


def test_bench_one_real_runtimes(tiny_mlp):
    entry = measure.bench_one(tiny_mlp, ["dcopt", "onnxruntime"], threads=1, warmup=0, reps=3, burst=1)
    for rt in ("dcopt", "onnxruntime"):
        info = entry["runtimes"][rt]
        assert info["status"] == "ok", info.get("error")
        assert info["stats"]["reps"] == 3 and info["correctness"]["valid"]
        assert info["stats"]["median_ms"] > 0
    assert entry["runtimes"]["dcopt"]["backend"].startswith("dcopt cpu backend")
    sp = entry["speedups"]["onnxruntime"]
    assert sp["speedup"] == pytest.approx(entry["runtimes"]["onnxruntime"]["stats"]["median_ms"]
                                          / entry["runtimes"]["dcopt"]["stats"]["median_ms"])
    assert sp["valid"] and len(entry["sha256"]) == 64


def test_dcopt_session_matches_onnxruntime(tiny_mlp):
    session = runners.dcopt_session(tiny_mlp.path, threads=1)
    ort_out = runners.prepare_onnxruntime(tiny_mlp, 1).call()
    (out,) = session.run(tiny_mlp.feeds)
    np.testing.assert_allclose(out, ort_out[0], rtol=1e-4, atol=1e-5)


def test_invalid_runtime_is_reported_not_hidden(tiny_mlp):
    good = runners.prepare_onnxruntime(tiny_mlp, 1).call()
    wrong = [good[0] + 1.0]
    preparers = {"onnxruntime": runners.prepare_onnxruntime, "dcopt": _fake(wrong, name="dcopt")}
    entry = measure.bench_one(tiny_mlp, ["dcopt", "onnxruntime"], warmup=0, reps=2, burst=1, preparers=preparers)
    info = entry["runtimes"]["dcopt"]
    assert info["status"] == "ok" and info["stats"]["reps"] == 2  # still timed and shown
    assert info["correctness"]["valid"] is False
    assert entry["speedups"]["onnxruntime"]["valid"] is False
    g = measure.geomean_speedups([entry])
    assert g["onnxruntime"]["geomean"] is None and g["onnxruntime"]["excluded_invalid"] == ["tiny_mlp"]


def test_failures_and_not_applicable_are_recorded(tiny_mlp):
    def broken(model, threads):
        raise ValueError("cannot load")

    good = runners.prepare_onnxruntime(tiny_mlp, 1).call()
    preparers = {"onnxruntime": runners.prepare_onnxruntime, "dcopt": broken,
                 "torch": runners.prepare_torch, "openvino": _fake(good, fail_after=3, name="openvino")}
    tiny_mlp.torch_factory = None
    entry = measure.bench_one(tiny_mlp, ["dcopt", "onnxruntime", "torch", "openvino"], warmup=0, reps=4,
                              burst=1, preparers=preparers)
    rts = entry["runtimes"]
    assert rts["dcopt"]["status"] == "failed" and "cannot load" in rts["dcopt"]["error"]
    assert rts["torch"]["status"] == "n/a"
    assert rts["openvino"]["status"] == "failed" and "boom" in rts["openvino"]["error"]
    assert rts["onnxruntime"]["status"] == "ok" and entry["speedups"] == {}


def test_geomean():
    entries = [{"name": n, "speedups": {"p": {"speedup": s, "valid": True}}} for n, s in (("a", 2.0), ("b", 8.0))]
    assert measure.geomean_speedups(entries)["p"]["geomean"] == pytest.approx(4.0)


def test_model_builders(tmp_path):
    zoo = models.build_zoo("squeezenet", tmp_path)
    assert zoo.path.exists() and zoo.feeds["data_0"].shape == (1, 3, 224, 224)
    assert models.build_zoo("squeezenet", tmp_path).path == zoo.path  # cached
    mlp = models.build_mlp(tmp_path, width=8, layers=3)
    assert mlp.feeds["x"].shape == (1, 8) and mlp.output_names == ("y",)
    with pytest.raises(KeyError):
        models.build("nope", tmp_path)


def test_torch_twin_matches_onnx(tiny_mlp):
    pytest.importorskip("torch")
    entry = measure.bench_one(tiny_mlp, ["torch", "onnxruntime"], threads=1, warmup=0, reps=1, burst=1)
    assert entry["runtimes"]["torch"]["correctness"]["valid"]


def test_main_writes_json_and_table(tmp_path, tiny_mlp, capsys):
    before = {k: os.environ.get(k) for k in run.OPENBLAS_SLOW_VARS + ("OPENBLAS_NUM_THREADS",)}
    out = tmp_path / "r.json"
    rc = run.main(["--no-unset-openblas-env", "--model-file", str(tiny_mlp.path), "--runtimes", "dcopt,onnxruntime",
                   "--threads", "1", "--warmup", "0", "--reps", "2", "--burst", "1", "--json", str(out)])
    assert rc == 0
    assert {k: os.environ.get(k) for k in before} == before  # tests never change the BLAS env
    result = json.loads(out.read_text())
    assert {"host", "versions", "env_changes", "config", "models", "geomean"} <= set(result)
    (m,) = result["models"]
    assert len(m["runtimes"]["dcopt"]["times_ms_by_round"]) == 2
    assert "onnxruntime" in result["geomean"]
    text = capsys.readouterr().out
    assert "dcopt speedup" in text and "geomean" in text and "tiny_mlp" in text


def test_main_rejects_unknown_names(capsys):
    assert run.main(["--no-unset-openblas-env", "--models", "nope"]) == 2
    assert run.main(["--no-unset-openblas-env", "--models", "mlp", "--runtimes", "tvm"]) == 2


def test_prepare_env_refuses_after_numpy(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # restored by monkeypatch
    changes = run.prepare_env(True, 2)
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"
    assert any("already imported" in c for c in changes)


def test_render_flags_invalid(tiny_mlp):
    from rich.console import Console

    entry = measure.bench_one(tiny_mlp, ["dcopt", "onnxruntime"], warmup=0, reps=1, burst=1,
                              preparers={"onnxruntime": runners.prepare_onnxruntime,
                                         "dcopt": _fake([np.zeros((1, 16), np.float32)], name="dcopt")})
    result = {"config": {"threads": 1, "warmup": 0, "reps": 1, "burst": 1, "time_budget_s": None, "rtol": 1e-4,
                         "atol": 1e-5},
              "host": report.host_info(), "versions": report.versions(), "env_changes": [], "models": [entry]}
    console = Console(record=True, width=200)
    report.render(result, console)
    assert "INVALID" in console.export_text()
