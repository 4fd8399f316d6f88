"""``insert_squeeze_excitation``: add SE blocks after conv stages (an idea patch).

Squeeze-and-excitation (Hu et al., 2018) rescales each channel of a feature map ``y[N, C, H, W]``
by a gate computed from the whole map::

    s = Sigmoid(Conv1x1_expand(Relu(Conv1x1_reduce(GlobalAveragePool(y)))))   # [N, C, 1, 1]
    y' = y * s                                                                # readers of y read y'

``reduce`` has ``C // ratio`` output channels (at least 1). New weights are He-normal, biases
zero, drawn from a generator seeded by ``seed`` and the site's name, so a site gets the same
weights however many other sites were patched. The model's function changes on purpose (the
gates start near 0.5): the patch is for architectures to be trained or fine-tuned.

Sites are the outputs of ``after`` ops (default Relu) that are 4-D float feature maps with
static channels and spatial size. A *stage* is the set of sites sharing a spatial size, and its
output is the last site with the stage's largest channel count — in ResNets, the output of the
stage's last residual block, not the narrow 1x1-reduce inside the next stage's first block that
may still run at this size. ``placement=stage_end`` puts one SE block after each stage output,
``placement=every`` after every site.
"""

from __future__ import annotations

import numpy as np

from dcopt.ir.graph import Graph
from dcopt.ir.types import TensorType
from dcopt.passes.match import GraphIndex, Match, Predicate
from dcopt.passes.pattern import Op
from dcopt.passes.patches.edit import float_value, he_normal, site_rng
from dcopt.passes.patches.registry import Param, patch
from dcopt.passes.patches.sites import planned_rule
from dcopt.passes.rewrite import RewriteBuilder

__all__ = ["insert_squeeze_excitation"]


def plan_sites(graph: Graph, after: list[str], placement: str, min_channels: int) -> dict[str, str | None]:
    """For each output of an ``after`` op: None (gets an SE block) or the reason it does not."""
    index = GraphIndex(graph)
    plan: dict[str, str | None] = {}
    stage_end: dict[tuple, tuple[int, str]] = {}  # (H, W) -> (channels, site) of the stage's output so far
    for node in graph.nodes:
        if node.op not in after or not node.outputs or not node.outputs[0]:
            continue
        y = node.outputs[0]
        t = graph.type_of(y)
        readers = {r.op for r in index.readers(y)}
        if t is None or t.shape is None or len(t.shape) != 4 or not all(isinstance(d, int) for d in t.shape[1:]):
            plan[y] = f"'{y}' is {t}, not a 4-D feature map with static channels and size"
        elif t.shape[2] * t.shape[3] == 1:
            plan[y] = f"'{y}' is 1x1 spatially: there is nothing to squeeze (SE gates themselves are such maps)"
        elif not float_value(graph, y):
            plan[y] = f"'{y}' is not floating point"
        elif t.shape[1] < min_channels:
            plan[y] = f"'{y}' has {t.shape[1]} channels, fewer than min_channels={min_channels}"
        elif y in index.protected:
            plan[y] = f"'{y}' is a graph output (or read inside a subgraph)"
        elif {"GlobalAveragePool", "Mul"} <= readers:
            plan[y] = f"'{y}' is already followed by a squeeze-excitation (GlobalAveragePool and Mul read it)"
        else:
            plan[y] = None
            size = tuple(t.shape[2:])
            if t.shape[1] >= stage_end.get(size, (0, ""))[0]:
                stage_end[size] = (t.shape[1], y)
    if placement == "stage_end":
        for y, reason in plan.items():
            size = tuple(graph.type_of(y).shape[2:]) if reason is None else None
            if size is not None and stage_end[size][1] != y:
                plan[y] = (f"not the output of its {'x'.join(map(str, size))} stage (the last of its widest "
                           f"feature maps, '{stage_end[size][1]}', is)")
    return plan


def _se_block(ratio: int, seed: int):
    def rewrite(graph: Graph, m: Match):
        y, site = m.root_value, m.root.name
        t = graph.type_of(y)
        n, c = t.shape[0], t.shape[1]
        hidden = max(1, c // ratio)
        rng = site_rng(seed, y)
        dtype = t.dtype
        rb = RewriteBuilder(graph)

        def vec(shape):
            return TensorType(dtype, (n, shape, 1, 1))

        def conv(x, cin, cout, role):
            w = rb.const(he_normal(rng, (cout, cin, 1, 1), cin, np.float32), like=y, name=f"{site}/se_{role}.w")
            b = rb.const(np.zeros(cout, np.float32), like=y, name=f"{site}/se_{role}.b")
            return rb.op("Conv", [x, w, b], like=vec(cout), name=f"{site}/se_{role}", kernel_shape=(1, 1))

        pooled = rb.op("GlobalAveragePool", [y], like=vec(c), name=f"{site}/se_squeeze")
        hid = rb.op("Relu", [conv(pooled, c, hidden, "reduce")], like=vec(hidden), name=f"{site}/se_relu")
        gate = rb.op("Sigmoid", [conv(hid, hidden, c, "expand")], like=vec(c), name=f"{site}/se_gate")
        return rb.replace({y: rb.op("Mul", [y, gate], like=y, name=f"{site}/se_scale")})

    return rewrite


_POSITIVE = Predicate(lambda n: n >= 1, ">= 1")


@patch("insert_squeeze_excitation", kind="idea", params=[
    Param("ratio", int, 16, "channel reduction of the bottleneck (hidden = channels // ratio)", check=_POSITIVE),
    Param("placement", str, "stage_end", "stage_end: after each stage's output; every: after each site",
          choices=("stage_end", "every")),
    Param("after", list[str], ["Relu"], "op types whose 4-D outputs are candidate sites"),
    Param("min_channels", int, 1, "skip feature maps with fewer channels", check=_POSITIVE),
    Param("seed", int, 0, "seed of the new weights"),
])
def insert_squeeze_excitation(graph, *, ratio, placement, after, min_channels, seed):
    """Insert squeeze-and-excitation blocks (GAP -> 1x1 reduce -> Relu -> 1x1 expand -> Sigmoid -> Mul) after conv stages."""
    plan = plan_sites(graph, after, placement, min_channels)
    return planned_rule("squeeze-excitation", Op(tuple(after), ...), plan, _se_block(ratio, seed),
                        "feature map y -> y * sigmoid(expand(relu(reduce(gap(y)))))")
