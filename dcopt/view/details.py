"""Everything the viewer says about one node at one stage.

Attributes and the types of what it reads and writes; its cost (FLOPs, bytes moved, and for a
fusion group what fusing saved) from :mod:`dcopt.ir.cost`; its text IR; its loop-level expansion
(the maps, tasklets, reductions, library calls and memlets ``expand`` made of it); the generated
kernel it ended up in (rendered by the CPU backend's code generator from the last lowering stage,
the code ``dcopt compile`` builds) and that kernel's measured time when a profile was taken; and
where it came from (:mod:`~dcopt.view.origin`: the source model's node, a PyTorch stack trace) or,
for a node a pass made, the stage that first had it.

How an op node is followed into the lowering: ``expand`` names what it makes of node ``X`` ``X/...``
and later loop passes keep those names inside the groups and kernels they form, so the kernel of
``X`` is the top-level lowered node holding a loop node named ``X/...``. A node that does not
reach the lowering says which stage removed it.
"""

from __future__ import annotations

from typing import Iterator

from dcopt.errors import InputError
from dcopt.ir.cost import node_cost
from dcopt.ir.graph import Graph, Kind, Node
from dcopt.ir.groups import is_group
from dcopt.ir.printer import format_attr, format_node
from dcopt.view.graph_json import find_node, op_name


def walk(graph: Graph) -> Iterator[Node]:
    """Every node of ``graph`` and, depth first, of its groups' bodies."""
    for node in graph.nodes:
        yield node
        if is_group(node):
            yield from walk(node.attrs["body"])


def _container(graph: Graph, name: str) -> dict:
    c = graph.containers.get(name)
    if c is None:
        return {"name": name, "type": "?", "kind": "outer"}
    return {"name": name, "type": str(c.type), "kind": graph.kind(name).name.lower()}


def _op_labels(node: Node) -> list[str]:
    """Labels of the op nodes a node stands for: itself, or a group's members (recursively)."""
    if is_group(node):
        return [m.label for m in walk(node.attrs["body"]) if not is_group(m)]
    return [node.label]


class NodeDetails:
    """Computes details against a :class:`~dcopt.view.session.ViewSession` (its stages, its profile)."""

    def __init__(self, session):
        from dcopt.view.origin import Origins

        self.session = session
        self.origins = Origins(session.model)
        self._program = None
        self._program_version = None
        self._index_version = None

    def _index(self) -> None:
        """Lookups rebuilt after each edit: op label -> its loop nodes (``expand`` names them
        ``label/suffix``), loop label -> top-level node of the last lowering stage, and the node
        labels of every op-level stage."""
        s = self.session
        if self._index_version == s.version:
            return
        self._loops: dict[str, list[Node]] = {}
        expanded = s.lowered("simplify-maps") or s.lowered("expand")
        for n in walk(expanded) if expanded is not None else ():
            if n.domain == "dcopt.loop" and "/" in n.label:
                self._loops.setdefault(n.label.rsplit("/", 1)[0], []).append(n)
        final = s.lowered("plan-memory")
        self._top = {m.label: n.label for n in (final.nodes if final is not None else ()) for m in walk_self(n)}
        self._labels = [{n.label for n in walk(stage.graph)} for stage in s.op_stages]
        self._index_version = s.version

    def program(self):
        """The CPU program of the last lowering stage (code generation only: nothing compiles)."""
        s = self.session
        if self._program_version != s.version:
            graph = s.lowered("plan-memory")
            self._program = None
            if graph is not None:
                from dcopt.backends.cpu.codegen import generate

                self._program = generate(graph)
            self._program_version = s.version
        return self._program

    def of(self, stage_index: int, node_id: str) -> dict:
        s = self.session
        stage = s.stage(stage_index)
        found = find_node(stage.graph, node_id)
        if found is None:
            raise InputError(f"no node '{node_id}' at stage {stage_index} ({stage.name})")
        owner, node = found
        cost = node_cost(owner, node, s.bindings)
        info = {
            "id": node_id, "label": node.label, "op": op_name(node), "domain": node.domain, "stage": stage_index,
            "attributes": {k: format_attr(v) for k, v in sorted(node.attrs.items())},
            "inputs": [_container(owner, n) for n in node.inputs if n],
            "outputs": [_container(owner, n) for n in node.outputs if n],
            "cost": cost.to_dict(),
            "ir": format_node(node, owner) if not is_group(node) else str(node.attrs["body"]),
            "parameters": [n for n in node.present_inputs if owner.containers.get(n) is not None
                           and owner.kind(n) is Kind.PARAMETER],
        }
        if is_group(node):
            info["members"] = [format_node(m, node.attrs["body"]) for m in node.attrs["body"].nodes]
        loop_level = node.domain == "dcopt.loop" or (is_group(node) and any(
            m.domain == "dcopt.loop" for m in walk(node.attrs["body"])))
        loops = self.expansion(node, loop_level)
        info["loops"] = [format_node(n) for n in loops]
        info["kernels"] = self.kernels({n.label for n in loops} | set(_op_labels(node)) | {node.label})
        if not loops and stage_index <= len(s.steps):
            info["removed_by"] = self.removed_by(stage_index, node)
        info["origin"] = self.origin(node, owner)
        return info

    def origin(self, node: Node, owner: Graph) -> dict:
        """The source model's nodes this node stands for (by label, else by the value it writes,
        which is how a ``.pt2`` import names a lowering's result), and for each of its op nodes not
        in the source, the first stage that had it (the pass that made it)."""
        labels = _op_labels(node)
        outputs = [o for m in ([node] if not is_group(node) else walk(node.attrs["body"])) for o in m.outputs if o]
        entries = self.origins.of(labels) or self.origins.of(outputs)
        known = {e["name"] for e in entries} | {o for e in entries for o in e.get("outputs", ())}
        self._index()
        created = []
        for label in labels:
            if label in known:
                continue
            first = next((i for i, present in enumerate(self._labels) if label in present), None)
            if first:  # stage 0 is the import: a node there that the source lacks is not "made"
                created.append({"label": label, "index": first, "name": self.session.stage(first).name})
        return {"entries": entries, "created": created, "error": self.origins.error}

    def expansion(self, node: Node, loop_level: bool) -> list[Node]:
        """The loop nodes of ``node``: itself at loop level, else what ``expand`` made of it."""
        if loop_level:
            return [n for n in ([node] if not is_group(node) else walk(node.attrs["body"])) if n.domain == "dcopt.loop"]
        self._index()
        return [n for label in _op_labels(node) for n in self._loops.get(label, ())]

    def kernels(self, loop_labels: set[str]) -> list[dict]:
        """The generated code the loop nodes ended in: per program step, its kind, source and time."""
        self._index()
        tops = {self._top[label] for label in loop_labels if label in self._top}
        program = self.program() if tops else None
        if program is None:
            return []
        timings = {p["label"]: p["seconds"] for p in self.session.profile}
        out = []
        for step in program.steps:
            if step.label not in tops:
                continue
            p = step.params
            name = p.get("kernel") if step.kind == "kernel" else p.get("kernel_name")
            source = program.kernels.get(name) if step.kind == "kernel" else program.native.get(name)
            out.append({"step": step.label, "kind": step.kind, "name": name, "language":
                        "python (numba)" if step.kind == "kernel" else ("LLVM IR" if source else ""),
                        "source": source or "", "params": {k: v for k, v in p.items() if k not in ("args",)},
                        "seconds": timings.get(step.label)})
        return out

    def removed_by(self, stage_index: int, node: Node) -> str | None:
        """The first later op-level stage whose graph no longer holds any of the node's ops."""
        self._index()
        labels = set(_op_labels(node))
        for stage, present in zip(self.session.op_stages[stage_index + 1:], self._labels[stage_index + 1:]):
            if not labels & present:
                return stage.name
        return None


def walk_self(node: Node) -> Iterator[Node]:
    yield node
    if is_group(node):
        yield from walk(node.attrs["body"])
