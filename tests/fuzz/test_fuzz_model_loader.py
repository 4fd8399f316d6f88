"""Fuzz target: the model loader. Whatever the bytes or the proto, loading gives a Graph or a
DcoptError -- never another exception (0 crashes, 0 internal errors)."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import event, given
from hypothesis import strategies as st

from dcopt import api
from dcopt.errors import DcoptError
from dcopt.frontends.onnx_import import import_model
from dcopt.ir.graph import Graph
from dcopt.limits import max_tensor_bytes_set
from tests.fuzz.budget import fuzz_settings
from tests.fuzz.models import seeds
from tests.fuzz.mutations import damaged_bytes, json_edit, mutated_models

SEEDS = seeds()
#: A small cap, so a mutated dim that passes int64 but would allocate gigabytes is refused, not tried.
CAP = "64MiB"


def loads_or_refuses(load) -> None:
    with warnings.catch_warnings(), max_tensor_bytes_set(CAP):
        warnings.simplefilter("ignore")
        try:
            assert isinstance(load(), Graph)
            event("loaded")
        except DcoptError as exc:
            event(f"refused: {type(exc).__name__}")


@fuzz_settings(ci_examples=150)
@given(mutated_models(SEEDS))
def test_import_model_on_mutated_protos(model):
    loads_or_refuses(lambda: import_model(model))


@fuzz_settings(ci_examples=60)
@given(mutated_models(SEEDS, max_mutations=2))
def test_load_graph_on_mutated_files_with_external_data(model):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        np.ones(16, np.float32).tofile(folder / "w.bin")
        (Path(tmp) / "outside.bin").write_bytes(b"\0" * 64)
        path = folder / "m.onnx"
        path.write_bytes(model.SerializeToString())
        loads_or_refuses(lambda: api.load_graph(path))


@fuzz_settings(ci_examples=100)
@given(damaged_bytes(SEEDS))
def test_load_graph_on_damaged_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        path.write_bytes(data)
        loads_or_refuses(lambda: api.load_graph(path))


def _ir_texts() -> list[str]:
    from dcopt.ir import serialize

    return [serialize.dumps(import_model(m)) for m in SEEDS]


IR_TEXTS = _ir_texts()


@st.composite
def damaged_ir(draw) -> str:
    """dcopt's IR JSON of a seed with one value replaced or a span cut out."""
    import json

    text = draw(st.sampled_from(IR_TEXTS))
    if draw(st.booleans()):
        return json.dumps(draw(json_edit(json.loads(text))))
    at = draw(st.integers(0, len(text) - 1))
    return text[:at] + draw(st.text(max_size=4)) + text[at + draw(st.integers(0, 8)):]


@fuzz_settings(ci_examples=60)
@given(damaged_ir())
def test_load_graph_on_damaged_ir_json(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.json"
        path.write_text(text, errors="surrogateescape")
        loads_or_refuses(lambda: api.load_graph(path))
