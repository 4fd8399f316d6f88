"""Fixtures for the patch tests: real models (light zoo with random weights, the bundled tiny
ResNet, transformers exported from configs) cached per session, and checks shared by the tests.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from dcopt.api import random_inputs
from dcopt.examples import TINY_RESNET
from dcopt.frontends.onnx_export import export_model
from dcopt.frontends.onnx_import import import_model
from dcopt.ir.graph import Graph
from dcopt.passes.patches import PatchReport, apply_patches, registry
from dcopt.testing import light_zoo_path, run_onnxruntime, with_random_weights
from tests.patches.models import build_transformer_block

REPO = Path(__file__).resolve().parents[2]


def _import(model: onnx.ModelProto) -> Graph:
    # with_random_weights adds initializers that are not graph inputs but keeps the zoo's IR
    # version 3, where ONNX shape inference then types nothing; IR 4 allows such initializers.
    model.ir_version = max(model.ir_version, 4)
    return import_model(model)


@pytest.fixture(scope="session")
def zoo():
    """``zoo(name) -> Graph``: a light-zoo CNN with seeded random weights, or the tiny ResNet
    for ``"tiny_resnet"`` (a fresh copy each call; imported once per session)."""
    cache: dict[str, Graph] = {}

    def load(name: str) -> Graph:
        if name not in cache:
            if name == "tiny_resnet":
                cache[name] = _import(onnx.load(TINY_RESNET))
            else:
                path = light_zoo_path(name)
                if not path.exists():
                    pytest.skip(f"light-zoo model {name} is not installed with this onnx")
                cache[name] = _import(with_random_weights(onnx.load(path), seed=0))
        return cache[name].copy()

    return load


@pytest.fixture(scope="session")
def transformer_files(tmp_path_factory) -> dict[str, Path] | str:
    """bert, bert_unfolded, gpt2, gpt2_lm_unfolded exported with torch (in a subprocess, so torch
    never loads here), or why they could not be."""
    if not (importlib.util.find_spec("torch") and importlib.util.find_spec("transformers")):
        return "torch and transformers are not installed"
    out = tmp_path_factory.mktemp("transformers")
    done = subprocess.run([sys.executable, "-m", "tests.patches.models", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return f"exporting with torch failed: {done.stderr.strip().splitlines()[-1:]}"
    return {p.stem: p for p in out.glob("*.onnx")}


@pytest.fixture(scope="session")
def transformer(transformer_files):
    """``transformer(name) -> Graph`` for the torch exports (bert, gpt2, bert_unfolded,
    gpt2_lm_unfolded; skipped without torch) and ``block``/``block_tanh``, a hand-built transformer
    block with the same idioms (erf or tanh GELU) that needs nothing (:func:`tests.patches.models.build_transformer_block`)."""
    cache: dict[str, Graph] = {}

    def load(name: str) -> Graph:
        if name not in cache:
            if name in ("block", "block_tanh"):
                cache[name] = _import(build_transformer_block(gelu="tanh" if name == "block_tanh" else "erf"))
            elif isinstance(transformer_files, str):
                pytest.skip(f"{name}: {transformer_files}")
            else:
                cache[name] = _import(onnx.load(transformer_files[name]))
        return cache[name].copy()

    return load


@pytest.fixture
def clean_registry():
    """Restore the patch registry after a test that registers patches."""
    registry.available_patches()
    saved = dict(registry._PATCHES)
    yield
    registry._PATCHES.clear()
    registry._PATCHES.update(saved)


def run_both(before: Graph, after: Graph, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Export both graphs (onnx.checker, full check) and run them in onnxruntime on the same inputs."""
    feeds = random_inputs(before, seed=seed)
    models = []
    for g in (before, after):
        model = export_model(g)
        onnx.checker.check_model(model, full_check=True)
        models.append(model)
    return run_onnxruntime(models[0], feeds), run_onnxruntime(models[1], {k: feeds[k] for k in after.inputs})


def patched(graph: Graph, *uris: str, exact: bool | None = None, min_sites: int = 1, **kwargs) -> PatchReport:
    """Apply ``uris``; check each changed the graph at ``min_sites``+ sites, that the result is
    valid ONNX and runs in onnxruntime with the original's output shapes and dtypes, and — for
    exact patches (``exact=True``) — that onnxruntime agrees with the original within fp32 tolerance."""
    report = apply_patches(graph, list(uris), explain=True, **kwargs)
    for step in report.steps:
        assert len(step.outcome.applications) >= min_sites, step.format(explain=True)
    want, got = run_both(graph, report.graph)
    for a, b in zip(want, got):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.isfinite(b).all() or not np.isfinite(a).all()
        if exact:
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    return report


def refusals(report: PatchReport, step: int = 0) -> list[str]:
    """Every refusal of a step as 'root: reason'."""
    return [f"{r.root}: {r.reason}" for r in report.steps[step].outcome.refusals]
