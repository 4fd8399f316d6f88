"""Helpers shared by the rule-family tests: apply rules, verify, and compare numerically."""

from __future__ import annotations

from typing import Mapping

import numpy as np

import dcopt.passes.algebraic  # noqa: F401  (these imports register the passes named in O2_STEPS)
import dcopt.passes.chains  # noqa: F401
import dcopt.passes.fold_batchnorm  # noqa: F401
import dcopt.passes.fold_pad  # noqa: F401
import dcopt.passes.recognize  # noqa: F401
from dcopt.ir.graph import Graph
from dcopt.ir.verify import verify
from dcopt.passes.equivalence import assert_equivalent, random_feeds
from dcopt.passes.rewrite import RewriteReport, apply_rules

#: The O2 order proposed for pipelines.py (see the report of the "passes at four levels" issue).
O2_STEPS = ["canonicalize", "simplify-algebra", "simplify-chains", "fold-batchnorm", "fold-channel-affine", "fold-pad", "recognize-ops",
            "simplify-chains", "canonicalize"]


def apply_and_check(graph: Graph, rules, feeds: Mapping[str, np.ndarray] | None = None, *,
                    rtol: float = 1e-4, atol: float = 1e-5, dim_size: int = 3) -> RewriteReport:
    """Apply ``rules`` in explain mode; the result must verify and compute what ``graph`` did."""
    before = graph.copy()
    feeds = dict(feeds) if feeds is not None else random_feeds(graph, dim_size=dim_size, seed=0)
    report = apply_rules(graph, rules, explain=True)
    verify(graph)
    assert_equivalent(before, graph, feeds, rtol=rtol, atol=atol)
    return report


def refusal(report: RewriteReport, rule: str) -> str:
    """All refusal reasons of ``rule``, joined (assert on a substring of the expected reason)."""
    return "\n".join(r.reason for r in report.refusals if r.rule == rule)
