"""The model a build comes from (:class:`Source`): its digest, its IR on demand, and the file a
build keeps to recompile at new sizes. Apart from :mod:`.build` because a warm hit needs only
the digest: reading, importing and shape inference happen here, lazily, when a compile needs them."""

from __future__ import annotations

import functools
import hashlib
import shutil
from pathlib import Path

from dcopt.errors import ModelLoadError


def cache_root(cache_dir=None) -> Path:
    """Compile cache: ``<root>/kernels`` (the kernel store), ``<root>/cpu-builds`` (whole builds)
    and ``<root>/compile-index.sqlite`` (warm hits); default root: the parent of
    :func:`dcopt.kernels.default_root`."""
    from dcopt.kernels import default_root

    return Path(cache_dir) if cache_dir is not None else default_root().parent


class Source:
    """The model a build comes from: its digest (what build keys hash), its IR, and the file a
    build directory keeps so a run at new sizes can recompile (ONNX when the model came as ONNX,
    else dcopt's lossless IR JSON).

    An ``.onnx`` path is read lazily: its digest is the sha256 of the file's bytes, computed
    before anything is parsed, so a warm hit (:func:`cached_build`) never imports onnx, infers a
    shape or builds an IR."""

    def __init__(self, digest: str | None, loader, *, path: Path | None = None, json_bytes: bytes | None = None,
                 cache_dir=None):
        if digest is not None:
            self.digest = digest  # else hashed from ``path`` when first asked for
        self._loader = loader
        self.path = path
        self._json = json_bytes
        self.known_external: list[str] | None = None  # set by the warm-hit index, which recorded them
        self.cache_dir = cache_dir  # where the digest of an unchanged file is remembered

    def _file_digest(self, path: Path) -> str:
        """sha256 of a file, remembered by stat signature (:meth:`TrustCache.digest`)."""
        from dcopt.integrity import TrustCache

        return TrustCache(cache_root(self.cache_dir)).digest(path)

    @functools.cached_property
    def digest(self) -> str:
        try:
            return self._file_digest(self.path)
        except OSError as exc:
            raise ModelLoadError(f"cannot read the model: {exc.strerror or exc}", file=str(self.path)) from None

    @classmethod
    def of_graph(cls, graph) -> "Source":
        from dcopt.ir import serialize

        data = serialize.dumps(graph).encode()
        return cls(hashlib.sha256(data).hexdigest(), lambda: (graph, None), json_bytes=data)

    @functools.cached_property
    def _loaded(self):
        if self.path is not None and self._json is None and "digest" in self.__dict__:
            # read again after release(): builds are keyed by the digest taken first, so the
            # file must still be that model (else a build of new bytes would sit under the old key)
            if self._file_digest(self.path) != self.digest:
                raise ModelLoadError("the model file changed after this session compiled it; compile it again",
                                     file=str(self.path))
        return self._loader()

    @property
    def graph(self):
        return self._loaded[0]

    def release(self) -> None:
        """Drop the IR of a model read from a file (its weights: hundreds of MB) once a build
        has it; a later recompile (new sizes) reads the file again."""
        if self.path is not None and self._json is None:
            self.__dict__.pop("_loaded", None)

    def take_graph(self):
        """The IR, handed over: a model read from a file forgets it (a compile's lowering
        copies it, and the weights its passes replace can then leave memory); a graph given in
        memory stays (its owner holds it anyway)."""
        graph = self.graph
        self.release()
        return graph

    @property
    def proto(self):
        return self._loaded[1]

    def content_digest(self) -> str:
        """The model's identity for build keys: the file's digest, combined with its external
        data files' digests when it has any (same .onnx bytes, other weights: another build)."""
        external = self.external_files()
        if not external:
            return self.digest
        parts = [self.digest] + [f"{name}:{self._file_digest(Path(self.path).parent / name)}" for name in external]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def external_files(self) -> list[str]:
        """Files beside an ONNX model that hold its weights (external data), relative to it:
        recorded when the model was loaded, or by the warm-hit index that found it."""
        if self.known_external is None and self.path is not None:
            self._loaded  # noqa: B018  (loading records them)
        return list(self.known_external or [])

    def save(self, directory: Path) -> str:
        """Write the model into ``directory``; returns the file name."""
        if self._json is not None:
            (directory / "model.json").write_bytes(self._json)
            return "model.json"
        if self.path is not None and not self.external_files():
            shutil.copyfile(self.path, directory / "model.onnx")  # the user's bytes, not a re-serialization
        else:
            import onnx

            proto = self.proto
            if proto is None:  # a file with external data: one self-contained copy
                from dcopt.frontends.onnx_load import load_onnx

                proto = load_onnx(self.path)
            onnx.save_model(proto, str(directory / "model.onnx"))
        return "model.onnx"


def load_source(model, cache_dir=None) -> Source:
    """A model given as a path (.onnx through the safe loader, lazily; .json, .pt2), an
    onnx.ModelProto or a dcopt Graph (e.g. from the PyTorch frontend: no ONNX round trip)."""
    from dcopt.ir.graph import Graph

    if isinstance(model, Graph):
        return Source.of_graph(model)
    if not isinstance(model, (str, Path)) and hasattr(model, "SerializeToString"):  # an onnx.ModelProto
        from dcopt.frontends.onnx_import import import_model

        data = model.SerializeToString()
        return Source(hashlib.sha256(data).hexdigest(), lambda: (import_model(model), model))
    path = Path(model)
    if path.suffix.lower() in (".pt2", ".json"):
        from dcopt.api import load_graph

        return Source.of_graph(load_graph(path))

    def loader():  # onnx is imported only here: a warm hit never calls it
        from dcopt.frontends.onnx_import import import_model
        from dcopt.frontends.onnx_load import load_onnx
        from dcopt.progress import step

        with step(f"import {path.name}"):
            external: list[str] = []
            proto = load_onnx(path, external, mapped=True)  # weights stay in the files, mapped
            source.known_external = external
            return import_model(proto, file=str(path), base_dir=path.parent), None  # the file is the source

    source = Source(None, loader, path=path, cache_dir=cache_dir)
    if not path.is_file():
        loader()  # raises ModelLoadError naming the file and what is wrong
    return source
