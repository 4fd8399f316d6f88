"""Constant folding: evaluate nodes whose inputs are all known and store the results as parameters.

A node folds when every input it reads is a parameter; it is evaluated with the very op
implementation the reference executor uses (``registry.lookup`` + ``registry.call``), so a
folded graph computes what the unfolded one did. ``Shape`` and ``Size`` fold from the input's
*type* when the requested dims are static, even though the input itself is not constant, and so
do a ``Gather``/``Slice`` picking static dims out of a Shape whose other dims are symbolic; since
nodes are visited in topological order, shape arithmetic chains (Shape -> Gather -> Unsqueeze
-> Concat -> Reshape) collapse in one run.

Refused (with the reason in ``PassResult.refusals``):

* nondeterministic ops (Random*, Bernoulli, Multinomial, Dropout that may be training);
* ops without a reference implementation, or whose evaluation fails;
* results that disagree with the graph's declared dtype/static shape (a bug upstream: better
  to keep the node than bake in a wrong constant);
* **size blow-up**: a result with more than ``max_elements`` elements that is also more than
  ``max_growth`` times larger than the node's inputs (Expand/Tile/Range of small constants).
  Folding those would trade a tiny node for megabytes of model.

The exception to the size rule is ``ConstantOfShape``, allowed up to ``max_fill_elements``
(256M elements by default): exporters write placeholder or untrained weights as
ConstantOfShape (every weight of the ONNX "light" model zoo is one), and a weight that stays a
node blocks every rewrite that needs weights as data (BatchNorm folding, weight layout). Nodes
with subgraphs (If/Loop/Scan) are not folded here.
"""

from __future__ import annotations

import numpy as np

from dcopt.ir.graph import Graph, Node
from dcopt.ir.types import TensorType
from dcopt.ops import registry
from dcopt.passes.base import Pass, PassResult, register_pass
from dcopt.passes.common import constant, has_subgraph, is_nondeterministic, known_dtype, numel


class _Refused(Exception):
    """A node that could fold but must not; the message says why."""


@register_pass(aliases=("fold",))
class FoldConstants(Pass):
    name = "fold-constants"
    in_place = True
    description = "evaluate nodes with constant inputs (and Shape/Size of static types) into parameters"

    def __init__(self, max_elements: int = 1 << 20, max_growth: float = 4.0, max_fill_elements: int = 1 << 28):
        self.max_elements = max_elements
        self.max_growth = max_growth
        self.max_fill_elements = max_fill_elements

    def run(self, graph: Graph, ctx) -> PassResult:
        kept: list[Node] = []
        refusals: list[tuple[str, str]] = []
        folded = from_types = 0
        producers = graph.producers()
        for node in graph.nodes:
            try:
                values = self._evaluate(graph, node, producers)
            except _Refused as why:
                refusals.append((node.label, str(why)))
                values = None
            if values is None:
                kept.append(node)
                continue
            for name, value in zip(node.outputs, values):
                if name:
                    c = graph.containers[name]
                    c.data = value
                    c.type = TensorType.of(value)
            folded += 1
            from_types += node.op in ("Shape", "Size") and constant(graph, node.inputs[0]) is None
        if not folded:
            return PassResult(graph, False, {"folded": 0}, refusals)
        graph.nodes = kept
        return PassResult(graph, True, {"folded": folded, "from_static_shapes": from_types}, refusals)

    # -- one node ---------------------------------------------------------------------------
    def _evaluate(self, graph: Graph, node: Node, producers=None) -> list[np.ndarray] | None:
        """The node's output values, None if it does not qualify, _Refused if it must not fold
        (``producers``: container -> writing node, to see a Gather/Slice of a Shape)."""
        if has_subgraph(node):
            return None
        if node.op in ("Shape", "Size") and node.domain in ("", "ai.onnx") and constant(graph, node.inputs[0]) is None:
            value = _shape_from_type(graph, node)
            return None if value is None else [value]
        if producers is not None and node.inputs and node.inputs[0] and constant(graph, node.inputs[0]) is None:
            picked = _picked_static_dims(graph, node, producers)
            if picked is not None:
                return picked
        args = [constant(graph, name) if name else None for name in node.inputs]
        if any(a is None for a, name in zip(args, node.inputs) if name):
            return None
        if is_nondeterministic(graph, node):
            raise _Refused(f"{node.op} is nondeterministic")
        opdef = registry.lookup(node.op, node.domain)
        if opdef is None:
            raise _Refused(f"op {node.op} has no reference implementation to evaluate it with")
        in_elems = sum(numel(a) for a in args)
        self._check_size(graph, node, in_elems, self._predicted_elems(graph, node))
        try:
            results = registry.call(opdef, args, dict(node.attrs), graph.opset_of(node.domain))
        except Exception as exc:  # an op that cannot evaluate these constants stays a node
            raise _Refused(f"evaluating it failed: {type(exc).__name__}: {exc}") from None
        wanted = [i for i, o in enumerate(node.outputs) if o]
        if wanted and max(wanted) >= len(results):
            raise _Refused(f"evaluation gave {len(results)} result(s) for {len(node.outputs)} output(s)")
        values = [None if not o else results[i] for i, o in enumerate(node.outputs)]
        self._check_size(graph, node, in_elems, sum(numel(v) for v in values if v is not None))
        for name, value in zip(node.outputs, values):
            if name:
                _check_declared(graph, name, value)
        return values

    def _predicted_elems(self, graph: Graph, node: Node) -> int:
        """Output size from declared static types (0 when unknown), to refuse before computing."""
        total = 0
        for name in node.outputs:
            t = graph.type_of(name) if name else None
            total += (t.numel or 0) if t is not None else 0
        return total

    def _check_size(self, graph: Graph, node: Node, in_elems: int, out_elems: int) -> None:
        if node.op == "ConstantOfShape" and node.domain in ("", "ai.onnx"):
            if out_elems > self.max_fill_elements:
                raise _Refused(f"ConstantOfShape would create {out_elems} elements (max_fill_elements="
                               f"{self.max_fill_elements})")
            return
        if out_elems > self.max_elements and out_elems > self.max_growth * max(in_elems, 1):
            raise _Refused(f"result has {out_elems} elements from {in_elems} input elements "
                           f"(over max_elements={self.max_elements} and max_growth={self.max_growth}x)")


def _shape_from_type(graph: Graph, node: Node) -> np.ndarray | None:
    """Shape/Size of a non-constant input whose (selected) dims are static; else None."""
    t = graph.type_of(node.inputs[0])
    if t is None or t.shape is None:
        return None
    if node.op == "Size":
        return np.array(t.numel, dtype=np.int64) if t.is_static else None
    dims = _shape_dims(graph, node)
    if dims is None or not all(isinstance(d, int) for d in dims):
        return None
    return np.array(dims, dtype=np.int64)


def _shape_dims(graph: Graph, shape_node: Node) -> list | None:
    """The dims a Shape node returns, symbolic ones as they are (None: unknown rank)."""
    t = graph.type_of(shape_node.inputs[0])
    if t is None or t.shape is None:
        return None
    rank = len(t.shape)
    start = int(shape_node.attrs.get("start", 0))
    end = shape_node.attrs.get("end")
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = rank if end is None else min(max(int(end) + rank if int(end) < 0 else int(end), 0), rank)
    return list(t.shape[start:end])


def _picked_static_dims(graph: Graph, node: Node, producers) -> list[np.ndarray] | None:
    """A Gather or Slice of a Shape whose picked dims are static, though others are symbolic
    (``x.shape[-1] // 2`` of a ``[batch, heads, seq, 64]`` tensor: 32): the picked dims, found by
    applying the op to the dims' positions. Else None. Why: a build for every size keeps
    ``batch`` and ``seq`` symbolic, so the whole Shape never folds, and without this the rotary
    embedding's halves stayed Slices computed at run time."""
    if node.op not in ("Gather", "Slice") or node.domain not in ("", "ai.onnx") or not node.inputs[0]:
        return None
    shape_node = producers.get(node.inputs[0])
    if shape_node is None or shape_node.op != "Shape" or shape_node.domain not in ("", "ai.onnx"):
        return None
    dims = _shape_dims(graph, shape_node)
    rest = [constant(graph, name) if name else None for name in node.inputs[1:]]
    if dims is None or any(a is None for a, name in zip(rest, node.inputs[1:]) if name):
        return None
    try:
        positions = registry.call(registry.lookup(node.op, node.domain), [np.arange(len(dims), dtype=np.int64), *rest],
                                  dict(node.attrs), graph.opset_of(node.domain))[0]
    except Exception:  # noqa: BLE001 - indices the op itself rejects: the node stays and says so at run time
        return None
    picked = [dims[int(p)] for p in np.asarray(positions).reshape(-1)]
    if not all(isinstance(d, int) for d in picked):
        return None
    return [np.array(picked, dtype=np.int64).reshape(np.shape(positions))]


def _check_declared(graph: Graph, name: str, value) -> None:
    if not isinstance(value, np.ndarray):
        raise _Refused(f"output '{name}' is a {type(value).__name__}, not a tensor")
    declared = graph.containers[name].type
    dtype = known_dtype(graph, name)
    got = TensorType.of(value)
    if dtype is not None and dtype != got.dtype:
        raise _Refused(f"computed {got} for '{name}' but the graph declares {declared}")
    if declared.shape is not None and (len(declared.shape) != value.ndim or any(
            isinstance(d, int) and d != v for d, v in zip(declared.shape, value.shape))):
        raise _Refused(f"computed {got} for '{name}' but the graph declares {declared}")
