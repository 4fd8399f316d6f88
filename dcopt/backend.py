"""The ONNX backend API (``onnx.backend.base.Backend``) over dcopt.

Lets onnx's own test machinery drive dcopt::

    import dcopt.backend as backend
    rep = backend.prepare(model)          # import + verify
    outputs = rep.run([x])                # reference executor

``device`` is ``"CPU"``; ``prepare(..., backend="reference")`` selects the executor.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
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
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> DcoptRep:
        super().prepare(model, device, **kwargs)
        graph = import_model(model)
        check_supported(graph)
        return DcoptRep(graph)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None, **kwargs):
        raise NotImplementedError("dcopt runs whole models; wrap the node in a model with onnx.helper.make_model")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = DcoptBackend.prepare
run_model = DcoptBackend.run_model
run_node = DcoptBackend.run_node
supports_device = DcoptBackend.supports_device
