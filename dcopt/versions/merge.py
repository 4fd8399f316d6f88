"""Three-way merges of model versions: ``dcopt merge BASE OURS THEIRS`` and the git merge driver.

Structure first: the result takes the structure both sides agree on, or the one side that
changed it (its parameters merged where all three versions have them with one shape). Both sides
changing the structure differently is a conflict, listed change by change.

Parameters as git merges lines: unchanged on one side -> the other side's value; the same on
both sides -> that value; changed on both sides -> the strategy decides. Strategies defined on
*task vectors* (``task-arithmetic``, ``ties``: ``side - base``) apply to every parameter either
side changed, since a zero task vector is well defined. Built in:

=================  ===========================================================================
``ours``           our value (also ``theirs``, ``base``)
``average``        (ours + theirs) / 2
``weighted``       w_o * ours + w_t * theirs, weights normalized to sum 1 (``--weights 0.7,0.3``)
``task-arithmetic`` base + w_o * (ours - base) + w_t * (theirs - base) (weights default 1, 1)
``ties``           TIES-merging (Yadav et al. 2023): trim each task vector to its ``density``
                   largest magnitudes, elect each element's sign by the weighted sum, average the
                   agreeing entries, add to base
=================  ===========================================================================

Integer and boolean parameters changed on both sides merge only with ``ours``/``theirs``/``base``.
More strategies come from the ``dcopt.merge_strategies`` entry point group: a callable
``f(base, ours, theirs, weights, density) -> array`` (float64 arrays in, any float array out);
``f.task_vectors = True`` makes it apply to one-sided changes too.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from dcopt.errors import ArgumentError
from dcopt.versions.errors import MergeConflict, PluginError
from dcopt.versions.params import ModelFile

ENTRY_POINT_GROUP = "dcopt.merge_strategies"


@dataclass(frozen=True)
class Strategy:
    name: str
    combine: Callable | None  # None: pick a side (ours/theirs/base)
    task_vectors: bool = False
    doc: str = ""
    plugin: str | None = None  # the entry point that provided it, for error messages


def _weighted(base, ours, theirs, weights, density):
    w = np.asarray(weights if weights else (0.5, 0.5), np.float64)
    w = w / w.sum()
    return w[0] * ours + w[1] * theirs


def _task_arithmetic(base, ours, theirs, weights, density):
    w = weights if weights else (1.0, 1.0)
    return base + w[0] * (ours - base) + w[1] * (theirs - base)


def _ties(base, ours, theirs, weights, density):
    w = weights if weights else (1.0, 1.0)
    tasks = []
    for weight, side in zip(w, (ours, theirs)):
        tau = side - base
        k = int(np.ceil(density * tau.size))
        if k < tau.size:
            keep = np.zeros(tau.size, bool)
            if k:
                keep[np.argpartition(np.abs(tau).reshape(-1), tau.size - k)[tau.size - k:]] = True
            tau = np.where(keep.reshape(tau.shape), tau, 0.0)
        tasks.append(weight * tau)
    stacked = np.stack(tasks)
    sign = np.sign(stacked.sum(axis=0))
    agree = (np.sign(stacked) == sign) & (stacked != 0)
    count = agree.sum(axis=0)
    merged = np.where(count > 0, (stacked * agree).sum(axis=0) / np.maximum(count, 1), 0.0)
    return base + merged


BUILTIN = {
    "ours": Strategy("ours", None, doc="our value where both sides changed it"),
    "theirs": Strategy("theirs", None, doc="their value where both sides changed it"),
    "base": Strategy("base", None, doc="the common ancestor's value where both sides changed it"),
    "average": Strategy("average", lambda b, o, t, w, d: (o + t) / 2, doc="(ours + theirs) / 2"),
    "weighted": Strategy("weighted", _weighted, doc="w_o*ours + w_t*theirs, weights normalized"),
    "task-arithmetic": Strategy("task-arithmetic", _task_arithmetic, True,
                                "base + w_o*(ours-base) + w_t*(theirs-base)"),
    "ties": Strategy("ties", _ties, True, "TIES: trim to density, elect sign, disjoint mean"),
}


@functools.lru_cache(maxsize=None)
def strategies() -> dict[str, Strategy]:
    """The built-in strategies, then the ``dcopt.merge_strategies`` plugins; a broken plugin (fails
    to import, not callable, or a name a built-in has) is a PluginError naming its entry point."""
    from importlib.metadata import entry_points

    from dcopt.versions.formats import load_entry_point, plugin_label

    out = dict(BUILTIN)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        fn = load_entry_point(ep, "merge strategy")
        if not callable(fn):
            raise PluginError(f"merge strategy plugin {plugin_label(ep)} names a {type(fn).__name__}, not a "
                              "callable f(base, ours, theirs, weights, density) -> array")
        if ep.name in BUILTIN:
            raise PluginError(f"merge strategy plugin {plugin_label(ep)}: '{ep.name}' is a built-in strategy; "
                              "give the entry point another name")
        out[ep.name] = Strategy(ep.name, fn, bool(getattr(fn, "task_vectors", False)), (fn.__doc__ or "").strip(),
                                plugin_label(ep))
    return out


def strategy(name: str) -> Strategy:
    known = strategies()
    if name not in known:
        raise ArgumentError(f"unknown merge strategy '{name}' (known: {', '.join(known)})", argument="strategy")
    return known[name]


@dataclass
class MergeResult:
    data: bytes
    template: str  # whose structure the result has: ours | theirs
    counts: dict = field(default_factory=dict)  # unchanged | ours | theirs | both-same | merged
    merged: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        order = ("unchanged", "ours", "theirs", "both-same", "merged")
        counts = ", ".join(f"{self.counts.get(k, 0)} {k}" for k in order)
        return [f"structure from {self.template}; parameters: {counts} ({self.seconds:.2f} s)"]


def _combine(chosen: Strategy, pname: str, b, o, t, weights, density) -> np.ndarray:
    """Run a strategy on one parameter (float64 in, the parameter's dtype out); a plugin that
    raises or returns something that is not an array is a PluginError naming it and the parameter."""
    try:
        with np.errstate(all="ignore"):
            raw = chosen.combine(b.astype(np.float64), o.astype(np.float64), t.astype(np.float64), weights, density)
        return np.asarray(raw).astype(b.dtype)
    except Exception as exc:  # noqa: BLE001 - a plugin's bug, reported as such
        if chosen.plugin is None:
            raise
        raise PluginError(f"merge strategy plugin {chosen.plugin} failed on parameter '{pname}': "
                          f"{type(exc).__name__}: {exc}") from None


def _signature(model: ModelFile) -> tuple:
    return tuple(model.structure.lines()), tuple(sorted((n, a.dtype.name, a.shape) for n, a in model.arrays.items()))


def _same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    return bool((x == y).all()) if x.dtype == object else x.tobytes() == y.tobytes()


def _structure_conflicts(base: ModelFile, ours: ModelFile, theirs: ModelFile) -> list[str]:
    from dcopt.versions.diff import diff_models

    out = []
    for side, model in (("ours", ours), ("theirs", theirs)):
        d = diff_models(base, model)
        out += [f"{side}: {line}" for line in d.graph] + [f"{side}: node {n.line()[2:]} ({n.kind})" for n in d.nodes]
        out += [f"{side}: parameter {p.line()}" for p in d.params if p.kind != "modified"]
    return ["both sides changed the structure differently; merge it by hand, then merge the weights"] + out


def merge_models(base: ModelFile, ours: ModelFile, theirs: ModelFile, strategy_name: str | None = None,
                 weights: tuple[float, float] | None = None, density: float = 0.2) -> MergeResult:
    """Merge three versions; MergeConflict (nothing produced) when the strategy cannot. Without a
    strategy, a parameter both sides changed differently is a conflict (what git's merge driver
    does unless ``git config dcopt.mergeStrategy`` names one: it never asks)."""
    started = time.perf_counter()
    chosen = strategy(strategy_name) if strategy_name is not None else None
    if weights is not None and len(weights) != 2:
        raise ArgumentError(f"expected two weights (ours, theirs), got {len(weights)}", argument="weights")
    if not 0 < density <= 1:
        raise ArgumentError(f"density must be in (0, 1], got {density}", argument="density")
    sig_b, sig_o, sig_t = _signature(base), _signature(ours), _signature(theirs)
    if sig_o == sig_t or sig_t == sig_b:
        template, name = ours, "ours"
    elif sig_o == sig_b:
        template, name = theirs, "theirs"
    else:
        raise MergeConflict(_structure_conflicts(base, ours, theirs))
    pb, po, pt = base.arrays, ours.arrays, theirs.arrays
    counts: dict[str, int] = {}
    changed: dict[str, np.ndarray] = {}
    merged, conflicts = [], []
    for pname, mine in template.arrays.items():
        b, o, t = pb.get(pname), po.get(pname), pt.get(pname)
        if b is None or o is None or t is None or not (b.shape == o.shape == t.shape and b.dtype == o.dtype == t.dtype):
            counts[name] = counts.get(name, 0) + 1  # only the template side has it like this
            continue
        o_changed, t_changed = not _same_bits(o, b), not _same_bits(t, b)
        if not o_changed and not t_changed:
            outcome, value = "unchanged", b
        elif o_changed and t_changed and _same_bits(o, t):
            outcome, value = "both-same", o
        elif chosen is None and o_changed and t_changed:
            conflicts.append(f"parameter '{pname}' ({b.dtype.name}{list(b.shape)}): changed differently on both "
                             "sides; choose a strategy (--strategy, or git config dcopt.mergeStrategy NAME; "
                             f"known: {', '.join(strategies())})")
            continue
        elif chosen is not None and (chosen.combine is not None and chosen.task_vectors or (o_changed and t_changed)):
            outcome = "merged"
            if chosen.combine is None:
                value = {"ours": o, "theirs": t, "base": b}[chosen.name]
            elif b.dtype.kind != "f":
                conflicts.append(f"parameter '{pname}' ({b.dtype.name}{list(b.shape)}): changed on both sides and "
                                 f"'{chosen.name}' needs floating point; use --strategy ours|theirs|base")
                continue
            else:
                value = _combine(chosen, pname, b, o, t, weights, density)
                if value.shape != b.shape:
                    conflicts.append(f"parameter '{pname}': strategy '{chosen.name}' returned shape "
                                     f"{list(value.shape)}, expected {list(b.shape)}")
                    continue
            merged.append(pname)
        else:
            outcome, value = ("ours", o) if o_changed else ("theirs", t)
        counts[outcome] = counts.get(outcome, 0) + 1
        if not _same_bits(value, mine):
            changed[pname] = value
    if conflicts:
        raise MergeConflict(conflicts)
    data = template.replace(changed) if changed else template.data
    return MergeResult(data, name, counts, merged, time.perf_counter() - started)
