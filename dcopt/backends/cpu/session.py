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
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from dcopt.backends.cpu import build
from dcopt.backends.cpu.resident import release_toolchain_pages, return_freed_memory
from dcopt.backends.cpu.source import Source, load_source
from dcopt.errors import InputError
from dcopt.feeds_check import FeedChecker
from dcopt.ir.dtypes import to_numpy

if TYPE_CHECKING:
    from dcopt.backends.cpu.runtime import CompiledModel

_ONNX_TYPE = {"float32": "float", "float64": "double", "int64": "int64", "int32": "int32", "bool": "bool",
              "float16": "float16", "uint8": "uint8", "int8": "int8"}


@dataclass(frozen=True)
class NodeArg:
    """Like onnxruntime's NodeArg: ``name``, ``shape`` (symbolic dims as strings), ``type``."""

    name: str
    shape: list
    type: str
    dtype: str


def _value_type(d: dict):
    """The dcopt type a signature entry declares (what feeds are checked against)."""
    from dcopt.ir.types import OptionalType, SequenceType, TensorType

    tensor = TensorType(d["dtype"], None if d["shape"] is None else tuple(d["shape"]))
    return {"sequence": SequenceType, "optional": OptionalType}.get(d.get("kind"), lambda t: t)(tensor)


def _signature_args(signature: list[dict]) -> list[NodeArg]:
    def kind(d):
        tensor = f"tensor({_ONNX_TYPE.get(d['dtype'], d['dtype'])})"
        return {"sequence": f"seq({tensor})", "optional": f"optional({tensor})"}.get(d.get("kind"), tensor)

    return [NodeArg(d["name"], d["shape"], kind(d), d["dtype"]) for d in signature]


class CpuSession:
    """Compiled variants of one model, keyed by what they were specialized for: the sizes of
    symbolic input dims and the values of the inputs that decide sizes
    (:mod:`dcopt.ir.specialization`). A run picks the variant its feeds match and compiles one
    on the first feed that matches none (when the session still has its source model)."""

    def __init__(self, source: Source | None, signature: dict, *, cache_dir=None, pipeline="O3",
                 patches: Sequence[str] = (), value_inputs: Mapping[str, list[str]] | None = None,
                 threads: int | None = None, dynamic: Sequence[str] | bool = ()):
        self._source = source
        self._dynamic = dynamic  # symbols builds leave free (one build, bound per size)
        self._cache_dir = cache_dir
        self._pipeline = pipeline
        self._patches = list(patches)
        self._value_inputs = dict(value_inputs or {})
        self._threads = threads  # applied to the pool when something first runs (no numba before)
        self._inputs = _signature_args(signature["inputs"])
        self._input_types = [_value_type(d) for d in signature["inputs"]]
        self._check_feeds = FeedChecker([(a.name, t) for a, t in zip(self._inputs, self._input_types)])
        #: inputs that are sequences or optionals (fed as lists or None, not arrays)
        self._containers = {d["name"] for d in signature["inputs"] if d.get("kind", "tensor") != "tensor"}
        self._outputs = _signature_args(signature["outputs"])
        self._out_index = {o.name: i for i, o in enumerate(self._outputs)}
        self._variants: dict[tuple, tuple[build.Build, CompiledModel]] = {}
        self._current: build.Build | None = None
        self._model: CompiledModel | None = None
        self._key: tuple | None = None

    def _adopt(self, key: tuple, built: build.Build) -> None:
        if key not in self._variants:
            self._variants[key] = (built, None)
            bound = [k for k, (_, m) in self._variants.items() if m is not None]
            for old in bound[:max(len(bound) - MAX_BOUND + 1, 0)]:  # oldest sizes give their arenas back
                self._variants[old] = (self._variants[old][0], None)
        self._current, self._model = self._variants[key]
        self._key = key

    def _runnable(self) -> CompiledModel:
        """The current variant's runtime, bound on first use (kernels loaded then). A build for
        every size is bound here for the sizes of the variant's key."""
        if self._model is None:
            from dcopt.backends.cpu.runtime import CompiledModel  # numba: imported when something runs

            built = self._current
            set_threads(self._threads)
            self._model = CompiledModel(built.program, built.module, built.native, self.threads, dict(self._key[0]))
            self._variants[self._key] = (built, self._model)
        return self._model

    def _serving(self, bindings: Mapping[str, int], values_key) -> build.Build | None:
        """A build for every size among the variants that serves ``bindings``: same sizes of the
        symbols it fixed, same specialized values (then a new size binds it, nothing compiles)."""
        for key, (built, _) in self._variants.items():
            free = set(built.manifest.get("dynamic", ()))
            if free and key[1] == values_key and all(v == bindings.get(k) for k, v in key[0] if k not in free):
                return built
        return None

    # -- onnxruntime-like API ------------------------------------------------------------
    @property
    def threads(self) -> int:
        """Threads of the backend's pool this session runs on (default: every usable core)."""
        from dcopt.backends.cpu.parallel import threads as pool_threads

        return pool_threads() if self._threads is None else self._threads

    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, np.ndarray], run_options=None) -> list:
        # names, arrays (lists and scalars as onnxruntime takes them), native byte order, dtypes, ranks
        feeds = self._check_feeds(feeds)
        if self._value_inputs or self._current is None:
            results = self._model_for(feeds).run(feeds)
        else:
            try:
                results = self._runnable().run(feeds)
            except InputError:  # other sizes (or a genuinely bad input: _model_for says which)
                results = self._model_for(feeds).run(feeds)
        if output_names is None:
            return results
        try:
            return [results[self._out_index[n]] for n in output_names]
        except KeyError as exc:
            raise InputError(f"unknown output {exc}; the model's outputs are {list(self._out_index)}") from None

    def _feed_key(self, feeds: Mapping[str, np.ndarray]) -> tuple[dict, dict, tuple]:
        """(symbolic dim bindings, specialized values, variant key) of ``feeds``; InputError for
        feeds that match the signature in no way (dtype, rank, a static dim, inconsistent symbols)."""
        bindings: dict[str, int] = {}
        for arg in self._inputs:
            value = feeds[arg.name]
            if arg.name in self._containers or arg.shape is None:
                continue  # a sequence, an optional, or a tensor of unknown rank: checked where it is used
            if not isinstance(value, np.ndarray):
                raise InputError(f"expected a numpy array, got {type(value).__name__}", input=arg.name)
            if value.dtype != to_numpy(arg.dtype):
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
        values = {name: np.array(feeds[name]) for name in self._value_inputs}
        return bindings, values, variant_key(bindings, values)

    def _model_for(self, feeds: Mapping[str, np.ndarray]) -> CompiledModel:
        """The variant ``feeds`` match (compiled now if there is none yet)."""
        bindings, values, key = self._feed_key(feeds)
        if key == self._key:
            return self._runnable()
        if key not in self._variants and (serving := self._serving(bindings, key[1])) is not None:
            self._adopt(key, serving)
        elif key not in self._variants:
            if self._source is None:
                what = f"sizes {bindings}" + (f" and input values {sorted(values)}" if values else "")
                raise InputError(f"this build was compiled for other {what}; recompile (the build directory has "
                                 "no source model to recompile from)")
            built = build.build(self._source, dims=bindings, values=values, pipeline=self._pipeline,
                                patches=self._patches, cache_dir=self._cache_dir, example_feeds=feeds,
                                dynamic=self._dynamic)
            self._adopt(key, built)
        else:
            self._current, self._model = self._variants[key]
            self._key = key
        return self._runnable()

    @property
    def manifest(self) -> dict:
        return self._built().manifest

    @property
    def build_key(self) -> str:
        """The current variant's build key (its directory name in the compile cache): what a run
        record keeps to say two compiles made the same build or not."""
        return self._built().directory.name

    def _built(self) -> build.Build:
        if self._current is None:
            names = ", ".join(f"'{n}' ({'; '.join(why[:2])})" for n, why in self._value_inputs.items())
            raise InputError(f"nothing is compiled yet: the sizes in this model follow from the values of input(s) "
                             f"{names}; run it once, or compile with example_feeds= (CLI: --input NAME=FILE.npy)")
        return self._current

    def prepare(self) -> None:
        """Load the current variant's kernels and bind its buffers, without running it (what a
        caller that times the first run wants done before the clock starts)."""
        if self._current is not None:
            self._runnable()

    def warm_up(self) -> None:
        """One run on zero inputs: numba compiles (or loads from its cache) every kernel now,
        so compile time is paid by ``compile``/``load``, not by the first ``run``."""
        if self._current is None:
            return
        model = self._runnable()
        return_freed_memory()  # what compiling the kernels used: the run adds the weights' pages
        release_toolchain_pages()  # LLVM's code pages: a run never executes them
        try:
            model.run({n: buf for n, buf in model.input_buffers})
        except Exception:  # noqa: BLE001 - an op that rejects all-zero inputs; the real run reports it
            pass

    def profile(self, feeds: Mapping[str, np.ndarray] | None = None, reps: int = 20) -> list[dict]:
        """Median seconds of every step of the program ``feeds`` run (random ones by default):
        ``[{label, kind, seconds}]`` in run order; ``dcopt view --profile`` shows them per node."""
        feeds = self._check_feeds(feeds if feeds is not None else self.random_feeds())
        self.run(None, feeds)  # picks (or compiles) the variant these feeds need
        return self._runnable().profile(feeds, reps)

    def random_feeds(self, seed: int = 0, dims: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """Random inputs of this model's signature (symbolic dims: ``dims``, else the compiled
        sizes); what ``dcopt run --random-inputs`` feeds a build directory. Inputs whose values
        the build is specialized for get those values."""
        from dcopt.api import random_inputs
        from dcopt.ir.graph import Graph
        from dcopt.ir.types import TensorType

        graph = Graph("signature")
        for arg in self._inputs:
            graph.add_input(arg.name, TensorType(arg.dtype, tuple(arg.shape)))
        current = self._built()
        feeds = random_inputs(graph, seed=seed, bindings={**current.bindings, **dict(dims or {})})
        feeds.update({k: np.asarray(v["value"], dtype=v["dtype"]) for k, v in current.manifest.get("values", {}).items()})
        return feeds

    # -- build directories ---------------------------------------------------------------
    def save(self, path: str | os.PathLike, force: bool = False) -> Path:
        """Write the build directory (manifest, kernels, program, weights, source model).

        ``path`` must not exist, or be a dcopt build and ``force`` set: nothing else is ever
        replaced (:mod:`dcopt.outputs`)."""
        return build.copy_build(self._built(), Path(path), self._source, force)

    @property
    def bindings(self) -> dict[str, int]:
        """Sizes of the symbolic dims the current variant runs at (a build for every size: the
        sizes it was last bound to)."""
        built = self._built()
        return dict(self._key[0]) if self._key is not None else dict(built.bindings)

    @property
    def arena_bytes(self) -> int:
        return self._model.arena_bytes if self._model is not None else 0


def compile_model(model, *, pipeline="O3", target: str = "cpu", threads: int | None = None,
                  dims: Mapping[str, int] | None = None, patches: Sequence[str] = (),
                  cache_dir=None, example_feeds=None, warm: bool = True,
                  dynamic: Sequence[str] | bool = ()) -> CpuSession:
    """Compile a model (path, ModelProto or dcopt Graph) for the cpu target; see :mod:`build`.

    Inputs whose values decide sizes (:mod:`dcopt.ir.specialization`) are compiled for their
    values in ``example_feeds``; without those, compilation waits for the first run. ``warm``:
    load every kernel now (one run on zeros) so the first ``run`` pays nothing; ``dcopt
    compile``, which only writes the build, skips it. ``dynamic``: symbolic input dims (``True``:
    all) one build serves every size of (see :func:`build.build`)."""
    from dcopt.errors import UnsupportedError
    from dcopt.ir.specialization import value_inputs

    if target != "cpu":
        raise UnsupportedError(f"unknown target '{target}' (available: cpu)")
    source = load_source(model, cache_dir)
    # a warm hit is found from the file's digest alone: no import or shape work
    built = None if example_feeds is not None else build.cached_build(source, dims=dims, pipeline=pipeline,
                                                                      patches=patches, cache_dir=cache_dir,
                                                                      dynamic=dynamic)
    values: dict = {}
    if built is not None:
        session = CpuSession(source, built.manifest["signature"], cache_dir=cache_dir, pipeline=pipeline,
                             patches=patches, threads=threads, dynamic=dynamic)
    else:
        wanted = value_inputs(source.graph)
        session = CpuSession(source, build.source_signature(source.graph), cache_dir=cache_dir, pipeline=pipeline,
                             patches=patches, value_inputs=wanted, threads=threads, dynamic=dynamic)
        if wanted and (example_feeds is None or any(n not in example_feeds for n in wanted)):
            return session  # compiled by the first run, for the values it brings
        values = {n: np.asarray(example_feeds[n]) for n in wanted}
        built = build.build(source, dims=dims, values=values, pipeline=pipeline, patches=patches,
                            cache_dir=cache_dir, example_feeds=example_feeds, dynamic=dynamic)
    session._adopt(variant_key(built.bindings, values), built)
    if warm:
        session.warm_up()
    return session


#: Sizes of a build for every size kept bound at once by a session (each holds its own arena).
MAX_BOUND = 8


def variant_key(bindings: Mapping[str, int], values: Mapping[str, np.ndarray]) -> tuple:
    """What a session's compiled variants are keyed by: symbolic dim sizes and specialized values."""
    from dcopt.ir.specialization import value_key

    return tuple(sorted(bindings.items())), value_key(values)


def set_threads(threads: int | None) -> None:
    """Threads of the backend's one pool for the steps bound next (:mod:`parallel`; BLAS itself
    stays single-threaded). Default: every core this process may use, as onnxruntime does. A
    core another process holds no longer stalls a step: workers claim tasks and the calling
    thread runs whatever no worker took (:mod:`threadpool`)."""
    from dcopt.backends.cpu.parallel import set_threads as set_pool_threads

    set_pool_threads(threads)


def load_build(path: str | os.PathLike, cache_dir=None, threads: int | None = None, warm: bool = True) -> CpuSession:
    built = build.load(Path(path), cache_dir=cache_dir)
    source = None  # read only if a run asks for other sizes (load_source is lazy for .onnx)
    for name in ("model.onnx", "model.json"):
        if (Path(path) / name).is_file():
            source = load_source(Path(path) / name, cache_dir)
    values = {k: np.asarray(v["value"], dtype=v["dtype"]) for k, v in built.manifest.get("values", {}).items()}
    session = CpuSession(source, built.manifest["signature"], cache_dir=cache_dir,
                         pipeline=built.manifest["pipeline"], patches=built.manifest["patches"],
                         value_inputs={k: built.manifest.get("value_reasons", {}).get(k, []) for k in values},
                         threads=threads)
    session._adopt(variant_key(built.bindings, values), built)
    if warm:
        session.warm_up()
    return session
