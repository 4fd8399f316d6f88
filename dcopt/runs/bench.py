"""``dcopt bench`` as recorded runs: one harness run (``python -m benchmarks.run``, in a fresh
process: it must set OpenBLAS's environment before numpy loads) per recorded run, its full result
(every latency sample) kept as ``outputs/bench.json`` and its headline numbers as metrics; the
regression gate (``--baseline RUN --fail-if-slower 5%``) compares them with an earlier run.

Metrics of a one-model run: ``latency_ms`` (dcopt's median), ``p10_ms``/``p90_ms``/``iqr_ms``,
``latency_ms.<runtime>`` for every runtime, ``speedup.<peer>`` (peer median / dcopt median),
``prepare_s`` (dcopt's compile inside the harness), ``correct``. With several models each is
prefixed ``<model>:`` and ``speedup.<peer>`` is the geometric mean over models.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dcopt.errors import DcoptError, InputError


def harness_command(models, *, threads, reps, runtimes=None, quick=False, pipeline="O3", patches=(), json_path=None,
                    plot=None) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.run", "--threads", str(threads), "--reps", str(reps)]
    for model in models:
        command += ["--model-file", str(model)]
    if runtimes:
        command += ["--runtimes", runtimes]
    if pipeline != "O3":
        command += ["--dcopt-pipeline", pipeline]
    for uri in patches:
        command += ["--dcopt-patch", uri]
    if json_path:
        command += ["--json", str(json_path)]
    if plot:
        command += ["--plot", str(plot)]
    if quick:
        command.append("--quick")
    return command


def _model_metrics(m: dict) -> dict:
    out = {}
    for rt, info in m.get("runtimes", {}).items():
        stats = info.get("stats") or {}
        if info.get("status") == "ok" and stats.get("reps"):
            out[f"latency_ms.{rt}"] = stats["median_ms"]
            if rt == "dcopt":
                out.update(latency_ms=stats["median_ms"], p10_ms=stats["p10_ms"], p90_ms=stats["p90_ms"],
                           iqr_ms=stats["iqr_ms"], reps=stats["reps"])
    dcopt = m.get("runtimes", {}).get("dcopt", {})
    if "prepare_s" in dcopt:
        out["prepare_s"] = dcopt["prepare_s"]
    valid = (dcopt.get("correctness") or {}).get("valid")
    if valid is not None:
        out["correct"] = bool(valid)
    out.update({f"speedup.{peer}": s["speedup"] for peer, s in m.get("speedups", {}).items()})
    return out


def bench_metrics(result: dict) -> dict:
    """Scalar metrics of a harness result (see the module docstring)."""
    models = [m for m in result.get("models", []) if not m.get("skipped")]
    if len(models) == 1:
        return _model_metrics(models[0])
    out = {f"{m['name']}:{k}": v for m in models for k, v in _model_metrics(m).items()}
    out.update({f"speedup.{peer}": g["geomean"] for peer, g in (result.get("geomean") or {}).items()
                if g.get("geomean") is not None})
    return out


def run_bench(models, options: dict, *, argv, threads=2, reps=50, runtimes=None, quick=False, pipeline="O3",
              patches=(), json_path=None, plot=None, record=True, label="") -> tuple[str | None, dict]:
    """Run the harness on ``models`` as one recorded run; returns (run id or None, metrics)."""
    from dcopt.runs.record import record_run

    with record_run("bench", argv, options, model=models[0] if len(models) == 1 else None, record=record,
                    label=label) as run:
        scratch = None
        if run.recording:
            out_json = run.output_path("bench.json")
        elif json_path:
            out_json = Path(json_path)
        else:
            scratch = Path(tempfile.mkdtemp(prefix="dcopt-bench-"))
            out_json = scratch / "bench.json"
        try:
            code = subprocess.call(harness_command(models, threads=threads, reps=reps, runtimes=runtimes, quick=quick,
                                                   pipeline=pipeline, patches=patches, json_path=out_json, plot=plot))
            if code != 0:
                raise DcoptError(f"the benchmark harness exited with code {code}")
            result = json.loads(out_json.read_text())
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        if run.recording and json_path:
            shutil.copyfile(out_json, json_path)
        metrics = bench_metrics(result)
        run.log_params(pipeline=pipeline, patches=list(patches),
                       runtimes=[rt for m in result["models"] for rt in m.get("runtimes", {})] if result["models"]
                       else runtimes)
        run.log_metrics(metrics)
    return run.id, metrics


def parse_percent(text: str) -> float:
    """'5%' or '5' -> 0.05."""
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise InputError(f"--fail-if-slower expects a percentage such as 5%, got '{text}'") from None
    if value < 0:
        raise InputError(f"--fail-if-slower must be >= 0, got '{text}'")
    return value / 100


def check_regression(baseline, metrics: dict, limit: float, where: str) -> list[str]:
    """Lines describing every latency (dcopt's median, per model) slower than ``baseline``'s by more
    than ``limit`` (a fraction); InputError when the two share no latency metric."""
    names = [k for k in metrics if (k == "latency_ms" or k.endswith(":latency_ms")) and k in baseline.metrics]
    if not names:
        raise InputError(f"baseline run {baseline.short_id} ({baseline.kind}) has no latency to compare with "
                         f"(it has: {', '.join(sorted(baseline.metrics)) or 'no metrics'}); give a bench run")
    failures = []
    for name in names:
        old, new = baseline.metrics[name], metrics[name]
        change = (new - old) / old
        verdict = f"{name} {old:.4g} -> {new:.4g} ms ({change:+.1%}, limit +{limit:.1%}) vs baseline run " \
                  f"{baseline.short_id}{f' ({baseline.label})' if baseline.label else ''}{where}"
        if change > limit:
            failures.append(verdict)
        else:
            print(f"ok: {verdict}", file=sys.stderr)
    return failures
