"""Reference semantics of dcopt's own FusedGroup node: run its body graph."""

from __future__ import annotations

from dcopt.ir.groups import GROUP_DOMAIN, GROUP_OP
from dcopt.ops.registry import reference


@reference(GROUP_OP, domain=GROUP_DOMAIN)
def fused_group(*inputs, body, kind, run_subgraph, outer=0, locals=()):  # noqa: A002 (the kernel attributes)
    """``outer`` and ``locals`` (kernels formed by form-kernels) only say how generated code runs
    the body; its values are the body's."""
    return tuple(run_subgraph(body, dict(zip(body.inputs, inputs))))
