"""One small adapter per runtime: prepare a model once, return a zero-argument call.

Every adapter binds the model's fixed feeds at prepare time and returns a
:class:`Prepared` whose ``call()`` runs one inference and returns the outputs as numpy arrays
in the ONNX graph's output order, so the timing loop treats all runtimes alike and the
correctness check can compare them element for element against onnxruntime.

All runtimes get the same thread count, batch 1, and no inter-op parallelism.

The one seam the lead re-points when the compiled backend lands is :func:`dcopt_session`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from benchmarks.models import BenchModel

RUNTIMES = ("dcopt", "onnxruntime", "torch", "openvino", "dcopt-torch", "inductor")
#: Run only when named (``--runtimes``): each compiles through torch.compile, which takes long.
OPT_IN = ("dcopt-torch", "inductor")
REFERENCE_RUNTIME = "onnxruntime"  # correctness reference and the peer every model has


class NotApplicable(Exception):
    """The runtime does not apply to this model (e.g. torch for a model not built in torch)."""


@dataclass
class Prepared:
    runtime: str
    backend: str                       # what exactly runs, named in the report
    call: Callable[[], list[np.ndarray]]
    settings: dict[str, Any] = field(default_factory=dict)


# --- dcopt: THE seam --------------------------------------------------------------------------

@dataclass
class DcoptSession:
    """What :func:`dcopt_session` returns: a backend name and ``run(feeds) -> [outputs]``."""

    backend: str
    run: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]
    settings: dict[str, Any] = field(default_factory=dict)


def dcopt_session(model_path, threads: int, pipeline: str = "O3", patches=()) -> DcoptSession:
    """Compile ``model_path`` with dcopt's CPU backend (``pipeline``, default O3; idea ``patches``)
    and return a session that runs it.

    BLAS is the backend's one thread pool and gets ``threads`` threads (the generated kernels are
    serial); ``--dcopt-blas-threads`` in ``benchmarks.run`` may override it (see its help).
    """
    import dcopt.compiled as dc

    sess = dc.compile(str(model_path), threads=threads, pipeline=pipeline, patches=list(patches))
    patched = f", patches {', '.join(patches)}" if patches else ""
    return DcoptSession(f"dcopt cpu backend ({pipeline}{patched}, numba kernels + OpenBLAS, {threads} BLAS thread(s))",
                        lambda feeds: sess.run(None, feeds),
                        {"blas_threads": threads, "steps": sess.manifest.get("steps"),
                         "not_native": sess.manifest.get("not_native")})


def prepare_dcopt(model: BenchModel, threads: int, pipeline: str = "O3", patches=()) -> Prepared:
    session = dcopt_session(model.path, threads, pipeline, patches)
    feeds = dict(model.feeds)
    return Prepared("dcopt", session.backend, lambda: session.run(feeds), dict(session.settings))


# --- peers --------------------------------------------------------------------------------------

def prepare_onnxruntime(model: BenchModel, threads: int) -> Prepared:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    feeds = dict(model.feeds)
    return Prepared("onnxruntime", f"onnxruntime {ort.__version__} CPUExecutionProvider",
                    lambda: sess.run(names, feeds),
                    {"intra_op_num_threads": threads, "inter_op_num_threads": 1,
                     "execution_mode": "sequential", "graph_optimization_level": "ALL"})


def _torch_setup(model: BenchModel, threads: int):
    """The model's torch twin (eval mode) and its feeds as tensors, with torch's threads set."""
    if model.torch_factory is None:
        raise NotApplicable("not a torch model")
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # can only be set once per process, before any inter-op work
        pass
    module = model.torch_factory()
    module.eval()
    return module, tuple(torch.from_numpy(model.feeds[n]) for n in model.torch_input_names)


def _torch_prepared(runtime: str, backend: str, function, args) -> Prepared:
    import torch

    def call():
        with torch.inference_mode():
            out = function(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.numpy() for o in outs]

    return Prepared(runtime, backend, call,
                    {"num_threads": torch.get_num_threads(), "num_interop_threads": torch.get_num_interop_threads()})


def prepare_torch(model: BenchModel, threads: int) -> Prepared:
    import torch

    module, args = _torch_setup(model, threads)
    return _torch_prepared("torch", f"torch {torch.__version__} eager (inference_mode)", module, args)


def prepare_torch_dcopt(model: BenchModel, threads: int) -> Prepared:
    """``torch.compile(module, backend="dcopt")``: the PyTorch user's path into dcopt (no ONNX)."""
    import torch

    import dcopt.frontends.torch_backend  # noqa: F401  (registers backend="dcopt")

    module, args = _torch_setup(model, threads)
    torch._dynamo.reset()
    return _torch_prepared("dcopt-torch", f"torch.compile(backend='dcopt') on torch {torch.__version__} "
                           "(inference_mode)", torch.compile(module, backend="dcopt"), args)


def prepare_inductor(model: BenchModel, threads: int) -> Prepared:
    """``torch.compile(module)``: PyTorch's own compiler (C++/OpenMP codegen), the peer for the
    torch.compile path."""
    import torch

    module, args = _torch_setup(model, threads)
    torch._dynamo.reset()
    return _torch_prepared("inductor", f"torch.compile (inductor) on torch {torch.__version__} (inference_mode)",
                           torch.compile(module), args)


def prepare_openvino(model: BenchModel, threads: int) -> Prepared:
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": "f32"}  # f32: no silent bf16 on AVX-512-BF16 CPUs
    compiled = core.compile_model(str(model.path), "CPU", config)
    request = compiled.create_infer_request()
    outputs = list(compiled.outputs)
    feeds = dict(model.feeds)

    def call():
        result = request.infer(feeds)
        return [np.array(result[o]) for o in outputs]

    return Prepared("openvino", f"openvino {ov.__version__.split('-')[0]} CPU", call,
                    {k: str(v) for k, v in config.items()})


PREPARERS: dict[str, Callable[[BenchModel, int], Prepared]] = {
    "dcopt": prepare_dcopt,
    "onnxruntime": prepare_onnxruntime,
    "torch": prepare_torch,
    "openvino": prepare_openvino,
    "dcopt-torch": prepare_torch_dcopt,
    "inductor": prepare_inductor,
}
_MODULES = {"dcopt": "dcopt", "onnxruntime": "onnxruntime", "torch": "torch", "openvino": "openvino",
            "dcopt-torch": "torch", "inductor": "torch"}


def available(runtime: str) -> bool:
    """Importable here (checked without importing, so it costs nothing)."""
    return importlib.util.find_spec(_MODULES[runtime]) is not None


def default_runtimes() -> list[str]:
    return [r for r in RUNTIMES if r not in OPT_IN and available(r)]
