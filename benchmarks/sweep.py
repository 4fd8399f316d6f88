"""``python -m benchmarks.sweep``: many transformers architectures, tiny or realistic configs, dcopt beside onnxruntime.

The fixed harness models (``benchmarks.run``) are the famous ones; this sweep is the other half of
the question -- how does dcopt do on architectures nobody tuned it for? Each architecture is built
from a tiny config of its own type (``AutoConfig.for_model`` with small sizes, seeded random
weights), wrapped to return its first output tensor, exported with ``torch.onnx.export`` (opset 17),
and then benchmarked exactly like ``benchmarks.run --model-file``: interleaved rounds, medians,
spread, outputs checked against onnxruntime at fp32 tolerance. The summary lists, per architecture,
the speed ratio (onnxruntime median / dcopt median: > 1 is dcopt faster), whether dcopt's outputs
are valid, and every op that ran as a fallback or dynamic step (the compiled path's gaps).

An architecture that cannot be built or exported here is listed as such (a transformers/torch
limitation, not a dcopt result). Exports are cached by torch/transformers version.

    python -m benchmarks.sweep                       # every architecture below, all three paths
    python -m benchmarks.sweep --only llama,vit --reps 20 --json sweep.json
    python -m benchmarks.sweep --paths torch.compile,torch.export   # the PyTorch paths only
    python -m benchmarks.sweep --size realistic --paths onnx        # hidden 256, sequence 128, 224x224

Besides the ONNX path, the sweep runs the PyTorch user's two paths on the same module
(:mod:`benchmarks.torch_paths`): ``torch.compile(backend="dcopt")`` and ``torch.export`` ->
dcopt, each checked against eager PyTorch and timed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

from benchmarks import torch_paths


#: model_type -> "text" (input_ids, attention_mask) or "vision" (pixel_values).
ARCHITECTURES = {
    # encoders
    "bert": "text", "roberta": "text", "distilbert": "text", "albert": "text", "electra": "text",
    "deberta": "text", "deberta-v2": "text", "squeezebert": "text", "mobilebert": "text",
    "xlm-roberta": "text", "camembert": "text", "ernie": "text", "roformer": "text", "mpnet": "text",
    "funnel": "text", "layoutlm": "text", "megatron-bert": "text", "convbert": "text", "canine": "text",
    "rembert": "text", "data2vec-text": "text", "esm": "text", "big_bird": "text", "splinter": "text",
    # decoders
    "gpt2": "text", "gpt_neo": "text", "gptj": "text", "opt": "text", "bloom": "text", "llama": "text",
    "mistral": "text", "qwen2": "text", "phi": "text", "phi3": "text", "gemma": "text", "stablelm": "text",
    "falcon": "text", "mpt": "text", "codegen": "text", "gpt_neox": "text", "biogpt": "text",
    "starcoder2": "text", "olmo": "text", "gemma2": "text", "granite": "text", "xglm": "text",
    "gpt_bigcode": "text", "persimmon": "text", "qwen3": "text", "cohere": "text", "glm": "text",
    # vision
    "vit": "vision", "deit": "vision", "beit": "vision", "convnext": "vision", "convnextv2": "vision",
    "resnet": "vision", "mobilenet_v1": "vision", "mobilenet_v2": "vision", "regnet": "vision",
    "poolformer": "vision", "bit": "vision", "levit": "vision", "efficientnet": "vision", "dinov2": "vision",
    "segformer": "vision", "swin": "vision", "mobilevit": "vision", "data2vec-vision": "vision", "yolos": "vision",
    "pvt": "vision", "focalnet": "vision", "cvt": "vision", "glpn": "vision",
}

#: Config sizes per ``--size``, applied where the config has the attribute (standard names reach
#: aliases such as GPT-2's ``n_embd`` through transformers' attribute maps), and the input sizes
#: (``seq`` tokens, ``image`` x ``image`` pictures; batch 1). *tiny* finds what does not compile or
#: falls back, quickly; *realistic* (hidden 256, sequence 128, 224 x 224 images, two layers to
#: keep a sweep within an hour on two cores) says how fast dcopt is where the time goes into
#: GEMMs and convolutions of real widths.
SIZES = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
             "vocab_size": 1000, "max_position_embeddings": 128, "num_key_value_heads": 2, "embedding_size": 64,
             "image_size": 64, "num_channels": 3, "n_positions": 128, "rotary_dim": 8, "ffn_dim": 128,
             "hidden_act": None, "type_vocab_size": 2, "num_labels": 2, "seq": 32, "image": 64},
    "realistic": {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 1024,
                  "vocab_size": 1000, "max_position_embeddings": 512, "num_key_value_heads": 2,
                  "embedding_size": 256, "image_size": 224, "num_channels": 3, "n_positions": 512,
                  "rotary_dim": 32, "ffn_dim": 1024, "hidden_act": None, "type_vocab_size": 2, "num_labels": 2,
                  "seq": 128, "image": 224},
}
#: Config keys a staged model (one with ``depths``: ConvNeXt, Swin, ...) holds per stage or derives
#: from its stages; the sweep leaves them at the architecture's defaults.
_PER_STAGE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "embedding_size")
#: Keys of :data:`SIZES` that size the inputs rather than the config.
_INPUT_SIZES = ("seq", "image")
VOCAB = 1000


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sized_config(model_type: str, size: str = "tiny"):
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type)
    staged = isinstance(getattr(config, "depths", None), (list, tuple))
    for key, value in SIZES[size].items():
        if key in _INPUT_SIZES:
            continue
        if staged and key in _PER_STAGE:
            continue  # a staged model (ConvNeXt, Swin, ...) sizes these per stage: see below
        if value is not None and hasattr(config, key):
            try:
                setattr(config, key, value)
            except Exception:  # noqa: BLE001 - a config that derives this value
                pass
    if staged:  # keep each stage's width and heads; at most two blocks per stage (as two layers elsewhere)
        config.depths = [min(int(d), 2) for d in config.depths]
    if getattr(config, "pad_token_id", None) is not None and config.pad_token_id >= VOCAB:
        config.pad_token_id = 0
    if hasattr(config, "head_dim") and getattr(config, "num_attention_heads", None):
        try:
            config.head_dim = config.hidden_size // config.num_attention_heads
        except Exception:  # noqa: BLE001 - a derived property (Falcon)
            pass
    for key in ("attn_implementation", "_attn_implementation"):
        try:
            setattr(config, key, "eager")
        except Exception:  # noqa: BLE001
            pass
    return config


def build_module(model_type: str, kind: str, size: str = "tiny"):
    """The architecture as a seeded random-weight module returning its first output tensor, and
    its example inputs (a batch of 1: ``seq`` tokens or an ``image`` x ``image`` picture)."""
    import torch
    from transformers import AutoModel

    torch.manual_seed(0)
    core = AutoModel.from_config(sized_config(model_type, size)).eval()

    class FirstOutput(torch.nn.Module):
        def __init__(self, core):
            super().__init__()
            self.core = core

        def forward(self, *args):
            if kind == "vision":
                out = self.core(pixel_values=args[0], return_dict=False)
            else:
                out = self.core(input_ids=args[0], attention_mask=args[1], return_dict=False)
            return out[0]

    feeds = _feeds(kind, size)
    module, example = FirstOutput(core).eval(), tuple(torch.from_numpy(v) for v in feeds.values())
    unit_scale(module, example)
    return module, example


def unit_scale(module, example) -> None:
    """Rescale every Conv and Linear layer so that its output has unit standard deviation on
    ``example`` (one forward pass, layers rescaled in the order they run: LSUV-style).

    transformers' random init (normal, std ``initializer_range`` = 0.02) is made for training,
    not for measuring: without trained weights the activations of a deep CNN shrink by ~20x per
    layer. At 224x224 MobileNet-v2's output was ~6e-22, MobileNet-v1's ~3e-28 and
    EfficientNet's exactly 0, so an accuracy check passed vacuously and the timings ran on
    subnormals and zeros. After rescaling each output is of order one."""
    import torch

    def rescale(layer, _inputs, out):
        if not isinstance(out, torch.Tensor) or not out.is_floating_point() or out.numel() < 2:
            return None
        std = float(out.float().std())
        if not std > 0 or not torch.isfinite(torch.tensor(std)):
            return None
        layer.weight.div_(std)
        if getattr(layer, "bias", None) is not None:
            layer.bias.div_(std)
        return out / std

    layers = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
    hooks = [m.register_forward_hook(rescale) for m in module.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad():
            module(*example)
    finally:
        for h in hooks:
            h.remove()


def export(model_type: str, kind: str, cache: Path, size: str = "tiny") -> Path:
    """The architecture's ONNX file (cached), or an exception saying why it cannot be built."""
    import torch
    import transformers

    stem = model_type if size == "tiny" else f"{model_type}_{size}"
    # "u1": weights rescaled by unit_scale (an export cached before it has near-zero outputs)
    path = cache / f"{stem}_u1_torch{torch.__version__}_tf{transformers.__version__}.onnx".replace("+", "_")
    if path.exists():
        return path
    wrapper, example = build_module(model_type, kind, size)
    names = list(_feeds(kind, size))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, example, str(tmp), input_names=names, output_names=["y"], opset_version=17,
                          dynamo=False)
    os.replace(tmp, path)
    return path


def _feeds(kind: str, size: str = "tiny") -> dict:
    """Seeded feeds: token ids in the small vocabulary (a random int64 would index out of range)."""
    import numpy as np

    rng = np.random.default_rng(1)
    seq, image = SIZES[size]["seq"], SIZES[size]["image"]
    if kind == "vision":
        return {"pixel_values": rng.standard_normal((1, 3, image, image)).astype(np.float32)}
    return {"input_ids": rng.integers(0, VOCAB, (1, seq)).astype(np.int64),
            "attention_mask": np.ones((1, seq), np.int64)}


def feeds_for(path: Path, kind: str, size: str = "tiny") -> dict:
    """The feeds the exported file takes (the exporter drops inputs the model ignores)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    wanted = [i.name for i in model.graph.input if i.name not in inits]
    return {k: v for k, v in _feeds(kind, size).items() if k in wanted}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated model types (default: all)")
    parser.add_argument("--paths", default="onnx," + ",".join(torch_paths.PATHS),
                        help="which ways into dcopt to run: onnx (export, then dcopt.compile, timed against "
                             "onnxruntime), torch.compile and torch.export (checked and timed against eager)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny",
                        help="tiny configs (hidden 64, sequence 32, 64x64 images) or realistic ones (hidden 256, "
                             "sequence 128, 224x224 images)")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--time-budget", type=float, default=8.0, help="seconds of timed rounds per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "dcopt-bench" / "sweep"))
    parser.add_argument("--json", help="write every result here")
    parser.add_argument("--unset-openblas-env", action="store_true",
                        help="drop OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE in this process (they slow numpy's BLAS)")
    args = parser.parse_args(argv)
    if args.unset_openblas_env:
        for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            os.environ.pop(key, None)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = sorted(set(paths) - {"onnx", *torch_paths.PATHS})
    if unknown:
        parser.error(f"unknown path(s) {unknown}: choose from onnx, {', '.join(torch_paths.PATHS)}")
    import torch

    torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    wanted = args.only.split(",") if args.only else list(ARCHITECTURES)
    rows, results = [], []
    for model_type in wanted:
        kind = ARCHITECTURES.get(model_type, "text")
        row = {"architecture": model_type}
        rows.append(row)
        if "onnx" in paths:
            row.update(_onnx_path(model_type, kind, cache, args, results))
        torch_wanted = [p for p in paths if p in torch_paths.PATHS]
        if torch_wanted:
            try:
                module, example = build_module(model_type, kind, args.size)
            except Exception as exc:  # noqa: BLE001 - a transformers limitation, reported
                row["torch"] = {p: {"status": f"not built: {type(exc).__name__}"} for p in torch_wanted}
                continue
            row["torch"] = torch_paths.check_paths(module, example, paths=torch_wanted, reps=args.reps,
                                                   time_budget_s=args.time_budget)
            for p, entry in row["torch"].items():
                _log(f"[{model_type}] {p}: {entry['status']}"
                     + (f", {entry['speedup_vs_eager']:.2f}x eager" if "speedup_vs_eager" in entry else ""))
        if args.json:  # after every architecture: a long sweep cut short keeps what it measured
            _write_json(Path(args.json), rows, results)
    _print_summary(rows, paths)
    return 0


def _write_json(path: Path, rows: list, results: list) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"rows": rows, "results": results}, indent=1, default=str))
    os.replace(tmp, path)


def _onnx_path(model_type: str, kind: str, cache: Path, args, results: list) -> dict:
    """Export, then dcopt.compile beside onnxruntime: the row's ONNX columns."""
    from benchmarks import measure
    from benchmarks.models import BenchModel

    t0 = time.perf_counter()
    try:
        path = export(model_type, kind, cache, args.size)
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        _log(f"[{model_type}] not built here: {reason}")
        return {"onnx": "not exported", "gaps": reason}
    _log(f"[{model_type}] exported in {time.perf_counter() - t0:.1f}s")
    model = BenchModel(model_type, path, feeds_for(path, kind, args.size), "sweep", f"{model_type} {args.size} config")
    entry = measure.bench_one(model, ["dcopt", "onnxruntime"], threads=args.threads, warmup=1, reps=args.reps,
                              burst=5, time_budget_s=args.time_budget, log=_log)
    results.append(entry)
    ours = entry["runtimes"].get("dcopt", {})
    speed = (entry.get("speedups", {}).get("onnxruntime") or {}).get("speedup")
    valid = (ours.get("correctness") or {}).get("valid")
    return {"onnx": "ok" if valid else ours.get("error") or "INVALID", "vs_ort": speed,
            "compile_s": ours.get("prepare_s"), "valid": bool(valid),
            "gaps": ", ".join(f"{k}={v}" for k, v in ((ours.get("settings") or {}).get("not_native") or {}).items())}


def _print_summary(rows: list[dict], paths: list[str]) -> None:
    import numpy as np

    torch_cols = [p for p in torch_paths.PATHS if p in paths]
    header = f"{'architecture':16}"
    if "onnx" in paths:
        header += f" {'onnx':14} {'vs ORT':>7} {'compile':>8}"
    for p in torch_cols:
        header += f" {p:14} {'vs eager':>8}"
    print(header + ("  not native (onnx)" if "onnx" in paths else ""))
    for row in rows:
        line = f"{row['architecture']:16}"
        if "onnx" in paths:
            speed, compile_s = row.get("vs_ort"), row.get("compile_s")
            line += (f" {str(row.get('onnx', ''))[:14]:14} {'' if speed is None else f'{speed:.2f}x':>7}"
                     f" {'' if compile_s is None else f'{compile_s:.1f}s':>8}")
        for p in torch_cols:
            entry = row.get("torch", {}).get(p, {})
            ratio = entry.get("speedup_vs_eager")
            line += f" {str(entry.get('status', ''))[:14]:14} {'' if ratio is None else f'{ratio:.2f}x':>8}"
        print(line + (f"  {row.get('gaps', '')}" if "onnx" in paths else ""))
    print()
    if "onnx" in paths:
        speeds = [r["vs_ort"] for r in rows if r.get("valid") and r.get("vs_ort")]
        if speeds:
            print(f"onnx: {len(speeds)} architectures timed; geomean {float(np.exp(np.mean(np.log(speeds)))):.2f}x "
                  f"onnxruntime, median {float(np.median(speeds)):.2f}x; slower than onnxruntime: "
                  f"{sum(s < 1 for s in speeds)}; with a not-native step: "
                  f"{sum(1 for r in rows if r.get('gaps') and r.get('onnx') != 'not exported')}")
    for p in torch_cols:
        entries = [r.get("torch", {}).get(p, {}) for r in rows]
        ok = [e for e in entries if e.get("status") in ("ok", torch_paths.ROUNDING)]
        rounding = sum(e.get("status") == torch_paths.ROUNDING for e in entries)
        ratios = [e["speedup_vs_eager"] for e in ok if e.get("speedup_vs_eager")]
        geo = f"; geomean {float(np.exp(np.mean(np.log(ratios)))):.2f}x eager" if ratios else ""
        print(f"{p}: {len(ok)}/{len(entries)} pass (all graphs through dcopt, output within tolerance"
              f"{f'; {rounding} of them at fp32 rounding, see benchmarks.torch_paths' if rounding else ''}){geo}")


if __name__ == "__main__":
    sys.exit(main())
