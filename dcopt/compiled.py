"""``dcopt.compile`` / ``dcopt.load``: the compiled-model half of the Python API.

(This module is ``dcopt.compiled``, not ``dcopt.compile``: a submodule named ``compile`` would
replace the ``dcopt.compile`` function on the package as soon as it was imported.)

    sess = dcopt.compile("model.onnx")                 # or an onnx.ModelProto
    outputs = sess.run(None, {"x": x})                 # like onnxruntime.InferenceSession.run
    sess.save("model.dcopt")
    sess = dcopt.load("model.dcopt")

Options: ``pipeline`` (a pipeline name or pass spec, default ``"O3"``; an unregistered name runs
``canonicalize`` and the manifest's ``pipeline_applied`` says so), ``target`` (``"cpu"``),
``threads`` (BLAS threads, the backend's one thread pool; default 1, see
``dcopt.backends.cpu.session.set_threads``), ``dims`` (sizes for symbolic input dims, default 1),
``patches`` (idea-patch URIs, applied before the pipeline), ``cache_dir`` (compile cache root),
``dynamic`` (symbolic input dims one build serves every size of: ``True`` for all, or names such
as ``["batch", "seq"]``; ``dims`` then gives the sizes it is warmed up at).

Importing this module does not import numba; the backend loads on the first call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Sequence

from dcopt.errors import ArgumentError


def compile(model, *, pipeline="O3", target: str = "cpu", threads: int | None = None,  # noqa: A001
            dims: Mapping[str, int] | None = None, patches: Sequence[str] = (), cache_dir=None,
            example_feeds=None, warm: bool = True, dynamic: bool | Sequence[str] = False):
    """Compile ``model`` (path, ModelProto or dcopt Graph) into a session with ``run``/``get_inputs``/
    ``get_outputs``. ``example_feeds``: real inputs to specialize sizes with (else random ones).
    ``warm``: load every kernel before returning (else on the first run; a caller that only
    saves the build skips it). Every argument is checked first: a wrong one is an
    :class:`~dcopt.errors.ArgumentError` naming it."""
    check_model_argument(model)
    pipeline = check_pipeline(pipeline)
    if not isinstance(target, str):
        raise ArgumentError(f"expected a target name such as 'cpu', got {type(target).__name__}", argument="target")
    threads = check_threads(threads)
    dims = check_dims(dims)
    patches = check_patches(patches)
    cache_dir = check_cache_dir(cache_dir)
    dynamic = check_dynamic(dynamic)
    if example_feeds is not None:
        from dcopt.feeds_check import check_feeds

        if not isinstance(example_feeds, Mapping):
            raise ArgumentError(f"expected a mapping {{input name: array}}, got {type(example_feeds).__name__}",
                                argument="example_feeds")
        example_feeds = check_feeds(example_feeds, list(example_feeds), argument="example_feeds")
    from dcopt.backends.cpu.session import compile_model
    from dcopt.errors import DcoptError

    try:
        return compile_model(model, pipeline=pipeline, target=target, threads=threads, dims=dims, patches=patches,
                             cache_dir=cache_dir, example_feeds=example_feeds, warm=bool(warm), dynamic=dynamic)
    except DcoptError as exc:  # name the model file where the error does not name another one
        raise exc.at(file=os.fspath(model)) if isinstance(model, (str, os.PathLike)) else exc


def load(path: str | os.PathLike, *, threads: int | None = None, cache_dir=None, warm: bool = True):
    """Load a build directory written by ``dcopt compile`` / ``session.save``. ``warm``: load
    every kernel now (one run on zeros) rather than on the first run."""
    from dcopt.errors import DcoptError, ModelLoadError

    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentError(f"expected the path of a build directory, got {type(path).__name__}", argument="path")
    threads = check_threads(threads)
    cache_dir = check_cache_dir(cache_dir)
    if not is_build_dir(path):
        why = "does not exist" if not os.path.exists(path) else "is not a dcopt build directory (no manifest.json)"
        raise ModelLoadError(why, file=os.fspath(path))
    from dcopt.backends.cpu.session import load_build

    try:
        return load_build(path, cache_dir=cache_dir, threads=threads, warm=bool(warm))
    except DcoptError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # the manifest is data a user (or a disk) can damage: a missing key or a value of the wrong
        # type there is a damaged build, not a crash (the cause stays chained for --verbose)
        raise ModelLoadError(f"damaged or incompatible build directory ({type(exc).__name__}: {exc}); recompile the "
                             "model (dcopt compile MODEL -o DIR --force)", file=os.fspath(path)) from exc


def is_build_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a dcopt build directory (what ``dcopt run`` checks)."""
    try:
        return os.path.isfile(os.path.join(path, "manifest.json"))
    except (TypeError, ValueError):  # not a path, or a NUL in it
        return False


# -- argument checks (each names the argument) -----------------------------------------------------
def check_model_argument(model) -> None:
    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if not str(text).strip() or "\0" in str(text):
            raise ArgumentError(f"'{text}' is not a usable model path", argument="model")
        return
    import onnx  # a path needs no onnx (a warm hit never parses it); other arguments are checked by type

    from dcopt.ir.graph import Graph

    if not isinstance(model, (onnx.ModelProto, Graph)):
        raise ArgumentError(f"expected a model file path, an onnx.ModelProto or a dcopt Graph, got "
                            f"{type(model).__name__}", argument="model")


def check_pipeline(pipeline):
    """A spec string (``"O3"``, ``"fold,cse"``), a list of pass names, or ``(steps, label)`` as the
    CLI's ``--pipeline FILE`` gives it. A list of names becomes its spec string."""
    if isinstance(pipeline, str):
        if not pipeline.strip():
            raise ArgumentError("is empty; give a pipeline name such as 'O3' or passes such as 'fold,cse'",
                                argument="pipeline")
        return pipeline
    if isinstance(pipeline, (list, tuple)) and pipeline and all(isinstance(s, str) for s in pipeline) \
            and not (isinstance(pipeline, tuple) and len(pipeline) == 2 and isinstance(pipeline[0], list)):
        return ",".join(pipeline)
    if isinstance(pipeline, tuple) and len(pipeline) == 2 and isinstance(pipeline[0], (list, tuple)) \
            and isinstance(pipeline[1], str):
        if all(isinstance(s, str) for s in pipeline[0]):  # names: checked when the pipeline is built
            return (list(pipeline[0]), pipeline[1])
        from dcopt.passes.base import Pass

        bad = [s for s in pipeline[0] if not isinstance(s, (str, Pass))]
        if bad:
            raise ArgumentError(f"steps must be pass names or Pass objects, got {type(bad[0]).__name__}",
                                argument="pipeline")
        return (list(pipeline[0]), pipeline[1])
    raise ArgumentError(f"expected a pipeline name or pass spec (e.g. 'O3'), a list of pass names, or (steps, label); "
                        f"got {type(pipeline).__name__}", argument="pipeline")


def check_threads(threads):
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) and not hasattr(threads, "__index__"):
        raise ArgumentError(f"expected a number of threads (an int >= 1) or None, got {type(threads).__name__}",
                            argument="threads")
    threads = int(threads.__index__())
    if not 1 <= threads <= 4096:
        raise ArgumentError(f"must be between 1 and 4096, got {threads}", argument="threads")
    return threads


def check_dims(dims):
    """``{symbol: size}`` with sizes non-negative ints that fit the size limits."""
    if dims is None:
        return None
    from dcopt.limits import SizeLimitError, check_dim_value

    if not isinstance(dims, Mapping):
        raise ArgumentError(f"expected a mapping {{symbol: size}}, got {type(dims).__name__}", argument="dims")
    checked = {}
    for symbol, size in dims.items():
        if not isinstance(symbol, str) or not symbol:
            raise ArgumentError(f"symbol names must be non-empty strings, got {symbol!r}", argument="dims")
        try:
            checked[symbol] = check_dim_value(symbol, size, what="size of")
        except SizeLimitError as exc:
            raise ArgumentError(exc.message, argument="dims") from None
    return checked


def check_patches(patches):
    if isinstance(patches, str):
        raise ArgumentError("expected a list of patch URIs, got one string (wrap it in a list: [uri])",
                            argument="patches")
    if patches is None:
        return ()
    try:
        items = list(patches)
    except TypeError:
        raise ArgumentError(f"expected a list of patch URIs, got {type(patches).__name__}", argument="patches") from None
    if not items:
        return ()
    from dcopt.passes.patches import parse_uri

    for item in items:
        if not isinstance(item, str):
            raise ArgumentError(f"expected patch URIs (strings), got {type(item).__name__}", argument="patches")
        parse_uri(item)  # a bad URI is a PatchURIError listing what is valid, before compiling
    return tuple(items)


def check_cache_dir(cache_dir):
    if cache_dir is None:
        return None
    if not isinstance(cache_dir, (str, os.PathLike)) or not str(os.fspath(cache_dir)).strip():
        raise ArgumentError(f"expected a directory path or None, got {cache_dir!r}", argument="cache_dir")
    path = os.fspath(cache_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ArgumentError(f"'{path}' exists and is not a directory", argument="cache_dir")
    return cache_dir


def check_dynamic(dynamic) -> bool | tuple[str, ...]:
    """``dynamic=``: a bool, or symbolic dim names (a string or a sequence of strings)."""
    if isinstance(dynamic, bool):
        return dynamic or ()
    if isinstance(dynamic, str):
        dynamic = [dynamic]
    if not isinstance(dynamic, Sequence) or not all(isinstance(d, str) and d for d in dynamic):
        raise ArgumentError(f"expected True/False or symbolic dim names such as ['batch', 'seq'], got {dynamic!r}",
                            argument="dynamic")
    return tuple(dynamic)
