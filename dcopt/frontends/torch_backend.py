"""Running PyTorch models through dcopt: a ``torch.compile`` backend and a module wrapper.

* ``torch.compile(model, backend="dcopt")`` — after ``import dcopt.frontends.torch_backend`` (or
  through the ``torch_dynamo_backends`` entry point). Dynamo captures FX graphs; AOTAutograd
  turns each into a functional core-ATen graph, which :func:`dcopt_backend` imports and runs. A
  graph dcopt cannot import runs eagerly instead, with a warning naming the unsupported ops.
  Dynamo passes parameters and buffers in as runtime inputs; dcopt bakes them in as constants
  (packed GEMM/conv weights, folding) under a guard, :class:`FrozenWeights`, that recompiles
  when one changes, so weight updates after compiling are seen. dcopt compiles *inference*: a
  graph that needs gradients (grad mode on and an input, parameters included, that requires
  grad) runs eagerly, untouched by AOTAutograd, with one warning (see :func:`needs_gradients`).
* :func:`compile_module` — exports a module once (``torch.export``) and returns an
  ``nn.Module`` whose forward runs the dcopt graph. Its weights are a *snapshot* taken at
  compile time: changing the original module's parameters afterwards does not affect it.

Both exchange CPU tensors with the executor without copies where numpy allows
(``Tensor.numpy()`` in, ``torch.from_numpy`` out). Neither records autograd history.

How an imported Graph executes is decided in exactly one place, :func:`make_runner` (the
compiled CPU backend, on ``torch.get_num_threads()`` threads).
"""

from __future__ import annotations

import functools
import operator
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.utils._pytree as pytree

from dcopt.errors import DcoptError, InputError, UnsupportedError
from dcopt.frontends.torch_context import to_numpy
from dcopt.frontends.torch_import import Imported, Placeholder, convert_fx_graph, import_exported_program_full
from dcopt.ir.graph import Graph

BACKEND_NAME = "dcopt"

Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


class CompiledRunner:
    """Runs one graph on numpy feeds through the compiled CPU backend (generated kernels, planned
    buffers). The graph is compiled on the first call, with its real inputs as the example, on
    ``torch.get_num_threads()`` threads: what ``torch.set_num_threads`` sets for eager PyTorch
    and inductor applies to dcopt's graphs too. A graph with symbolic dims (``dynamic=True``,
    ``compile_module(dynamic_batch=True)``) is compiled once for every size of them, where its
    kernels allow (else a new size compiles a variant, as :func:`dcopt.compile` explains)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.outputs = list(graph.outputs)
        #: the :class:`~dcopt.backends.cpu.session.CpuSession` (None until the first call);
        #: ``session.manifest`` lists the build's steps
        self.session = None

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.session is None:
            from dcopt.compiled import compile as compile_graph

            dims = {d: v for n in self.graph.inputs for d, v in zip(self.graph.containers[n].type.shape or (),
                                                                    np.shape(feeds[n])) if isinstance(d, str)}
            self.session = compile_graph(self.graph, dims=dims, example_feeds=feeds, threads=torch.get_num_threads(),
                                         dynamic=bool(dims))
        return dict(zip(self.outputs, self.session.run(None, feeds)))


def make_runner(graph: Graph) -> Runner:
    """Return a function that runs ``graph`` on numpy feeds: the one swap point for execution
    (a :class:`CompiledRunner`). Checks once, at compile time, that every op can run, so a call
    never fails halfway."""
    from dcopt.ir.executor import check_supported

    check_supported(graph)
    return CompiledRunner(graph)


# ---------------------------------------------------------------------------------------------
# torch <-> numpy at the boundary


def _feed(value: Any) -> np.ndarray:
    """A runtime argument as the executor wants it: tensors as numpy views, sizes as [1] int64."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise InputError(f"dcopt runs on CPU tensors; got a tensor on {value.device}")
        return to_numpy(value)
    if isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool):
        return np.array([int(value)], dtype=np.int64)
    raise InputError(f"cannot pass {type(value).__name__} to a dcopt graph")


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A numpy result as a tensor, sharing memory unless the array is read-only (a parameter,
    which a caller must not be able to write through) or has a layout torch cannot wrap."""
    array = np.asarray(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16)
    if not array.flags.writeable or any(s < 0 for s in array.strides):
        array = array.copy()
    return torch.from_numpy(array)


class GraphFunction:
    """An imported graph as a function of torch values, in the FX graph's calling convention:
    positional arguments in placeholder order, a list of outputs (tensors, ints, constants)."""

    def __init__(self, imported: Imported, input_names: Sequence[str | None]):
        self.graph = imported.graph
        self.layout = imported.output_layout
        self.input_names = list(input_names)
        self.fed = [(i, name) for i, name in enumerate(self.input_names) if name is not None]
        self.run = make_runner(self.graph)

    def __call__(self, *args: Any) -> list[Any]:
        feeds = {name: _feed(args[i]) for i, name in self.fed}
        results = self.run(feeds)
        return [self._output(entry, results) for entry in self.layout]

    @staticmethod
    def _output(entry: Any, results: Mapping[str, np.ndarray]) -> Any:
        if isinstance(entry, tuple) and entry[0] == "const":
            return entry[1]
        if isinstance(entry, tuple) and entry[0] == "size":
            return int(results[entry[1]].reshape(-1)[0])
        return _tensor(results[entry])


# ---------------------------------------------------------------------------------------------
# torch.compile backend


def _aot_decompositions() -> dict:
    """Core-ATen decompositions for AOTAutograd, minus attention (dcopt lowers it whole)."""
    from torch._decomp import core_aten_decompositions

    table = dict(core_aten_decompositions())
    for op in (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
               torch.ops.aten.scaled_dot_product_attention.default):
        table.pop(op, None)
    return table


def _compile_forward(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], *,
                     weights: Mapping[int, torch.Tensor] | None = None) -> Callable:
    """AOTAutograd inference compiler. Placeholders are runtime inputs, except the positions in
    ``weights`` (parameters and buffers, with their real tensors): those are baked in as
    constants, so weight packing and constant folding apply, under a :class:`FrozenWeights`
    guard that recompiles when one changes. ``get_attr`` constants are imported too. A graph
    that does not convert (unsupported ops, or a dcopt bug) runs eagerly with a warning."""
    from functorch.compile import make_boxed_func  # AOTAutograd calls compiled graphs with one list

    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    frozen = sorted(weights or {}) if len(names) == len(example_inputs) else []

    def build(values: Mapping[int, torch.Tensor]) -> GraphFunction:
        from torch._subclasses.fake_tensor import unset_fake_temporarily

        with unset_fake_temporarily():  # AOTAutograd compiles under fake mode; weights are real tensors
            specs = {n: Placeholder(n, to_numpy(values[i]) if i in values else None) for i, n in enumerate(names)}
            imported = convert_fx_graph(gm.graph, specs, name="torch_compile", owner=gm)
        return GraphFunction(imported, [n if n in imported.graph.inputs else None for n in names])

    try:
        function = build({i: weights[i] for i in frozen})
    except Exception as exc:  # any failure to convert means: run this graph eagerly, loudly
        _warn_fallback(exc)
        return make_boxed_func(gm.forward)
    if not frozen:
        return make_boxed_func(function)
    return make_boxed_func(FrozenWeights(function, build, frozen, [weights[i] for i in frozen]))


class FrozenWeights:
    """A compiled graph with parameters and buffers baked in as constants, and the guard that
    keeps it honest: before every call, each frozen argument must still be the same storage with
    no in-place write since (``data_ptr`` and the autograd version counter, which every in-place
    op bumps: ``optimizer.step()``, ``weight.mul_(2)``, ``load_state_dict``). A change rebuilds
    the graph from the new values, with one warning (rebuilding costs a compile).

    The check is two C-level passes over the frozen arguments (``map`` of the tensor getters)
    and one tuple comparison: about 10 us for BERT's 73 weights, against ~9 ms for the graph."""

    def __init__(self, function: GraphFunction, build: Callable, positions: Sequence[int],
                 tensors: Sequence[torch.Tensor]):
        self.function, self.build, self.positions = function, build, list(positions)
        self._pick = operator.itemgetter(*self.positions) if len(self.positions) > 1 else (
            lambda args, i=self.positions[0]: (args[i],))
        self.stamp = self._stamp(tensors)

    @staticmethod
    def _stamp(tensors: Sequence[torch.Tensor]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return tuple(map(_DATA_PTR, tensors)), tuple(map(_VERSION, tensors))

    def __call__(self, *args: Any) -> list[Any]:
        current = self._pick(args)
        stamp = self._stamp(current)
        if stamp != self.stamp:
            warnings.warn("dcopt: parameters or buffers changed since this graph was compiled; recompiling it "
                          "with the new values", stacklevel=2)
            self.function = self.build(dict(zip(self.positions, current)))
            self.stamp = stamp
        return self.function(*args)


_DATA_PTR = torch.Tensor.data_ptr
_VERSION = operator.attrgetter("_version")


def frozen_weight_positions(example_inputs: Sequence[Any]) -> dict[int, torch.Tensor]:
    """The inputs of a Dynamo graph that are a module's parameters or buffers (Dynamo marks
    them as static inputs), on CPU and not inference tensors (which have no version counter to
    guard): these may be baked into an inference graph as constants."""
    return {i: x for i, x in enumerate(example_inputs)
            if isinstance(x, torch.Tensor) and (isinstance(x, torch.nn.Parameter)
                                                or getattr(x, "_dynamo_static_input_type", None) is not None)
            and x.device.type == "cpu" and not x.is_inference()}


def _not_for_training(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
    """AOTAutograd's training compilers. :func:`dcopt_backend` never hands AOTAutograd a graph
    that needs gradients, so reaching this is a bug: refuse rather than compile a training
    forward whose backward dcopt has not verified."""
    raise UnsupportedError("dcopt compiles inference graphs only; a training graph reached its compiler")


def needs_gradients(example_inputs: Sequence[Any]) -> bool:
    """Whether a Dynamo graph may be differentiated: grad mode is on and some input (parameters
    are inputs) requires grad. Such a graph runs eagerly. Why not compile its forward and leave
    the backward to eager ATen: the forward graph AOTAutograd partitions for training is traced
    with decompositions, and torch 2.13's core-ATen ``native_layer_norm_backward`` decomposition
    gives a BERT wrong gradients (relative error ~1 on 34 parameters) even with both halves run
    eagerly. Until dcopt compiles and verifies a backward graph, gradients come from PyTorch."""
    return torch.is_grad_enabled() and any(isinstance(x, torch.Tensor) and x.requires_grad for x in example_inputs)


def dcopt_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any], **kwargs) -> Callable:
    """The ``torch.compile`` backend: ``torch.compile(model, backend="dcopt")``.

    AOTAutograd supplies functionalized core-ATen graphs; :func:`_compile_forward` imports each
    one, or leaves it to eager ATen with a warning. A graph that needs gradients
    (:func:`needs_gradients`) runs eagerly as Dynamo captured it, with a warning that says how
    to get the compiled path (``torch.no_grad()`` / ``torch.inference_mode()``)."""
    from torch._dynamo.backends.common import aot_autograd

    if needs_gradients(example_inputs):
        warnings.warn("dcopt: running this graph eagerly: it needs gradients (grad mode is on and its inputs or "
                      "parameters require grad), and dcopt compiles inference only. Run inference under "
                      "torch.no_grad() or torch.inference_mode() to use dcopt's compiled code.", stacklevel=2)
        return gm.forward
    try:
        inference = functools.partial(_compile_forward, weights=frozen_weight_positions(example_inputs))
        compiler = aot_autograd(fw_compiler=_not_for_training, bw_compiler=_not_for_training,
                                inference_compiler=inference, decompositions=_aot_decompositions())
        return compiler(gm, example_inputs)
    except DcoptError as exc:  # not Exception: Dynamo steers itself with exceptions raised through here
        _warn_fallback(exc)
        return gm.forward


def _warn_fallback(exc: Exception) -> None:
    what = str(exc) if isinstance(exc, DcoptError) else f"{type(exc).__name__}: {exc}"
    warnings.warn(f"dcopt: running this graph eagerly: {what}", stacklevel=3)


def _register() -> None:
    """Make ``backend="dcopt"`` resolve. When dcopt's ``torch_dynamo_backends`` entry point is
    installed, torch loads it on first use and registering here too would be a duplicate."""
    from importlib.metadata import entry_points

    from torch._dynamo.backends import registry

    if BACKEND_NAME in registry._COMPILER_FNS:
        return
    if any(ep.name == BACKEND_NAME for ep in entry_points(group="torch_dynamo_backends")):
        return
    registry.register_backend(dcopt_backend, name=BACKEND_NAME)


_register()


# ---------------------------------------------------------------------------------------------
# compile_module


class CompiledModule(torch.nn.Module):
    """A module whose forward runs a dcopt graph exported from another module.

    Arguments are flattened the way ``torch.export`` saw them (positional and keyword, nested
    containers); outputs come back in the original structure (tuples, dicts, HF ModelOutputs).
    Weights are the snapshot taken by :func:`compile_module`."""

    def __init__(self, function: GraphFunction, in_spec: Any, out_spec: Any):
        super().__init__()
        self.function = function
        self.in_spec = in_spec
        self.out_spec = out_spec

    @property
    def dcopt_graph(self) -> Graph:
        return self.function.graph

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        flat, spec = pytree.tree_flatten((args, kwargs))
        if spec != self.in_spec:
            raise InputError(f"arguments do not match the compiled signature: expected {self.in_spec}, got {spec}")
        return pytree.tree_unflatten(self.function(*flat), self.out_spec)


def _export(module: torch.nn.Module, example_inputs: tuple, dynamic_batch: bool) -> "torch.export.ExportedProgram":
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1)
        dynamic_shapes = tuple({0: batch} if isinstance(a, torch.Tensor) and a.dim() else None for a in example_inputs)
    try:
        return torch.export.export(module, example_inputs, dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UnsupportedError(f"torch.export failed: {type(exc).__name__}: {first}") from exc


def _batch_symbols(ep: "torch.export.ExportedProgram") -> dict[str, str]:
    """Name the symbol export made for dim 0 of the user inputs 'batch'."""
    from torch.export.graph_signature import InputKind

    names = {}
    user = {s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT}
    for node in ep.graph.nodes:
        val = node.meta.get("val")
        if node.op == "placeholder" and node.name in user and isinstance(val, torch.Tensor) and val.dim():
            d = val.shape[0]
            if isinstance(d, torch.SymInt) and d.node.expr.is_Symbol:
                names[str(d.node.expr)] = "batch"
    return names


def compile_module(module: torch.nn.Module, example_inputs: Any, *, dynamic_batch: bool = False) -> CompiledModule:
    """Export ``module`` on ``example_inputs`` and return a module running it through dcopt.

    ``dynamic_batch`` makes dim 0 of every tensor input one symbolic dim named ``batch`` (the
    example batch must then be at least 2: export specializes sizes 0 and 1). The module is
    exported in its current mode, so call ``.eval()`` first for inference. Parameters and
    buffers are copied: later changes to ``module`` do not reach the compiled one."""
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    ep = _export(module, args, dynamic_batch)
    imported = import_exported_program_full(ep, symbol_names=_batch_symbols(ep) if dynamic_batch else None,
                                            name=type(module).__name__)
    from torch.export.graph_signature import InputKind, TensorArgument

    inputs = [s.arg.name if isinstance(s.arg, TensorArgument) else None
              for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    return CompiledModule(GraphFunction(imported, inputs), ep.call_spec.in_spec, ep.call_spec.out_spec)
