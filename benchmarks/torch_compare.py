"""``python -m benchmarks.torch_compare``: one PyTorch model through every way it can run here.

For each model, in one process and timed in interleaved rounds (:func:`benchmarks.measure.interleaved_times`):

* ``eager``          -- the module itself under ``torch.inference_mode()``;
* ``inductor``       -- ``torch.compile(module)`` (PyTorch's own compiler);
* ``torch.compile``  -- ``torch.compile(module, backend="dcopt")``;
* ``torch.export``   -- :func:`dcopt.frontends.torch_backend.compile_module` (one exported program);
* ``dcopt-onnx``     -- ``dcopt.compile`` of the same module's ONNX export (TorchScript exporter,
  opset 17), fed the same inputs;
* ``onnxruntime``    -- that ONNX file in onnxruntime (CPU, sequential, all graph optimizations).

Every runtime gets ``--threads`` intra-op threads (default 2) and batch 1; the torch paths run
under ``torch.inference_mode()``. Each output is checked against eager at fp32 rtol 1e-4, atol
1e-5 (:func:`benchmarks.measure.compare_outputs`), or -- where eager fp32 itself is that far from
the float64 result (random-weight ResNet-50) -- at most twice eager's own error from float64
(``ok (fp32 rounding)``, :func:`benchmarks.torch_paths._rounding_only`); any other result is
reported WRONG (and still timed, so the table stays complete). The table lists medians, p10-p90 and the ratio of each runtime's median to the
``dcopt-onnx`` median (< 1: faster than dcopt's ONNX path).

Models: ``bert`` and ``gpt2`` are the harness's (:mod:`benchmarks.models`: hidden 256, 4 layers,
seq 128); ``bert768`` is BERT-base width (hidden 768, 12 heads, intermediate 3072, seq 128) with
``--bert768-layers`` layers (default 4, to keep compile time short); ``resnet50`` is transformers'
``ResNetModel(ResNetConfig())`` (ResNet-50) on 1x3x224x224. Seeded random weights and inputs.

Like ``benchmarks.run``, the process unsets ``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` before numpy
loads (``--no-unset-openblas-env`` keeps them); the report says what it changed.

    python -m benchmarks.torch_compare                              # all four models
    python -m benchmarks.torch_compare --models bert,gpt2 --reps 60 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

MODELS = ("bert", "bert768", "gpt2", "resnet50")
#: Built in this order: inductor last, since building the dcopt torch.compile path resets Dynamo.
RUNTIMES = ("eager", "torch.compile", "torch.export", "dcopt-onnx", "onnxruntime", "inductor")
REFERENCE = "dcopt-onnx"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_model(name: str, *, bert768_layers: int = 4):
    """(module in eval mode, example inputs as tensors, ONNX input names) for one model name."""
    import numpy as np
    import torch

    from benchmarks import models

    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    if name in ("bert", "gpt2"):
        module = models._hf_module(name)
    elif name == "bert768":
        from transformers import BertConfig, BertModel

        core = BertModel(BertConfig(hidden_size=768, num_hidden_layers=bert768_layers, num_attention_heads=12,
                                    intermediate_size=3072))
        module = _last_hidden(core)
    elif name == "resnet50":
        from transformers import ResNetConfig, ResNetModel

        module = _last_hidden(ResNetModel(ResNetConfig()), vision=True)
        pixels = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
        return module.eval(), (torch.from_numpy(pixels),), ("pixel_values",)
    else:
        raise KeyError(f"unknown model '{name}' (known: {', '.join(MODELS)})")
    vocab = 50257 if name == "gpt2" else 30522
    ids = torch.from_numpy(rng.integers(0, vocab, (1, models.SEQ_LEN)).astype(np.int64))
    mask = torch.ones((1, models.SEQ_LEN), dtype=torch.int64)
    return module.eval(), (ids, mask), ("input_ids", "attention_mask")


def _last_hidden(core, vision: bool = False):
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self, core):
            super().__init__()
            self.core = core

        def forward(self, *args):
            if vision:
                return self.core(pixel_values=args[0], return_dict=True).last_hidden_state
            return self.core(input_ids=args[0], attention_mask=args[1], return_dict=True).last_hidden_state

    return LastHidden(core).eval()


def export_onnx(name: str, module, example: tuple, input_names, cache: Path) -> Path:
    """The module's ONNX export (TorchScript exporter, opset 17), cached by model and versions."""
    import torch
    import transformers

    from benchmarks import models

    models._ensure_cache_dir(cache)
    path = cache / (models._slug(f"cmp_{name}_torch{torch.__version__}_tf{transformers.__version__}") + ".onnx")
    if path.exists():
        return path
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(tmp), input_names=list(input_names), output_names=["y"],
                          opset_version=17, dynamo=False)
    os.replace(tmp, path)
    return path


def prepare(runtime: str, module, example: tuple, onnx_path: Path, input_names, threads: int) -> Callable[[], Any]:
    """A zero-argument call running one inference and returning the output as numpy."""
    import numpy as np
    import torch

    from benchmarks import torch_paths

    if runtime in ("torch.compile", "torch.export"):
        return torch_paths._build(runtime, module, example)
    if runtime in ("eager", "inductor"):
        if runtime == "inductor":
            torch._dynamo.reset()
        function = module if runtime == "eager" else torch.compile(module)

        def call():
            with torch.inference_mode():
                return torch_paths._first_tensor(function(*example)).numpy()

        return call
    import onnx

    wanted = {i.name for i in onnx.load(str(onnx_path), load_external_data=False).graph.input}
    feeds = {n: np.ascontiguousarray(t.numpy()) for n, t in zip(input_names, example) if n in wanted}
    if runtime == "dcopt-onnx":
        import dcopt.compiled as dc

        session = dc.compile(str(onnx_path), threads=threads, example_feeds=feeds)
        return lambda: session.run(None, feeds)[0]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feeds)[0]


def compare_model(name: str, runtimes, *, threads: int = 2, reps: int = 60, time_budget_s: float = 60.0,
                  cache: Path | None = None, bert768_layers: int = 4, log=_log) -> dict:
    """Build, check and time one model on every runtime; returns ``{runtime: entry}`` where an
    entry has ``status``, ``compile_s``, ``correctness`` and (timed) ``median_ms``, ``p10_ms``,
    ``p90_ms``, ``reps`` and ``vs_<runtime>`` ratios (this median / that one)."""
    import torch

    from benchmarks import measure, models, torch_paths

    torch.set_num_threads(threads)
    module, example, input_names = build_model(name, bert768_layers=bert768_layers)
    with torch.inference_mode():
        expected = module(*example).numpy()
    onnx_path = export_onnx(name if name != "bert768" else f"bert768_l{bert768_layers}", module, example,
                            input_names, cache or models.CACHE_DIR)
    results, calls = torch_paths.build_checked(
        runtimes, lambda runtime: prepare(runtime, module, example, onnx_path, input_names, threads), module,
        example, expected, log=lambda line: log(f"  {name} {line}"))
    times, errors = measure.interleaved_times(calls, warmup=1, reps=reps, time_budget_s=time_budget_s)
    medians = {}
    for runtime, rounds in times.items():
        if runtime in errors:
            results[runtime]["status"] = f"error: {errors[runtime]}"
            continue
        stats = measure.summarize([t for rnd in rounds for t in rnd])
        results[runtime].update({k: stats[k] for k in ("reps", "median_ms", "p10_ms", "p90_ms")})
        medians[runtime] = stats["median_ms"]
    for runtime, median in medians.items():
        results[runtime].update({f"vs_{other}": median / m for other, m in medians.items() if other != runtime})
    return results


def format_table(name: str, results: dict) -> str:
    """One model's rows: median, p10-p90, and ratios to dcopt-onnx, inductor, eager, onnxruntime."""
    others = ("dcopt-onnx", "inductor", "eager", "onnxruntime")
    head = f"{name:9s} {'runtime':14s} {'median ms':>9s} {'p10-p90 ms':>14s} {'reps':>4s} " + \
        " ".join(f"{'/' + o:>12s}" for o in others) + "  status"
    lines = [head]
    for runtime, e in results.items():
        if "median_ms" not in e:
            lines.append(f"{name:9s} {runtime:14s} {'-':>9s} {'':14s} {'':4s} " + " " * 13 * len(others)
                         + f" {e.get('status', '')}")
            continue
        ratios = " ".join(f"{e[f'vs_{o}']:12.3f}" if f"vs_{o}" in e else f"{'':12s}" for o in others)
        lines.append(f"{name:9s} {runtime:14s} {e['median_ms']:9.3f} {e['p10_ms']:6.2f}-{e['p90_ms']:<7.2f} "
                     f"{e['reps']:4d} {ratios}  {e['status']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"subset of {', '.join(RUNTIMES)}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=60, help="timed calls per runtime (max)")
    parser.add_argument("--time-budget", type=float, default=60.0, help="seconds of timed rounds per model")
    parser.add_argument("--bert768-layers", type=int, default=4)
    parser.add_argument("--json", default=None, metavar="PATH")
    parser.add_argument("--unset-openblas-env", action=argparse.BooleanOptionalAction, default=True,
                        help="unset OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE in this process before numpy loads")
    args = parser.parse_args(argv)
    from benchmarks.run import prepare_env

    env_changes = prepare_env(args.unset_openblas_env, args.threads)  # before anything imports numpy
    for change in env_changes:
        _log(f"env: {change}")
    runtimes = [r for r in args.runtimes.split(",") if r]
    unknown = set(runtimes) - set(RUNTIMES)
    if unknown:
        parser.error(f"unknown runtime(s) {', '.join(sorted(unknown))}")
    everything = {"env_changes": env_changes, "threads": args.threads, "models": {}}
    for name in [m for m in args.models.split(",") if m]:
        _log(f"{name}:")
        results = compare_model(name, runtimes, threads=args.threads, reps=args.reps, time_budget_s=args.time_budget,
                                bert768_layers=args.bert768_layers)
        everything["models"][name] = results
        print(format_table(name, results), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
