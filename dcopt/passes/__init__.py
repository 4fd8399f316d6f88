"""The pass framework (contract, registry, manager, pipelines) and dcopt's passes.

Built-in passes register themselves when the registry is first asked for a name, so importing
this package stays cheap.
"""

from dcopt.passes.base import (FunctionPass, Pass, PassResult, UnknownPassError, available_passes,
                               function_pass, get_pass, register_pass, unregister_pass)
from dcopt.passes.context import Instrument, PassContext
from dcopt.passes.manager import PassManager, PassRecord, PipelineResult, Report, run_passes
from dcopt.passes.pipelines import PIPELINES, build_pipeline, parse_spec, register_pipeline
from dcopt.passes.match import GraphIndex, Match, MatchFailure, Predicate
from dcopt.passes.pattern import COMMUTATIVE_OPS, Alt, Const, Op, Optional, Pattern, Var
from dcopt.passes.rewrite import (Replacement, RewriteBuilder, RewritePass, RewriteReport, RewriteRule, RuleSet,
                                  apply_rules, fuse_to)

__all__ = [
    "FunctionPass", "Instrument", "PIPELINES", "Pass", "PassContext", "PassManager", "PassRecord", "PassResult",
    "PipelineResult", "Report", "UnknownPassError", "available_passes", "build_pipeline", "function_pass",
    "get_pass", "parse_spec", "register_pass", "register_pipeline", "run_passes", "unregister_pass",
    "GraphIndex", "Match", "MatchFailure", "Predicate", "COMMUTATIVE_OPS", "Alt", "Const", "Op", "Optional",
    "Pattern", "Var", "Replacement", "RewriteBuilder", "RewritePass", "RewriteReport", "RewriteRule", "RuleSet",
    "apply_rules", "fuse_to",
]
