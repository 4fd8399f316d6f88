"""fuse-epilogues (level 3, loop level): library calls absorb the elementwise maps after them.

A generated conv or GEMM kernel can add a bias, add a residual and clamp (ReLU, ReLU6) while its result
is still in registers; run as separate maps, the same work would read and write the whole output
again. Which routine can absorb what is the target's knowledge
(:func:`dcopt.backends.library_chooser` -> ``epilogues(kind, impl)``); this pass matches the maps
the expansions write for those ops and folds them into the call:

* bias -- ``out = a + c`` where ``a`` is the call's output read element by element and ``c`` a
  constant that varies only along the output channels (conv: axis 1; GEMM: the last axis), as
  a Conv's own bias, an ``Add`` of ``[C,1,1]`` after a bias-less Conv, or a Gemm's ``C``;
* residual -- ``out = a + b`` where ``b`` is another tensor of the output's shape that already
  exists when the call runs (ResNet's shortcut);
* clamp -- ``out = max(a, 0)`` (ReLU), ``out = min(max(a, 0.0), 6.0)`` (ReLU6) and any Clip with
  constant bounds (:mod:`dcopt.ir.clamp`), last (nothing is absorbed after it).

Each absorption needs the call's output to have that map as its only reader (and not to be a
graph or group output); the map's output becomes the call's. Refusals say why.
"""

from __future__ import annotations

import numpy as np

from dcopt.ir import clamp as clamps
from dcopt.ir.graph import Graph, Node
from dcopt.ir.groups import is_group
from dcopt.ir.loops import LIBRARY_CALL, MAP, is_loop_node, loop_spec, make_library_call
from dcopt.passes.base import Pass, PassResult, register_pass

ADD_CODES = {"out = a + b", "out = a + c", "out = b + a", "out = c + a"}


def _identity_subset(spec, memlet) -> bool:
    """The memlet reads (writes) element ``[params...]`` of its container: one param per dim, in
    order, with ``0`` on the size-1 dims simplify-maps took the loop levels of."""
    return [d.text for d in memlet.subset if d.text != "0"] == list(spec.params)


class _Fuser:
    def __init__(self, graph: Graph, target: str | None):
        from dcopt.backends import library_chooser

        self.graph = graph
        self.chooser = library_chooser(target)
        self.stats = {"bias": 0, "residual": 0, "relu": 0, "clip": 0}
        self.refusals: list[tuple[str, str]] = []

    def run(self, owner: Graph, nodes: list[Node], protected: set[str]) -> list[Node]:
        changed = True
        while changed:
            changed = False
            readers: dict[str, list[int]] = {}
            for i, n in enumerate(nodes):
                for name in dict.fromkeys([*n.present_inputs, *n.outer_reads()]):
                    readers.setdefault(name, []).append(i)
            produced = {o: i for i, n in enumerate(nodes) for o in n.outputs if o}
            for li, call in enumerate(nodes):
                if not (is_loop_node(call) and call.op == LIBRARY_CALL):
                    continue
                y = call.outputs[0]
                users = readers.get(y, [])
                if y in protected or len(users) != 1:
                    continue
                ri = users[0]
                reader = nodes[ri]
                if not (is_loop_node(reader) and reader.op == MAP):
                    continue
                merged = self._absorb(owner, call, reader, produced, li)
                if merged is not None:
                    nodes = [merged if i == li else n for i, n in enumerate(nodes) if i != ri]
                    changed = True
                    break
        out = []
        for n in nodes:
            if is_group(n):
                body = n.attrs["body"].copy()
                body.nodes = self.run(body, list(body.nodes), set(body.outputs) | protected)
                read = {i for inner in body.nodes for i in (*inner.present_inputs, *inner.outer_reads())}
                body.inputs = [i for i in body.inputs if i in read]
                n = n.replace(inputs=tuple(body.inputs), attrs={**n.attrs, "body": body})
            out.append(n)
        return out

    def _absorb(self, owner: Graph, call: Node, reader: Node, produced, li) -> Node | None:
        spec, r = loop_spec(call), loop_spec(reader)
        options = dict(spec.options)
        can = self.chooser.epilogues(spec.kind, options.get("impl")) if self.chooser else frozenset()
        y = call.outputs[0]
        code = r.tasklet.code.strip()
        mine = [m for m in r.inputs if m.container == y]
        if len(mine) != 1 or not _identity_subset(r, mine[0]) or len(r.outputs) != 1 \
                or not _identity_subset(r, r.outputs[0]) or r.outputs[0].wcr is not None:
            return None
        if options.get("activation"):
            self.refusals.append((reader.label, f"{spec.kind} call already ends in {options['activation']}"))
            return None
        conns = {m.connector: m for m in spec.inputs}
        reads = [(m.connector, m.container, m.subset_text) for m in spec.inputs]
        clamp = clamps.match_tasklet(code) if mine[0].connector == "a" and len(r.inputs) == 1 else None
        if clamp is not None:
            if "clamp" not in can:
                self.refusals.append((reader.label, f"{spec.kind} routine {options.get('impl')!r} cannot clamp "
                                                    f"(ReLU, Clip) its result"))
                return None
            options.update(clamps.to_options(clamp))
            self.stats[options["activation"]] += 1
        elif code in ADD_CODES and len(r.inputs) == 2:
            other = next(m for m in r.inputs if m.container != y)
            const = self._const(owner, other.container)
            bias_conn = "B" if spec.kind == "conv" else "C"
            if const is not None:
                vector = self._bias_vector(spec, r, other, const)
                if vector is None or "bias" not in can or bias_conn in conns:
                    self.refusals.append((reader.label, f"the added constant is not a bias this {spec.kind} routine "
                                                        f"({options.get('impl')!r}) takes"))
                    return None
                name = self.graph.fresh_name(f"{y}_bias")
                self.graph.add_parameter(name, vector)
                if owner is not self.graph:
                    owner.add_input(name, self.graph.containers[name].type)
                reads.append((bias_conn, name, f"0:{vector.shape[0]}"))
                self.stats["bias"] += 1
            else:
                if spec.kind != "conv" or "residual" not in can or "R" in conns or not _identity_subset(r, other) \
                        or self.graph.type_of(other.container) != self.graph.type_of(y) \
                        or produced.get(other.container, -1) > li:
                    self.refusals.append((reader.label, f"the added tensor is not a residual this {spec.kind} "
                                                        f"routine ({options.get('impl')!r}) takes"))
                    return None
                reads.append(("R", other.container, ", ".join(f"0:{d}" for d in self.graph.type_of(y).shape)))
                self.stats["residual"] += 1
        else:
            return None
        out = r.outputs[0].container
        writes = [("Y", out, ", ".join(f"0:{d}" for d in self.graph.type_of(out).shape))]
        return make_library_call(call.name, spec.kind, reads, writes, list(r.out_dtypes), spec.symbols, **options)

    def _const(self, owner: Graph, name: str):
        c = self.graph.containers.get(name)
        if c is None or c.data is None or name in self.graph.inputs:
            return None
        return c.data

    def _bias_vector(self, spec, r, other, const: np.ndarray) -> np.ndarray | None:
        """The constant as a 1-D vector over the output channels (conv: axis 1; GEMM: the last
        axis), when it varies only along them."""
        out = r.outputs[0]
        shape = self.graph.type_of(out.container).shape
        axis = 1 if spec.kind == "conv" else len(shape) - 1
        if axis >= len(shape) or not isinstance(shape[axis], int):
            return None
        channel = out.subset[axis].text
        names = set().union(*(d.names for d in other.subset)) if other.subset else set()
        if not names <= ({channel} if channel in r.params else set()):
            return None
        n = int(shape[axis])
        flat = np.asarray(const, np.float32).reshape(-1)
        if flat.size == 1:
            return np.full(n, flat[0], np.float32)
        return flat.copy() if flat.size == n else None


@register_pass
class FuseEpilogues(Pass):
    """Fold bias, residual and ReLU maps into the library calls before them (see the module
    docstring); ``target`` names whose routines decide what can be absorbed."""

    name = "fuse-epilogues"
    in_place = True
    description = "level 3 (loops): library calls absorb the bias, residual and ReLU maps after them"

    def __init__(self, target: str | None = "cpu"):
        self.target = target

    def run(self, graph: Graph, ctx) -> PassResult:
        fuser = _Fuser(graph, self.target)
        nodes = fuser.run(graph, list(graph.nodes), set(graph.outputs))
        modified = any(fuser.stats.values())
        if modified:
            graph.nodes = nodes
            graph.remove_unused_containers()
        return PassResult(graph, modified, fuser.stats, fuser.refusals)
