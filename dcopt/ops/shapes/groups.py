"""Shape rule of dcopt's FusedGroup (mirrors :mod:`dcopt.ops.groups`): type the body graph from the
group's inputs -- constant inputs pass their values in, so shape arithmetic inside still folds --
and take its outputs' types."""

from __future__ import annotations

from dcopt.ir.groups import GROUP_DOMAIN, GROUP_OP
from dcopt.ops.shapes.misc import body_output
from dcopt.ops.shapes.registry import shape_rule


@shape_rule(GROUP_OP, domain=GROUP_DOMAIN)
def fused_group(ctx):
    body = ctx.attrs["body"]
    result = ctx.infer_body(body, list(ctx.types), [ctx.value(i) for i in range(len(ctx.inputs))])
    return [body_output(result, k) for k in range(len(body.outputs))]
