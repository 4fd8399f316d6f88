"""Fixtures for pass tests: graphs from ONNX text, and light-zoo models with random weights."""

from __future__ import annotations

import onnx
import onnx.parser
import pytest

from dcopt.frontends.onnx_import import import_model
from dcopt.ir.graph import Graph
from dcopt.testing import light_zoo_path, with_random_weights


def graph_from_text(text: str, opset: int = 17) -> Graph:
    """Import a graph written in ONNX's text syntax (shape inference fills transient types)::

        agraph (float[N, 4] x) => (float[N, 4] y) <float[1] one = {1.0}> { y = Mul(x, one) }

    Initializers in ``< >`` become parameters.
    """
    header = f'<ir_version: 8, opset_import: ["" : {opset}]>\n'
    return import_model(onnx.parser.parse_model(header + text))


@pytest.fixture
def parse():
    """``parse(text, opset=17) -> Graph``."""
    return graph_from_text


@pytest.fixture
def light_model():
    """``light_model(name, random_weights=True) -> Graph`` for a model of onnx's light zoo.

    The zoo writes every weight as ``ConstantOfShape(shape, value=0.02)``; identical weights
    would let CSE merge everything and hide mistakes, so by default they become seeded random
    parameters (:func:`dcopt.testing.with_random_weights`, shared with the onnxruntime tests).
    """

    def load(name: str, random_weights: bool = True) -> Graph:
        path = light_zoo_path(name)
        if not path.exists():
            pytest.skip(f"light-zoo model {name} is not installed with this onnx")
        model = onnx.load(path)
        return import_model(with_random_weights(model, seed=0) if random_weights else model)

    return load
