"""Run records: directory + index row, status lifecycle, immutability, crash detection, concurrency."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from dcopt.errors import InputError
from dcopt.runs.home import runs_dir
from dcopt.runs.index import RunIndex
from dcopt.runs.record import RUN_JSON, content_hash, current_run, record_run
from dcopt.runs.select import list_runs
from tests.runs.conftest import fake_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_completed_run_has_its_directory_and_row(home, tiny_resnet_path):
    with record_run("compile", ["dcopt", "compile", "m.onnx", "-O", "2"], {"level": "2"}, model=tiny_resnet_path) as run:
        assert current_run() is run
        print("hello from the command")
        run.log_metrics(compile_s=1.5, kernels=3)
        run.log_output("report.txt", "pass report")
        running = RunIndex(home).get(run.id)
        assert running.status == "running" and running.pid == os.getpid()
    record = json.loads((runs_dir(home) / run.id / RUN_JSON).read_text())
    assert record["status"] == "completed" and record["exit_code"] == 0 and record["finished"] >= record["started"]
    assert record["argv"] == ["dcopt", "compile", "m.onnx", "-O", "2"] and record["options"] == {"level": "2"}
    assert record["model"]["name"] == "tiny_resnet" and len(record["model"]["sha256"]) == 64
    assert record["toolchain"]["numba"] and record["host"]["cpu_count"] >= 1 and record["dcopt"]
    assert set(record["files"]) == {"output.log", "outputs/report.txt"}
    assert "hello from the command" in (runs_dir(home) / run.id / "output.log").read_text()
    row = RunIndex(home).get(run.id)
    assert (row.status, row.kind, row.model, row.metrics) == ("completed", "compile", "tiny_resnet",
                                                               {"compile_s": 1.5, "kernels": 3})
    assert row.sha == content_hash(runs_dir(home) / run.id)
    # immutable once finished: every file is read-only
    for p in (runs_dir(home) / run.id).rglob("*"):
        if p.is_file():
            assert not p.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), p


def test_error_and_interrupt_are_marked(home):
    with pytest.raises(InputError):
        with record_run("opt", ["dcopt", "opt"], {}, capture_output=False):
            raise InputError("bad model", file="m.onnx")
    with pytest.raises(KeyboardInterrupt):
        with record_run("bench", ["dcopt", "bench"], {}, capture_output=False):
            raise KeyboardInterrupt
    latest, first = list_runs(home)
    assert (first.status, latest.status) == ("error", "terminated")
    assert json.loads((runs_dir(home) / first.id / RUN_JSON).read_text())["error"] == "file m.onnx: bad model"


def test_no_record_switch(home, monkeypatch):
    with record_run("compile", [], {}, record=False) as run:
        assert not run.recording
        run.log_metrics(x=1)  # does nothing
    monkeypatch.setenv("DCOPT_NO_RECORD", "1")
    with record_run("compile", [], {}) as run:
        assert not run.recording
    assert list_runs(home) == []


_SLEEPER = textwrap.dedent("""
    import sys, time
    from dcopt.runs.record import record_run
    with record_run("bench", ["dcopt", "bench"], {}, capture_output=False) as run:
        print(run.id, flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_is_terminated(home, sig):
    proc = subprocess.Popen([sys.executable, "-c", _SLEEPER], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": REPO})
    run_id = proc.stdout.readline().strip()
    assert [r.status for r in list_runs(home)] == ["running"]  # alive: listed as running
    proc.send_signal(sig)
    proc.wait(timeout=30)
    (row,) = list_runs(home)
    assert (row.id, row.status) == (run_id, "terminated")
    record = json.loads((runs_dir(home) / run_id / RUN_JSON).read_text())
    assert record["status"] == "terminated"
    assert ("SIGTERM" in record["error"]) if sig == signal.SIGTERM else ("ended without finishing" in record["error"])
    assert RunIndex(home).get(run_id).status == "terminated"  # settled in the index too


_RECORDER = textwrap.dedent("""
    import sys
    from dcopt.runs.record import record_run
    for i in range(int(sys.argv[1])):
        with record_run("bench", ["dcopt", "bench"], {"writer": sys.argv[2], "i": i}, capture_output=False) as run:
            run.log_metrics(latency_ms=float(i))
""")


def test_two_processes_recording_at_once_lose_nothing(home):
    n = 30
    procs = [subprocess.Popen([sys.executable, "-c", _RECORDER, str(n), w], env={**os.environ, "PYTHONPATH": REPO})
             for w in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    rows = list_runs(home)
    assert len(rows) == 2 * n and all(r.status == "completed" for r in rows)
    assert sorted((r.options["writer"], r.options["i"]) for r in rows) == sorted(
        (w, i) for w in "ab" for i in range(n))
    assert len(list(runs_dir(home).iterdir())) == 2 * n


def test_content_hash_follows_annotations(home):
    run_id = fake_run(home=home)
    before = content_hash(runs_dir(home) / run_id)
    from dcopt.runs.record import ANNOTATIONS, write_json

    write_json(runs_dir(home) / run_id / ANNOTATIONS, {"label": "x", "tags": []})
    assert content_hash(runs_dir(home) / run_id) != before
