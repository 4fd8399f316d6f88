"""Graph edits shared by the built-in patches: new weights, copy-on-write weight changes, typed
facts about values, and raising a model's opset when a fused op needs a newer one.

Patches never write into a parameter's array: ``Graph.copy`` shares arrays between copies (the
original model and every step of a patch chain), so a changed weight is always a new parameter
that the one node being changed is rewired to (:func:`rewire_weight`).
"""

from __future__ import annotations

import zlib
from typing import Iterable

import numpy as np

from dcopt.errors import DcoptError
from dcopt.ir.graph import Graph, Node
from dcopt.passes.common import known_dtype
from dcopt.passes.patches.registry import PatchOutcome
from dcopt.passes.rewrite import Refusal, RewriteRule, RuleSet, apply_rules

__all__ = ["apply_at_opset", "bump_opset", "drop_unread", "float_value", "he_normal", "new_param", "recognize_rules",
           "rewire_weight", "site_rng"]

FLOAT = frozenset({"float16", "bfloat16", "float32", "float64"})


# -- weights ------------------------------------------------------------------------------------


def new_param(graph: Graph, data: np.ndarray, base: str) -> str:
    """Add ``data`` as a fresh parameter named after ``base``; returns its name."""
    return graph.add_parameter(graph.fresh_name(base), np.asarray(data, order="C")).name


def rewire_weight(graph: Graph, node: Node, index: int, data: np.ndarray, base: str | None = None) -> Node:
    """Give input ``index`` of ``node`` new constant ``data`` (a new parameter; the old one stays
    for its other readers, and is dropped by the caller's cleanup if it has none). Returns the
    replacement node, already swapped into ``graph.nodes``."""
    name = new_param(graph, data, base or node.inputs[index])
    inputs = list(node.inputs)
    inputs[index] = name
    new = node.replace(inputs=tuple(inputs))
    graph.nodes = [new if n is node else n for n in graph.nodes]
    return new


def drop_unread(graph: Graph, names: Iterable[str]) -> None:
    """Remove those of ``names`` that no node, graph output or subgraph reads any more (weights
    a patch replaced); the graph's other containers are left as they are."""
    from dcopt.passes.common import subgraph_reads

    read = {i for n in graph.nodes for i in n.present_inputs} | set(graph.outputs) | subgraph_reads(graph)
    for name in set(names) - read:
        if graph.kind(name).value == "parameter":
            del graph.containers[name]


def site_rng(seed: int, site: str) -> np.random.Generator:
    """A generator per (seed, site): new weights at one site do not depend on how many other
    sites a patch touched, so re-running on an edited model gives the same weights there."""
    return np.random.default_rng([seed, zlib.crc32(site.encode())])


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, dtype=np.float32) -> np.ndarray:
    """He (Kaiming) normal initialization, the usual choice in front of a ReLU."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(dtype)


# -- facts about values -------------------------------------------------------------------------


def float_value(graph: Graph, value: str) -> bool:
    """True when ``value`` is known to hold floating-point data."""
    return known_dtype(graph, value) in FLOAT


# -- opsets -------------------------------------------------------------------------------------


def bump_opset(graph: Graph, target: int) -> Graph:
    """The graph converted to default-domain opset ``target`` by onnx's version converter (which
    knows every op's semantic changes between versions), exported and re-imported. Raises
    DcoptError with the converter's reason when it cannot."""
    from onnx import version_converter

    from dcopt.frontends.onnx_export import export_model
    from dcopt.frontends.onnx_import import import_model

    model = export_model(graph, check=True)
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DcoptError(f"onnx's version converter cannot take the model from opset {graph.opset_of('')} "
                         f"to {target}: {first}") from None
    new = import_model(converted)
    new.name, new.doc = graph.name, graph.doc
    new.metadata = dict(graph.metadata)
    return new


def apply_at_opset(graph: Graph, rules: RuleSet | RewriteRule, *, min_opset: int, bump: bool, what: str,
                   sweeps: int = 10) -> PatchOutcome:
    """Apply rules that emit an op of default-domain opset ``min_opset`` (``what``, e.g. "Gelu").

    At a lower opset the rules are first tried on a copy that claims ``min_opset`` (so rules
    that check the opset themselves do not refuse): with no match the graph is left alone (a
    model without GELUs keeps its opset); otherwise the opset is raised with :func:`bump_opset`
    when ``bump`` is true, or every would-be site is refused with the reason.
    """
    have = graph.opset_of("")
    if have >= min_opset:
        return PatchOutcome.from_rewrites(graph, apply_rules(graph, rules, max_iterations=sweeps, explain=True))
    trial_graph = graph.copy()
    trial_graph.opset = {**trial_graph.opset, "": min_opset}  # "would these match if the opset allowed it?"
    trial = apply_rules(trial_graph, rules, max_iterations=sweeps, explain=True)
    if not trial.applications:
        return PatchOutcome.from_rewrites(graph, trial)
    reason = f"{what} needs opset {min_opset} but the model is opset {have}"
    if not bump:
        reason += " and bump_opset=false"
    else:
        try:
            bumped = bump_opset(graph, min_opset)
        except DcoptError as exc:
            reason += f"; raising it failed: {exc}"
        else:
            outcome = PatchOutcome.from_rewrites(bumped, apply_rules(bumped, rules, max_iterations=sweeps,
                                                                     explain=True))
            outcome.notes.append(f"raised the opset from {have} to {min_opset} (onnx version converter): "
                                 f"{what} needs it")
            return outcome
    refusals = [Refusal(a.rule, a.root, reason, 99) for a in trial.applications]
    return PatchOutcome(graph, [], refusals + list(trial.refusals))


def recognize_rules(*names: str) -> RuleSet:
    """Rules of the ``recognize-ops`` pass by name, so a patch and the pass share one implementation."""
    from dcopt.passes.recognize import RECOGNIZE_RULES

    rules = {r.name: r for r in RECOGNIZE_RULES}
    missing = [n for n in names if n not in rules]
    if missing:
        raise LookupError(f"recognize-ops has no rule(s) {missing}; it has {sorted(rules)}")
    return RuleSet(rules[n] for n in names)
