"""simplify-maps (level 2, loop level): drop the loop levels of maps that run exactly once.

Expansions iterate over an output's full index space, so a batch-1 model's maps all start with
a loop of one iteration (``i0 in range(0, 1)``). Harmless to the arithmetic, but the first loop
level is the one a kernel's outer loop shares and a backend splits across threads: a GELU over
``[1, 128, 1024]`` then ran as one task on one core (200 us instead of 70), and the GEMM after
it found half its input in the other core's cache. Such a param is replaced by its only value
in every subset, range and in the tasklet, and removed.
"""

from __future__ import annotations

from dcopt.ir.graph import Graph, Node
from dcopt.ir.groups import is_group
from dcopt.ir.loops import MAP, Range, is_loop_node, loop_spec, make_map
from dcopt.passes.base import Pass, PassResult, register_pass
from dcopt.passes.fuse_maps import substitute


def _single(spec, j: int) -> int | None:
    b, e = spec.ranges[j]
    if b.names or e.names:
        return None
    begin, end = int(b.evaluate({})), int(e.evaluate({}))
    return begin if end - begin == 1 else None


def _dim(d, mapping) -> str:
    if isinstance(d, Range):
        return f"{substitute(d.begin.text, mapping)}:{substitute(d.end.text, mapping)}"
    return substitute(d.text, mapping)


def simplify_map(node: Node) -> Node:
    spec = loop_spec(node)
    mapping = {p: str(v) for j, p in enumerate(spec.params) if (v := _single(spec, j)) is not None}
    if not mapping:
        return node
    keep = [j for j, p in enumerate(spec.params) if p not in mapping]
    params = [spec.params[j] for j in keep]
    ranges = [(spec.ranges[j][0].text, spec.ranges[j][1].text) for j in keep]
    used = set(mapping) & spec.tasklet.reads
    code = substitute(spec.tasklet.code, {p: mapping[p] for p in used}, mode="exec") if used else spec.tasklet.code
    reads = [(m.connector, m.container, ", ".join(_dim(d, mapping) for d in m.subset), m.outside)
             for m in spec.inputs]
    writes = [(m.connector, m.container, ", ".join(_dim(d, mapping) for d in m.subset), m.wcr, m.init)
              for m in spec.outputs]
    return make_map(node.name, params, ranges, code, reads, writes, spec.out_dtypes, spec.symbols)


def _simplify(graph: Graph) -> int:
    changed, nodes = 0, []
    for node in graph.nodes:
        new = node
        if is_loop_node(node) and node.op == MAP:
            new = simplify_map(node)
        elif is_group(node):
            body = node.attrs["body"].copy()
            if _simplify(body):
                new = node.replace(attrs={**node.attrs, "body": body})
        changed += new is not node
        nodes.append(new)
    if changed:
        graph.nodes = nodes
    return changed


@register_pass
class SimplifyMaps(Pass):
    """Remove map params whose range has one value (see the module docstring)."""

    name = "simplify-maps"
    in_place = True
    description = "level 2 (loops): drop loop levels that run once (size-1 dims), so outer loops split"

    def run(self, graph: Graph, ctx) -> PassResult:
        changed = _simplify(graph)
        return PassResult(graph, bool(changed), {"maps": changed})
