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
    #: set for plugins: how errors name the entry point that provided the format
    plugin: str | None = None

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


def plugin_label(ep) -> str:
    """How errors name an entry point: group, name and ``module:attr``, and its package."""
    dist = getattr(getattr(ep, "dist", None), "name", None)
    return f"'{ep.name}' ({ep.group} = {ep.value}{', package ' + dist if dist else ''})"


def load_entry_point(ep, what: str):
    """``ep.load()``, with any failure (an import error inside the plugin, a missing attribute) as a
    PluginError naming the entry point instead of a traceback from someone else's package."""
    from dcopt.versions.errors import PluginError

    try:
        return ep.load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin is named, not a traceback
        raise PluginError(f"{what} plugin {plugin_label(ep)} failed to load: "
                          f"{type(exc).__name__}: {exc}") from None


def _plugin_format(ep) -> ModelFormat:
    """The ModelFormat an entry point names (a subclass, instantiated, or an instance), checked
    now -- an abstract method left out, a wrong type or a clashing name fails here, by name."""
    from dcopt.versions.errors import PluginError

    obj = load_entry_point(ep, "model format")
    if isinstance(obj, type) and issubclass(obj, ModelFormat):
        missing = sorted(getattr(obj, "__abstractmethods__", ()))
        if missing:
            raise PluginError(f"model format plugin {plugin_label(ep)}: {obj.__name__} does not implement "
                              f"{', '.join(missing)} (every ModelFormat method is required)")
        try:
            obj = obj()
        except Exception as exc:  # noqa: BLE001
            raise PluginError(f"model format plugin {plugin_label(ep)}: {obj.__name__}() failed: "
                              f"{type(exc).__name__}: {exc}") from None
    if not isinstance(obj, ModelFormat):
        raise PluginError(f"model format plugin {plugin_label(ep)} names a {type(obj).__name__}, not a "
                          "dcopt.versions.formats.ModelFormat subclass or instance")
    if not isinstance(obj.name, str) or not obj.name or obj.name == "?":
        raise PluginError(f"model format plugin {plugin_label(ep)}: {type(obj).__name__}.name must be set "
                          "to the format's name")
    obj.plugin = plugin_label(ep)
    return obj


@functools.lru_cache(maxsize=None)
def registered() -> tuple[ModelFormat, ...]:
    """Built-in formats, then the plugins of the ``dcopt.model_formats`` entry point group (a
    broken one is a PluginError: silently skipping it would store its files as opaque blobs)."""
    from importlib.metadata import entry_points

    from dcopt.versions.errors import PluginError

    formats = _builtin()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        fmt = _plugin_format(ep)
        clash = next((f for f in formats if f.name == fmt.name), None)
        if clash is not None:
            raise PluginError(f"model format plugin {plugin_label(ep)}: format name '{fmt.name}' is already "
                              f"taken by {getattr(clash, 'plugin', None) or 'a built-in format'}")
        formats.append(fmt)
    return tuple(formats)


def call(fmt: ModelFormat, method: str, *args):
    """``fmt.<method>(*args)``; for a plugin format, an exception that is not a DcoptError becomes a
    PluginError naming the plugin, the method and the file (``args[1]``), not a traceback."""
    try:
        return getattr(fmt, method)(*args)
    except Exception as exc:
        from dcopt.errors import DcoptError
        from dcopt.versions.errors import PluginError

        if fmt.plugin is None or isinstance(exc, DcoptError):
            raise
        raise PluginError(f"model format plugin {fmt.plugin}: {method}() raised {type(exc).__name__}: {exc}",
                          file=str(args[1]) if len(args) > 1 else None) from None


def by_name(name: str) -> ModelFormat:
    for fmt in registered():
        if fmt.name == name:
            return fmt
    raise ModelLoadError(f"unknown model format '{name}' (known: {', '.join(f.name for f in registered())})")


def sniff(data: bytes, file: str = "<data>") -> ModelFormat:
    """The format of ``data``, from its content; ModelLoadError naming the file if none fits."""
    head = bytes(data[:4096])
    for fmt in registered():
        try:
            found = fmt.sniff(head)
        except Exception as exc:  # noqa: BLE001 - only a plugin's sniff can raise
            from dcopt.versions.errors import PluginError

            raise PluginError(f"model format plugin {getattr(fmt, 'plugin', fmt.name)}: sniff() raised "
                              f"{type(exc).__name__}: {exc}", file=file) from None
        if found:
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
