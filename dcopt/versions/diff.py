"""What changed between two versions of a model: ``dcopt diff A B``.

* **structure**: nodes added, removed or changed (op, attributes, wiring), aligned by node name,
  then the unnamed or renamed rest by position (a sequence alignment over op types); graph
  inputs/outputs, opsets and metadata;
* **parameters**: added, removed, dtype or shape changed, or modified -- with the largest absolute
  change, the relative L2 change, the fraction of elements changed (bitwise) and, for parameters of
  two or more dims, the estimated rank of the delta (:mod:`dcopt.versions.lowrank`);
* **what it means for a build**, in the vocabulary of ``dcopt builds diff``
  (:class:`dcopt.kernels.diff.BuildDiff.model`): ``same``, ``weights`` (the same graph and
  parameter layout: the kernels of a build are reused and only its weights change -- ``--compile``
  checks it by compiling both and diffing the builds) or ``structure`` (the changed nodes'
  kernels are regenerated).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from dcopt.versions import lowrank
from dcopt.versions.formats import NodeRecord
from dcopt.versions.params import ModelFile


@dataclass
class ParamChange:
    name: str
    kind: str  # added | removed | dtype | shape | modified
    dtype: str
    shape: list[int]
    old_dtype: str | None = None
    old_shape: list[int] | None = None
    max_abs: float | None = None
    rel_l2: float | None = None
    frac_changed: float | None = None
    rank: int | None = None
    rank_exact: bool = True
    update: str | None = None  # how the version store keeps it, when known

    def line(self) -> str:
        sig = f"{self.dtype}{self.shape}"
        if self.kind == "added":
            return f"+ {self.name}  {sig}"
        if self.kind == "removed":
            return f"- {self.name}  {sig}"
        if self.kind in ("dtype", "shape"):
            return f"! {self.name}  {self.old_dtype}{self.old_shape} -> {sig}"
        parts = [f"~ {self.name}  {sig}"]
        if self.max_abs is not None:
            parts.append(f"max|d| {self.max_abs:.3g}")
        if self.rel_l2 is not None:
            parts.append(f"rel-L2 {self.rel_l2:.3g}")
        parts.append(f"changed {100 * self.frac_changed:.1f}%")
        if self.rank is not None:
            parts.append(f"rank {'' if self.rank_exact else '>='}{self.rank}")
        if self.update:
            parts.append(f"stored {self.update}")
        return "  ".join(parts)


@dataclass
class NodeChange:
    kind: str  # added | removed | changed
    name: str
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        mark = {"added": "+", "removed": "-", "changed": "~"}[self.kind]
        return f"{mark} {self.name}" + (f": {'; '.join(self.details)}" if self.details else "")


@dataclass
class ModelDiff:
    a: str
    b: str
    format: str
    nodes: list[NodeChange] = field(default_factory=list)
    graph: list[str] = field(default_factory=list)  # inputs/outputs/opsets/metadata lines
    params: list[ParamChange] = field(default_factory=list)
    params_same: int = 0
    counts: dict = field(default_factory=dict)

    @property
    def model(self) -> str:
        """``same`` | ``weights`` | ``structure``, as ``dcopt builds diff`` says it."""
        if self.nodes or self.graph or any(p.kind != "modified" for p in self.params):
            return "structure"
        return "weights" if self.params else "same"

    def compilation(self) -> str:
        if self.model == "same":
            return "same model: a build of either is a build of both"
        if self.model == "weights":
            return ("weights only: same graph and parameter layout -- a build's kernels are reused "
                    "(the kernel store has them), only its weights change")
        touched = len(self.nodes) + sum(p.kind != "modified" for p in self.params)
        return (f"structure changed ({touched} node/parameter change(s)): kernels of the changed nodes are "
                "regenerated; unchanged fused groups hit the kernel store")

    def lines(self) -> list[str]:
        out = [f"a: {self.a}", f"b: {self.b}", f"format: {self.format}",
               f"model: {self.compilation()}"]
        kinds = {}
        for p in self.params:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        out.append("parameters: " + ", ".join([f"{n} {k}" for k, n in sorted(kinds.items())] +
                                              [f"{self.params_same} unchanged"]))
        out += [f"  {p.line()}" for p in self.params]
        if self.nodes or self.graph:
            out.append(f"structure: {len(self.nodes)} node change(s)"
                       f"{', ' + str(len(self.graph)) + ' graph change(s)' if self.graph else ''}")
            out += [f"  {line}" for line in self.graph] + [f"  {n.line()}" for n in self.nodes]
        return out

    def to_json(self) -> dict:
        def clean(value):
            return None if isinstance(value, float) and not math.isfinite(value) else value

        return {"a": self.a, "b": self.b, "format": self.format, "model": self.model,
                "compilation": self.compilation(), "params_same": self.params_same,
                "params": [{k: clean(v) for k, v in asdict(p).items()} for p in self.params],
                "nodes": [asdict(n) for n in self.nodes], "graph": self.graph}


def _node_details(a: NodeRecord, b: NodeRecord) -> list[str]:
    out = []
    if a.name != b.name:
        out.append(f"renamed {a.name or '<unnamed>'} -> {b.name or '<unnamed>'}")
    if a.op != b.op:
        out.append(f"op {a.op} -> {b.op}")
    for what, x, y in (("input", a.inputs, b.inputs), ("output", a.outputs, b.outputs)):
        if x != y:
            if len(x) == len(y):
                out += [f"{what} {i} {p or '<none>'} -> {q or '<none>'}" for i, (p, q) in enumerate(zip(x, y)) if p != q]
            else:
                out.append(f"{what}s ({', '.join(x)}) -> ({', '.join(y)})")
    for key in sorted(set(a.attributes) | set(b.attributes)):
        x, y = a.attributes.get(key), b.attributes.get(key)
        if x != y:
            out.append(f"attribute {key} " + ("added " + y if x is None else "removed" if y is None else f"{x} -> {y}"))
    return out


def diff_nodes(a: list[NodeRecord], b: list[NodeRecord]) -> list[NodeChange]:
    """Nodes aligned by name (names unique on both sides), then the rest by position."""
    names_a = [n.name for n in a if n.name]
    names_b = [n.name for n in b if n.name]
    by_name_a = {n.name: n for n in a if n.name} if len(set(names_a)) == len(names_a) else {}
    by_name_b = {n.name: n for n in b if n.name} if len(set(names_b)) == len(names_b) else {}
    common = set(by_name_a) & set(by_name_b)
    out = []
    for node in b:
        if node.name in common:
            details = _node_details(by_name_a[node.name], node)
            if details:
                out.append(NodeChange("changed", node.name, details))
    rest_a = [n for n in a if n.name not in common]
    rest_b = [n for n in b if n.name not in common]
    matcher = difflib.SequenceMatcher(a=[n.op for n in rest_a], b=[n.op for n in rest_b], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        pairs = list(zip(rest_a[i1:i2], rest_b[j1:j2])) if tag in ("equal", "replace") else []
        for x, y in pairs:
            details = _node_details(x, y)
            if details:
                out.append(NodeChange("changed", y.name or f"#{b.index(y)} {y.op}", details))
        for x in rest_a[i1 + len(pairs):i2]:
            out.append(NodeChange("removed", x.line().removeprefix("node ")))
        for y in rest_b[j1 + len(pairs):j2]:
            out.append(NodeChange("added", y.line().removeprefix("node ")))
    return out


def _listed(kind: str, a: list[str], b: list[str]) -> list[str]:
    if a == b:
        return []
    return [f"- {kind} {x}" for x in a if x not in b] + [f"+ {kind} {y}" for y in b if y not in a] or \
        [f"~ {kind}s reordered: {', '.join(b)}"]


def param_change(name: str, x: np.ndarray, y: np.ndarray, rtol: float = lowrank.DEFAULT_RTOL) -> ParamChange | None:
    """None when ``x`` and ``y`` are bit-identical, else what changed and by how much."""
    if x.dtype != y.dtype or x.shape != y.shape:
        kind = "dtype" if x.dtype != y.dtype else "shape"
        return ParamChange(name, kind, y.dtype.name, list(y.shape), x.dtype.name, list(x.shape))
    xb = np.ascontiguousarray(x).reshape(-1).view(np.uint8).reshape(x.size, -1) if x.size else x.reshape(0, 1)
    yb = np.ascontiguousarray(y).reshape(-1).view(np.uint8).reshape(y.size, -1) if y.size else y.reshape(0, 1)
    if x.dtype == object:
        differs = np.array([p != q for p, q in zip(x.reshape(-1), y.reshape(-1))], bool)
    else:
        differs = (xb != yb).any(axis=1)
    if not differs.any():
        return None
    change = ParamChange(name, "modified", y.dtype.name, list(y.shape), frac_changed=float(differs.mean()))
    if x.dtype.kind in "fiub" or x.dtype.name in ("bfloat16",) or x.dtype.name.startswith("float8"):
        with np.errstate(over="ignore", invalid="ignore"):
            x64, y64 = x.astype(np.float64), y.astype(np.float64)
            delta = y64 - x64
            finite = np.isfinite(delta)
            change.max_abs = float(np.abs(delta[finite]).max()) if finite.any() else float("nan")
            norm = float(np.linalg.norm(x64[np.isfinite(x64)]))
            dnorm = float(np.linalg.norm(delta[finite]))
            change.rel_l2 = dnorm / norm if norm else float("inf")
        if x.dtype.kind == "f" and x.ndim >= 2 and finite.all():
            estimate = lowrank.estimate_rank(delta, rtol)
            if estimate is not None:
                change.rank, change.rank_exact = estimate
    return change


def diff_models(a: ModelFile, b: ModelFile, rtol: float = lowrank.DEFAULT_RTOL,
                updates: dict[str, str] | None = None) -> ModelDiff:
    """The difference from ``a`` (old) to ``b`` (new). ``updates``: parameter -> how the version
    store keeps b's value (shown beside it)."""
    fmt = a.format.name if a.format.name == b.format.name else f"{a.format.name} -> {b.format.name}"
    d = ModelDiff(a.file, b.file, fmt)
    sa, sb = a.structure, b.structure
    d.nodes = diff_nodes(sa.nodes, sb.nodes)
    d.graph = (_listed("input", sa.inputs, sb.inputs) + _listed("output", sa.outputs, sb.outputs)
               + [f"~ opset {k or 'ai.onnx'} {sa.opsets.get(k)} -> {sb.opsets.get(k)}"
                  for k in sorted(set(sa.opsets) | set(sb.opsets)) if sa.opsets.get(k) != sb.opsets.get(k)]
               + [f"~ meta {k}: {sa.metadata.get(k)!r} -> {sb.metadata.get(k)!r}"
                  for k in sorted(set(sa.metadata) | set(sb.metadata)) if sa.metadata.get(k) != sb.metadata.get(k)])
    pa, pb = a.arrays, b.arrays
    for name in pb:
        if name not in pa:
            d.params.append(ParamChange(name, "added", pb[name].dtype.name, list(pb[name].shape)))
            continue
        change = param_change(name, pa[name], pb[name], rtol)
        if change is None:
            d.params_same += 1
        else:
            change.update = (updates or {}).get(name)
            d.params.append(change)
    d.params += [ParamChange(n, "removed", pa[n].dtype.name, list(pa[n].shape)) for n in pa if n not in pb]
    return d
