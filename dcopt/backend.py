"""The ONNX backend API (``onnx.backend.base.Backend``) over dcopt.

Lets onnx's own test machinery drive dcopt::

    import dcopt.backend as backend
    rep = backend.prepare(model)          # import + verify
    outputs = rep.run([x])                # reference executor
    rep = backend.prepare(model, compiled=True, cache_dir=tmp)   # dcopt.compile(...): generated code
    outputs = rep.run([x]); rep.steps, rep.not_native             # what kinds of step it ran

``device`` is ``"CPU"``. The compiled representation is what users get; the conformance suite
runs every case both ways.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from dcopt.frontends.onnx_import import import_model
from dcopt.ir.executor import check_supported, run_graph
from dcopt.ir.graph import Graph


class DcoptRep(BackendRep):
    """A prepared model: the imported graph plus an executor."""

    def __init__(self, graph: Graph):
        self.graph = graph

    def run(self, inputs: Any, **kwargs) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            feeds = dict(zip(self.graph.inputs, inputs))
        results = run_graph(self.graph, feeds)
        return tuple(results[name] for name in self.graph.outputs)


class CompiledRep(BackendRep):
    """A model compiled by :func:`dcopt.compile`. After each run, ``steps`` counts the build's
    step kinds (kernel, library, view, concat, dynamic, fallback) and ``not_native`` names the
    ops that ran as dynamic or fallback steps ({"Op (kind)": count}); a model whose sizes follow
    from input values compiles at its first run, so both are read from the session then."""

    def __init__(self, session):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.steps: dict[str, int] = {}
        self.not_native: dict[str, int] = {}

    def run(self, inputs: Any, **kwargs) -> list:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            feeds = dict(zip(self.input_names, inputs))
        outputs = self.session.run(None, feeds)
        self.steps = dict(self.session.manifest.get("steps", {}))
        self.not_native = dict(self.session.manifest.get("not_native", {}))
        return outputs


class DcoptBackend(Backend):
    """onnx.backend.base.Backend implementation for dcopt."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> bool:
        try:
            check_supported(import_model(model))
            return True
        except Exception:
            return False

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", compiled: bool = False,
                cache_dir: str | None = None, **kwargs) -> DcoptRep | CompiledRep:
        """Import and verify ``model``; ``compiled=True`` compiles it with :func:`dcopt.compile`
        (build cache under ``cache_dir``) instead of running the reference executor."""
        super().prepare(model, device, **kwargs)
        if compiled:
            import dcopt

            return CompiledRep(dcopt.compile(model, cache_dir=cache_dir))
        graph = import_model(model)
        check_supported(graph)
        return DcoptRep(graph)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None, opset: int | None = None,
                 **kwargs) -> tuple[np.ndarray, ...]:
        """Run one node on concrete inputs: it is wrapped in a model typed from the inputs."""
        arrays = [np.asarray(a) for a in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
        names = [n for n in node.input if n]
        graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                        for n, a in zip(names, arrays)]
        outputs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
        if outputs_info:
            outputs = [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape)
                       for o, (dt, shape) in zip([o for o in node.output if o], outputs_info)]
        version = opset or onnx.defs.onnx_opset_version()
        model = helper.make_model(helper.make_graph([node], "run_node", graph_inputs, outputs),
                                  opset_imports=[helper.make_opsetid(node.domain or "", version)])
        if not outputs_info:  # let ONNX type the outputs (the checker in prepare wants types)
            model = onnx.shape_inference.infer_shapes(model)
        return cls.prepare(model, device).run(arrays)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = DcoptBackend.prepare
run_model = DcoptBackend.run_model
run_node = DcoptBackend.run_node
supports_device = DcoptBackend.supports_device
