"""The PyTorch user's two ways into dcopt, checked and timed against eager PyTorch.

* ``torch.compile``: ``torch.compile(module, backend="dcopt")`` under ``torch.inference_mode()``
  (Dynamo graphs, parameters baked in as guarded constants);
* ``torch.export``: :func:`dcopt.frontends.torch_backend.compile_module` (one exported program,
  imported without an ONNX round trip).

A path *passes* when it ran every graph through dcopt (no "running this graph eagerly" warning)
and its output matches eager PyTorch at the harness tolerance (fp32 rtol 1e-4, atol 1e-5, on the
same seeded inputs), or -- for models whose fp32 rounding eager PyTorch itself does not keep
within that tolerance -- when it is at most twice as far from the float64 result as eager fp32
is ("ok (fp32 rounding)", both errors reported). A path that fell back is reported with the
reason dcopt gave. Timings are
interleaved rounds of the paths and eager, as the harness times runtimes (medians, p10-p90).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from benchmarks import measure

PATHS = ("torch.compile", "torch.export")
_EAGER_WARNING = "dcopt: running this graph eagerly"


def _first_tensor(value: Any):
    import torch

    leaves = [t for t in torch.utils._pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]
    return leaves[0]


def _build(path: str, module, example: Sequence[Any]) -> Callable[[], Any]:
    import torch

    if path == "torch.compile":
        import dcopt.frontends.torch_backend  # noqa: F401  (registers backend="dcopt")

        torch._dynamo.reset()
        function = torch.compile(module, backend="dcopt")
    else:
        from dcopt.frontends.torch_backend import compile_module

        function = compile_module(module, tuple(example))

    def call():
        with torch.inference_mode():
            return _first_tensor(function(*example)).numpy()

    return call


ROUNDING = "ok (fp32 rounding)"
#: How much further from the float64 truth than eager fp32 a path may be and still be rounding.
ROUNDING_FACTOR = 2.0


def _rounding_only(entry: dict, module, example, expected, got) -> bool:
    """Whether a result outside the fp32 tolerance is rounding: some random-weight models
    (deep ResNets, BiT) amplify fp32 rounding past rtol 1e-4 in eager PyTorch itself. Then the
    float64 eager result is the truth, and the path passes when its error from it is at most
    :data:`ROUNDING_FACTOR` times eager fp32's own (both figures kept in ``entry["float64"]``)."""
    import copy

    import torch

    try:
        wide = copy.deepcopy(module).double()
        args = [a.double() if a.is_floating_point() else a for a in example]
        with torch.inference_mode():
            truth = _first_tensor(wide(*args)).numpy()
    except Exception:  # noqa: BLE001 - a model that cannot run in float64: no verdict beyond fp32
        return False
    eager_err = measure.compare_outputs([expected.astype(np.float64)], [truth])["tol_ratio"]
    path_err = measure.compare_outputs([got.astype(np.float64)], [truth])["tol_ratio"]
    entry["float64"] = {"eager_fp32_tol_ratio": eager_err, "path_tol_ratio": path_err}
    return eager_err > 1.0 and path_err <= ROUNDING_FACTOR * eager_err


def build_checked(names: Sequence[str], build: Callable[[str], Callable[[], Any]], module, example,
                  expected: np.ndarray, log: Callable[[str], None] | None = None
                  ) -> tuple[dict[str, dict], dict[str, Callable[[], Any]]]:
    """Build each of ``names`` (``build(name)`` returns a call giving the output), call it once
    and judge it against ``expected`` (eager): per name ``status`` ("ok", the rounding verdict,
    "eager: <why>" when dcopt ran the graph eagerly, "WRONG: <what>", "error: <what>"),
    ``correctness`` and ``compile_s`` (first call included). Returns (results, the calls that
    ran: to time)."""
    results: dict[str, dict] = {}
    calls: dict[str, Callable[[], Any]] = {}
    for name in names:
        entry: dict[str, Any] = {}
        results[name] = entry
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                call = build(name)
                got = np.asarray(call())
        except Exception as exc:  # noqa: BLE001 - reported per name, not fatal to the run
            entry["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            if log:
                log(f"{name}: {entry['status']}")
            continue
        entry["compile_s"] = time.perf_counter() - t0
        fell_back = [str(w.message) for w in caught if _EAGER_WARNING in str(w.message)]
        entry["correctness"] = measure.compare_outputs([got], [expected])
        if fell_back:
            entry["status"] = "eager: " + fell_back[0].removeprefix(_EAGER_WARNING + ": ").splitlines()[0][:160]
        elif entry["correctness"]["valid"]:
            entry["status"] = "ok"
        elif _rounding_only(entry, module, example, expected, got):
            entry["status"] = ROUNDING
        else:
            entry["status"] = "WRONG: " + "; ".join(entry["correctness"].get("problems", []))[:160]
        calls[name] = call
        if log:
            log(f"{name}: {entry['status']} (built in {entry['compile_s']:.1f} s, "
                f"tol_ratio {entry['correctness']['tol_ratio']:.3g})")
    return results, calls


def check_paths(module, example: Sequence[Any], *, paths: Sequence[str] = PATHS, reps: int = 20,
                time_budget_s: float = 6.0) -> dict[str, dict]:
    """Per path: ``status`` ("ok", "eager: <reason>", "WRONG: <what>" or "error: <what>"),
    ``correctness`` (:func:`benchmarks.measure.compare_outputs` against eager), ``compile_s`` (first
    call included), and when it ran: ``median_ms``, ``p10_ms``, ``p90_ms``, ``eager_median_ms`` and
    ``speedup_vs_eager`` (eager median / path median, > 1: faster) from one interleaved run."""
    import torch

    module.eval()

    def eager():
        with torch.inference_mode():
            return _first_tensor(module(*example)).numpy()

    try:
        expected = eager()
    except Exception as exc:  # noqa: BLE001 - the model itself does not run here (a transformers limitation)
        why = f"eager fails: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        return {path: {"status": f"not built: {why}"} for path in paths}
    results, built = build_checked(paths, lambda path: _build(path, module, example), module, example, expected)
    calls: dict[str, Callable[[], Any]] = {"eager": eager}
    calls.update((path, call) for path, call in built.items() if results[path]["status"] in ("ok", ROUNDING))
    if len(calls) > 1:
        times, errors = measure.interleaved_times(calls, warmup=1, reps=reps, time_budget_s=time_budget_s)
        eager_ms = np.median([t for rnd in times["eager"] for t in rnd]) * 1e3
        for path in calls:
            if path == "eager":
                continue
            if path in errors:
                results[path]["status"] = f"error: {errors[path]}"
                continue
            samples = np.array([t for rnd in times[path] for t in rnd]) * 1e3
            median = float(np.median(samples))
            results[path].update(median_ms=median, p10_ms=float(np.percentile(samples, 10)),
                                 p90_ms=float(np.percentile(samples, 90)), eager_median_ms=float(eager_ms),
                                 speedup_vs_eager=float(eager_ms / median))
    return results
