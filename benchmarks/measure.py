"""Timing, statistics and the correctness check: the part of the harness that makes numbers.

Why it is built this way:
- Runtimes are *interleaved* per round (A,B,C then B,C,A then C,A,B ...): noise from a shared,
  busy machine (other processes, frequency changes) lands on every runtime alike, and the
  rotation keeps any one runtime from always running right after the same neighbour. Each
  visit is a short burst after an untimed lead-in, so what is timed is steady-state latency,
  not the cost of waking up next to another runtime's thread pool (see interleaved_times).
- Medians with p10/p90 and IQR, never means alone: latency distributions on a loaded machine
  are skewed; the spread is part of the answer.
- Each runtime's first call is untimed (its output is the one checked for correctness), then
  ``warmup`` interleaved rounds are discarded, then rounds until ``reps`` calls per runtime are
  timed — fewer only when a per-model time budget runs out (never under ``min_rounds``
  rounds); the count actually timed is reported.
- The garbage collector is off inside the timed region so a collection triggered by one
  runtime's allocations is not charged to another.
- Correctness is measured against onnxruntime on the same feeds; a runtime outside fp32
  tolerance stays in the table, marked invalid.
"""

from __future__ import annotations

import gc
import time
import traceback
from typing import Callable, Mapping, Sequence

import numpy as np

from benchmarks.models import BenchModel
from dcopt.integrity import sha256_file
from benchmarks.runners import PREPARERS, REFERENCE_RUNTIME, NotApplicable, Prepared

RTOL, ATOL = 1e-4, 1e-5


def summarize(times_s: Sequence[float]) -> dict:
    """Latency statistics in milliseconds."""
    t = np.asarray(times_s, dtype=np.float64) * 1e3
    if t.size == 0:
        return {"reps": 0}
    p10, p25, p50, p75, p90 = np.percentile(t, [10, 25, 50, 75, 90])
    return {"reps": int(t.size), "median_ms": float(p50), "p10_ms": float(p10), "p90_ms": float(p90),
            "p25_ms": float(p25), "p75_ms": float(p75), "iqr_ms": float(p75 - p25),
            "min_ms": float(t.min()), "mean_ms": float(t.mean()), "max_ms": float(t.max())}


def compare_outputs(outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                    rtol: float = RTOL, atol: float = ATOL) -> dict:
    """Compare one runtime's outputs with the reference's, allclose-style.

    ``tol_ratio`` = max |a-r| / (atol + rtol*|r|): valid iff <= 1 (numpy.allclose's criterion).
    ``max_rel`` = max |a-r| / max(|r|, atol), so near-zero reference values do not blow it up.
    """
    result = {"rtol": rtol, "atol": atol, "checked": True}
    problems = []
    if len(outputs) != len(reference):
        problems.append(f"{len(outputs)} outputs, reference has {len(reference)}")
    max_abs = max_rel = tol_ratio = 0.0
    for i, (out, ref) in enumerate(zip(outputs, reference)):
        out, ref = np.asarray(out), np.asarray(ref)
        if out.shape != ref.shape:
            problems.append(f"output {i}: shape {out.shape}, reference {ref.shape}")
            continue
        if out.dtype != ref.dtype:
            problems.append(f"output {i}: dtype {out.dtype}, reference {ref.dtype}")
        if out.size == 0:
            continue
        a, r = out.astype(np.float64), ref.astype(np.float64)
        both_nan = np.isnan(a) & np.isnan(r)
        diff = np.where(both_nan, 0.0, np.abs(a - r))
        if np.isnan(diff).any():
            problems.append(f"output {i}: NaN where the reference has none (or vice versa)")
            diff = np.nan_to_num(diff, nan=np.inf)
        absr = np.abs(np.nan_to_num(r))
        max_abs = max(max_abs, float(diff.max()))
        max_rel = max(max_rel, float((diff / np.maximum(absr, atol)).max()))
        tol_ratio = max(tol_ratio, float((diff / (atol + rtol * absr)).max()))
    if tol_ratio > 1.0:
        problems.append(f"outside tolerance (rtol {rtol:g}, atol {atol:g}): worst element at "
                        f"{tol_ratio:.3g}x the allowed error")
    result.update(max_abs=max_abs, max_rel=max_rel, tol_ratio=tol_ratio, valid=not problems, problems=problems)
    return result


#: Untimed calls before each burst. It must outlast the previous runtime's idle spinning: after
#: a run, onnxruntime's intra-op pool kept a core busy for ~35 ms (process CPU time measured
#: while the caller slept; OpenVINO's ~1 ms, dcopt's pool 1-3 ms). With a 20 ms lead-in the
#: spinner still held a core through the next runtime's timed burst, and which runtime followed
#: onnxruntime then decided its result: BERT through dcopt timed 7.4-8.4 ms after onnxruntime
#: against 3.8-4.3 ms with onnxruntime's spinning off.
LEAD_IN_S = 0.1


def interleaved_times(calls: Mapping[str, Callable[[], object]], warmup: int, reps: int, *, burst: int = 5,
                      lead_in_s: float = LEAD_IN_S, burst_s: float = 1.0, time_budget_s: float | None = None,
                      min_rounds: int = 3, est_call_s: Mapping[str, float] | None = None,
                      order_log: list[str] | None = None) -> tuple[dict[str, list[list[float]]], dict[str, str]]:
    """Interleaved rounds of per-runtime bursts; returns timed durations (s) per round, and errors.

    Each round visits every live runtime once, in an order rotated per round. A visit is an
    untimed lead-in (calls until ``lead_in_s`` has passed, at least one) and then a timed burst
    of ``burst`` calls, shortened so it lasts about ``burst_s`` at most (from ``est_call_s``,
    the runtime's second-call time). Why bursts and not single calls: on this 2-core machine a
    lone call right after another runtime ran measured 3-5x slower than steady state (the
    previous runtime's spinning thread pool, cold caches, this runtime's parked pool), and by a
    different amount per runtime; each runtime reached steady state within ~5 calls / ~1 ms.
    ``warmup`` rounds are discarded; timing stops after ``ceil(reps / burst)`` rounds, or once
    ``time_budget_s`` is spent and ``min_rounds`` are done. A runtime that raises drops out
    with its error. ``order_log`` (for tests) receives every call's runtime name.
    """
    names = list(calls)
    est = dict(est_call_s or {})
    bursts = {n: max(1, min(burst, int(burst_s / est[n]) if est.get(n) else burst)) for n in names}
    rounds = -(-reps // burst)
    times: dict[str, list[list[float]]] = {n: [] for n in names}
    errors: dict[str, str] = {}
    clock = time.perf_counter
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        start = None
        for rnd in range(warmup + rounds):
            if rnd == warmup:
                start = clock()
            live = [n for n in names if n not in errors]
            if not live:
                break
            k = rnd % len(live)
            for name in live[k:] + live[:k]:
                fn = calls[name]
                try:
                    if hasattr(fn, "timed_burst"):  # runs in another process: timed there (benchmarks.baseline)
                        fn.lead_in(lead_in_s)
                        timed = list(fn.timed_burst(bursts[name]))
                        if rnd >= warmup:
                            times[name].append(timed)
                        continue
                    t_lead = clock()
                    while True:
                        if order_log is not None:
                            order_log.append(name)
                        fn()
                        if clock() - t_lead >= lead_in_s:
                            break
                    timed = []
                    for _ in range(bursts[name]):
                        if order_log is not None:
                            order_log.append(name)
                        t0 = clock()
                        fn()
                        dt = clock() - t0
                        timed.append(dt)
                    if rnd >= warmup:
                        times[name].append(timed)
                except Exception as exc:  # report the failing runtime, keep measuring the others
                    errors[name] = f"{type(exc).__name__}: {exc}"
            if (start is not None and time_budget_s is not None and rnd + 1 - warmup >= min_rounds
                    and clock() - start > time_budget_s):
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return times, errors


def _short_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]


def bench_one(model: BenchModel, runtimes: Sequence[str], *, threads: int = 2, warmup: int = 1, reps: int = 50,
              burst: int = 5, time_budget_s: float | None = None, rtol: float = RTOL, atol: float = ATOL,
              preparers: Mapping[str, Callable[[BenchModel, int], Prepared]] | None = None,
              log: Callable[[str], None] = lambda _msg: None) -> dict:
    """Benchmark one model on the given runtimes; returns the model's JSON-ready result.

    onnxruntime is always prepared (as the correctness reference) even if not listed, but is
    only timed when listed. Speedups are ``peer median / dcopt median`` (>1: dcopt faster).
    """
    preparers = dict(PREPARERS if preparers is None else preparers)
    entry = {"name": model.name, "family": model.family, "description": model.description,
             "path": str(model.path), "sha256": sha256_file(model.path),
             "feeds": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in model.feeds.items()},
             "runtimes": {}}
    prepared: dict[str, Prepared] = {}
    first_outputs: dict[str, list[np.ndarray]] = {}
    wanted = list(runtimes) + ([REFERENCE_RUNTIME] if REFERENCE_RUNTIME not in runtimes else [])
    for rt in wanted:
        info = entry["runtimes"].setdefault(rt, {"timed": rt in runtimes})
        try:
            t0 = time.perf_counter()
            p = preparers[rt](model, threads)
            info["prepare_s"] = time.perf_counter() - t0
            info.update(backend=p.backend, settings=p.settings)
            t0 = time.perf_counter()
            first_outputs[rt] = [np.asarray(o) for o in p.call()]
            info["first_call_ms"] = (time.perf_counter() - t0) * 1e3
            t0 = time.perf_counter()
            p.call()
            info["second_call_ms"] = (time.perf_counter() - t0) * 1e3  # sizes its bursts
            prepared[rt] = p
            info["status"] = "ok"
        except NotApplicable as exc:
            info.update(status="n/a", error=str(exc))
        except Exception as exc:
            info.update(status="failed", error=_short_error(exc), traceback=traceback.format_exc(limit=5))
            log(f"  {rt}: failed: {info['error']}")
    if REFERENCE_RUNTIME not in runtimes:
        entry["runtimes"].pop(REFERENCE_RUNTIME)
    ref = first_outputs.get(REFERENCE_RUNTIME)
    for rt, outs in first_outputs.items():
        if rt in entry["runtimes"]:
            entry["runtimes"][rt]["correctness"] = (
                compare_outputs(outs, ref, rtol, atol) if ref is not None
                else {"checked": False, "valid": None, "problems": ["no onnxruntime reference"]})
    calls = {rt: prepared[rt].call for rt in runtimes if rt in prepared}
    log(f"  timing {', '.join(calls)}: {warmup} warmup round(s), up to {reps} timed calls each in bursts of {burst}")
    est = {rt: entry["runtimes"][rt]["second_call_ms"] / 1e3 for rt in calls}
    times, errors = interleaved_times(calls, warmup, reps, burst=burst, time_budget_s=time_budget_s, est_call_s=est)
    for rt in calls:
        info = entry["runtimes"][rt]
        info["times_ms_by_round"] = [[t * 1e3 for t in burst_times] for burst_times in times[rt]]
        info["stats"] = summarize([t for burst_times in times[rt] for t in burst_times])
        if rt in errors:
            info.update(status="failed", error=errors[rt])
    entry["speedups"] = speedups(entry)
    return entry


def _median(info: dict) -> float | None:
    if info.get("status") != "ok":
        return None
    return info.get("stats", {}).get("median_ms")


def _paired(mine: list | None, theirs: list | None) -> float | None:
    """Median over rounds of (peer burst median / dcopt burst median): drift-robust cross-check."""
    pairs = [np.median(t) / np.median(m) for m, t in zip(mine or [], theirs or []) if m and t]
    return float(np.median(pairs)) if pairs else None


def speedups(entry: dict) -> dict:
    """``{peer: {"speedup": peer_median/dcopt_median, "valid": both results correct}}``."""
    rts = entry["runtimes"]
    mine = _median(rts.get("dcopt", {}))
    out = {}
    for peer, info in rts.items():
        theirs = _median(info)
        if peer == "dcopt" or mine is None or theirs is None or mine <= 0:
            continue
        valid = all(rts[r].get("correctness", {}).get("valid") is not False for r in ("dcopt", peer))
        out[peer] = {"speedup": theirs / mine, "valid": valid,
                     "paired_speedup": _paired(rts["dcopt"].get("times_ms_by_round"), info.get("times_ms_by_round"))}
    return out


def geomean_speedups(models: Sequence[dict]) -> dict:
    """Per peer: geometric mean of dcopt's speedup over models where both results are valid."""
    per_peer: dict[str, list[float]] = {}
    skipped: dict[str, list[str]] = {}
    for m in models:
        for peer, s in m.get("speedups", {}).items():
            if s["valid"]:
                per_peer.setdefault(peer, []).append(s["speedup"])
            else:
                skipped.setdefault(peer, []).append(m["name"])
    return {peer: {"geomean": float(np.exp(np.mean(np.log(v)))), "models": len(v),
                   "excluded_invalid": skipped.get(peer, [])}
            for peer, v in per_peer.items()} | {
        peer: {"geomean": None, "models": 0, "excluded_invalid": names}
        for peer, names in skipped.items() if peer not in per_peer}
