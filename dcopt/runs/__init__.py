"""Runs as experiments: every compile, benchmark, opt and patch recorded, compared and shared.

* :mod:`.record` -- the run directory and its status lifecycle (``record_run``, ``current_run``);
* :mod:`.index` -- one SQLite index (WAL) that lists and compares runs without opening them;
* :mod:`.select` -- naming runs by index (1 = latest), id prefix or label;
* :mod:`.compare`, :mod:`.diff` -- tables across runs and the difference between two;
* :mod:`.plot` -- charts; :mod:`.remote` -- push/pull; :mod:`.mlflow_export` -- MLflow;
* :mod:`.project` -- ``dcopt.yaml`` (models, pipelines, patch sets, a benchmark matrix).

CLI: ``dcopt runs ls|show|compare|diff|label|tag|rm|export|import|push|pull|plot``.
"""

from dcopt.runs.record import current_run, record_run

__all__ = ["current_run", "record_run"]
