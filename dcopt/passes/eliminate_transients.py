"""Level 4: eliminate transients that are only copies of other values.

Why: a chain of view ops (Reshape -> Flatten -> Unsqueeze ...) computes nothing; each link is a
transient that a naive runtime writes and reads again. Two passes already own the rewrites:
``simplify-chains`` (:mod:`dcopt.passes.chains`: two Reshape-likes become one Reshape, inverse
Transposes and Squeeze/Unsqueeze pairs cancel) and ``remove-noops``
(:mod:`dcopt.passes.remove_noops`: Identity, same-shape Reshape, ...). This pass runs them
together until neither finds more, so a chain that ends in its source's own shape disappears.

What is left -- single views that really change the shape -- needs no copy either: the memory
planner (:mod:`dcopt.passes.memory_plan`) gives a view's output its source's bytes. The pass
reports how many such views there are and the bytes they would have copied, so the report shows
the whole of what level 4 does with copies.
"""

from __future__ import annotations

import dcopt.passes.chains  # noqa: F401  (registers simplify-chains)
from dcopt.ir.graph import Graph
from dcopt.passes.base import Pass, PassResult, get_pass, register_pass
from dcopt.passes.memory_plan import transient_sizes, views
from dcopt.passes.remove_noops import RemoveNoops


@register_pass(aliases=("views",))
class EliminateTransients(Pass):
    """simplify-chains + remove-noops to a fixed point; report the views left to alias."""

    name = "eliminate-transients"
    in_place = True
    description = "level 4: drop copy chains (Reshape/Flatten/Squeeze/Identity); remaining views alias their source"

    def __init__(self, *, max_iterations: int = 4):
        self.max_iterations = max_iterations

    def run(self, graph: Graph, ctx) -> PassResult:
        simplify_chains, remove_noops = get_pass("simplify-chains"), RemoveNoops()
        stats = {"chains_simplified": 0, "noops_removed": 0}
        refusals = []
        modified = False
        for _ in range(self.max_iterations):
            chains = simplify_chains(graph, ctx)
            noops = remove_noops(graph, ctx)
            stats["chains_simplified"] += chains.stats.get("applied", 0)
            stats["noops_removed"] += noops.stats.get("removed", 0)
            refusals = chains.refusals + noops.refusals
            if not (chains.modified or noops.modified):
                break
            modified = True
        if modified:
            graph.remove_unused_containers()  # shape constants the merged Reshapes no longer read
        sizes, _ = transient_sizes(graph, None)
        aliases, _ = views(graph, sizes)
        stats.update(views_aliased=len(aliases), bytes_not_copied=sum(sizes[v] for v in aliases))
        return PassResult(graph, modified, stats, refusals)
