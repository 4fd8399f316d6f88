import numpy as np

from dcopt.frontends.onnx_import import import_model
from dcopt.ir import serialize
from dcopt.ir.graph import Graph, Node
from dcopt.ir.types import TensorType


def test_json_round_trip_is_lossless(tiny_resnet_path):
    g = import_model(tiny_resnet_path)
    g2 = serialize.loads(serialize.dumps(g))
    assert serialize.dumps(g2) == serialize.dumps(g)
    assert g2.containers["image"].type == TensorType("float32", ("N", 3, 32, 32))
    for name, c in g.parameters.items():
        assert np.array_equal(g2.containers[name].data, c.data)
        assert g2.containers[name].data.dtype == c.data.dtype
    assert [n.attrs for n in g2.nodes] == [n.attrs for n in g.nodes]


def test_attribute_types_survive_round_trip():
    g = Graph("g")
    g.add_input("x", TensorType("float32", (2,)))
    g.add_container("y", TensorType("float32", (2,)))
    attrs = {"i": 3, "f": 0.5, "nan": float("nan"), "s": "abc", "ints": (1, 2), "floats": (1.0, 2.5),
             "t": np.array([[1, 2]], np.int64), "empty": ()}
    g.add_node(Node("Custom", ("x",), ("y",), attrs, domain="my.domain"))
    g.outputs.append("y")
    back = serialize.loads(serialize.dumps(g)).nodes[0]
    assert back.domain == "my.domain"
    assert type(back.attrs["i"]) is int and type(back.attrs["f"]) is float and np.isnan(back.attrs["nan"])
    assert back.attrs["floats"] == (1.0, 2.5) and back.attrs["empty"] == ()
    assert back.attrs["t"].dtype == np.int64 and back.attrs["t"].tolist() == [[1, 2]]


def test_printer_shows_types_and_attributes(tiny_resnet_path):
    text = str(import_model(tiny_resnet_path))
    assert text.startswith("graph tiny_resnet (opset ai.onnx=17)")
    assert "input  image: float32[N,3,32,32]" in text
    assert "%stem.conv = Conv(image, stem.w) {kernel_shape=[3,3], pads=[1,1,1,1], strides=[1,1]}" in text
    assert "output probs: float32[N,10]" in text
