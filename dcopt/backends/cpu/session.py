"""The user-facing object: compile a model, run it like an onnxruntime InferenceSession,
save it as a build directory and load it back.

    sess = dcopt.compile("model.onnx")            # -> CpuSession
    probs, = sess.run(None, {"image": x})
    sess.save("model.dcopt"); sess2 = dcopt.load("model.dcopt")

Compilation = import -> specialize sizes -> pass pipeline -> lower -> render -> compile. The
result is keyed by everything that changes it (model bytes, pipeline, patches, sizes,
toolchain, backend sources) and kept as a build directory in the cache, so compiling the same
model again only loads weights and cached machine code ("warm compile").

Symbolic dims (``N``) are bound at compile time (``dims=`` or 1). A run with other sizes
recompiles for them when the session still has its source model, else raises InputError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from dcopt.backends.cpu import build
from dcopt.backends.cpu.runtime import CompiledModel
from dcopt.errors import InputError

_ONNX_TYPE = {"float32": "float", "float64": "double", "int64": "int64", "int32": "int32", "bool": "bool",
              "float16": "float16", "uint8": "uint8", "int8": "int8"}


@dataclass(frozen=True)
class NodeArg:
    """Like onnxruntime's NodeArg: ``name``, ``shape`` (symbolic dims as strings), ``type``."""

    name: str
    shape: list
    type: str
    dtype: str


class CpuSession:
    def __init__(self, built: build.Build, source: build.Source | None = None, cache_dir=None, pipeline=None):
        self._builds = {tuple(sorted(built.bindings.items())): built}
        self._current = built
        self._model = CompiledModel(built.program, built.module, built.native)
        self.threads = self._model.threads  # later variants (new sizes) are bound for the same count
        self._models = {tuple(sorted(built.bindings.items())): self._model}
        self._source = source
        self._cache_dir = cache_dir
        self._pipeline = pipeline if pipeline is not None else built.manifest["pipeline"]
        self.manifest = built.manifest
        sig = built.manifest["signature"]
        self._inputs = [NodeArg(d["name"], d["shape"], f"tensor({_ONNX_TYPE.get(d['dtype'], d['dtype'])})", d["dtype"])
                        for d in sig["inputs"]]
        self._outputs = [NodeArg(d["name"], d["shape"], f"tensor({_ONNX_TYPE.get(d['dtype'], d['dtype'])})", d["dtype"])
                         for d in sig["outputs"]]
        self._out_index = {o.name: i for i, o in enumerate(self._outputs)}

    # -- onnxruntime-like API ------------------------------------------------------------
    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray], run_options=None) -> list:
        if len(feeds) != len(self._inputs) or any(i.name not in feeds for i in self._inputs):
            self._check_names(feeds)
        if not all(isinstance(v, np.ndarray) for v in feeds.values()):  # lists, scalars: as onnxruntime
            feeds = {k: np.asarray(v) for k, v in feeds.items()}
        try:
            results = self._model.run(feeds)
        except InputError:  # other sizes (or a genuinely bad input: _model_for says which)
            results = self._model_for(feeds).run(feeds)
        if output_names is None:
            return results
        try:
            return [results[self._out_index[n]] for n in output_names]
        except KeyError as exc:
            raise InputError(f"unknown output {exc}; the model's outputs are {list(self._out_index)}") from None

    def _check_names(self, feeds: Mapping) -> None:
        names = [i.name for i in self._inputs]
        unknown = sorted(set(feeds) - set(names))
        if unknown:
            raise InputError(f"unknown input(s) {unknown}; the model's inputs are {names}")
        missing = [n for n in names if n not in feeds]
        raise InputError(f"missing input(s) {missing}")

    def _model_for(self, feeds: Mapping[str, np.ndarray]) -> CompiledModel:
        """Bind symbolic dims from ``feeds``; switch to (or compile) the matching variant."""
        bindings: dict[str, int] = {}
        for arg in self._inputs:
            value = feeds[arg.name]
            if not isinstance(value, np.ndarray):
                raise InputError(f"expected a numpy array, got {type(value).__name__}", input=arg.name)
            if value.dtype != np.dtype(arg.dtype):
                raise InputError(f"expected dtype {arg.dtype}, got {value.dtype}", input=arg.name)
            if value.ndim != len(arg.shape):
                raise InputError(f"expected shape {arg.shape}, got {list(value.shape)} (rank {len(arg.shape)} vs "
                                 f"{value.ndim})", input=arg.name)
            for axis, (want, got) in enumerate(zip(arg.shape, value.shape)):
                if isinstance(want, int) and want != got:
                    raise InputError(f"expected shape {arg.shape}, got {list(value.shape)} (axis {axis}: {want} vs "
                                     f"{got})", input=arg.name)
                if isinstance(want, str) and bindings.setdefault(want, got) != got:
                    raise InputError(f"symbolic dim '{want}' is {bindings[want]} elsewhere but {got} here",
                                     input=arg.name)
        key = tuple(sorted(bindings.items()))
        if key not in self._models:
            if self._source is None:
                raise InputError(f"this build was compiled for {dict(self._current.bindings)}, got {bindings}; "
                                 "recompile for the new sizes")
            built = build.build(self._source, dims=bindings, pipeline=self._pipeline,
                                patches=self.manifest["patches"], cache_dir=self._cache_dir, example_feeds=feeds)
            self._builds[key] = built
            self._models[key] = CompiledModel(built.program, built.module, built.native, self.threads)
        self._model, self._current = self._models[key], self._builds[key]
        self.manifest = self._current.manifest
        return self._model

    def warm_up(self) -> None:
        """One run on zero inputs: numba compiles (or loads from its cache) every kernel now,
        so compile time is paid by ``compile``/``load``, not by the first ``run``."""
        try:
            self._model.run({a.name: buf for a, (_, buf) in zip(self._inputs, self._model.input_buffers)})
        except Exception:  # noqa: BLE001 - an op that rejects all-zero inputs; the real run reports it
            pass

    def random_feeds(self, seed: int = 0, dims: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """Random inputs of this model's signature (symbolic dims: ``dims``, else the compiled
        sizes); what ``dcopt run --random-inputs`` feeds a build directory."""
        from dcopt.api import random_inputs
        from dcopt.ir.graph import Graph
        from dcopt.ir.types import TensorType

        graph = Graph("signature")
        for arg in self._inputs:
            graph.add_input(arg.name, TensorType(arg.dtype, tuple(arg.shape)))
        return random_inputs(graph, seed=seed, bindings={**self._current.bindings, **dict(dims or {})})

    # -- build directories ---------------------------------------------------------------
    def save(self, path: str | os.PathLike, force: bool = False) -> Path:
        """Write the build directory (manifest, kernels, program, weights, source model).

        ``path`` must not exist, or be a dcopt build and ``force`` set: nothing else is ever
        replaced (:mod:`dcopt.outputs`)."""
        return build.copy_build(self._current, Path(path), self._source, force)

    @property
    def bindings(self) -> dict[str, int]:
        return dict(self._current.bindings)

    @property
    def arena_bytes(self) -> int:
        return self._model.arena_bytes


def compile_model(model, *, pipeline="O3", target: str = "cpu", threads: int | None = None,
                  dims: Mapping[str, int] | None = None, patches: Sequence[str] = (),
                  cache_dir=None, example_feeds=None) -> CpuSession:
    """Compile an ONNX model (path or ModelProto) for the cpu target; see :mod:`build`."""
    from dcopt.errors import UnsupportedError

    if target != "cpu":
        raise UnsupportedError(f"unknown target '{target}' (available: cpu)")
    source = build.load_source(model)
    set_threads(threads)
    built = build.build(source, dims=dims, pipeline=pipeline, patches=patches, cache_dir=cache_dir,
                        example_feeds=example_feeds)
    session = CpuSession(built, source, cache_dir, pipeline)
    session.warm_up()
    return session


def set_threads(threads: int | None) -> None:
    """Threads of the backend's one pool for the steps bound next (:mod:`parallel`; BLAS itself
    stays single-threaded). Default: every core this process may use, as onnxruntime does. A
    core another process holds no longer stalls a step: workers claim tasks and the calling
    thread runs whatever no worker took (:mod:`threadpool`)."""
    from dcopt.backends.cpu.parallel import set_threads as set_pool_threads

    set_pool_threads(threads)


def load_build(path: str | os.PathLike, cache_dir=None, threads: int | None = None) -> CpuSession:
    set_threads(threads)
    built = build.load(Path(path), cache_dir=cache_dir)
    source = None
    for name in ("model.onnx", "model.json"):
        if (Path(path) / name).is_file():
            source = build.load_source(Path(path) / name)
    session = CpuSession(built, source, cache_dir)
    session.warm_up()
    return session
