"""What changed between two builds: kernels, passes, patches, settings, and the benchmark.

Kernels are compared by name and key: a kernel whose key changed was regenerated for *some*
reason (its IR, options, toolchain, codegen); :meth:`BuildDiff.source_diff` shows how its code
changed. Everything else in the manifests is compared leaf by leaf, so a new numba version or a
different target shows up as one line, and the benchmark as old -> new with the relative change.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from dcopt.kernels.builds import Build, read_build

# Manifest fields that are compared specially, or that always differ between two builds.
_HANDLED = {"kernels", "files", "pipeline", "patches", "benchmark", "created", "format"}


def _label(item: Any) -> str:
    """A pass or patch as one readable string: its name, or its canonical JSON if it has options."""
    if isinstance(item, str):
        return item
    return json.dumps(item, sort_keys=True, separators=(",", ":"))


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted paths: {"a": {"b": 1}} -> {"a.b": 1}."""
    if isinstance(value, Mapping) and value:
        out = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


@dataclass
class BuildDiff:
    """The differences between build ``a`` (old) and build ``b`` (new)."""

    a: Build
    b: Build
    kernels_added: list[str] = field(default_factory=list)
    kernels_removed: list[str] = field(default_factory=list)
    kernels_changed: list[tuple[str, str, str]] = field(default_factory=list)  # (name, old key, new key)
    kernels_unchanged: int = 0
    pipeline: list[str] = field(default_factory=list)  # "- pass" / "+ pass" lines, in order
    patches_added: list[str] = field(default_factory=list)
    patches_removed: list[str] = field(default_factory=list)
    settings: list[tuple[str, Any, Any]] = field(default_factory=list)  # (dotted field, old, new)
    benchmark: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # metric -> (old, new); both present

    @property
    def empty(self) -> bool:
        """No change in kernels, passes, patches or settings (benchmarks may still differ)."""
        return not (self.kernels_added or self.kernels_removed or self.kernels_changed or self.pipeline
                    or self.patches_added or self.patches_removed or self.settings)

    def source_diff(self, name: str, context: int = 3) -> str:
        """Unified diff of a changed kernel's source between the two builds."""
        old, new = self.a.kernel_source(name), self.b.kernel_source(name)
        return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                            f"a/{name}", f"b/{name}", n=context))

    def lines(self) -> list[str]:
        """The diff as text lines, for the CLI and logs."""
        out = [f"a: {self.a.path}", f"b: {self.b.path}"]
        if self.empty:
            out.append(f"same kernels ({self.kernels_unchanged}), passes, patches and settings")
        out += [f"setting {name}: {json.dumps(old)} -> {json.dumps(new)}" for name, old, new in self.settings]
        if self.pipeline:
            out.append("pipeline:")
            out += [f"  {line}" for line in self.pipeline]
        out += [f"patch added: {p}" for p in self.patches_added]
        out += [f"patch removed: {p}" for p in self.patches_removed]
        if self.kernels_added or self.kernels_removed or self.kernels_changed:
            out.append(f"kernels: {len(self.kernels_added)} added, {len(self.kernels_removed)} removed, "
                       f"{len(self.kernels_changed)} changed, {self.kernels_unchanged} unchanged")
            out += [f"  + {n}" for n in self.kernels_added]
            out += [f"  - {n}" for n in self.kernels_removed]
            out += [f"  ~ {n} ({old[:12]} -> {new[:12]})" for n, old, new in self.kernels_changed]
        for metric, (old, new) in self.benchmark.items():
            out.append(f"benchmark {metric}: {_change(old, new)}")
        return out

    def to_json(self) -> dict:
        return {"a": str(self.a.path), "b": str(self.b.path), "kernels_added": self.kernels_added,
                "kernels_removed": self.kernels_removed,
                "kernels_changed": [{"name": n, "old": o, "new": w} for n, o, w in self.kernels_changed],
                "kernels_unchanged": self.kernels_unchanged, "pipeline": self.pipeline,
                "patches_added": self.patches_added, "patches_removed": self.patches_removed,
                "settings": [{"field": f, "old": o, "new": n} for f, o, n in self.settings],
                "benchmark": {m: {"old": o, "new": n} for m, (o, n) in self.benchmark.items()}}


def _change(old: Any, new: Any) -> str:
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        rel = f" ({(new - old) / old:+.1%})" if old else ""
        return f"{old:.6g} -> {new:.6g}, delta {new - old:+.6g}{rel}"
    return f"{json.dumps(old)} -> {json.dumps(new)}"


def _pipeline_lines(old: list, new: list) -> list[str]:
    a, b = [_label(p) for p in old], [_label(p) for p in new]
    lines = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            lines += [f"- {p} (step {i + 1})" for i, p in enumerate(a[i1:i2], i1)]
            lines += [f"+ {p} (step {j + 1})" for j, p in enumerate(b[j1:j2], j1)]
    return lines


def diff_builds(a: Build | str | os.PathLike, b: Build | str | os.PathLike) -> BuildDiff:
    """Compare two builds (objects or directories; directories are read and verified)."""
    a = a if isinstance(a, Build) else read_build(a)
    b = b if isinstance(b, Build) else read_build(b)
    ma, mb = a.manifest, b.manifest
    ka, kb = a.kernels, b.kernels
    diff = BuildDiff(a, b)
    diff.kernels_added = sorted(set(kb) - set(ka))
    diff.kernels_removed = sorted(set(ka) - set(kb))
    for name in sorted(set(ka) & set(kb)):
        if ka[name]["key"] != kb[name]["key"]:
            diff.kernels_changed.append((name, ka[name]["key"], kb[name]["key"]))
        else:
            diff.kernels_unchanged += 1
    diff.pipeline = _pipeline_lines(ma.get("pipeline", []), mb.get("pipeline", []))
    pa, pb = [_label(p) for p in ma.get("patches", [])], [_label(p) for p in mb.get("patches", [])]
    diff.patches_added = [p for p in pb if p not in pa]
    diff.patches_removed = [p for p in pa if p not in pb]
    la = _leaves({k: v for k, v in ma.items() if k not in _HANDLED})
    lb = _leaves({k: v for k, v in mb.items() if k not in _HANDLED})
    diff.settings = [(k, la.get(k), lb.get(k)) for k in sorted(set(la) | set(lb)) if la.get(k) != lb.get(k)]
    ba, bb = _leaves(ma.get("benchmark") or {}), _leaves(mb.get("benchmark") or {})
    diff.benchmark = {m: (ba[m], bb[m]) for m in sorted(set(ba) & set(bb)) if m}
    return diff
