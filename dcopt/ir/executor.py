"""The reference executor: runs a graph op by op with the numpy implementations.

This is dcopt's semantic ground truth. Every pass is checked against it, and the backend
API and CLI (``--backend reference``) use it directly. It is deliberately simple: no
scheduling, no memory planning; values live in a dict and die when their last reader ran.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from dcopt.errors import DcoptError, ExecutionError, InputError, UnsupportedError
from dcopt.ir.graph import Graph
from dcopt.ir.types import TensorType
from dcopt.ops import registry


def check_supported(graph: Graph, file: str | None = None) -> None:
    """Raise one UnsupportedError listing every node whose op has no implementation."""
    missing = []
    for node in graph.nodes:
        if registry.lookup(node.op, node.domain) is None:
            dom = f"{node.domain}." if node.domain else ""
            missing.append(f"node '{node.label}': op {dom}{node.op} (opset {graph.opset_of(node.domain)})")
    if missing:
        ops = sorted({m.split("op ")[1].split(" ")[0] for m in missing})
        raise UnsupportedError(
            f"{len(missing)} node(s) use op(s) the reference executor does not support ({', '.join(ops)})",
            missing, file=file,
        )


def validate_feeds(graph: Graph, feeds: Mapping[str, np.ndarray], file: str | None = None) -> dict[str, np.ndarray]:
    """Check feeds against declared input types; returns arrays (converting lists/scalars)."""
    unknown = sorted(set(feeds) - set(graph.inputs))
    if unknown:
        raise InputError(f"unknown input(s) {unknown}; the model's inputs are {graph.inputs}", file=file)
    missing = [n for n in graph.inputs if n not in feeds]
    if missing:
        raise InputError(f"missing input(s) {missing}", file=file)
    bindings: dict[str, int] = {}
    arrays = {}
    for name in graph.inputs:
        value = feeds[name]
        array = value if isinstance(value, (np.ndarray, list)) or value is None else np.asarray(value)
        expected = graph.containers[name].type
        problem = expected.matches(array, bindings) if array is not None or not isinstance(expected, TensorType) \
            else "expected a tensor, got None"
        if problem:
            raise InputError(problem, file=file, input=name)
        arrays[name] = array
    return arrays


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray], *, check_inputs: bool = True,
              outputs: list[str] | None = None, file: str | None = None,
              outer: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Execute ``graph`` on ``feeds``; return ``{output name: array}``.

    ``outer`` gives values visible from an enclosing graph (for subgraphs of If/Loop/Scan).
    """
    arrays = validate_feeds(graph, feeds, file) if check_inputs else dict(feeds)
    env: dict[str, np.ndarray] = dict(outer or {})
    env.update({n: c.data for n, c in graph.containers.items() if c.data is not None})
    env.update(arrays)
    wanted = list(outputs or graph.outputs)
    last_use = {}
    for i, node in enumerate(graph.nodes):
        for name in (*node.present_inputs, *node.outer_reads()):
            last_use[name] = i
    keep = set(wanted) | set(graph.containers) & {n for n, c in graph.containers.items() if c.data is not None}

    def run_subgraph(subgraph: Graph, sub_feeds: Mapping[str, np.ndarray]):
        result = run_graph(subgraph, dict(zip(subgraph.inputs, sub_feeds)) if not isinstance(sub_feeds, Mapping) else sub_feeds,
                           check_inputs=False, outer=env, file=file)
        return [result[o] for o in subgraph.outputs]

    for i, node in enumerate(graph.nodes):
        opdef = registry.lookup(node.op, node.domain)
        opset = graph.opset_of(node.domain)
        if opdef is None:
            raise UnsupportedError(f"op {node.op} is not supported by the reference executor",
                                   file=file, node=node.label, op=node.op, opset=opset)
        try:
            args = [env[name] if name else None for name in node.inputs]
        except KeyError as exc:
            raise ExecutionError(f"input {exc} has no value (graph not in topological order?)",
                                 file=file, node=node.label, op=node.op, opset=opset) from None
        try:
            results = registry.call(opdef, args, dict(node.attrs), opset, run_subgraph, len(node.outputs))
        except DcoptError as exc:
            raise exc.at(file=file, node=node.label, op=node.op, opset=opset)
        except Exception as exc:
            shapes = ", ".join(
                f"{n}: {getattr(a, 'dtype', type(a).__name__)}{list(getattr(a, 'shape', []))}" for n, a in zip(node.inputs, args) if n
            )
            raise ExecutionError(f"{type(exc).__name__}: {exc} (inputs {shapes})",
                                 file=file, node=node.label, op=node.op, opset=opset) from exc
        if len(results) < len([o for o in node.outputs if o]):
            produced = len(results)
            if any(node.outputs[produced:]):
                raise ExecutionError(f"produced {produced} output(s) but {len(node.outputs)} are wired",
                                     file=file, node=node.label, op=node.op, opset=opset)
        for name, value in zip(node.outputs, results):
            if name:
                env[name] = value
        for name in (*node.present_inputs, *node.outer_reads()):
            if last_use.get(name) == i and name not in keep and name not in graph.inputs and (outer is None or name not in outer):
                env.pop(name, None)
    missing = [o for o in wanted if o not in env]
    if missing:
        raise ExecutionError(f"output(s) {missing} were never produced", file=file)
    return {o: env[o] for o in wanted}
