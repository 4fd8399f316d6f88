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
``patches`` (idea-patch URIs, applied before the pipeline), ``cache_dir`` (compile cache root).

Importing this module does not import numba; the backend loads on the first call.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence


def compile(model, *, pipeline="O3", target: str = "cpu", threads: int | None = None,  # noqa: A001
            dims: Mapping[str, int] | None = None, patches: Sequence[str] = (), cache_dir=None,
            example_feeds=None):
    """Compile ``model`` (path, ModelProto or dcopt Graph) into a session with ``run``/``get_inputs``/
    ``get_outputs``. ``example_feeds``: real inputs to specialize sizes with (else random ones)."""
    from dcopt.backends.cpu.session import compile_model

    return compile_model(model, pipeline=pipeline, target=target, threads=threads, dims=dims, patches=patches,
                         cache_dir=cache_dir, example_feeds=example_feeds)


def load(path: str | os.PathLike, *, threads: int | None = None, cache_dir=None):
    """Load a build directory written by ``dcopt compile`` / ``session.save``."""
    from dcopt.backends.cpu.session import load_build

    return load_build(path, cache_dir=cache_dir, threads=threads)


def is_build_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a dcopt build directory (what ``dcopt run`` checks)."""
    return os.path.isfile(os.path.join(path, "manifest.json"))
