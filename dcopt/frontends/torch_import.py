"""PyTorch -> dcopt IR, through ``torch.export``.

dcopt's IR speaks ONNX operator semantics, so importing a PyTorch program means lowering its
ATen ops to ONNX-style nodes (the per-op rules live in :mod:`dcopt.frontends.torch_lowering`). Once
imported, a graph needs no torch at run time.

The path is::

    nn.Module --torch.export--> ExportedProgram --run_decompositions--> core ATen FX graph
              --lowering (this module + torch_lowering)--> dcopt Graph

What becomes what:

* parameters, buffers and lifted constants -> IR parameters (numpy copies, i.e. a snapshot of
  the weights at import time);
* user inputs -> graph inputs, typed from the placeholder's FakeTensor. A dim that export made
  dynamic (``torch.export.Dim``) stays symbolic: its sympy symbol (``s0``) becomes the IR's
  ``str`` dim, renamed through ``symbol_names`` when given;
* every other value is typed from ``node.meta["val"]``. Values that are sizes (SymInts: the
  results of ``sym_size``, ``operator.mul`` on sizes...) are computed at run time from the
  inputs' shapes as int64 tensors of shape ``[1]`` (``Shape`` + arithmetic nodes); a size that
  export proved static is just a Python int.

Unsupported ops do not stop the import at the first one: every offender is collected (op, node,
source line) and reported in one :class:`~dcopt.errors.UnsupportedError`.

The same converter serves the ``torch.compile`` backend (:mod:`dcopt.frontends.torch_backend`),
which hands it an ATen graph from AOTAutograd where every placeholder is a runtime input.

This module walks the FX graph and holds the public entry points; what a lowering sees while it
runs (the :class:`~dcopt.frontends.torch_context.LoweringContext`) is in
:mod:`dcopt.frontends.torch_context`.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.fx

from dcopt.errors import ModelLoadError, UnsupportedError
from dcopt.frontends.torch_context import LoweringContext, LoweringError, SymSource, concrete_int, to_numpy
from dcopt.ir.graph import Graph

DEFAULT_OPSET = 17

# Nodes that only check things at trace time; they compute nothing at run time.
_NO_OPS = frozenset({
    "aten._assert_tensor_metadata.default", "aten._assert_scalar.default", "aten._assert_async.msg",
    "aten.sym_constrain_range.default", "aten.sym_constrain_range_for_size.default",
    "aten._functional_assert_async.msg", "aten._functional_sym_constrain_range.default",
})


# ---------------------------------------------------------------------------------------------
# The FX graph walk


def _target_name(target: Any) -> str:
    """The key an FX call target is lowered by: ``aten.addmm.default``, ``operator.mul``."""
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    return torch.fx.node._get_qualified_name(target)


def _source_line(node: torch.fx.Node) -> str | None:
    """The innermost user frame of a node's stack trace: 'File "m.py", line 3, in forward: y = f(x)'."""
    trace = node.meta.get("stack_trace")
    if not trace:
        return None
    lines = [line.strip() for line in trace.strip().splitlines()]
    files = [i for i, line in enumerate(lines) if line.startswith("File ")]
    if not files:
        return lines[-1]
    i = files[-1]
    code = lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].startswith("File ") else ""
    return f"{lines[i]}: {code}" if code else lines[i]


@dataclass
class Placeholder:
    """What a placeholder is: a runtime ``input`` or a ``parameter`` with its data."""

    container: str
    data: np.ndarray | None = None


@dataclass
class Imported:
    """An imported graph plus how its outputs map back to the FX graph's output structure:
    per FX output, the container name or ``("const", value)`` for non-tensor outputs."""

    graph: Graph
    output_layout: list[Any]


class _Problems:
    """Collects every unsupported op / failed lowering so one error can list them all."""

    def __init__(self):
        self.items: list[str] = []
        self.ops: list[str] = []

    def add(self, node: torch.fx.Node, op: str, why: str) -> None:
        where = _source_line(node)
        self.ops.append(op)
        self.items.append(f"{op} at node '{node.name}': {why}" + (f"\n      {where}" if where else ""))

    def raise_if_any(self, file: str | None) -> None:
        if self.items:
            ops = ", ".join(sorted(set(self.ops)))
            raise UnsupportedError(f"{len(self.items)} node(s) cannot be imported from PyTorch ({ops})",
                                   self.items, file=file)


def convert_fx_graph(fx_graph: torch.fx.Graph, placeholders: Mapping[str, Placeholder], *,
                     name: str = "torch_graph", opset: int = DEFAULT_OPSET,
                     symbol_names: Mapping[str, str] | None = None, user_outputs: Sequence[int] | None = None,
                     file: str | None = None, owner: torch.nn.Module | None = None) -> Imported:
    """Lower an ATen-level FX graph to a dcopt Graph.

    ``placeholders`` says, per placeholder name, whether it is an input or a parameter (with
    data). ``user_outputs`` picks which entries of the output node are graph outputs (default:
    all) — export appends buffer mutations there, which inference does not write back.
    ``owner`` is the GraphModule whose attributes ``get_attr`` nodes read (tensors a forward
    builds with ``torch.tensor(...)``, lifted by AOTAutograd): they become parameters."""
    from dcopt.frontends.torch_lowering import LOWERINGS

    ctx = LoweringContext(name, opset, symbol_names)
    problems = _Problems()
    sizes_from_shapes = False
    for fx_node in fx_graph.nodes:
        ctx.node = fx_node
        if fx_node.op != "placeholder" and not sizes_from_shapes:
            _sizes_from_shapes(ctx, fx_graph)
            sizes_from_shapes = True
        if fx_node.op == "placeholder":
            _add_placeholder(ctx, fx_node, placeholders[fx_node.name])
        elif fx_node.op == "call_function":
            _lower_node(ctx, fx_node, LOWERINGS, problems)
        elif fx_node.op == "output":
            layout = _add_outputs(ctx, fx_node, user_outputs)
        elif fx_node.op == "get_attr" and owner is not None:
            _add_attribute(ctx, fx_node, owner, problems)
        else:  # export lifts attributes to inputs; a graph without its owner cannot resolve them
            problems.add(fx_node, fx_node.op, f"FX '{fx_node.op}' nodes are not supported")
            _stand_in(ctx, fx_node)
    problems.raise_if_any(file)
    from dcopt.ir.verify import verify

    ctx.graph.remove_unused_containers()
    verify(ctx.graph, file=file)
    return Imported(ctx.graph, layout)


def _sizes_from_shapes(ctx: LoweringContext, fx_graph: torch.fx.Graph) -> None:
    """Size inputs (SymInt placeholders: dynamo passes ``s0`` beside the tensors it sizes) read as
    a dim of a tensor input where one has that size: the graph's sizes then follow its tensors'
    shapes, so a build for every size serves them, instead of being specialized to the value
    of a size input."""
    for node in fx_graph.nodes:
        val = node.meta.get("val") if node.op == "placeholder" else None
        if isinstance(val, torch.SymInt) and val.node.expr.is_Symbol:
            source = ctx.sym_sources.get(val.node.expr)
            if source is not None and source.axis is not None:
                ctx.env[node] = ctx.sym(val.node.expr)


def _add_attribute(ctx: LoweringContext, fx_node: torch.fx.Node, owner: torch.nn.Module, problems: _Problems) -> None:
    """A ``get_attr`` node: the owner's tensor attribute, copied in as a parameter."""
    value = owner
    for part in str(fx_node.target).split("."):
        value = getattr(value, part, None)
    if not isinstance(value, torch.Tensor):
        problems.add(fx_node, "get_attr", f"attribute '{fx_node.target}' is {type(value).__name__}, not a tensor")
        _stand_in(ctx, fx_node)
        return
    _add_placeholder(ctx, fx_node, Placeholder(fx_node.name, to_numpy(value, copy=True)))


def _add_placeholder(ctx: LoweringContext, fx_node: torch.fx.Node, spec: Placeholder) -> None:
    name = spec.container if spec.container not in ctx.graph.containers else ctx.fresh(spec.container)
    if spec.data is not None:
        spec.data.flags.writeable = False  # parameters are shared and must never be written
        ctx.graph.add_parameter(name, spec.data)
        ctx.env[fx_node] = name
        return
    val = fx_node.meta.get("val")
    if isinstance(val, (int, float, bool)) and not isinstance(val, torch.SymInt):
        ctx.env[fx_node] = val  # a constant input (e.g. an int argument); nothing to feed
        return
    ctx.graph.add_input(name, ctx.type_of_val(val))
    ctx.env[fx_node] = name
    if isinstance(val, torch.SymInt):
        if val.node.expr.is_Symbol:
            ctx.sym_sources.setdefault(val.node.expr, SymSource(name, None))
        return
    for axis, d in enumerate(val.shape):
        if isinstance(d, torch.SymInt) and d.node.expr.is_Symbol:
            known = ctx.sym_sources.get(d.node.expr)
            if known is None or known.axis is None:  # a tensor's dim over a scalar size input: sizes
                ctx.sym_sources[d.node.expr] = SymSource(name, axis)  # then follow shapes, not values


def _lower_node(ctx: LoweringContext, fx_node: torch.fx.Node, lowerings: Mapping[str, Callable],
                problems: _Problems) -> None:
    key = _target_name(fx_node.target)
    val = fx_node.meta.get("val")
    try:
        if key in _NO_OPS:
            ctx.env[fx_node] = None
        elif key in ("_operator.getitem", "operator.getitem"):
            ctx.env[fx_node] = _getitem(ctx, fx_node)
        elif isinstance(val, (int, float, bool)) or concrete_int(val) is not None:
            ctx.env[fx_node] = val if concrete_int(val) is None else concrete_int(val)  # a static size
        elif isinstance(val, torch.SymInt):
            ctx.env[fx_node] = ctx.sym(val.node.expr)  # any size arithmetic, from the inputs' shapes
        elif key in lowerings:
            start = len(ctx.graph.nodes)
            result = lowerings[key](ctx, *fx_node.args, **fx_node.kwargs)
            ctx.env[fx_node] = _finish(ctx, fx_node, result, start)
        else:
            problems.add(fx_node, key, "no lowering for this op")
            _stand_in(ctx, fx_node)
    except (LoweringError, UnsupportedError) as exc:
        problems.add(fx_node, key, str(exc))
        _stand_in(ctx, fx_node)


def _stand_in(ctx: LoweringContext, fx_node: torch.fx.Node) -> None:
    """Give a node that failed typed placeholder outputs so later nodes still lower (and report)."""
    def make(val):
        try:
            return ctx.graph.add_container(ctx.fresh(fx_node.name), ctx.type_of_val(val)).name
        except LoweringError:
            return None

    val = fx_node.meta.get("val")
    ctx.env[fx_node] = tuple(make(v) for v in val) if isinstance(val, (tuple, list)) else make(val)


def _getitem(ctx: LoweringContext, fx_node: torch.fx.Node) -> Any:
    source, index = fx_node.args
    value = ctx.env[source]
    if not isinstance(value, (tuple, list)):
        raise LoweringError(f"getitem on a non-tuple value '{source.name}'")
    item = value[index]
    if item is None:
        raise LoweringError(f"output {index} of '{source.name}' ({_target_name(source.target)}) is not supported")
    return item


def _finish(ctx: LoweringContext, fx_node: torch.fx.Node, result: Any, start: int) -> Any:
    """Type the lowering's result(s) from the FakeTensor(s); name a single new result after the FX node."""
    val = fx_node.meta.get("val")
    new_outputs = {o for node in ctx.graph.nodes[start:] for o in node.outputs}  # not aliases, not constants
    if isinstance(result, (tuple, list)):
        vals = val if isinstance(val, (tuple, list)) else [val] * len(result)
        for name, v in zip(result, vals):
            if name in new_outputs and isinstance(v, torch.Tensor):
                ctx.graph.containers[name].type = ctx.type_of_val(v)
        return tuple(result)
    if not isinstance(val, torch.Tensor) or result not in new_outputs:
        return result  # an alias of an existing value keeps that value's type
    ctx.graph.containers[result].type = ctx.type_of_val(val)
    if fx_node.name not in ctx.graph.containers:
        _rename(ctx.graph, result, fx_node.name, start)
        return fx_node.name
    return result


def _rename(graph: Graph, old: str, new: str, start: int) -> None:
    """Rename a container written (and possibly read) only by nodes ``start`` and later."""
    graph.containers[new] = graph.containers.pop(old)
    graph.containers[new].name = new
    for i in range(start, len(graph.nodes)):
        n = graph.nodes[i]
        if old in n.inputs or old in n.outputs:
            graph.nodes[i] = n.replace(
                inputs=tuple(new if x == old else x for x in n.inputs),
                outputs=tuple(new if x == old else x for x in n.outputs),
                name=new if n.name == old else n.name,
            )


def _add_outputs(ctx: LoweringContext, fx_node: torch.fx.Node, user_outputs: Sequence[int] | None) -> list[Any]:
    """Graph outputs from the output node (flattened). A value that is an input, a parameter
    or already an output gets an Identity so every graph output is its own container."""
    (values,) = fx_node.args
    flat = list(values) if isinstance(values, (tuple, list)) else [values]
    if user_outputs is not None:
        flat = [flat[i] for i in user_outputs]
    layout = []
    for arg in flat:
        value = ctx.env.get(arg) if isinstance(arg, torch.fx.Node) else arg
        if isinstance(arg, torch.fx.Node) and isinstance(value, str):
            name = value
            if name in ctx.graph.inputs or name in ctx.graph.outputs or ctx.graph.containers[name].data is not None:
                name = ctx.emit("Identity", [value], shape=ctx.graph.containers[value].type.shape)
                ctx.graph.containers[name].type = ctx.graph.containers[value].type
            ctx.graph.outputs.append(name)
            layout.append(("size", name) if isinstance(arg.meta.get("val"), torch.SymInt) else name)
        else:
            layout.append(("const", value))
    return layout


# ---------------------------------------------------------------------------------------------
# Public entry points


def _placeholders_of(ep: "torch.export.ExportedProgram") -> dict[str, Placeholder]:
    """Map each placeholder of an exported program to an input or a parameter snapshot."""
    from torch.export.graph_signature import InputKind

    specs: dict[str, Placeholder] = {}
    for spec in ep.graph_signature.input_specs:
        arg_name = getattr(spec.arg, "name", None)
        if spec.kind == InputKind.USER_INPUT:
            if arg_name is not None:
                specs[arg_name] = Placeholder(arg_name)
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            tensor = ep.state_dict.get(spec.target)
            if tensor is None:
                tensor = ep.constants.get(spec.target)
            if not isinstance(tensor, torch.Tensor):
                raise UnsupportedError(f"{spec.kind.name.lower()} '{spec.target}' is not a tensor")
            specs[arg_name] = Placeholder(spec.target, to_numpy(tensor, copy=True))
        else:
            raise UnsupportedError(f"exported program input '{arg_name}' of kind {spec.kind.name} is not supported")
    return specs


def _user_output_indices(ep: "torch.export.ExportedProgram") -> list[int]:
    from torch.export.graph_signature import OutputKind

    kinds = [spec.kind for spec in ep.graph_signature.output_specs]
    mutations = [k.name for k in kinds if k != OutputKind.USER_OUTPUT]
    if mutations:
        import warnings

        warnings.warn(f"dcopt ignores {len(mutations)} state update output(s) ({', '.join(sorted(set(mutations)))}): "
                      "an imported graph does not write back buffers", stacklevel=3)
    return [i for i, k in enumerate(kinds) if k == OutputKind.USER_OUTPUT]


def decomposition_table() -> dict:
    """torch.export's core-ATen decompositions, minus the ones dcopt lowers better itself.

    ``scaled_dot_product_attention`` is kept whole: it lowers to one clean MatMul-Softmax-MatMul
    chain (a later pass can fuse it), and torch's own CPU decomposition of it breaks on GPT-2's
    non-contiguous views (torch 2.13)."""
    table = torch.export.default_decompositions()
    for op in (torch.ops.aten.scaled_dot_product_attention.default,):
        if op in table:
            table.pop(op)
    return table


def import_exported_program(ep: "torch.export.ExportedProgram", *, opset: int = DEFAULT_OPSET,
                            symbol_names: Mapping[str, str] | None = None, decompose: bool = True,
                            name: str | None = None, file: str | None = None) -> Graph:
    """Convert a ``torch.export`` program to a dcopt :class:`Graph`.

    ``decompose`` runs :func:`decomposition_table` first (core ATen); without it the program's
    own op set is lowered as is (higher-level ops like ``linear`` or ``layer_norm`` are
    supported too). ``symbol_names`` renames dynamic dims, e.g. ``{"s0": "batch"}``.
    Parameters are copied: the graph is a snapshot of the weights at import time."""
    return import_exported_program_full(ep, opset=opset, symbol_names=symbol_names, decompose=decompose,
                                        name=name, file=file).graph


def import_exported_program_full(ep: "torch.export.ExportedProgram", *, opset: int = DEFAULT_OPSET,
                                 symbol_names: Mapping[str, str] | None = None, decompose: bool = True,
                                 name: str | None = None, file: str | None = None) -> Imported:
    """:func:`import_exported_program`, also returning how outputs map to the program's outputs
    (non-tensor outputs are constants there, not graph outputs)."""
    if decompose:
        ep = ep.run_decompositions(decomposition_table())
    return convert_fx_graph(ep.graph, _placeholders_of(ep), name=name or "torch_export", opset=opset,
                            symbol_names=symbol_names, user_outputs=_user_output_indices(ep), file=file)


def load_pt2(path: str | os.PathLike, **options) -> Graph:
    """Import a program saved with ``torch.export.save`` (a ``.pt2`` archive)."""
    file = str(path)
    if not os.path.isfile(file):
        raise ModelLoadError("file not found", file=file)
    if not zipfile.is_zipfile(file):  # checked first: torch logs a long traceback for non-archives
        raise ModelLoadError("not a torch.export archive (.pt2 files are zip archives)", file=file)
    try:
        ep = torch.export.load(file)
    except Exception as exc:  # torch raises zipfile, pickle, runtime and key errors alike
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"not a readable torch.export program ({type(exc).__name__}: {message})",
                             file=file) from None
    return import_exported_program(ep, file=file, name=os.path.splitext(os.path.basename(file))[0], **options)
