"""The Python API: load, save and run models. The CLI is a thin layer over these."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from dcopt.errors import DcoptError, ModelLoadError
from dcopt.ir.feeds import random_inputs  # noqa: F401  (part of the API)
from dcopt.ir.graph import Graph

MODEL_SUFFIXES = (".onnx", ".json", ".pt2")


def load_graph(path: str | os.PathLike) -> Graph:
    """Load a model file as IR: ``.onnx`` through the ONNX frontend, ``.json`` as dcopt IR,
    ``.pt2`` (``torch.export.save``) through the PyTorch frontend."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        try:
            from dcopt.frontends.torch_import import load_pt2
        except ImportError as exc:
            raise ModelLoadError(f"loading .pt2 programs needs PyTorch ({exc}); pip install torch", file=str(path)) from None
        return load_pt2(path)
    if suffix == ".json":
        from dcopt.ir import serialize

        return serialize.load(path)
    if suffix == ".onnx" or path.is_file():
        from dcopt.frontends.onnx_import import import_model

        return import_model(path)
    raise ModelLoadError(f"unrecognized model file (expected one of {', '.join(MODEL_SUFFIXES)})", file=str(path))


def save_graph(graph: Graph, path: str | os.PathLike) -> None:
    """Write IR to ``.onnx`` (exported, checked) or ``.json`` (lossless IR), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        from dcopt.ir import serialize

        serialize.save(graph, path)
    elif suffix == ".onnx":
        from dcopt.frontends.onnx_export import save_onnx

        save_onnx(graph, path)
    else:
        raise DcoptError(f"cannot write '{path}': output must end in {' or '.join(MODEL_SUFFIXES)}")


def run(graph: Graph, feeds: Mapping[str, np.ndarray], *, backend: str = "reference",
        file: str | None = None) -> dict[str, np.ndarray]:
    """Run a graph on a backend; returns ``{output name: array}``."""
    if backend != "reference":
        raise DcoptError(f"unknown backend '{backend}' (available: reference)")
    from dcopt.ir.executor import check_supported, run_graph

    check_supported(graph, file=file)
    return run_graph(graph, feeds, file=file)
