"""The machine a run (or a benchmark) ran on: CPU model and SIMD flags, core counts, platform.

One definition, read by run records and by the benchmark harness's header
(:mod:`benchmarks.report`). Reads ``/proc/cpuinfo``; imports nothing heavy.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path


def cpuinfo() -> dict:
    """``{"model": CPU model name, "flags": the avx*/fma*/amx* flags}``."""
    info = {"model": platform.processor() or "unknown", "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and info["model"] in ("unknown", "x86_64", ""):
            info["model"] = value.strip()
        elif key.strip() == "flags" and not info["flags"]:
            info["flags"] = sorted(f for f in value.split() if f.startswith(("avx", "fma", "amx")))
    return info


def host_info() -> dict:
    cpu = cpuinfo()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {"hostname": socket.gethostname(), "cpu_model": cpu["model"], "simd_flags": cpu["flags"],
            "cpu_count": os.cpu_count(), "usable_cpus": affinity, "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
