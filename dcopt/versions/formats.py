"""Model file formats, recognized by their content rather than their file name.

A format knows three things about a file: where each parameter's bytes are (:class:`Payload`:
name, dtype, shape, byte range), what the model's structure is (:class:`Structure`: nodes,
inputs, outputs, opsets, metadata), and how to write the same structure with other parameter
values (merges). Built in: ONNX protobuf, safetensors, PyTorch state dicts (``torch.save`` zip
or legacy pickle; read with ``torch.load(weights_only=True)``, so only when torch is installed).

More formats come from installed packages through the ``dcopt.model_formats`` entry point group:
each entry point names a :class:`ModelFormat` subclass (or instance); it is tried after the
built-in formats, in entry-point name order.
"""

from __future__ import annotations

import abc

import functools
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from dcopt.errors import ModelLoadError

ENTRY_POINT_GROUP = "dcopt.model_formats"


@dataclass(frozen=True)
class Payload:
    """One parameter's bytes inside a model file.

    ``encoding`` says what the bytes are: ``raw`` -- the array's little-endian element bytes
    (so deltas can be computed on them); ``varint`` -- a protobuf packed varint field, opaque
    (stored whole, never as a delta)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class NodeRecord:
    """One op of a model's graph, as compared by ``dcopt diff``: attribute values are canonical
    strings (a tensor attribute is its dtype, shape and sha256)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: Mapping[str, str]

    def line(self) -> str:
        attrs = ", ".join(f"{k}={v}" for k, v in sorted(self.attributes.items()))
        return (f"node {self.name or '<unnamed>'}: {self.op}({', '.join(self.inputs)}) -> "
                f"({', '.join(self.outputs)})" + (f" {{{attrs}}}" if attrs else ""))


@dataclass
class Structure:
    """Everything about a model except its parameter values."""

    nodes: list[NodeRecord] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)    # "name: type" lines
    outputs: list[str] = field(default_factory=list)
    opsets: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"opset {domain or 'ai.onnx'} {version}" for domain, version in sorted(self.opsets.items())]
        out += [f"meta {k} = {v}" for k, v in sorted(self.metadata.items())]
        out += [f"input {i}" for i in self.inputs] + [f"output {o}" for o in self.outputs]
        return out + [n.line() for n in self.nodes]


class ModelFormat(abc.ABC):
    """A model file format. Subclasses set ``name`` and implement the methods; ``sniff`` must be
    cheap (it sees the first 4 KiB). A plugin that leaves one out cannot be instantiated, so it
    fails when it is loaded, naming the missing method, not halfway through a commit."""

    name = "?"

    @abc.abstractmethod
    def sniff(self, head: bytes) -> bool:
        ...

    @abc.abstractmethod
    def payloads(self, data: bytes, file: str) -> list[Payload]:
        """The parameters whose bytes can be stored apart from the file, in file order,
        non-overlapping. Parameters left out stay in the file's skeleton."""
        ...

    @abc.abstractmethod
    def arrays(self, data: bytes, file: str, path=None) -> dict[str, np.ndarray]:
        """Every parameter as an array (including ones not in :meth:`payloads`, e.g. ONNX
        external data, read relative to ``path``)."""
        ...

    @abc.abstractmethod
    def structure(self, data: bytes, file: str) -> Structure:
        ...

    @abc.abstractmethod
    def replace(self, data: bytes, arrays: Mapping[str, np.ndarray], file: str) -> bytes:
        """The same model with the parameters in ``arrays`` set to new values (same names,
        dtypes and shapes)."""
        ...


def _builtin() -> list[ModelFormat]:
    from dcopt.versions.onnx_format import OnnxFormat
    from dcopt.versions.safetensors_format import SafetensorsFormat
    from dcopt.versions.torch_format import TorchFormat

    return [SafetensorsFormat(), TorchFormat(), OnnxFormat()]  # ONNX last: its sniff is the loosest


@functools.lru_cache(maxsize=None)
def registered() -> tuple[ModelFormat, ...]:
    """Built-in formats, then the plugins of the ``dcopt.model_formats`` entry point group."""
    from importlib.metadata import entry_points

    formats = _builtin()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is named, not a traceback
            raise ModelLoadError(f"model format plugin '{ep.name}' ({ep.value}) failed to load: "
                                 f"{type(exc).__name__}: {exc}") from None
        formats.append(obj() if isinstance(obj, type) else obj)
    return tuple(formats)


def by_name(name: str) -> ModelFormat:
    for fmt in registered():
        if fmt.name == name:
            return fmt
    raise ModelLoadError(f"unknown model format '{name}' (known: {', '.join(f.name for f in registered())})")


def sniff(data: bytes, file: str = "<data>") -> ModelFormat:
    """The format of ``data``, from its content; ModelLoadError naming the file if none fits."""
    head = bytes(data[:4096])
    for fmt in registered():
        if fmt.sniff(head):
            return fmt
    raise ModelLoadError(f"not a model file dcopt knows (ONNX, safetensors, PyTorch state dict"
                         f"{', ' + ', '.join(f.name for f in registered()[3:]) if len(registered()) > 3 else ''}); "
                         f"first bytes {head[:8]!r}", file=file)


def numpy_dtype(name: str) -> np.dtype:
    """``np.dtype`` for a dtype name, including ml_dtypes' (bfloat16, float8_*)."""
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
