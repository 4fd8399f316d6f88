"""Example models bundled with dcopt, built from code so they are reproducible.

``tiny_resnet.onnx`` is written by :func:`build_tiny_resnet` (``python -m dcopt.examples``
rebuilds it): a small residual CNN (Conv, BatchNormalization, Relu, Add, pooling, Gemm,
Softmax) with a symbolic batch dimension ``N`` and seeded random weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EXAMPLES_DIR = Path(__file__).parent
TINY_RESNET = EXAMPLES_DIR / "tiny_resnet.onnx"


def build_tiny_resnet(seed: int = 0, opset: int = 17) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def param(name, shape, scale=0.1):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def conv_bn_relu(x, name, cin, cout, stride=1, relu=True):
        w = param(f"{name}.w", (cout, cin, 3, 3), scale=np.sqrt(2.0 / (cin * 9)))
        nodes.append(helper.make_node("Conv", [x, w], [f"{name}.conv"], name=f"{name}/conv",
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]))
        bn = [param(f"{name}.bn.{p}", (cout,)) for p in ("scale", "bias", "mean")]
        inits.append(numpy_helper.from_array(rng.uniform(0.5, 1.5, cout).astype(np.float32), f"{name}.bn.var"))
        inits[-4] = numpy_helper.from_array(rng.uniform(0.5, 1.5, cout).astype(np.float32), f"{name}.bn.scale")
        nodes.append(helper.make_node("BatchNormalization", [f"{name}.conv", *bn, f"{name}.bn.var"], [f"{name}.bn"],
                                      name=f"{name}/bn", epsilon=1e-5))
        if not relu:
            return f"{name}.bn"
        nodes.append(helper.make_node("Relu", [f"{name}.bn"], [f"{name}.out"], name=f"{name}/relu"))
        return f"{name}.out"

    x = conv_bn_relu("image", "stem", 3, 16)
    y = conv_bn_relu(x, "block1a", 16, 16)
    y = conv_bn_relu(y, "block1b", 16, 16, relu=False)
    nodes.append(helper.make_node("Add", [x, y], ["block1.sum"], name="block1/add"))
    nodes.append(helper.make_node("Relu", ["block1.sum"], ["block1.out"], name="block1/relu"))
    z = conv_bn_relu("block1.out", "down", 16, 32, stride=2)
    nodes.append(helper.make_node("GlobalAveragePool", [z], ["pool"], name="head/pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flat"], name="head/flatten", axis=1))
    param("fc.w", (32, 10), scale=0.3)
    param("fc.b", (10,))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="head/fc"))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="head/softmax", axis=-1))
    graph = helper.make_graph(
        nodes, "tiny_resnet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="dcopt.examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_examples() -> list[Path]:
    onnx.save_model(build_tiny_resnet(), TINY_RESNET)
    return [TINY_RESNET]
