"""``python -m benchmarks.run``: dcopt beside its peer runtimes, in one process, in one run.

Speed claims in dcopt are always ratios against peers measured in the same run; this is the
tool that makes them. See ``--help``; ``--quick`` is a smoke test (3 models, few reps).

Environment: this machine sets ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE``, which slow numpy's
OpenBLAS (the BLAS under dcopt's reference executor). OpenBLAS reads them once, when numpy is
first imported, so :func:`prepare_env` runs first thing in :func:`main`, before this module
imports anything that imports numpy (module level here is stdlib only, and
``benchmarks/__init__`` is empty). It changes only this process's environment, reports every
change in the header and the JSON, and refuses (saying so) if numpy is already loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

OPENBLAS_SLOW_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def prepare_env(unset_openblas: bool, threads: int) -> list[str]:
    """Adjust this process's BLAS environment before numpy loads; return what was done."""
    changes = []
    numpy_loaded = "numpy" in sys.modules
    present = {k: os.environ[k] for k in OPENBLAS_SLOW_VARS if k in os.environ}
    if unset_openblas and present:
        if numpy_loaded:
            changes.append(f"left {present} set: numpy was already imported, so unsetting could not take effect")
        else:
            for key, value in present.items():
                del os.environ[key]
                changes.append(f"unset {key} (was {value!r}) in this process before importing numpy")
    elif present:
        changes.append(f"left {present} set (--no-unset-openblas-env)")
    preset = os.environ.get("OPENBLAS_NUM_THREADS")
    if preset is not None:
        note = "" if preset == str(threads) else f" (differs from --threads {threads})"
        changes.append(f"OPENBLAS_NUM_THREADS={preset} was already set{note}")
    elif numpy_loaded:
        changes.append("OPENBLAS_NUM_THREADS not set and numpy already imported: numpy BLAS uses its default")
    else:
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
        changes.append(f"set OPENBLAS_NUM_THREADS={threads} (numpy BLAS under dcopt's reference executor)")
    return changes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=None,
                   help="comma-separated model names, or 'all' (see --list); default all, or the quick set")
    p.add_argument("--model-file", action="append", default=[], metavar="PATH",
                   help="also benchmark this ONNX file (random feeds); repeatable")
    p.add_argument("--runtimes", default=None,
                   help="comma-separated subset of dcopt,onnxruntime,torch,openvino,dcopt-torch (torch.compile with "
                        "backend='dcopt'),inductor (torch.compile); default: the first four that are installed")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for every runtime")
    p.add_argument("--warmup", type=int, default=1, help="discarded interleaved rounds")
    p.add_argument("--reps", type=int, default=50, help="timed calls per runtime (max)")
    p.add_argument("--burst", type=int, default=5,
                   help="timed calls per runtime per round (after an untimed lead-in); fewer for slow runtimes")
    p.add_argument("--time-budget", type=float, default=60.0,
                   help="stop a model's timed rounds after this many seconds (min 3 rounds); 0: no limit")
    p.add_argument("--quick", action="store_true", help="smoke test: quick model set, warmup 0, reps 10, budget 20s")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--json", default=None, metavar="PATH", help="write the full result (per-rep times) here")
    p.add_argument("--cache-dir", default=None, help="where built models are cached (default benchmarks/.models)")
    p.add_argument("--unset-openblas-env", action=argparse.BooleanOptionalAction, default=True,
                   help="unset OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE in this process before numpy loads")
    p.add_argument("--list", action="store_true", help="list model names and installed runtimes, then exit")
    p.add_argument("--dcopt-pipeline", default="O3", metavar="SPEC",
                   help="pipeline the dcopt runtime compiles with (O0..O3 or a pass spec such as 'fold,cse')")
    p.add_argument("--dcopt-patch", action="append", default=[], metavar="URI",
                   help="idea patch the dcopt runtime applies before compiling (repeatable)")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="also write charts (latency distributions, speedups) as PNG into DIR")
    p.add_argument("--baseline", metavar="REF", default=None,
                   help="also time the dcopt of git ref REF (or of the source tree at path REF) as runtime "
                        "dcopt@REF, in its own process: old and new code side by side in one run")
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.reps, args.time_budget = 0, min(args.reps, 10), min(args.time_budget, 20)
    if args.threads < 1 or args.reps < 1 or args.burst < 1 or args.warmup < 0:
        p.error("--threads, --reps and --burst must be >= 1, --warmup >= 0")
    return args


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_benchmarks(model_names, model_files, runtimes, *, threads=2, warmup=1, reps=50, burst=5, time_budget_s=None,
                   rtol=1e-4, atol=1e-5, cache_dir=None, env_changes=(), log=_log, preparers=None) -> dict:
    """Build the models, bench each, and return the full JSON-ready result (no printing)."""
    from pathlib import Path

    from benchmarks import measure, models, report

    cache = Path(cache_dir) if cache_dir else models.CACHE_DIR
    result = {"config": {"threads": threads, "warmup": warmup, "reps": reps, "burst": burst, "time_budget_s": time_budget_s,
                         "rtol": rtol, "atol": atol, "runtimes": list(runtimes), "batch": 1,
                         "interleave": "rotating rounds of per-runtime bursts after an untimed lead-in",
                         "lead_in_s": measure.LEAD_IN_S,
                         "speedup": "peer median / dcopt median"},
              "host": report.host_info(), "versions": report.versions(), "env_changes": list(env_changes),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "models": []}
    todo = [(name, None) for name in model_names] + [(None, f) for f in model_files]
    for name, file in todo:
        label = name or file
        log(f"[{label}] building")
        try:
            model = models.build(name, cache) if name else models.from_file(file)
        except models.ModelUnavailable as exc:
            log(f"[{label}] skipped: {exc}")
            result["models"].append({"name": label, "skipped": str(exc), "runtimes": {}, "speedups": {}})
            continue
        log(f"[{label}] {model.description}")
        entry = measure.bench_one(model, runtimes, threads=threads, warmup=warmup, reps=reps, burst=burst,
                                  time_budget_s=time_budget_s, rtol=rtol, atol=atol, log=log, preparers=preparers)
        result["models"].append(entry)
    result["geomean"] = measure.geomean_speedups(result["models"])
    result["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return result


def bench_model(path, runtimes=None, threads: int = 2, reps: int = 50, warmup: int = 1,
                time_budget_s: float | None = 60.0) -> dict:
    """One ONNX file on the given runtimes (default: all installed) -> the model's result dict.

    What a ``dcopt bench model.onnx`` command should call (then ``report.render`` on a result
    built by :func:`run_benchmarks` for the header). Note: the OpenBLAS environment fix only
    applies if it happened before numpy loaded; a CLI wrapper should run ``python -m
    benchmarks.run --model-file PATH`` in a subprocess, or call :func:`prepare_env` first.
    """
    from benchmarks import measure, models, runners

    return measure.bench_one(models.from_file(path), runtimes or runners.default_runtimes(), threads=threads,
                             warmup=warmup, reps=reps, time_budget_s=time_budget_s)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env_changes = prepare_env(args.unset_openblas_env, args.threads)  # before anything imports numpy
    from benchmarks import models, report, runners

    installed = runners.default_runtimes()
    if args.list:
        print("models:", ", ".join(models.MODEL_NAMES))
        print("quick set:", ", ".join(models.QUICK_MODELS))
        print("runtimes installed:", ", ".join(installed))
        return 0
    if args.models in (None, "") and args.model_file:
        names = []
    elif args.models in (None, ""):
        names = list(models.QUICK_MODELS if args.quick else models.MODEL_NAMES)
    elif args.models == "all":
        names = list(models.MODEL_NAMES)
    else:
        names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in models.MODEL_NAMES]
    if unknown:
        print(f"error: unknown model(s) {unknown}; known: {', '.join(models.MODEL_NAMES)}", file=sys.stderr)
        return 2
    wanted = [r.strip() for r in args.runtimes.split(",")] if args.runtimes else installed
    bad = [r for r in wanted if r not in runners.RUNTIMES]
    missing = [r for r in wanted if r in runners.RUNTIMES and not runners.available(r)]
    if bad or missing:
        print(f"error: runtime(s) {bad + missing} unknown or not installed; installed: {', '.join(installed)}",
              file=sys.stderr)
        return 2
    for change in env_changes:
        _log(f"env: {change}")
    preparers, tree = dict(runners.PREPARERS), None
    if args.dcopt_pipeline != "O3" or args.dcopt_patch:
        import functools

        preparers["dcopt"] = functools.partial(runners.prepare_dcopt, pipeline=args.dcopt_pipeline,
                                               patches=tuple(args.dcopt_patch))
    if args.baseline:
        from benchmarks.baseline import BaselineTree, baseline_preparer

        try:
            tree = BaselineTree(args.baseline)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        name = f"dcopt@{args.baseline}"
        preparers[name] = baseline_preparer(tree)
        wanted = [w for w in wanted if w != name] + [name]
        _log(f"baseline: {name} from {tree.path}")
    try:
        result = run_benchmarks(names, args.model_file, wanted, threads=args.threads, warmup=args.warmup,
                                reps=args.reps, burst=args.burst, time_budget_s=args.time_budget or None,
                                rtol=args.rtol, atol=args.atol, cache_dir=args.cache_dir, env_changes=env_changes,
                                preparers=preparers)
    finally:
        if tree is not None:
            preparers[f"dcopt@{args.baseline}"].close()
            tree.close()
    report.render(result)
    if args.json:
        report.write_json(result, args.json)
        _log(f"wrote {args.json}")
    if args.plot:
        from dcopt.runs.plot import bench_charts

        for path in bench_charts(result, args.plot):
            _log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
