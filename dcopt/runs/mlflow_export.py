"""``dcopt runs export --mlflow URI``: runs into an MLflow tracking store, so they show in MLflow's UI.

Each dcopt run becomes one MLflow run in experiment ``dcopt`` (or ``--experiment``): options as
params (flattened, JSON for lists), metrics as metrics (numbers only; booleans as 0/1), kind,
model, status, label, tags and the dcopt run id as tags, and the run directory's files as
artifacts. Exporting again skips runs already there (found by the ``dcopt.run_id`` tag).
A new experiment of a ``sqlite:///DIR/FILE.db`` store keeps its artifacts in ``DIR/mlartifacts``
(MLflow's own default is ``./mlruns`` under the current directory).
"""

from __future__ import annotations

import json
from pathlib import Path

from dcopt.errors import InputError
from dcopt.runs.home import runs_dir
from dcopt.runs.index import RunRow
from dcopt.runs.record import FINISHED, read_json, RUN_JSON

_STATUS = {"completed": "FINISHED", "error": "FAILED", "terminated": "KILLED"}


def _client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise InputError("MLflow export needs mlflow (pip install 'dcopt[mlflow]')") from None
    return MlflowClient(tracking_uri=uri)


def _experiment(client, uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def export_runs(home: Path, rows: list[RunRow], uri: str, experiment: str = "dcopt", log=print) -> tuple[int, int]:
    """Export finished runs; returns (exported, skipped)."""
    client = _client(uri)
    exp = _experiment(client, uri, experiment)
    exported = skipped = 0
    for row in rows:
        if row.status not in FINISHED:
            skipped += 1
            continue
        if client.search_runs([exp], filter_string=f"tags.`dcopt.run_id` = '{row.id}'", max_results=1):
            skipped += 1
            continue
        path = runs_dir(home) / row.id
        record = read_json(path / RUN_JSON)
        tags = {"dcopt.run_id": row.id, "dcopt.kind": row.kind, "dcopt.model": row.model, "dcopt.status": row.status,
                "dcopt.command": " ".join(record.get("argv", []))[:5000], "mlflow.runName": row.label or
                f"{row.kind} {row.model} {row.short_id}"}
        tags.update({f"dcopt.tag.{t}": "1" for t in row.tags})
        run = client.create_run(exp, start_time=int(record["started"] * 1000), tags=tags)
        run_id = run.info.run_id
        params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in record.get("options", {}).items()}
        build = record.get("build") or {}
        if build.get("key"):
            params["build_key"] = build["key"]
        params["dcopt_version"] = str(record.get("dcopt"))
        from mlflow.entities import Metric, Param

        stamp = int((record.get("finished") or record["started"]) * 1000)
        metrics = [Metric(k, float(v), stamp, 0) for k, v in record.get("metrics", {}).items()
                   if isinstance(v, (int, float))]
        client.log_batch(run_id, metrics=metrics, params=[Param(k, v[:6000]) for k, v in params.items()])
        client.log_artifacts(run_id, str(path))
        client.set_terminated(run_id, status=_STATUS[row.status], end_time=stamp)
        exported += 1
        log(f"exported {row.short_id} -> mlflow run {run_id}")
    return exported, skipped
