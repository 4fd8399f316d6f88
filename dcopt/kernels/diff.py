"""What changed between two builds, and why: ``dcopt builds diff A B``.

Read like ``git diff --stat`` and then the details:

* **model**: same digest, or changed -- and then whether its *structure* changed (the schedule's
  steps, the signature) or only its *weights* (same parameter names and shapes, other bytes:
  each parameter's bytes in ``weights.bin`` are compared);
* **options**: pipeline, patches, sizes (bindings), specialized input values;
* **pass decisions**: per pass of the pipeline (in order), whether it changed the graph, node
  counts and its counters (fused groups, folded nodes...), so "O2 instead of O3" reads as the
  passes that did or did not run, and a changed pass as the counters that moved;
* **kernels**: the schedule's steps matched by label; a step whose kernel differs (kernel names
  are content hashes) is a changed kernel, with ``source_diff(label)`` for its code;
* **toolchain**: numba/llvmlite/numpy versions, CPU features, codegen and dcopt versions;
* **memory** and, when both manifests carry one, the **benchmark**.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dcopt.kernels.builds import read_manifest
from dcopt.kernels.sources import kernel_sources
from dcopt.kernels.weights import WEIGHTS, read_weights


def _program(path: Path) -> dict:
    try:
        return json.loads((path / "program.json").read_text())
    except (OSError, ValueError):
        return {}


def _weight_digests(path: Path, program: dict) -> dict[str, tuple]:
    """name -> (dtype, shape, sha256 of its bytes), read through the build's weights index
    (memory-mapped: a 548 MB weights file is not read into memory to be compared)."""
    index = program.get("weights", {})
    try:
        arrays = read_weights(path / WEIGHTS, index)
    except (OSError, ValueError):
        arrays = {}
    out = {}
    for name, entry in index.items():
        array = arrays.get(name)
        blob = b"" if array is None else (json.dumps(array.tolist()).encode() if array.dtype == object
                                          else memoryview(np.ascontiguousarray(array)).cast("B"))
        out[name] = (entry["dtype"], tuple(entry["shape"]), hashlib.sha256(blob).hexdigest())
    return out


def _step_kernels(program: dict) -> dict[str, str]:
    """Step label -> the kernel it runs (steps without generated code are left out)."""
    return {s.get("label", f"step{i}"): s["params"]["kernel"] for i, s in enumerate(program.get("steps", []))
            if isinstance(s.get("params"), dict) and s["params"].get("kernel")}


@dataclass
class BuildDiff:
    a: Path
    b: Path
    model: str = "same"  # same | weights | structure
    weights_changed: list[str] = field(default_factory=list)
    weights_added: list[str] = field(default_factory=list)
    weights_removed: list[str] = field(default_factory=list)
    options: list[tuple[str, Any, Any]] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)
    steps_added: list[str] = field(default_factory=list)
    steps_removed: list[str] = field(default_factory=list)
    kernels_changed: list[tuple[str, str, str]] = field(default_factory=list)  # (step label, old kernel, new)
    kernels_same: int = 0
    toolchain: list[tuple[str, Any, Any]] = field(default_factory=list)
    memory: list[tuple[str, Any, Any]] = field(default_factory=list)
    benchmark: list[tuple[str, Any, Any]] = field(default_factory=list)
    _sources: tuple = ({}, {})

    @property
    def empty(self) -> bool:
        return (self.model == "same" and not (self.options or self.passes or self.steps_added or self.steps_removed
                                              or self.kernels_changed or self.toolchain))

    def source_diff(self, label: str, context: int = 3) -> str:
        """Unified diff of the kernel a step runs, between the two builds."""
        pair = next((k for k in self.kernels_changed if k[0] == label), None)
        if pair is None:
            return ""
        old, new = self._sources[0].get(pair[1], ""), self._sources[1].get(pair[2], "")
        return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                            f"a/{label} ({pair[1]})", f"b/{label} ({pair[2]})", n=context))

    def stat(self) -> list[str]:
        """One line per area that changed (the ``--stat`` view)."""
        out = []
        if self.model != "same":
            what = (f"weights: {len(self.weights_changed)} changed, {len(self.weights_added)} added, "
                    f"{len(self.weights_removed)} removed" if self.model == "weights" else "structure changed")
            out.append(f"model     | {what}")
        if self.options:
            out.append(f"options   | {', '.join(name for name, _, _ in self.options)}")
        if self.passes:
            out.append(f"passes    | {len(self.passes)} pass decision(s) differ")
        if self.kernels_changed or self.steps_added or self.steps_removed:
            out.append(f"kernels   | {len(self.kernels_changed)} changed, {len(self.steps_added)} step(s) added, "
                       f"{len(self.steps_removed)} removed, {self.kernels_same} same")
        if self.toolchain:
            out.append(f"toolchain | {', '.join(name for name, _, _ in self.toolchain)}")
        if self.memory:
            out.append(f"memory    | {', '.join(f'{n} {o} -> {w}' for n, o, w in self.memory)}")
        if self.benchmark:
            out.append(f"benchmark | {', '.join(f'{n} {o} -> {w}' for n, o, w in self.benchmark)}")
        return out

    def lines(self) -> list[str]:
        out = [f"a: {self.a}", f"b: {self.b}"]
        if self.empty:
            out.append(f"same model, options, pass decisions, toolchain and kernels ({self.kernels_same})")
        out += self.stat()
        if self.model == "structure":
            out.append("model: the structure changed (steps or signature), not only weights")
        elif self.model == "weights":
            out += [f"weight changed: {n}" for n in self.weights_changed[:20]]
            if len(self.weights_changed) > 20:
                out.append(f"  ... and {len(self.weights_changed) - 20} more")
            out += [f"weight added: {n}" for n in self.weights_added] + [f"weight removed: {n}" for n in
                                                                         self.weights_removed]
        out += [f"option {n}: {json.dumps(o)} -> {json.dumps(w)}" for n, o, w in self.options]
        if self.passes:
            out.append("pass decisions:")
            out += [f"  {line}" for line in self.passes]
        out += [f"kernel changed: {label} ({old} -> {new})" for label, old, new in self.kernels_changed]
        out += [f"step added: {s}" for s in self.steps_added] + [f"step removed: {s}" for s in self.steps_removed]
        out += [f"toolchain {n}: {o} -> {w}" for n, o, w in self.toolchain]
        return out

    def to_json(self) -> dict:
        return {"a": str(self.a), "b": str(self.b), "empty": self.empty, "model": self.model,
                "weights": {"changed": self.weights_changed, "added": self.weights_added,
                            "removed": self.weights_removed},
                "options": [{"name": n, "a": o, "b": w} for n, o, w in self.options],
                "passes": self.passes,
                "kernels": {"changed": [{"step": s, "a": o, "b": w} for s, o, w in self.kernels_changed],
                            "steps_added": self.steps_added, "steps_removed": self.steps_removed,
                            "same": self.kernels_same},
                "toolchain": [{"name": n, "a": o, "b": w} for n, o, w in self.toolchain],
                "memory": [{"name": n, "a": o, "b": w} for n, o, w in self.memory],
                "benchmark": [{"name": n, "a": o, "b": w} for n, o, w in self.benchmark]}


_PIPELINE_PREFIX = re.compile(r"^(?:O\d/)+")


def _pass_lines(a: list[dict], b: list[dict]) -> list[str]:
    """Per pass (aligned by name and occurrence), what differs: ran or not, changed or not,
    node counts, counters."""

    def keyed(records):
        seen: dict[str, int] = {}
        out = {}
        for r in records:
            name = _PIPELINE_PREFIX.sub("", r["name"])  # O3 nests O2: "O3/O2/cse" and "O2/cse" are one pass
            seen[name] = seen.get(name, 0) + 1
            out[(name, seen[name])] = r
        return out

    ka, kb = keyed(a), keyed(b)
    order = list(dict.fromkeys([*ka, *kb]))
    lines = []
    for key in order:
        name = key[0] if key[1] == 1 else f"{key[0]}#{key[1]}"
        ra, rb = ka.get(key), kb.get(key)
        if ra is None:
            lines.append(f"+ {name} (only in b{', changed the graph' if rb['modified'] else ''})")
        elif rb is None:
            lines.append(f"- {name} (only in a{', changed the graph' if ra['modified'] else ''})")
        else:
            parts = []
            if ra["modified"] != rb["modified"]:
                parts.append(f"modified {ra['modified']} -> {rb['modified']}")
            if ra["nodes"] != rb["nodes"]:
                parts.append(f"nodes {ra['nodes'][0]}->{ra['nodes'][1]} vs {rb['nodes'][0]}->{rb['nodes'][1]}")
            for stat in sorted(set(ra["stats"]) | set(rb["stats"])):
                if ra["stats"].get(stat) != rb["stats"].get(stat):
                    parts.append(f"{stat} {ra['stats'].get(stat)} -> {rb['stats'].get(stat)}")
            if ra.get("refusals") != rb.get("refusals"):
                parts.append(f"refusals {ra.get('refusals')} -> {rb.get('refusals')}")
            if parts:
                lines.append(f"~ {name}: {'; '.join(parts)}")
    return lines


def _changed(a: dict, b: dict, names) -> list[tuple[str, Any, Any]]:
    return [(n, a.get(n), b.get(n)) for n in names if a.get(n) != b.get(n)]


def _check_files(path: Path, manifest: dict) -> None:
    """A build whose files no longer match its manifest is reported, not described: its
    kernels or weights are not what its provenance says."""
    from dcopt.errors import ModelLoadError
    from dcopt.integrity import verify_files

    problems = verify_files(path, manifest.get("files") or {}, expected_extra=frozenset({"manifest.json"}))
    if problems:
        raise ModelLoadError("damaged build: " + "; ".join(problems), file=str(path))


def diff_builds(a: str | Path, b: str | Path) -> BuildDiff:
    """The difference from build ``a`` (old) to build ``b`` (new); InputError if either is not a build."""
    a, b = Path(a), Path(b)
    ma, mb = read_manifest(a), read_manifest(b)
    _check_files(a, ma)
    _check_files(b, mb)
    pa, pb = _program(a), _program(b)
    d = BuildDiff(a, b)
    if (ma.get("model") or {}).get("sha256") != (mb.get("model") or {}).get("sha256"):
        wa, wb = _weight_digests(a, pa), _weight_digests(b, pb)
        same_layout = {n: w[:2] for n, w in wa.items()} == {n: w[:2] for n, w in wb.items()}
        same_steps = [(s.get("label"), s.get("kind")) for s in pa.get("steps", [])] == \
            [(s.get("label"), s.get("kind")) for s in pb.get("steps", [])]
        d.model = "weights" if same_layout and same_steps and ma.get("signature") == mb.get("signature") \
            else "structure"
        d.weights_changed = sorted(n for n in set(wa) & set(wb) if wa[n] != wb[n])
        d.weights_added, d.weights_removed = sorted(set(wb) - set(wa)), sorted(set(wa) - set(wb))
    d.options = _changed(ma, mb, ("pipeline", "patches", "bindings", "values"))
    d.passes = _pass_lines(ma.get("passes", []), mb.get("passes", []))
    ka, kb = _step_kernels(pa), _step_kernels(pb)
    d.steps_added, d.steps_removed = sorted(set(kb) - set(ka)), sorted(set(ka) - set(kb))
    for label in ka.keys() & kb.keys():
        if ka[label] != kb[label]:
            d.kernels_changed.append((label, ka[label], kb[label]))
        else:
            d.kernels_same += 1
    d.kernels_changed.sort()
    ta, tb = ma.get("toolchain", {}), mb.get("toolchain", {})
    d.toolchain = _changed(ta, tb, sorted(set(ta) | set(tb))) + _changed(ma, mb, ("dcopt",))
    mema, memb = ma.get("memory", {}), mb.get("memory", {})
    d.memory = _changed(mema, memb, sorted(set(mema) | set(memb)))
    bench_a, bench_b = ma.get("benchmark") or {}, mb.get("benchmark") or {}
    d.benchmark = _changed(bench_a, bench_b, sorted(set(bench_a) & set(bench_b)))
    if d.kernels_changed:
        d._sources = (kernel_sources(a), kernel_sources(b))
    return d
