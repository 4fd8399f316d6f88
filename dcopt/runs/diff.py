"""``runs diff A B``: what differs between two runs, and what it did to the results.

Read top-down: the verdict (which was faster, by how much), then why: model, options, patches,
the passes that decided differently (the build manifests' pass-by-pass summaries, compared as
``dcopt builds diff`` compares them), kernels (build keys and the content-hashed kernel names),
toolchain and host, and every metric side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcopt.kernels.diff import _pass_lines
from dcopt.runs.compare import _NOT_VARIED, _PIPELINE_ASKED, cell
from dcopt.runs.home import runs_dir
from dcopt.runs.record import OUTPUTS, RUN_JSON, read_json

#: Metrics where lower is better (latencies, times, sizes); speedups and the rest: higher is better.
_LOWER_IS_BETTER = ("_ms", "_s", "_bytes")


def lower_is_better(metric: str) -> bool:
    return metric.split(".")[0].endswith(_LOWER_IS_BETTER)


def load_record(home: Path, run_id: str) -> dict:
    from dcopt.errors import InputError

    try:
        return read_json(runs_dir(home) / run_id / RUN_JSON)
    except (OSError, ValueError) as exc:
        raise InputError(f"run {run_id[:8]}: its record is unreadable or gone ({exc}); "
                         f"dcopt runs ls --reindex forgets runs whose directory is gone") from None


def _manifest(home: Path, run_id: str) -> dict:
    try:
        return read_json(runs_dir(home) / run_id / OUTPUTS / "build-manifest.json")
    except (OSError, ValueError):
        return {}


def _changed(a: dict, b: dict, skip=()) -> list[tuple[str, Any, Any]]:
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b) - set(skip))
            if k not in skip and a.get(k) != b.get(k)]


@dataclass
class RunDiff:
    a: dict
    b: dict
    labels: tuple[str, str] = ("a", "b")
    model: str = "same"
    options: list = field(default_factory=list)
    patches: tuple = ((), ())
    passes: list = field(default_factory=list)
    build_key: tuple = (None, None)
    kernels_added: list = field(default_factory=list)
    kernels_removed: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    toolchain: list = field(default_factory=list)
    host: list = field(default_factory=list)
    metrics: list = field(default_factory=list)  # (name, a, b, change as a fraction or None)

    def verdict(self) -> str | None:
        """'b is 12.1% faster than a (latency_ms 1.3 -> 1.14)' for the first headline metric both have."""
        for name in ("latency_ms", "compile_s"):
            row = next((m for m in self.metrics if m[0] == name and m[3] is not None), None)
            if row is None:
                continue
            _, va, vb, change = row
            what = "faster" if name == "latency_ms" else "quicker to compile"
            if change == 0:
                return f"same {name} ({cell(va)})"
            if change < 0:
                return f"{self.labels[1]} is {-change:.1%} {what} than {self.labels[0]} ({name} {cell(va)} -> {cell(vb)})"
            slower = "slower" if name == "latency_ms" else "slower to compile"
            return f"{self.labels[1]} is {change:.1%} {slower} than {self.labels[0]} ({name} {cell(va)} -> {cell(vb)})"
        return None

    def lines(self) -> list[str]:
        a, b = self.a, self.b
        out = [f"{self.labels[0]}: {a['id'][:8]} {a.get('kind')} {(a.get('model') or {}).get('name', '-')} "
               f"({a.get('status')}) {' '.join(a.get('argv', [])[1:])}",
               f"{self.labels[1]}: {b['id'][:8]} {b.get('kind')} {(b.get('model') or {}).get('name', '-')} "
               f"({b.get('status')}) {' '.join(b.get('argv', [])[1:])}"]
        verdict = self.verdict()
        if verdict:
            out.append(verdict)
        if self.model != "same":
            out.append(f"model: {self.model}")
        out += [f"option {n}: {json.dumps(x)} -> {json.dumps(y)}" for n, x, y in self.options]
        if self.patches[0] != self.patches[1]:
            out.append(f"patches: {list(self.patches[0]) or '-'} -> {list(self.patches[1]) or '-'}")
        if self.passes:
            out.append("passes that decided differently:")
            out += [f"  {line}" for line in self.passes]
        if self.build_key[0] != self.build_key[1]:
            out.append(f"build key: {self.build_key[0] or '-'} -> {self.build_key[1] or '-'}")
        if self.kernels_added or self.kernels_removed:
            out.append(f"kernels: {len(self.kernels_removed)} only in {self.labels[0]}, "
                       f"{len(self.kernels_added)} only in {self.labels[1]}")
            out += [f"  - {k}" for k in self.kernels_removed[:10]] + [f"  + {k}" for k in self.kernels_added[:10]]
        out += [f"steps {n}: {x} -> {y}" for n, x, y in self.steps]
        out += [f"toolchain {n}: {x} -> {y}" for n, x, y in self.toolchain]
        out += [f"host {n}: {x} -> {y}" for n, x, y in self.host]
        if self.metrics:
            width = max(len(m[0]) for m in self.metrics)
            out.append("metrics:")
            for name, va, vb, change in self.metrics:
                delta = "" if change is None else f"  {change:+.1%}"
                out.append(f"  {name:<{width}}  {cell(va):>10} -> {cell(vb):<10}{delta}")
        if len(out) == 2:
            out.append("same options, model, build and metrics")
        return out

    def to_json(self) -> dict:
        return {"a": self.a["id"], "b": self.b["id"], "verdict": self.verdict(), "model": self.model,
                "options": [{"name": n, "a": x, "b": y} for n, x, y in self.options],
                "patches": {"a": list(self.patches[0]), "b": list(self.patches[1])}, "passes": self.passes,
                "build_key": {"a": self.build_key[0], "b": self.build_key[1]},
                "kernels": {"only_a": self.kernels_removed, "only_b": self.kernels_added},
                "steps": [{"name": n, "a": x, "b": y} for n, x, y in self.steps],
                "toolchain": [{"name": n, "a": x, "b": y} for n, x, y in self.toolchain],
                "host": [{"name": n, "a": x, "b": y} for n, x, y in self.host],
                "metrics": [{"name": n, "a": x, "b": y, "change": c} for n, x, y, c in self.metrics]}


def diff_runs(home: Path, a_id: str, b_id: str, labels=("a", "b")) -> RunDiff:
    """The difference from run ``a`` (older) to run ``b``."""
    a, b = load_record(home, a_id), load_record(home, b_id)
    d = RunDiff(a, b, labels)
    ma, mb = a.get("model") or {}, b.get("model") or {}
    if ma.get("sha256") != mb.get("sha256") or ma.get("name") != mb.get("name"):
        d.model = f"{ma.get('name', '-')} ({(ma.get('sha256') or '-')[:12]}) -> " \
                  f"{mb.get('name', '-')} ({(mb.get('sha256') or '-')[:12]})"
    oa, ob = a.get("options", {}), b.get("options", {})
    # patches get their own line; how the pipeline was asked (-O, --passes) is said by the effective one
    asked = _PIPELINE_ASKED if "pipeline" in oa and "pipeline" in ob else set()
    d.options = _changed(oa, ob, skip=_NOT_VARIED | asked | {"patches"})
    ba, bb = a.get("build") or {}, b.get("build") or {}
    d.patches = (tuple(ba.get("patches", a["options"].get("patches", ()))),
                 tuple(bb.get("patches", b["options"].get("patches", ()))))
    d.passes = _pass_lines(_manifest(home, a_id).get("passes", []), _manifest(home, b_id).get("passes", []))
    d.build_key = (ba.get("key"), bb.get("key"))
    ka, kb = set(ba.get("kernels", [])), set(bb.get("kernels", []))
    d.kernels_added, d.kernels_removed = sorted(kb - ka), sorted(ka - kb)
    d.steps = _changed(ba.get("steps", {}), bb.get("steps", {}))
    d.toolchain = _changed(a.get("toolchain", {}), b.get("toolchain", {}))
    d.host = _changed(a.get("host", {}), b.get("host", {}), skip=("loadavg",))
    xa, xb = a.get("metrics", {}), b.get("metrics", {})
    for name in sorted(set(xa) | set(xb)):
        va, vb = xa.get(name), xb.get(name)
        change = None
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool) and va:
            change = (vb - va) / abs(va)
        d.metrics.append((name, va, vb, change))
    return d
