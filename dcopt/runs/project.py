"""``dcopt.yaml``: a project's named models, pipelines, patch sets and benchmark matrix.

    models:                      # name -> ONNX file (relative to this file)
      tiny: dcopt/examples/tiny_resnet.onnx
    pipelines:                   # name -> pipeline spec (O0..O3 or passes "fold,cse,dce")
      O2: O2
      O3: O3
    patch-sets:                  # name -> list of patch URIs
      none: []
      bn: [fold_batchnorm]
    bench:                       # defaults of every matrix cell
      runtimes: dcopt,onnxruntime
      reps: 20
      threads: 2
    matrix:                      # every combination is one recorded bench run
      models: [tiny]
      pipelines: [O2, O3]
      patch-sets: [none, bn]

``dcopt bench --matrix`` runs every cell (labelled ``model/pipeline/patch-set``) as a recorded run,
so ``dcopt runs compare --min latency`` answers which combination is fastest. Anything wrong in
the file is one error naming the file, the field, what was expected and what was found.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from dcopt.errors import InputError

PROJECT_FILE = "dcopt.yaml"
_SECTIONS = ("models", "pipelines", "patch-sets", "bench", "matrix")
_BENCH_KEYS = {"runtimes": str, "reps": int, "threads": int, "quick": bool}


@dataclass(frozen=True)
class Cell:
    model: str
    model_path: Path
    pipeline: str
    pipeline_spec: str
    patch_set: str
    patches: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.model}/{self.pipeline}/{self.patch_set}"


@dataclass
class Project:
    path: Path
    models: dict[str, Path] = field(default_factory=dict)
    pipelines: dict[str, str] = field(default_factory=lambda: {"O3": "O3"})
    patch_sets: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"none": ()})
    bench: dict = field(default_factory=dict)
    matrix: dict[str, list[str]] = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        """Every combination of the matrix, in file order."""
        models = self.matrix.get("models") or list(self.models)
        pipelines = self.matrix.get("pipelines") or list(self.pipelines)
        patch_sets = self.matrix.get("patch-sets") or list(self.patch_sets)
        return [Cell(m, self.models[m], p, self.pipelines[p], s, self.patch_sets[s])
                for m, p, s in itertools.product(models, pipelines, patch_sets)]


def _error(path: Path, where: str, message: str) -> InputError:
    return InputError(f"{where}: {message}", file=str(path))


def _mapping(path, data, key) -> dict:
    value = data.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _error(path, key, f"expected a mapping of names, got {type(value).__name__}")
    return value


def load_project(path: str | Path | None = None) -> Project:
    """Read and check a project file (default ``./dcopt.yaml``)."""
    try:
        import yaml
    except ImportError:
        raise InputError("project files need pyyaml: pip install 'dcopt[runs]'") from None

    path = Path(path or PROJECT_FILE)
    if not path.is_file():
        raise InputError(f"no project file (expected {PROJECT_FILE} here, or give --project FILE)", file=str(path))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", file=str(path)) from None
    if not isinstance(data, dict):
        raise _error(path, "top level", f"expected a mapping with {', '.join(_SECTIONS)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise _error(path, unknown[0], f"unknown section (expected one of {', '.join(_SECTIONS)})")
    project = Project(path)
    for name, file in _mapping(path, data, "models").items():
        if not isinstance(file, str):
            raise _error(path, f"models.{name}", f"expected a model file path, got {type(file).__name__}")
        project.models[str(name)] = (path.parent / file) if not Path(file).is_absolute() else Path(file)
    if not project.models:
        raise _error(path, "models", "expected at least one named model (name: path/to/model.onnx)")
    pipelines = _mapping(path, data, "pipelines")
    if pipelines:
        project.pipelines = {}
    for name, spec in pipelines.items():
        if not isinstance(spec, str) or not spec.strip():
            raise _error(path, f"pipelines.{name}", f"expected a pipeline spec such as O3 or 'fold,cse', got {spec!r}")
        project.pipelines[str(name)] = spec.strip()
    sets = _mapping(path, data, "patch-sets")
    if sets:
        project.patch_sets = {}
    for name, uris in sets.items():
        if uris is None:
            uris = []
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            raise _error(path, f"patch-sets.{name}", f"expected a list of patch URIs, got {uris!r}")
        project.patch_sets[str(name)] = tuple(uris)
    for key, value in _mapping(path, data, "bench").items():
        if key not in _BENCH_KEYS:
            raise _error(path, f"bench.{key}", f"unknown setting (expected one of {', '.join(_BENCH_KEYS)})")
        if not isinstance(value, _BENCH_KEYS[key]) or (isinstance(value, bool) and _BENCH_KEYS[key] is int):
            raise _error(path, f"bench.{key}", f"expected {_BENCH_KEYS[key].__name__}, got {value!r}")
        project.bench[key] = value
    named = {"models": project.models, "pipelines": project.pipelines, "patch-sets": project.patch_sets}
    for key, value in _mapping(path, data, "matrix").items():
        if key not in named:
            raise _error(path, f"matrix.{key}", f"unknown axis (expected one of {', '.join(named)})")
        if not isinstance(value, list) or not value:
            raise _error(path, f"matrix.{key}", f"expected a non-empty list of names, got {value!r}")
        missing = [str(v) for v in value if str(v) not in named[key]]
        if missing:
            raise _error(path, f"matrix.{key}", f"{', '.join(missing)} not defined under {key} "
                                                f"(defined: {', '.join(named[key]) or 'none'})")
        project.matrix[key] = [str(v) for v in value]
    return project
