"""One build for every size, measured: architectures exported with symbolic batch and sequence
dims (vision ones: a symbolic batch), compiled once with ``dynamic=True``, run at several sizes
beside a build compiled for each size and onnxruntime.

    python -m benchmarks.dynamic_sizes --archs bert,gpt2,llama --size realistic --json out.json

Per architecture it reports the one compile (seconds), and per size: the first run at that size
(binding the build to it: buffers placed, weights-only steps run), the medians of interleaved
bursts of the build for every size, the build compiled for that size alone and onnxruntime, the
time that per-size compile took, and the largest error against onnxruntime relative to the
largest output. The models are the sweep's (:func:`benchmarks.sweep.build_module`, seeded random
weights rescaled to unit activations), exported with ``torch.onnx.export`` and dynamic axes.
``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` are unset in this process (they slow numpy's BLAS).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

#: Sizes each architecture runs at, per --size, the example size first: (batch, sequence) for
#: text models, (batch,) for vision models (their images keep the sweep's size).
SIZES = {"tiny": [(1, 32), (2, 17), (1, 5), (3, 64)],
         "realistic": [(1, 128), (1, 32), (2, 77), (4, 128), (1, 8)]}
VISION_SIZES = [(1,), (2,), (4,)]
DEFAULT_ARCHS = "bert,distilbert,roberta,gpt2,opt,bloom,llama,qwen2,phi,resnet"


def export_dynamic(arch: str, size: str, cache: Path) -> Path:
    """The architecture's ONNX file with symbolic ``batch`` (and, for text, ``seq``) dims (cached)."""
    import torch
    import transformers

    from benchmarks.sweep import ARCHITECTURES, build_module

    path = cache / f"{arch}_{size}_dyn_torch{torch.__version__}_tf{transformers.__version__}.onnx".replace("+", "_")
    if path.exists():
        return path
    kind = ARCHITECTURES.get(arch, "text")
    module, example = build_module(arch, kind, size)
    names = ["pixel_values"] if kind == "vision" else ["input_ids", "attention_mask"]
    axes = {0: "batch"} if kind == "vision" else {0: "batch", 1: "seq"}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(tmp), input_names=names, output_names=["y"], opset_version=17,
                          dynamo=False, dynamic_axes={name: axes for name in names} | {"y": {0: "batch"}})
    os.replace(tmp, path)
    return path


def feeds_at(sizes: tuple, inputs) -> dict:
    """Seeded inputs at ``sizes``: token ids and a mask with padding at the start of every
    sequence but the first, or images of the exported size for ``(batch,)``."""
    rng = np.random.default_rng(sum(sizes) * 1000 + sizes[0])
    if len(sizes) == 1:
        (i,) = inputs
        return {i.name: rng.standard_normal((sizes[0], *i.shape[1:])).astype(np.float32)}
    batch, seq = sizes
    mask = np.ones((batch, seq), np.int64)
    mask[1:, : seq // 4] = 0
    feeds = {"input_ids": rng.integers(0, 1000, (batch, seq)).astype(np.int64), "attention_mask": mask}
    return {k: v for k, v in feeds.items() if k in {i.name for i in inputs}}


def measure(arch: str, size: str, cache: Path, reps: int, threads: int) -> dict:
    import onnxruntime as ort

    import dcopt
    from benchmarks.measure import interleaved_times, summarize

    from benchmarks.sweep import ARCHITECTURES

    path = export_dynamic(arch, size, cache)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    reference = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = reference.get_inputs()
    sizes = VISION_SIZES if ARCHITECTURES.get(arch) == "vision" else SIZES[size]
    row: dict = {"arch": arch, "sizes": []}
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        generic = dcopt.compile(str(path), dynamic=True, dims=dict(zip(("batch", "seq"), sizes[0])),
                                cache_dir=cache_dir, threads=threads)
        row["compile_s"] = time.perf_counter() - start
        row["dynamic"] = generic.manifest.get("dynamic", [])
        row["refused"] = generic.manifest.get("dynamic_refused")
        keys = set()
        for at in sizes:
            feeds = feeds_at(at, inputs)
            start = time.perf_counter()
            out = generic.run(None, feeds)[0]
            first = time.perf_counter() - start
            keys.add(generic.build_key)
            start = time.perf_counter()
            fixed = dcopt.compile(str(path), dims=dict(zip(("batch", "seq"), at)), cache_dir=cache_dir,
                                  threads=threads)
            fixed_compile = time.perf_counter() - start
            expected = reference.run(None, feeds)[0]
            error = float(np.nanmax(np.abs(out - expected)) / max(float(np.abs(expected).max()), 1e-30))
            calls = {"one build": lambda: generic.run(None, feeds), "per size": lambda: fixed.run(None, feeds),
                     "onnxruntime": lambda: reference.run(None, feeds)}
            rounds, errors = interleaved_times(calls, warmup=1, reps=reps)
            medians = {k: summarize([t for r in v for t in r])["median_ms"] for k, v in rounds.items()}
            row["sizes"].append({"sizes": list(at), "first_run_ms": first * 1e3,
                                 "per_size_compile_s": fixed_compile, "error": error, "ms": medians,
                                 "errors": errors})
        row["builds"] = len(keys)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=DEFAULT_ARCHS)
    parser.add_argument("--size", choices=sorted(SIZES), default="realistic")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "dcopt-dynamic-models"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(var, None)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for arch in args.archs.split(","):
        try:
            row = measure(arch, args.size, cache, args.reps, args.threads)
        except Exception as exc:  # noqa: BLE001 - one architecture's failure is a result, not the end
            row = {"arch": arch, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        rows.append(row)
        _print_row(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _print_row(row: dict) -> None:
    if "error" in row:
        print(f"{row['arch']}: ERROR {row['error']}", flush=True)
        return
    head = f"{row['arch']}: one compile {row['compile_s']:.2f} s, free dims {row['dynamic'] or '-'}, builds {row['builds']}"
    print(head + (f" (refused: {row['refused']})" if row["refused"] else ""), flush=True)
    for s in row["sizes"]:
        ms = s["ms"]
        print(f"  {'x'.join(map(str, s['sizes'])):<6} first run {s['first_run_ms']:7.1f} ms | one build {ms.get('one build', 0):7.2f}"
              f" ms, per size {ms.get('per size', 0):7.2f} ms (compile {s['per_size_compile_s']:.2f} s), onnxruntime "
              f"{ms.get('onnxruntime', 0):7.2f} ms | one build / per size {ms['per size'] / ms['one build']:.2f}x, vs "
              f"onnxruntime {ms['onnxruntime'] / ms['one build']:.2f}x | error {s['error']:.1e}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
