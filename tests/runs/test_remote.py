"""Sharing runs: export/import through a directory, push/pull through a real S3 API (moto's
server on localhost), MLflow export read back through MLflow's client."""

from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner

from dcopt.cli import app
from dcopt.runs.home import runs_dir
from dcopt.runs.remote import DirRemote, pull, push
from dcopt.runs.select import list_runs
from tests.runs.conftest import fake_run


def dcopt(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _ls(home, monkeypatch) -> list:
    monkeypatch.setenv("DCOPT_HOME", str(home))
    return [{k: r[k] for k in ("index", "id", "kind", "model", "status", "label", "tags", "metrics")}
            for r in json.loads(dcopt("runs", "ls", "--json"))]


@pytest.fixture
def two_runs(home, tiny_resnet_path):
    fake_run("compile", {"level": "2"}, {"compile_s": 1.0}, model=tiny_resnet_path, home=home)
    fake_run("bench", {"reps": 5}, {"latency_ms": 0.5, "speedup.onnxruntime": 1.1}, home=home, label="fast",
             outputs={"bench.json": {"models": []}})
    return home


def test_export_import_directory_is_idempotent_and_verified(two_runs, tmp_path, monkeypatch):
    before = _ls(two_runs, monkeypatch)
    assert push(two_runs, list_runs(two_runs), DirRemote(tmp_path / "shared"), log=lambda _: None) == (2, 0)
    assert push(two_runs, list_runs(two_runs), DirRemote(tmp_path / "shared"), log=lambda _: None) == (0, 2)
    fresh = tmp_path / "fresh"
    assert pull(fresh, DirRemote(tmp_path / "shared"), log=lambda _: None) == (2, 0)
    assert pull(fresh, DirRemote(tmp_path / "shared"), log=lambda _: None) == (0, 2)
    assert _ls(fresh, monkeypatch) == before
    # a tampered copy is refused, and nothing of it lands in the home
    victim = before[0]["id"]
    damaged = tmp_path / "shared" / "runs" / victim / "outputs" / "bench.json"
    damaged.chmod(0o644)
    damaged.write_text("{}")
    other = tmp_path / "other"
    monkeypatch.setenv("DCOPT_HOME", str(other))
    result = CliRunner().invoke(app, ["runs", "import", str(tmp_path / "shared")])
    assert result.exit_code == 1 and "file outputs/bench.json is missing or does not match its sha256" in result.output
    assert not (runs_dir(other) / victim).exists()


@pytest.fixture
def s3_server(monkeypatch):
    pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "DCOPT_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        monkeypatch.setenv(key, value)
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="runs")
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_push_pull_s3_reproduces_runs_ls(two_runs, tmp_path, monkeypatch, s3_server):
    before = _ls(two_runs, monkeypatch)
    out = dcopt("runs", "push", "s3://runs/team/dcopt")
    assert "pushed 2 run(s)" in out
    assert "pushed 0 run(s), 2 already there" in dcopt("runs", "push", "s3://runs/team/dcopt")
    # an interrupted push (marker never written, a file missing) is completed by the next one
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    victim = before[0]["id"]
    s3.delete_object(Bucket="runs", Key=f"team/dcopt/runs/{victim}/.dcopt-sha")
    s3.delete_object(Bucket="runs", Key=f"team/dcopt/runs/{victim}/run.json")
    assert "pushed 1 run(s), 1 already there" in dcopt("runs", "push", "s3://runs/team/dcopt")

    monkeypatch.setenv("DCOPT_HOME", str(tmp_path / "fresh"))
    assert "pulled 2 run(s)" in dcopt("runs", "pull", "s3://runs/team/dcopt")
    assert "pulled 0 run(s), 2 already here" in dcopt("runs", "pull", "s3://runs/team/dcopt")
    assert _ls(tmp_path / "fresh", monkeypatch) == before
    # a label changed at home travels on the next push
    monkeypatch.setenv("DCOPT_HOME", str(two_runs))
    dcopt("runs", "label", "2", "baseline")
    assert "pushed 1 run(s)" in dcopt("runs", "push", "s3://runs/team/dcopt")


def test_mlflow_export_reads_back(two_runs, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("DCOPT_HOME", str(two_runs))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert "exported 2 run(s)" in dcopt("runs", "export", "--mlflow", uri)
    assert "exported 0 run(s), 2 already there" in dcopt("runs", "export", "--mlflow", uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("dcopt")
    got = {r.data.tags["dcopt.kind"]: r for r in client.search_runs([exp.experiment_id])}
    assert got["bench"].data.metrics == {"latency_ms": 0.5, "speedup.onnxruntime": 1.1}
    assert got["bench"].data.tags["mlflow.runName"] == "fast" and got["bench"].info.status == "FINISHED"
    assert got["compile"].data.params["level"] == "2" and got["compile"].data.metrics == {"compile_s": 1.0}
    artifacts = {a.path for a in client.list_artifacts(got["compile"].info.run_id)}
    assert "run.json" in artifacts and (tmp_path / "mlartifacts").is_dir()


def test_push_pull_over_ssh(two_runs, tmp_path, monkeypatch):
    """The ssh remote's commands, run by a stand-in ``ssh`` that executes them here (this machine
    has no sshd): what reaches the remote shell and what comes back are the real thing."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text('#!/bin/sh\nshift\nexec sh -c "$*"\n')
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    before = _ls(two_runs, monkeypatch)
    remote = f"somehost:{tmp_path / 'remote dir'}"
    assert "pushed 2 run(s)" in dcopt("runs", "push", remote)
    assert "pushed 0 run(s), 2 already there" in dcopt("runs", "push", remote)
    monkeypatch.setenv("DCOPT_HOME", str(tmp_path / "fresh"))
    assert "pulled 2 run(s)" in dcopt("runs", "pull", remote)
    assert "pulled 0 run(s), 2 already here" in dcopt("runs", "pull", remote)
    assert _ls(tmp_path / "fresh", monkeypatch) == before
