"""A recorded run, as the viewer's run panel shows it beside a build: what ran, its figures, and
for a benchmark the latency of every runtime with its spread, drawn by the page as SVG.

Runs are named as everywhere else (:func:`dcopt.runs.select.select_one`: index, id prefix or
label) and read from their directories (``run.json``; a benchmark's ``outputs/bench.json`` with
every timed call). The chart data is what ``dcopt runs plot --chart latency``
(:func:`dcopt.runs.plot.latency_chart`) draws, computed here so the browser needs no plotting
library: per runtime, the samples' percentiles (box: 25-75, whiskers: 10-90, median) and the
samples themselves, on one axis for all runtimes ending past the 95th percentile (one scheduler
stall must not squeeze every box flat); and dcopt's speedup over each peer.
"""

from __future__ import annotations

from pathlib import Path

from dcopt.errors import InputError

#: Samples sent per runtime for the dots of the chart (spread evenly over the sorted samples).
MAX_DOTS = 400


def _home():
    from dcopt.runs.home import dcopt_home

    return dcopt_home()


def find_run(ref: str):
    """The run ``ref`` names; an error saying what exists otherwise."""
    from dcopt.runs.select import list_runs, select_one

    rows = list_runs(_home())
    if not rows:
        raise InputError(f"no run '{ref}': no runs are recorded under {_home()} "
                         "(dcopt bench and dcopt compile record them)")
    return select_one(str(ref), rows)


def runs_of(model: str) -> list[dict]:
    """Recorded runs of ``model``, latest first: those whose model file had the same sha256 (a
    renamed copy included; another model saved under the same name excluded), and, for runs
    recorded without a digest, those of the same file name."""
    from dcopt.runs.select import list_runs

    name = Path(model).stem
    digest = _digest(model)
    return [{"ref": r.id, "short_id": r.short_id, "kind": r.kind, "status": r.status, "started": r.started,
             "label": r.label, "latency_ms": r.metrics.get("latency_ms"),
             "build": bool(r.build_key) or r.kind == "compile"}
            for r in list_runs(_home()) if (r.model_sha == digest if r.model_sha and digest else r.model == name)]


def _digest(model: str) -> str | None:
    """The model file's sha256, remembered by stat signature (as runs record it)."""
    from dcopt.backends.cpu.source import cache_root
    from dcopt.integrity import TrustCache

    try:
        return TrustCache(cache_root()).digest(Path(model))
    except OSError:
        return None


def run_panel(ref: str) -> dict:
    """What the panel shows of run ``ref`` (see the module doc)."""
    from dcopt.runs.diff import load_record
    from dcopt.runs.home import runs_dir
    from dcopt.runs.record import OUTPUTS, read_json

    row = find_run(ref)
    record = load_record(_home(), row.id)
    bench_file = runs_dir(_home()) / row.id / OUTPUTS / "bench.json"
    bench = None
    if bench_file.is_file():
        try:
            bench = read_json(bench_file)
        except (OSError, ValueError) as exc:
            raise InputError(f"run {row.short_id}: its benchmark result {bench_file} is unreadable ({exc})") from None
    host = record.get("host") or {}
    build = record.get("build") or {}
    return {"id": row.id, "short_id": row.short_id, "kind": row.kind, "status": row.status, "label": row.label,
            "tags": row.tags, "started": record.get("started"), "finished": record.get("finished"),
            "error": record.get("error"), "argv": record.get("argv", []), "model": record.get("model") or {},
            "options": record.get("options", {}), "metrics": record.get("metrics", {}),
            "host": {k: host.get(k) for k in ("hostname", "cpu_model", "usable_cpus", "platform")},
            "build": {"output": build.get("output"), "key": build.get("key"), "pipeline": build.get("pipeline_applied"),
                      "patches": build.get("patches", [])} if build else None,
            "charts": charts(bench) if bench else None}


def charts(bench: dict) -> dict:
    """Per model: each runtime's latency summary and samples, the shared axis end, speedups."""
    import numpy as np

    from dcopt.runs.plot import _samples  # the flattening latency_chart draws from

    models, ends = [], []
    for m in bench.get("models", []):
        runtimes = []
        for name, info in (m.get("runtimes") or {}).items():
            samples = np.sort(np.asarray(_samples(info), dtype=np.float64))
            entry = {"runtime": name, "status": info.get("status"), "error": info.get("error"),
                     "backend": info.get("backend"), "valid": (info.get("correctness") or {}).get("valid"),
                     "reps": int(samples.size)}
            if samples.size:
                p = np.percentile(samples, [10, 25, 50, 75, 90, 95])
                entry.update(dict(zip(("p10", "p25", "median", "p75", "p90", "p95"), map(float, p))),
                             min=float(samples[0]), max=float(samples[-1]),
                             dots=[float(v) for v in samples[np.linspace(0, samples.size - 1,
                                                                        min(MAX_DOTS, samples.size)).astype(int)]])
                ends.append(float(p[5]))
            runtimes.append(entry)
        speedups = {peer: {"speedup": s.get("speedup"), "valid": s.get("valid"), "paired": s.get("paired_speedup")}
                    for peer, s in (m.get("speedups") or {}).items()}
        models.append({"name": m.get("name", ""), "skipped": m.get("skipped"), "runtimes": runtimes,
                       "speedups": speedups})
    return {"models": models, "axis_ms": 1.15 * max(ends) if ends else None,
            "config": {k: (bench.get("config") or {}).get(k) for k in ("threads", "reps", "burst", "warmup")}}
