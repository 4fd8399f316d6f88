"""Builds: a compiled model as a directory, and the compile driver that produces one.

Layout of ``model.dcopt/``::

    manifest.json   model hash, pipeline, patches, target, sizes, toolchain, kernel list: each
                    kernel's name, sha256 and kernel-store key
    program.json    the step list and buffer types (the run-time schedule)
    kernels.py      generated kernel source (numba), every kernel in one file
    kernels.ll      generated LLVM IR kernels (direct convolutions), when the model has any
    weights.bin     parameters as the steps read them (packed/transposed/folded), raw and
                    64-byte aligned, loaded memory-mapped (:mod:`dcopt.kernels.weights`)
    model.onnx      the source model, so a run at new sizes can recompile

Every compile is itself keyed (model bytes, pipeline, patches, sizes, toolchain, backend
sources) and stored as such a directory in the cache: compiling the same model again is a
directory load plus cached machine code. The machine code lives in the kernel store, one entry
per kernel (:mod:`compiler`): a build compiles only the kernels no earlier build stored, and a
loaded build marks its entries in use so ``gc`` leaves them alone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Mapping, Sequence

import numpy as np

from dcopt.backends.cpu import compiler
from dcopt.backends.cpu.program import Program, Step, bind_time_steps, placed_memory
from dcopt.backends.cpu.resident import return_freed_memory
from dcopt.backends.cpu.renderer import render_module
from dcopt.backends.cpu.source import Source, cache_root
from dcopt.kernels.weights import WEIGHTS, read_weights, write_weights
from dcopt.errors import ModelLoadError, StaticSizesNeeded
from dcopt.kernels.builds import CACHE_BUILDS, FORMAT, FORMAT_VERSION, BuildCatalog, is_cache_build_dir, read_manifest
from dcopt.kernels.compile_index import CompileIndex
from dcopt.kernels.store import KernelStore
from dcopt.progress import step



@dataclass
class Build:
    program: Program
    manifest: dict
    bindings: dict[str, int]
    directory: Path
    cache_dir: object = None

    sources: tuple = ("", None)  # (kernels.py, kernels.ll or None) as verified at load
    held: object = None  # a cache build's shared lock (BuildCatalog.hold): gc leaves it alone
    kernel_holds: tuple = ()  # its kernel-store entries marked in use (KernelStore.hold): gc leaves them

    @functools.cached_property
    def kernels(self) -> tuple[ModuleType, object]:
        """(numba module, MCJIT engine or None): compiled, or loaded from the kernel store, on
        first use, so a command that only copies or inspects a build never imports numba."""
        return _load_kernels(self)

    @property
    def module(self) -> ModuleType:
        return self.kernels[0]

    @property
    def native(self):
        return self.kernels[1]


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


def build_key(model_digest: str, pipeline, patches, bindings, values=None, dynamic=frozenset()) -> str:
    from dcopt.ir.specialization import value_key

    h = hashlib.sha256(bytes.fromhex(model_digest))
    fixed = sorted((k, v) for k, v in bindings.items() if k not in dynamic)  # one build for every size of the rest
    extra = [sorted(dynamic)] if dynamic else []
    h.update(json.dumps([pipeline_label(pipeline), list(patches), fixed, FORMAT_VERSION, *extra]).encode())
    h.update(repr(value_key(values or {})).encode())
    h.update(_versions().encode())
    return h.hexdigest()[:24]


def _versions() -> str:
    """Everything besides the model and the options that decides a build: the toolchain and
    host CPU, the backend's source and the optimizer's source."""
    return json.dumps(compiler.toolchain(), sort_keys=True) + _optimizer_version()


@functools.lru_cache(maxsize=None)
def _optimizer_version() -> str:
    """Source hash of everything between the model file and the lowering (import, ops, passes,
    patches): a changed pass must not be answered with a build cached by the old one."""
    from dcopt.kernels import source_hash

    return source_hash(["dcopt.frontends", "dcopt.ir", "dcopt.ops", "dcopt.passes"])


def build(source: Source, *, dims: Mapping[str, int] | None = None, values: Mapping[str, np.ndarray] | None = None,
          pipeline="O3", patches: Sequence[str] = (), cache_dir=None, example_feeds=None,
          dynamic: Sequence[str] | bool = ()) -> Build:
    """Compile ``source`` (cached): the driver's lowering, then code generation and compilation.

    ``dynamic``: input symbols (``True``: all of them) the build leaves free, so that one build
    runs every size of them (:mod:`runtime` binds and places buffers per size, the kernels are
    compiled once); ``dims`` then only gives the example sizes. Where a step has no code for
    sizes bound at run time (a convolution over symbolic image sizes, a reshape fixed at export:
    :class:`StaticSizesNeeded`) the build is compiled for ``dims`` instead, and its manifest says
    why (``dynamic_refused``)."""
    from dcopt.backends.cpu.specialize import input_bindings

    bindings = input_bindings(source.graph, dims)
    keep = dynamic_symbols(bindings, dynamic)
    root = cache_root(cache_dir)
    values = {k: np.asarray(v) for k, v in (values or {}).items()}
    directory = root / CACHE_BUILDS / build_key(source.content_digest(), pipeline, patches, bindings, values, keep)
    built = _cached(directory, cache_dir)
    if built is None and keep:
        refused = _refusal(root, directory.name)
        if refused is None:
            try:
                built = _compile(source, directory, bindings, values, pipeline, patches, cache_dir, example_feeds,
                                 keep)
            except StaticSizesNeeded as exc:
                refused = _remember_refusal(root, directory.name, str(exc))
        if built is None:
            return _specialized_instead(source, bindings, values, pipeline, patches, cache_dir, example_feeds,
                                        refused)
    elif built is None:
        built = _compile(source, directory, bindings, values, pipeline, patches, cache_dir, example_feeds)
    if not values:
        # keyed by the request as asked (True stays "all"), as cached_build looks it up without the graph
        asked = True if dynamic is True else keep
        CompileIndex(root).remember(_request(source, dims, pipeline, patches, asked), directory.name, source)
    source.release()  # the build has what it needs; the weights need not stay twice in memory
    return _at_sizes(built, bindings)


def _at_sizes(built: Build, sizes: Mapping[str, int]) -> Build:
    """A build for every size, found in the cache, at the sizes this call gives its free symbols
    (what its session warms up and draws random inputs at); other builds as they are."""
    free = built.manifest.get("dynamic", ())
    built.bindings = {**built.bindings, **{k: int(v) for k, v in sizes.items() if k in free}}
    return built


def dynamic_symbols(bindings: Mapping[str, int], dynamic: Sequence[str] | bool) -> frozenset:
    """The input symbols a build leaves free: all of them for ``True``; named ones must exist."""
    from dcopt.backends.cpu.specialize import check_dim_names

    if dynamic is True:
        return frozenset(bindings)
    names = frozenset(dynamic or ())
    check_dim_names(dict.fromkeys(names, 1), bindings, argument="dynamic")
    return names


def _specialized_instead(source, bindings, values, pipeline, patches, cache_dir, example_feeds, refused) -> Build:
    """The build for ``bindings`` alone, when a build for every size was refused: its manifest
    carries the reason, and a warning says it once per process."""
    import warnings

    if refused not in _WARNED:
        _WARNED.add(refused)
        warnings.warn(f"dcopt: one build for every size is not possible for this model ({refused}); compiling "
                      f"one build per size instead", stacklevel=3)
    built = build(source, dims=bindings, values=values, pipeline=pipeline, patches=patches, cache_dir=cache_dir,
                  example_feeds=example_feeds)
    built.manifest = {**built.manifest, "dynamic_refused": refused}
    return built


_WARNED: set[str] = set()
_REFUSED = "refused-dynamic.json"


def _refusal(root: Path, key: str) -> str | None:
    """Why a build for every size was refused before for this key (so it is not tried again)."""
    try:
        return json.loads((root / _REFUSED).read_text()).get(key)
    except (OSError, ValueError):
        return None


def _remember_refusal(root: Path, key: str, reason: str) -> str:
    from dcopt.outputs import write_file

    path = root / _REFUSED
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, json.dumps({**known, key: reason}, indent=1, sort_keys=True))
    return reason


def cached_build(source: Source, *, dims=None, pipeline="O3", patches: Sequence[str] = (), cache_dir=None,
                 dynamic: Sequence[str] | bool = ()) -> Build | None:
    """The cached build a compile of ``source`` with these options made before, found from the
    model file's digest and the options alone (no import, no shape work), verified; None on a miss."""
    root = cache_root(cache_dir)
    keep = dynamic if dynamic is True else frozenset(dynamic or ())
    key = CompileIndex(root).lookup(_request(source, dims, pipeline, patches, keep), source)
    built = None if key is None else _cached(root / CACHE_BUILDS / key, cache_dir)
    return None if built is None else _at_sizes(built, dims or {})


def _request(source: Source, dims, pipeline, patches, dynamic=frozenset()) -> str:
    """What a compile call asks for, as one digest: the warm-hit index's key."""
    wanted = [] if not dynamic else ["all"] if dynamic is True else [sorted(dynamic)]
    fixed = sorted((k, v) for k, v in (dims or {}).items() if dynamic is not True and k not in (dynamic or ()))
    data = json.dumps([source.digest, pipeline_label(pipeline), list(patches), fixed,
                       FORMAT_VERSION, _versions(), *wanted])
    return hashlib.sha256(data.encode()).hexdigest()


def _cached(directory: Path, cache_dir) -> Build | None:
    if (directory / "manifest.json").is_file():
        try:
            built = load(directory, cache_dir=cache_dir)
            built.held = BuildCatalog(cache_root(cache_dir)).hold(directory.name)  # gc skips it while loaded
            return built
        except ModelLoadError:
            pass
    if is_cache_build_dir(directory, cache_root(cache_dir)):
        shutil.rmtree(directory, ignore_errors=True)  # damaged, tampered or half-written: dcopt's own entry
    return None


def _compile(source: Source, directory: Path, bindings, values, pipeline, patches, cache_dir, example_feeds,
             dynamic=frozenset()) -> Build:
    from dcopt import driver
    from dcopt.backends.cpu.codegen import generate
    from dcopt.limits import check_graph_sizes

    root = cache_root(cache_dir)
    start = time.perf_counter()
    name, signature, digest = source.graph.name, source_signature(source.graph), source.content_digest()
    # the lowering copies the graph; handing it over lets each weight a pass replaces (folded,
    # packed, cast) leave memory instead of staying alive in the source's copy (not when a
    # refused build for every size may still need the graph for the per-size one)
    graph = source.graph.copy() if dynamic else source.take_graph()
    lowered = driver.lower(graph, bindings=bindings, values=values, pipeline=pipeline, patches=patches,
                           example_feeds=example_feeds, dynamic=dynamic)
    del graph
    check_graph_sizes(lowered.graph, bindings)  # every size now known: nothing beyond int64 or the memory cap
    applied, reports = lowered.pipeline, lowered.reports
    weights = _weights_file(root)
    try:
        with step("generate code"):
            program = generate(lowered.graph, weights)
        del lowered  # the unpacked weights go; the program maps the packed ones from the file
        return_freed_memory()
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "model": {"name": name, "sha256": digest},
            "dcopt": _dcopt_version(),
            "pipeline": pipeline_label(pipeline), "pipeline_applied": applied, "patches": list(patches),
            "passes": _pass_summary(reports),
            "target": "cpu", "bindings": bindings, **({"dynamic": sorted(dynamic)} if dynamic else {}),
            "signature": signature,
            "values": {k: {"value": v.tolist(), "dtype": str(v.dtype)} for k, v in values.items()},
        }
        return _compile_program(program, weights, manifest, directory, start, cache_dir)
    finally:
        _remove_weights_file(weights)  # ours; the build keeps a link to the file


def _weights_file(root: Path) -> Path:
    """A new file for the generated weights, in a private staging directory of the kernel
    store's ``tmp/`` (the caller removes it with :func:`_remove_weights_file`; ``gc`` sweeps one
    a killed compile left). Why a file at generation time: the packed weights are written once,
    as they are made, and mapped back copy-on-write, so packed copies never pile up in anonymous
    memory (the peak LLVM's kernel compilation then adds to), a run reads them from the page
    cache, and the build directory links the same file instead of writing it again."""
    import tempfile

    staging = root / "kernels" / "tmp"
    staging.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="weights-", dir=staging)) / WEIGHTS


def _remove_weights_file(path: Path) -> None:
    """Remove what :func:`_weights_file` made (the file and its own directory, nothing else)."""
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass


def _compile_program(program: Program, weights: Path, manifest: dict, directory: Path,
                     start: float, cache_dir) -> Build:
    """Compile the generated kernels and write the build (see :func:`_compile`)."""
    root = cache_root(cache_dir)
    name, bindings = manifest["model"]["name"], manifest["bindings"]
    kernel_source = render_module(program.kernels)
    store = root / "kernels"
    module = compiler.compile_kernels(kernel_source, program.signatures, store, {"model": name, "bindings": bindings})
    native_ir = _native_ir(program)
    native, native_keys = (None, {}) if native_ir is None else compiler.compile_native(
        native_ir, store, {"model": name, "bindings": bindings})
    return_freed_memory()  # what LLVM used while compiling: the run that follows maps the weights
    once = {id(s) for s in bind_time_steps(program)}
    manifest = {
        **manifest,
        # one digest per kind over the kernels' store keys (equal: the same kernels); each
        # kernel's own entry is its "key" in "kernels" (dcopt kernels show KEY)
        "toolchain": compiler.toolchain(), "module_key": compiler.set_key(module.keys),
        "native_key": compiler.set_key(native_keys),
        "kernels": [{"name": n, "sha256": hashlib.sha256(s.encode()).hexdigest(), "key": module.keys.get(n)}
                    for n, s in sorted(program.kernels.items())]
        + [{"name": n, "sha256": hashlib.sha256(s.encode()).hexdigest(), "language": "llvm", "key": native_keys.get(n)}
           for n, s in sorted(program.native.items())],
        "steps": dict(sorted(_count(s.kind for s in program.steps).items())),
        "not_native": dict(sorted(_count(f"{s.params['op']} ({s.kind})" for s in program.steps
                                         if s.kind in ("fallback", "dynamic") and id(s) not in once).items())),
        # steps over weights and sizes alone: run once when the build is bound to sizes, by no run
        "at_bind": dict(sorted(_count(s.params.get("op", s.kind) for s in program.steps if id(s) in once).items())),
        "memory": {"arena_bytes": int(placed_memory(program.memory, bindings).get("arena_size", 0)),  # example sizes
                   "weights_bytes": int(sum(np.asarray(a).nbytes for a in program.params.values()))},
        "compile_seconds": round(time.perf_counter() - start, 3),  # to here; numba compiles on first run
    }
    manifest = _write(directory, program, kernel_source, native_ir, manifest, None, weights_file=weights)
    built = Build(program, manifest, bindings, directory, cache_dir)
    built.held = BuildCatalog(root).hold(directory.name)
    built.kernel_holds = (KernelStore(store).hold(kernel_keys(manifest)),)
    built.kernels = (module, native)  # just compiled: no second load
    return built


def kernel_keys(manifest: dict) -> set[str]:
    """The kernel-store keys of a build's kernels, as its manifest records them."""
    return {k["key"] for k in manifest.get("kernels", []) if isinstance(k, dict) and isinstance(k.get("key"), str)}


def _pass_summary(reports) -> list[dict]:
    """Per pass run: whether it changed the graph, node counts, scalar stats, refusal count:
    what ``dcopt builds diff`` compares to say which pass decided differently."""
    out = []
    for report in reports:
        for r in getattr(report, "records", []) if report is not None else []:
            out.append({"name": r.name, "modified": r.modified, "nodes": [r.nodes_before, r.nodes_after],
                        "stats": {k: v for k, v in r.stats.items() if isinstance(v, (int, float, str, bool))},
                        "refusals": len(r.refusals)})
    return out


def _dcopt_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dcopt")
    except PackageNotFoundError:
        return "source tree"


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
           model: Source | None, force: bool = True, weights_file: Path | None = None) -> dict:
    """Write a build directory atomically (a staging sibling, then rename; see :mod:`dcopt.outputs`).
    An existing path is replaced only if it is a build and ``force`` is set. Returns the
    manifest as written (with its file records). ``weights_file``: the program's weights as
    :func:`generate` wrote them (index in ``program.weights_index``), linked (or copied
    where links are impossible) rather than written again."""
    from dcopt.integrity import file_records
    from dcopt.outputs import staged_directory

    with staged_directory(directory, replaceable=is_build, force=force, what="dcopt build") as staging:
        (staging / "kernels.py").write_text(source)
        if native_ir is not None:
            (staging / "kernels.ll").write_text(native_ir)
        if weights_file is not None:
            _link_or_copy(weights_file, staging / WEIGHTS)
            weights = program.weights_index
        else:
            weights = write_weights(staging / WEIGHTS, program.params, sorted(program.params))
        prog = {"inputs": program.inputs, "outputs": program.outputs, "opset": program.opset,
                "types": {n: [None if s is None else list(s), d] for n, (s, d) in program.types.items()},
                "steps": [s.to_dict() for s in program.steps], "weights": weights,
                "signatures": program.signatures, "memory": program.memory, "checks": program.checks}
        (staging / "program.json").write_text(json.dumps(prog))
        if model is not None:
            model.save(staging)
        manifest = {**manifest, "files": file_records(staging)}  # every file that is loaded or run
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def load(directory: Path, cache_dir=None) -> Build:
    """Read a build directory after verifying every file against the sha256 its manifest records
    (:mod:`dcopt.integrity`); ModelLoadError says which part is missing, damaged or changed.
    Kernel sources are read now (what was verified is what runs); they are compiled, or loaded
    from the kernel store, on first use (:attr:`Build.kernels`)."""
    from dcopt.integrity import TrustCache, verify_files

    directory = Path(directory)
    try:
        manifest = read_manifest(directory)
        problems = verify_files(directory, manifest["files"], TrustCache(cache_root(cache_dir)),
                                expected_extra=frozenset({"manifest.json"}))
        if problems:
            raise ModelLoadError("refusing to load a build whose files changed since it was written: "
                                 + "; ".join(problems), file=str(directory))
        prog = json.loads((directory / "program.json").read_text())
        sources = ((directory / "kernels.py").read_text(),
                   (directory / "kernels.ll").read_text() if "kernels.ll" in manifest["files"] else None)
        params = read_weights(directory / WEIGHTS, prog["weights"])
        program = Program(prog["inputs"], prog["outputs"],
                          {n: (None if s is None else tuple(s), d) for n, (s, d) in prog["types"].items()},
                          params, [Step.from_dict(s) for s in prog["steps"]], {}, prog["signatures"], prog["opset"],
                          memory=prog.get("memory", {}), checks=prog.get("checks", []))
    except ModelLoadError:
        raise
    except FileNotFoundError as exc:
        raise ModelLoadError(f"incomplete build directory: {Path(exc.filename).name} is missing",
                             file=str(directory)) from None
    except Exception as exc:
        raise ModelLoadError(f"damaged build directory: {type(exc).__name__}: {exc}", file=str(directory)) from None
    built = Build(program, manifest, dict(manifest["bindings"]), directory, cache_dir)
    built.sources = sources
    # its kernels' entries are in use from now on (gc skips them), loaded or not yet
    built.kernel_holds = (KernelStore(cache_root(cache_dir) / "kernels").hold(kernel_keys(manifest)),)
    return built


def _load_kernels(built: Build):
    """(numba module, LLVM engine or None) of a loaded build, from its verified sources: one
    kernel-store entry per kernel, split from ``kernels.py`` / ``kernels.ll`` the way the build
    split them, so the keys are the ones its manifest records (unless the toolchain or CPU
    differs from the build's: then the entries are this host's, and those are held too)."""
    source, native_ir = built.sources
    root = cache_root(built.cache_dir) / "kernels"
    provenance = {"model": built.manifest["model"]["name"], "build": str(built.directory)}
    module = compiler.compile_kernels(source, built.program.signatures, root, provenance)
    native, native_keys = (None, {}) if native_ir is None else compiler.compile_native(native_ir, root, provenance)
    held = set().union(*(h.digests for h in built.kernel_holds))
    others = (set(module.keys.values()) | set(native_keys.values())) - held
    if others:
        built.kernel_holds += (KernelStore(root).hold(others),)
    return module, native


def copy_build(built: Build, target: Path, model: Source | None, force: bool = False) -> Path:
    """Write ``built`` as a user-visible build directory at ``target``; an existing build there
    is replaced only with ``force``, anything else never. The files are linked or copied as they
    are (verified when ``built`` was loaded), not regenerated. The source model is added only
    when a run may need to recompile (:func:`needs_source`: symbolic dims or value inputs); a
    build of a fully static model cannot run at other sizes, and copying VGG-19's 548 MB for
    nothing was most of a warm compile."""
    from dcopt.integrity import TrustCache, file_records
    from dcopt.outputs import staged_directory

    files = {name: record for name, record in built.manifest["files"].items() if not name.startswith("model.")}
    with staged_directory(Path(target), replaceable=is_build, force=force, what="dcopt build") as staging:
        for name in files:
            _link_or_copy(built.directory / name, staging / name)
        if model is not None and needs_source(built.manifest):
            name = model.save(staging)
            if model.path is not None and name == "model.onnx" and not model.external_files():
                files[name] = {"size": (staging / name).stat().st_size, "sha256": model.digest}  # hashed already
            else:
                files.update(file_records(staging, [name]))
        manifest = {**built.manifest, "files": dict(sorted(files.items()))}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
    # a new link changes the shared inode's ctime: re-remember both names of each file, whose
    # bytes were verified at load and which linking did not change, so neither is rehashed
    TrustCache(cache_root(built.cache_dir)).remember(
        [(Path(target) / n, r["sha256"]) for n, r in files.items()]
        + [(built.directory / n, r["sha256"]) for n, r in built.manifest["files"].items()
           if (built.directory / n).is_file()])
    BuildCatalog(cache_root(built.cache_dir)).record_output(Path(target))  # dcopt builds ls lists it
    return Path(target)


def needs_source(manifest: dict) -> bool:
    """Whether a build's model may be recompiled for a run: an input with a symbolic or unknown
    size, or inputs whose values the build was specialized for."""
    if manifest.get("values"):
        return True
    free = set(manifest.get("dynamic", ()))  # sizes a build for every size binds itself
    return any(arg.get("shape") is None or any(not isinstance(d, int) and d not in free for d in arg["shape"])
               for arg in (manifest.get("signature") or {}).get("inputs", []))


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the filesystem allows (build files are never written in place: an edit
    changes the shared inode's ctime, and both builds re-verify their hashes before use), else a
    copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
