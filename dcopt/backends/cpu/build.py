"""Builds: a compiled model as a directory, and the compile driver that produces one.

Layout of ``model.dcopt/``::

    manifest.json   model hash, pipeline, patches, target, sizes, toolchain, kernel list + hashes
    program.json    the step list and buffer types (the run-time schedule)
    kernels.py      generated kernel source (numba)
    kernels.ll      generated LLVM IR kernels (direct convolutions), when the model has any
    weights.bin     parameters as the steps read them (packed/transposed/folded), raw and
                    64-byte aligned, loaded memory-mapped (:mod:`.weights_file`)
    model.onnx      the source model, so a run at new sizes can recompile

Every compile is itself keyed (model bytes, pipeline, patches, sizes, toolchain, backend
sources) and stored as such a directory in the cache: compiling the same model again is a
directory load plus cached machine code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Mapping, Sequence

import numpy as np
import onnx

from dcopt.backends.cpu import compiler
from dcopt.backends.cpu.program import Program, Step
from dcopt.backends.cpu.renderer import render_module
from dcopt.backends.cpu.weights_file import read_weights, write_weights
from dcopt.errors import ModelLoadError

FORMAT, FORMAT_VERSION = "dcopt-build", 2
WEIGHTS = "weights.bin"


@dataclass
class Build:
    program: Program
    module: ModuleType
    manifest: dict
    bindings: dict[str, int]
    directory: Path
    native: object = None  # MCJIT engine holding the generated LLVM kernels (None: there are none)


@dataclass
class Source:
    """The model a build comes from: its IR, the bytes its build key hashes, and the file a build
    directory keeps so a run at new sizes can recompile (ONNX when the model came as ONNX, else
    dcopt's lossless IR JSON)."""

    graph: object  # dcopt.ir.Graph
    digest_bytes: bytes
    proto: onnx.ModelProto | None = None

    def save(self, directory: Path) -> None:
        if self.proto is not None:
            onnx.save_model(self.proto, str(directory / "model.onnx"))
        else:
            (directory / "model.json").write_bytes(self.digest_bytes)


def load_source(model) -> Source:
    """A model given as a path (.onnx through the safe loader, .json, .pt2), an onnx.ModelProto
    or a dcopt Graph (e.g. from the PyTorch frontend: no ONNX round trip)."""
    from dcopt.frontends.onnx_import import import_model
    from dcopt.ir import serialize
    from dcopt.ir.graph import Graph

    if isinstance(model, onnx.ModelProto):
        return Source(import_model(model), model.SerializeToString(), model)
    if isinstance(model, Graph):
        return Source(model, serialize.dumps(model).encode())
    path = Path(model)
    if path.suffix.lower() in (".pt2", ".json"):
        from dcopt.api import load_graph

        graph = load_graph(path)
        return Source(graph, serialize.dumps(graph).encode())
    from dcopt.frontends.onnx_load import load_onnx

    proto = load_onnx(path)
    return Source(import_model(proto, file=str(path)), proto.SerializeToString(), proto)


def pipeline_label(pipeline) -> str:
    return pipeline[1] if isinstance(pipeline, tuple) else pipeline


def source_signature(graph) -> dict:
    """Inputs and outputs as the model declares them (names, shapes with symbols, dtypes): what a
    session shows and checks feeds against, whatever its variants were specialized for."""
    from dcopt.ir.types import OptionalType, SequenceType

    def arg(name):
        t = graph.containers[name].type
        kind = "sequence" if isinstance(t, SequenceType) else "optional" if isinstance(t, OptionalType) else "tensor"
        return {"name": name, "shape": list(t.shape) if t.shape is not None else None, "dtype": t.dtype, "kind": kind}

    return {"inputs": [arg(n) for n in graph.inputs], "outputs": [arg(n) for n in graph.outputs]}


def build_key(model_bytes: bytes, pipeline, patches, bindings, values=None) -> str:
    from dcopt.ir.specialization import value_key

    h = hashlib.sha256(hashlib.sha256(model_bytes).digest())
    h.update(json.dumps([pipeline_label(pipeline), list(patches), sorted(bindings.items()), FORMAT_VERSION]).encode())
    h.update(repr(value_key(values or {})).encode())
    h.update(json.dumps(compiler.toolchain(), sort_keys=True).encode())  # includes the backend's source hash
    h.update(_optimizer_version().encode())
    return h.hexdigest()[:24]


@functools.lru_cache(maxsize=None)
def _optimizer_version() -> str:
    """Source hash of everything between the model file and the lowering (import, ops, passes,
    patches): a changed pass must not be answered with a build cached by the old one."""
    from dcopt.kernels import source_hash

    return source_hash(["dcopt.frontends", "dcopt.ir", "dcopt.ops", "dcopt.passes"])


def cache_root(cache_dir=None) -> Path:
    """Compile cache: ``<root>/kernels`` (the kernel store) and ``<root>/cpu-builds`` (whole builds);
    default root: the parent of :func:`dcopt.kernels.default_root`."""
    from dcopt.kernels import default_root

    return Path(cache_dir) if cache_dir is not None else default_root().parent


def build(source: Source, *, dims: Mapping[str, int] | None = None, values: Mapping[str, np.ndarray] | None = None,
          pipeline="O3", patches: Sequence[str] = (), cache_dir=None, example_feeds=None) -> Build:
    """Compile ``source`` (cached): the driver's lowering, then code generation and compilation."""
    from dcopt import driver
    from dcopt.backends.cpu.codegen import generate
    from dcopt.backends.cpu.specialize import input_bindings

    graph = source.graph
    bindings = input_bindings(graph, dims)
    model_bytes = source.digest_bytes
    root = cache_root(cache_dir)
    values = {k: np.asarray(v) for k, v in (values or {}).items()}
    directory = root / "cpu-builds" / build_key(model_bytes, pipeline, patches, bindings, values)
    if (directory / "manifest.json").is_file():
        try:
            return load(directory, cache_dir=cache_dir)
        except ModelLoadError:
            pass
    if directory.exists():  # damaged, tampered or half-written: an entry of dcopt's own cache
        shutil.rmtree(directory, ignore_errors=True)
    start = time.perf_counter()
    lowered = driver.lower(graph, bindings=bindings, values=values, pipeline=pipeline, patches=patches,
                           example_feeds=example_feeds)
    from dcopt.limits import check_graph_sizes

    check_graph_sizes(lowered.graph)  # every size now known: nothing beyond int64 or the memory cap
    applied = lowered.pipeline
    program = generate(lowered.graph)
    source = render_module(program.kernels)
    module, key = compiler.compile_module(source, program.signatures, root / "kernels",
                                          {"model": graph.name, "bindings": bindings})
    native_ir = _native_ir(program)
    native, native_key = (None, None) if native_ir is None else compiler.compile_llvm(
        native_ir, root / "kernels", {"model": graph.name, "bindings": bindings})
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": {"name": graph.name, "sha256": hashlib.sha256(model_bytes).hexdigest()},
        "pipeline": pipeline_label(pipeline), "pipeline_applied": applied, "patches": list(patches),
        "target": "cpu", "bindings": bindings,
        "toolchain": compiler.toolchain(), "module_key": key, "native_key": native_key,
        "kernels": [{"name": n, "sha256": hashlib.sha256(s.encode()).hexdigest()}
                    for n, s in sorted(program.kernels.items())]
        + [{"name": n, "sha256": hashlib.sha256(s.encode()).hexdigest(), "language": "llvm"}
           for n, s in sorted(program.native.items())],
        "steps": dict(sorted(_count(s.kind for s in program.steps).items())),
        "not_native": dict(sorted(_count(f"{s.params['op']} ({s.kind})" for s in program.steps
                                         if s.kind in ("fallback", "dynamic")).items())),
        "memory": {"arena_bytes": program.memory.get("arena_size", 0)},
        "signature": source_signature(graph),
        "values": {k: {"value": v.tolist(), "dtype": str(v.dtype)} for k, v in values.items()},
        "compile_seconds": round(time.perf_counter() - start, 3),  # to here; numba compiles on first run
    }
    _write(directory, program, source, native_ir, manifest, None)
    return Build(program, module, manifest, bindings, directory, native)


def _native_ir(program: Program) -> str | None:
    """The program's generated LLVM IR kernels as one module (None when it has none)."""
    if not program.native:
        return None
    from dcopt.backends.cpu.directconv import module_ir

    return module_ir(program.native)


def _count(kinds) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in kinds:
        out[k] = out.get(k, 0) + 1
    return out


def is_build(path: Path) -> bool:
    """Whether ``path`` is a dcopt build directory (its manifest says so): the only kind of
    existing directory a build may replace."""
    try:
        return json.loads((Path(path) / "manifest.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _write(directory: Path, program: Program, source: str, native_ir: str | None, manifest: dict,
           model: Source | None, force: bool = True) -> None:
    """Write a build directory atomically (a staging sibling, then rename; see :mod:`dcopt.outputs`).
    An existing path is replaced only if it is a build and ``force`` is set."""
    from dcopt.outputs import staged_directory

    with staged_directory(directory, replaceable=is_build, force=force, what="dcopt build") as staging:
        (staging / "kernels.py").write_text(source)
        if native_ir is not None:
            (staging / "kernels.ll").write_text(native_ir)
        weights = write_weights(staging / WEIGHTS, program.params, sorted(program.params))
        prog = {"inputs": program.inputs, "outputs": program.outputs, "opset": program.opset,
                "types": {n: [None if s is None else list(s), d] for n, (s, d) in program.types.items()},
                "steps": [s.to_dict() for s in program.steps], "weights": weights,
                "signatures": program.signatures, "memory": program.memory}
        (staging / "program.json").write_text(json.dumps(prog))
        if model is not None:
            model.save(staging)
        from dcopt.integrity import file_records

        manifest = {**manifest, "files": file_records(staging)}  # every file that is loaded or run
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))


def load(directory: Path, cache_dir=None) -> Build:
    """Read a build directory after verifying every file against the sha256 its manifest records
    (:mod:`dcopt.integrity`); ModelLoadError says which part is missing, damaged or changed."""
    from dcopt.integrity import TrustCache, verify_files

    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        if manifest.get("format") != FORMAT:
            raise ModelLoadError("not a dcopt build directory (manifest format)", file=str(directory))
        if "files" not in manifest or manifest.get("format_version") != FORMAT_VERSION:
            raise ModelLoadError(f"this build was written by another dcopt (build format "
                                 f"{manifest.get('format_version', '1, without file hashes')}; this dcopt reads "
                                 f"{FORMAT_VERSION}); rebuild it from its model: dcopt compile MODEL -o DIR --force",
                                 file=str(directory))
        problems = verify_files(directory, manifest["files"], TrustCache(cache_root(cache_dir)),
                                expected_extra=frozenset({"manifest.json"}))
        if problems:
            raise ModelLoadError("refusing to load a build whose files changed since it was written: "
                                 + "; ".join(problems), file=str(directory))
        prog = json.loads((directory / "program.json").read_text())
        source = (directory / "kernels.py").read_text()
        native_ir = (directory / "kernels.ll").read_text() if manifest.get("native_key") else None
        params = read_weights(directory / WEIGHTS, prog["weights"])
    except ModelLoadError:
        raise
    except FileNotFoundError as exc:
        raise ModelLoadError(f"incomplete build directory: {Path(exc.filename).name} is missing",
                             file=str(directory)) from None
    except Exception as exc:
        raise ModelLoadError(f"damaged build directory: {type(exc).__name__}: {exc}", file=str(directory)) from None
    program = Program(prog["inputs"], prog["outputs"], {n: (None if s is None else tuple(s), d) for n, (s, d) in prog["types"].items()},
                      params, [Step.from_dict(s) for s in prog["steps"]], {}, prog["signatures"], prog["opset"],
                      memory=prog.get("memory", {}))
    provenance = {"model": manifest["model"]["name"], "build": str(directory)}
    module, key = compiler.compile_module(source, program.signatures, cache_root(cache_dir) / "kernels", provenance)
    native = None
    if native_ir is not None:
        native, _ = compiler.compile_llvm(native_ir, cache_root(cache_dir) / "kernels", provenance)
    return Build(program, module, manifest, dict(manifest["bindings"]), directory, native)


def copy_build(built: Build, target: Path, model: Source | None, force: bool = False) -> Path:
    """Write ``built`` as a user-visible build directory at ``target`` (with its source model);
    an existing build there is replaced only with ``force``, anything else never."""
    source = (built.directory / "kernels.py").read_text()
    native = built.directory / "kernels.ll"
    _write(Path(target), built.program, source, native.read_text() if native.is_file() else None, built.manifest,
           model, force)
    return Path(target)
