"""The benchmark model set, built on the fly (no downloads) and cached as ONNX files.

Why build instead of download: the harness must run anywhere the test suite runs, offline.
- The ONNX light zoo (shipped inside the ``onnx`` wheel) gives nine real CNN topologies whose
  weights are ``ConstantOfShape`` placeholders; :func:`dcopt.testing.with_random_weights` turns
  them into seeded random initializers so outputs are non-trivial and comparable.
- ``bert`` / ``gpt2`` are small transformer encoder/decoder stacks built from ``transformers``
  configs with seeded random weights and exported with ``torch.onnx.export`` (TorchScript
  exporter, opset 17, static shapes batch 1 x seq 128). They keep their torch module so torch
  eager can be timed beside the runtimes that read the ONNX file.
- ``mlp`` is built with ``onnx.helper`` (MatMul+Add+Relu chains, the fusion case) and also gets
  an equivalent torch module from the same weights.

Cache file names carry every version that changes the file's bytes (builder, onnx, torch,
transformers), so a stale file is never reused; delete the cache dir to rebuild.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dcopt.testing import LIGHT_ZOO_NAMES, light_zoo_path, with_random_weights

BUILDER_VERSION = 1
CACHE_DIR = Path(__file__).resolve().parent / ".models"
SEQ_LEN = 128
TRANSFORMERS = ("bert", "gpt2")
MODEL_NAMES = ("mlp", "novel", *TRANSFORMERS, *LIGHT_ZOO_NAMES)
QUICK_MODELS = ("mlp", "squeezenet", "bert")


class ModelUnavailable(Exception):
    """A model cannot be built here (e.g. torch/transformers missing); reported, not fatal."""


@dataclass
class BenchModel:
    """One benchmark model: an ONNX file, fixed feeds, and optionally a torch twin.

    ``torch_factory`` returns the torch module (eval mode) computing the same function as the
    ONNX file; it is called with the feeds named in ``torch_input_names``, in that order.
    """

    name: str
    path: Path
    feeds: dict[str, np.ndarray]
    family: str
    description: str
    torch_factory: Callable[[], Any] | None = None
    torch_input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = field(default=())


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text)


def _ensure_cache_dir(cache_dir: Path) -> None:
    """Create the cache dir with a ``*`` .gitignore inside, so built models never get committed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    ignore = cache_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# built by benchmarks/models.py; safe to delete\n*\n")


def _atomic_save(model: onnx.ModelProto, path: Path) -> None:
    """Write then rename, so an interrupted build never leaves a truncated cached model."""
    _ensure_cache_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def feeds_for(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random feeds for the model's true inputs; symbolic dims become 1.

    Floats are standard normal; integers are in [0, 4) (safe as indices for any table).
    """
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim)
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if dtype == np.bool_:
            feeds[vi.name] = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            feeds[vi.name] = rng.integers(0, 4, shape).astype(dtype)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds



# --- light zoo ---------------------------------------------------------------------------

def build_zoo(name: str, cache_dir: Path) -> BenchModel:
    path = cache_dir / f"zoo_{name}_b{BUILDER_VERSION}_onnx{_slug(onnx.__version__)}.onnx"
    if path.exists():
        model = onnx.load(str(path))
    else:
        model = with_random_weights(onnx.load(str(light_zoo_path(name))), seed=0)
        _atomic_save(model, path)
    return BenchModel(name, path, feeds_for(model), "zoo", f"ONNX light zoo {name}, random weights (seed 0)",
                      output_names=tuple(o.name for o in model.graph.output))


# --- MLP (onnx.helper) ----------------------------------------------------------------------

def _mlp_weights(width: int, layers: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32),
             rng.uniform(-0.1, 0.1, width).astype(np.float32)) for _ in range(layers)]


def build_mlp(cache_dir: Path, *, width: int = 1024, layers: int = 3, batch: int = 1, seed: int = 0,
              name: str = "mlp") -> BenchModel:
    """x[batch,width] -> (MatMul, Add, Relu) x (layers-1) -> MatMul, Add -> y."""
    weights = _mlp_weights(width, layers, seed)
    path = cache_dir / f"{name}_w{width}_l{layers}_b{batch}_s{seed}_b{BUILDER_VERSION}.onnx"
    if not path.exists():
        nodes, inits, cur = [], [], "x"
        for i, (w, b) in enumerate(weights):
            inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
            out = "y" if i == layers - 1 else f"a{i}"
            add_out = out if i == layers - 1 else f"h{i}"
            nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"], name=f"fc{i}"))
            nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [add_out], name=f"bias{i}"))
            if i < layers - 1:
                nodes.append(helper.make_node("Relu", [add_out], [out], name=f"relu{i}"))
            cur = out
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, width])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        _atomic_save(model, path)
    feeds = {"x": np.random.default_rng(seed + 1).standard_normal((batch, width)).astype(np.float32)}

    def torch_factory():
        import torch

        mods = []
        for i, (w, b) in enumerate(weights):
            lin = torch.nn.Linear(width, width)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w.T.copy()))
                lin.bias.copy_(torch.from_numpy(b))
            mods.append(lin)
            if i < layers - 1:
                mods.append(torch.nn.ReLU())
        return torch.nn.Sequential(*mods).eval()

    return BenchModel(name, path, feeds, "mlp", f"MLP {layers}x{width}, batch {batch} (onnx.helper)",
                      torch_factory, ("x",), ("y",))


# --- a model no hand-written kernel covers -------------------------------------------------------

def build_novel(cache_dir: Path, *, shape=(4, 32, 64, 64), seed: int = 0) -> BenchModel:
    """Ops dcopt has no hand-written kernel for, only their expansions: Erf, Softsign, Mod, Where,
    CumSum, GroupNormalization, and activations written out of primitives (QuickGELU as
    ``x * Sigmoid(1.702 x)``, Mish as ``x * Tanh(Softplus(x))``). Whatever speed dcopt gets here
    comes from code generated from the IR (map fusion, reductions), not from a template."""
    groups = 8
    path = cache_dir / f"novel_{'x'.join(map(str, shape))}_s{seed}_b{BUILDER_VERSION}.onnx"
    rng = np.random.default_rng(seed)
    if not path.exists():
        F = TensorProto.FLOAT
        inits = [numpy_helper.from_array(np.array(3.0, np.float32), "three"),
                 numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                 numpy_helper.from_array(np.array(1.702, np.float32), "k"),
                 numpy_helper.from_array(np.array(3, np.int64), "axis"),
                 numpy_helper.from_array(rng.uniform(0.5, 1.5, shape[1]).astype(np.float32), "gamma"),
                 numpy_helper.from_array(rng.standard_normal(shape[1]).astype(np.float32), "beta")]
        n = helper.make_node
        nodes = [n("Erf", ["x"], ["erf"]), n("Softsign", ["erf"], ["soft"]),
                 n("Mod", ["x", "three"], ["mod"], fmod=1), n("Greater", ["x", "zero"], ["pos"]),
                 n("Where", ["pos", "soft", "mod"], ["picked"]), n("CumSum", ["picked", "axis"], ["cum"]),
                 n("GroupNormalization", ["cum", "gamma", "beta"], ["gn"], num_groups=groups, epsilon=1e-5),
                 n("Mul", ["gn", "k"], ["kx"]), n("Sigmoid", ["kx"], ["sig"]), n("Mul", ["gn", "sig"], ["quick"]),
                 n("Softplus", ["quick"], ["sp"]), n("Tanh", ["sp"], ["th"]), n("Mul", ["quick", "th"], ["mish"]),
                 n("Add", ["mish", "x"], ["y"])]
        graph = helper.make_graph(nodes, "novel", [helper.make_tensor_value_info("x", F, list(shape))],
                                  [helper.make_tensor_value_info("y", F, list(shape))], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        model.ir_version = 10
        onnx.checker.check_model(model)
        _atomic_save(model, path)
    feeds = {"x": (rng.standard_normal(shape) * 3).astype(np.float32)}
    return BenchModel("novel", path, feeds, "novel",
                      f"Erf/Softsign/Mod/Where/CumSum/GroupNorm/QuickGELU/Mish chain on {list(shape)} (onnx.helper)",
                      output_names=("y",))


# --- transformers (torch.onnx.export) ---------------------------------------------------------

def _hf_module(kind: str):
    """Seeded random-weight transformer returning only ``last_hidden_state`` (one tensor).

    The wrapper is put in eval mode itself: torch.onnx.export restores the *wrapper's* training
    flag afterwards, which would otherwise switch dropout back on in the inner model.
    """
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    class LastHidden(torch.nn.Module):
        def __init__(self, core):
            super().__init__()
            self.core = core

        def forward(self, input_ids, attention_mask):
            return self.core(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                             return_dict=True).last_hidden_state

    torch.manual_seed(0)
    if kind == "bert":
        core = BertModel(BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                    intermediate_size=1024))
    else:
        core = GPT2Model(GPT2Config(n_embd=256, n_layer=4, n_head=4))
    return LastHidden(core).eval()


def build_transformer(kind: str, cache_dir: Path) -> BenchModel:
    if _version("torch") == "none" or _version("transformers") == "none":
        raise ModelUnavailable(f"{kind} needs torch and transformers (pip install -e .[bench])")
    vocab = 30522 if kind == "bert" else 50257
    path = cache_dir / (f"{kind}_b{BUILDER_VERSION}_torch{_slug(_version('torch'))}"
                        f"_tf{_slug(_version('transformers'))}.onnx")
    if not path.exists():
        import torch

        module = _hf_module(kind)
        ids = torch.zeros((1, SEQ_LEN), dtype=torch.int64)
        mask = torch.ones((1, SEQ_LEN), dtype=torch.int64)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        _ensure_cache_dir(path.parent)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about constant-folded Python bools
            torch.onnx.export(module, (ids, mask), str(tmp), input_names=["input_ids", "attention_mask"],
                              output_names=["last_hidden_state"], opset_version=17, dynamo=False)
        os.replace(tmp, path)
    rng = np.random.default_rng(1)
    all_feeds = {"input_ids": rng.integers(0, vocab, (1, SEQ_LEN)).astype(np.int64),
                 "attention_mask": np.ones((1, SEQ_LEN), dtype=np.int64)}
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    onnx_inputs = [vi.name for vi in model.graph.input if vi.name not in inits]
    label = "BERT-style encoder" if kind == "bert" else "GPT-2-style decoder"
    return BenchModel(kind, path, {k: all_feeds[k] for k in onnx_inputs}, "transformer",
                      f"{label} 4 layers, hidden 256, 4 heads, seq {SEQ_LEN}, batch 1 (random weights)",
                      lambda: _hf_module(kind), ("input_ids", "attention_mask"),
                      tuple(o.name for o in model.graph.output))


# --- entry points -------------------------------------------------------------------------------

def build(name: str, cache_dir: Path = CACHE_DIR) -> BenchModel:
    """Build (or load from cache) one named model; raises ModelUnavailable or KeyError."""
    _ensure_cache_dir(cache_dir)
    if name == "mlp":
        return build_mlp(cache_dir)
    if name == "novel":
        return build_novel(cache_dir)
    if name in TRANSFORMERS:
        return build_transformer(name, cache_dir)
    if name in LIGHT_ZOO_NAMES:
        return build_zoo(name, cache_dir)
    raise KeyError(f"unknown model '{name}' (known: {', '.join(MODEL_NAMES)})")


def from_file(path: str | os.PathLike, seed: int = 0) -> BenchModel:
    """Any ONNX file, with seeded random feeds (no torch twin)."""
    path = Path(path)
    model = onnx.load(str(path))
    return BenchModel(path.stem, path, feeds_for(model, seed), "file", f"ONNX file {path.name}",
                      output_names=tuple(o.name for o in model.graph.output))
