"""An idea patch as one step of a pass pipeline.

Why: a pipeline file (``dcopt opt --pipeline FILE``) is a list of passes, and ``dcopt view`` exports
the sequence a user built -- passes and patches interleaved -- as such a file. A patch placed in
that list runs exactly as ``apply_patches`` runs it (same URI, same validation, same history in
the graph's metadata), so replaying the file gives the graph the viewer showed::

    from dcopt.passes.patches.as_pass import PatchPass
    PIPELINE = ["canonicalize", PatchPass("fold_batchnorm"), "fuse"]
"""

from __future__ import annotations

from dcopt.passes.base import Pass, PassResult
from dcopt.passes.patches.apply import apply_patches
from dcopt.passes.patches.uri import parse_uri


class PatchPass(Pass):
    """Applies one patch URI; its refusals become the pass's (``dcopt opt --explain`` lists them)."""

    in_place = False  # apply_patches works on a copy and never changes its input

    def __init__(self, uri: str, *, validate: bool = True):
        self.call = parse_uri(uri)  # a bad URI is an error when the pipeline is built, not mid-run
        self.uri = self.call.uri
        self.validate = validate
        self.name = f"patch:{self.uri}"
        self.description = self.call.patch.summary

    def run(self, graph, ctx) -> PassResult:
        report = apply_patches(graph, [self.call], explain=True, validate=self.validate)
        step = report.steps[0]
        stats = {"sites": len(step.outcome.applications), "validation": step.validation}
        refusals = [(r.root, f"{r.rule}: {r.reason}") for r in step.outcome.refusals]
        return PassResult(report.graph, step.modified, stats, refusals)

    def __repr__(self) -> str:
        return f"PatchPass({self.uri!r})"
