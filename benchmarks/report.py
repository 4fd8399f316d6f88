"""Host/version capture, the rich ratio table, and the JSON file.

Why: a speed claim is only meaningful with its context. The header names the machine, thread
settings, every library version, and any environment change the harness made to its own
process; the table shows each runtime's median and spread side by side and dcopt's speedup
over each peer (``peer median / dcopt median``: >1 means dcopt is faster) with correctness
beside it, so an invalid result can't pass as a fast one. The JSON keeps every per-rep time.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.measure import geomean_speedups
from dcopt.runs.host import host_info  # noqa: F401 - the harness header reads it from here

VERSIONED = ("dcopt", "numpy", "onnx", "onnxruntime", "torch", "transformers", "openvino", "rich")


def versions() -> dict:
    out = {}
    for dist in VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import numpy as np

        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        out["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # show_config's layout differs across numpy versions
        out["numpy_blas"] = None
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        out["dcopt_git"] = f"{rev}{'+dirty' if dirty else ''}" if rev else None
    except (OSError, subprocess.SubprocessError):
        out["dcopt_git"] = None
    return out


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def _err(x: float | None) -> str:
    return "-" if x is None else f"{x:.1e}"


def _correct_cell(info: dict) -> str:
    c = info.get("correctness")
    if c is None:
        return "-"
    if not c.get("checked"):
        return "[yellow]unchecked[/]"
    ratio = f" ({c['tol_ratio']:.2g} of tol)" if c.get("tol_ratio") is not None else ""
    return f"[green]ok[/]{ratio}" if c["valid"] else f"[bold red]INVALID[/]{ratio}"


def render(result: dict, console: Console | None = None) -> None:
    """Print the header and one ratio table (rows grouped by model, geomean rows last)."""
    console = console or Console(width=None if os.isatty(1) else 150)
    cfg, host, ver = result["config"], result["host"], result["versions"]
    console.print(f"[bold]dcopt benchmark[/]  {host['cpu_model']} ({host['usable_cpus']} usable CPUs, "
                  f"{' '.join(host['simd_flags'][:6])}), python {host['python']}")
    console.print("versions: " + ", ".join(f"{k} {v}" for k, v in ver.items() if v and k != "numpy_blas")
                  + (f"; numpy BLAS {ver['numpy_blas']}" if ver.get("numpy_blas") else ""))
    console.print(f"threads {cfg['threads']} (all runtimes), batch 1, {cfg['warmup']} warmup round(s), up to "
                  f"{cfg['reps']} timed calls per runtime in interleaved rotating rounds of bursts of {cfg['burst']}"
                  f" (time budget {cfg['time_budget_s']}s/model); "
                  f"correctness vs onnxruntime at rtol {cfg['rtol']:g} atol {cfg['atol']:g}")
    for change in result["env_changes"]:
        console.print(f"env: {change}", markup=False)
    backends = {}
    for m in result["models"]:
        for rt, info in m["runtimes"].items():
            if info.get("backend"):
                backends.setdefault(rt, set()).add(info["backend"])
    for rt, names in backends.items():
        console.print(f"{rt}: {'; '.join(sorted(names))}", markup=False)
    load, load_end = host.get("loadavg"), result.get("loadavg_end")
    if load:
        console.print(f"load average at start {load[0]:.2f}, at end {(load_end or [0])[0]:.2f}")
        if load[0] > 0.5 * (host.get("usable_cpus") or 1):  # the end value includes this run itself
            console.print("[bold yellow]warning:[/] other processes are using the CPUs; with busy-waiting "
                          "thread pools expect stalls of a scheduler period (~24 ms) — read the spread, rerun quiet")

    table = Table(title="latency (ms) and dcopt speedup = peer median / dcopt median (>1: dcopt faster)")
    for col, just in (("model", "left"), ("runtime", "left"), ("median", "right"), ("p10-p90", "right"),
                      ("IQR", "right"), ("reps", "right"), ("dcopt speedup", "right"), ("max abs err", "right"),
                      ("max rel err", "right"), ("correct", "left")):
        table.add_column(col, justify=just)
    for m in result["models"]:
        if m.get("skipped"):
            table.add_row(m["name"], "-", "-", "-", "-", "-", "-", "-", "-", f"[yellow]skipped: {m['skipped']}[/]",
                          end_section=True)
            continue
        rows = list(m["runtimes"].items())
        for i, (rt, info) in enumerate(rows):
            st, c = info.get("stats", {}), info.get("correctness") or {}
            if info.get("status") != "ok":
                status = info.get("status", "?")
                why = (info.get("error") or "")[:70]
                table.add_row(m["name"] if i == 0 else "", rt, "-", "-", "-", "-", "-", "-", "-",
                              f"[{'dim' if status == 'n/a' else 'red'}]{status}: {why}[/]",
                              end_section=i == len(rows) - 1)
                continue
            sp = m["speedups"].get(rt)
            speed = "1 (self)" if rt == "dcopt" else f"{sp['speedup']:.3g}x" if sp else "-"
            spread = f"{_ms(st.get('p10_ms'))}-{_ms(st.get('p90_ms'))}" if st.get("reps") else "-"
            table.add_row(m["name"] if i == 0 else "", rt, _ms(st.get("median_ms")), spread, _ms(st.get("iqr_ms")),
                          str(st.get("reps", 0)), speed, _err(c.get("max_abs")), _err(c.get("max_rel")),
                          _correct_cell(info), end_section=i == len(rows) - 1)
    for peer, g in geomean_speedups(result["models"]).items():
        excluded = f" (excl. invalid: {', '.join(g['excluded_invalid'])})" if g["excluded_invalid"] else ""
        value = f"{g['geomean']:.3g}x" if g["geomean"] is not None else "-"
        table.add_row("[bold]geomean[/]", peer, "", "", "", f"{g['models']} models", f"[bold]{value}[/]", "", "",
                      excluded)
    console.print(table)


def write_json(result: dict, path: str | os.PathLike) -> None:
    """Everything, per-rep times included; written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, path)
