"""The Python API: load, save and run models. The CLI is a thin layer over these.

Every bad argument or input is a :class:`~dcopt.errors.DcoptError` naming what is wrong (the
argument, the file, the input), never a TypeError or MemoryError from deep inside.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from dcopt.errors import ArgumentError, DcoptError, ModelLoadError
from dcopt.ir.graph import Graph

MODEL_SUFFIXES = (".onnx", ".json", ".pt2")


def _path_argument(path, argument: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentError(f"expected a file path, got {type(path).__name__}", argument=argument)
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip() or "\0" in text:
        raise ArgumentError(f"'{text}' is not a usable file path", argument=argument)
    return Path(text)


def load_graph(path: str | os.PathLike, *, check_memory: bool = True) -> Graph:
    """Load a model file as IR: ``.onnx`` through the ONNX frontend (validated), ``.json`` as dcopt
    IR, ``.pt2`` (``torch.export.save``) through the PyTorch frontend. Static tensor sizes are
    checked against int64 and, unless ``check_memory=False`` (for commands that only describe a
    model), the memory cap of :mod:`dcopt.limits`."""
    path = _path_argument(path, "path")
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        try:
            from dcopt.frontends.torch_import import load_pt2
        except ImportError as exc:
            raise ModelLoadError(f"loading .pt2 programs needs PyTorch ({exc}); pip install torch", file=str(path)) from None
        graph = load_pt2(path)
    elif suffix == ".json":
        graph = _load_ir(path)
    elif suffix == ".onnx" or path.is_file():
        from dcopt.frontends.onnx_import import import_model

        return import_model(path, check_memory=check_memory)
    else:
        raise ModelLoadError(f"unrecognized model file (expected one of {', '.join(MODEL_SUFFIXES)})",
                             file=str(path))
    from dcopt.limits import check_graph_sizes

    check_graph_sizes(graph, default=None, file=str(path), check_memory=check_memory)
    return graph


def _load_ir(path: Path) -> Graph:
    """dcopt IR JSON; whatever a damaged file makes the deserializer trip over (a null where a
    mapping belongs, a string for a version) is a ModelLoadError naming the file."""
    from dcopt.ir import serialize

    try:
        return serialize.load(path)
    except DcoptError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read the file: {getattr(exc, 'strerror', None) or exc}", file=str(path)) \
            from None
    except Exception as exc:  # noqa: BLE001 - untrusted data: every failure to decode it is a bad file
        raise ModelLoadError(f"malformed dcopt IR file: {type(exc).__name__}: {exc}", file=str(path)) from None


def check_model_output(path: str | os.PathLike) -> Path:
    """``path`` if :func:`save_graph` can write a model there, else a DcoptError saying why -- what
    commands call before doing any work."""
    from dcopt.outputs import check_output_path

    path = _path_argument(path, "path")
    if path.suffix.lower() not in (".json", ".onnx"):
        raise DcoptError(f"cannot write '{path}': output must end in .onnx or .json")
    target = check_output_path(path)
    if target.is_dir():
        raise DcoptError(f"cannot write '{path}': it is a directory")
    if not target.parent.is_dir():
        raise DcoptError(f"cannot write '{path}': directory '{target.parent}' does not exist")
    return path


def save_graph(graph: Graph, path: str | os.PathLike) -> None:
    """Write IR to ``.onnx`` (exported, checked) or ``.json`` (lossless IR), atomically. A path that
    cannot be written (a directory, under a file, a pseudo file system, no permission) is a
    DcoptError naming it."""
    path = check_model_output(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            from dcopt.ir import serialize

            serialize.save(graph, path)
        else:
            from dcopt.frontends.onnx_export import save_onnx

            save_onnx(graph, path)
    except OSError as exc:
        raise DcoptError(f"cannot write '{path}': {exc.strerror or exc}") from None


def random_inputs(graph: Graph, *, seed: int = 0, bindings: Mapping[str, int] | None = None,
                  dim_size: int = 1) -> dict[str, np.ndarray]:
    """One random array per graph input (:func:`dcopt.ir.feeds.random_inputs`), each checked
    against the size limits first: an input of shape [2**40] or ``--dim N=99999999999999`` is a
    SizeLimitError naming the input, not a MemoryError."""
    from dcopt.ir.feeds import random_inputs as draw
    from dcopt.limits import check_graph_sizes

    check_graph_sizes(graph, bindings, default=dim_size, containers=graph.inputs)
    return draw(graph, seed=seed, bindings=bindings, dim_size=dim_size)


def run(graph: Graph, feeds: Mapping[str, np.ndarray], *, backend: str = "reference",
        file: str | None = None) -> dict[str, np.ndarray]:
    """Run a graph on a backend; returns ``{output name: array}``. ``feeds`` is checked first
    (:func:`dcopt.feeds_check.check_feeds`: a mapping, known names, arrays in native byte order)."""
    if not isinstance(graph, Graph):
        raise ArgumentError(f"expected a dcopt Graph (dcopt.api.load_graph), got {type(graph).__name__}",
                            argument="graph")
    if backend != "reference":
        raise DcoptError(f"unknown backend '{backend}' (available: reference)")
    from dcopt.feeds_check import check_feeds
    from dcopt.ir.executor import check_supported, run_graph

    feeds = check_feeds(feeds, [(n, graph.containers[n].type) for n in graph.inputs])
    check_supported(graph, file=file)
    return run_graph(graph, feeds, file=file)
