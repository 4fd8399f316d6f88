import numpy as np
import pytest

from dcopt.errors import VerificationError
from dcopt.ir.graph import Graph, Kind, Node
from dcopt.ir.types import TensorType
from dcopt.ir.verify import find_problems, verify


def small_graph():
    g = Graph("g")
    g.add_input("x", TensorType("float32", ("N", 4)))
    g.add_parameter("w", np.ones((4, 2), np.float32))
    g.add_container("h", TensorType("float32", ("N", 2)))
    g.add_container("y", TensorType("float32", ("N", 2)))
    g.add_node(Node("MatMul", ("x", "w"), ("h",), name="mm"))
    g.add_node(Node("Relu", ("h",), ("y",), name="relu"))
    g.outputs.append("y")
    return g


def test_kinds_and_edges():
    g = small_graph()
    assert g.kind("x") is Kind.INPUT
    assert g.kind("w") is Kind.PARAMETER
    assert g.kind("h") is Kind.TRANSIENT
    assert g.kind("y") is Kind.OUTPUT
    assert g.producer("h").name == "mm"
    assert [n.name for n in g.consumers("h")] == ["relu"]
    assert g.producer("x") is None
    verify(g)


def test_node_is_immutable_with_replace_and_key():
    n = Node("Add", ["a", "b"], ["c"], {"axes": [1, 2]})
    assert n.inputs == ("a", "b") and n.attrs["axes"] == (1, 2)
    with pytest.raises(Exception):
        n.op = "Sub"
    with pytest.raises(TypeError):
        n.attrs["x"] = 1
    m = n.replace(outputs=("d",))
    assert m.key == n.key and m.outputs == ("d",)
    assert n.replace(attrs={"axes": (1, 3)}).key != n.key


def test_tensor_attr_keys_compare_by_value():
    a = Node("Constant", (), ("c",), {"value": np.array([1.0, 2.0], np.float32)})
    b = Node("Constant", (), ("d",), {"value": np.array([1.0, 2.0], np.float32)})
    c = Node("Constant", (), ("e",), {"value": np.array([1.0, 3.0], np.float32)})
    assert a.key == b.key != c.key


def test_replace_uses_rewires_nodes_and_outputs():
    g = small_graph()
    g.replace_uses("y", "h")
    assert g.outputs == ["h"]


def test_verifier_finds_cycle():
    g = small_graph()
    g.nodes[0] = g.nodes[0].replace(inputs=("y", "w"))
    with pytest.raises(VerificationError, match="cycle"):
        verify(g)


def test_verifier_lists_every_problem():
    g = small_graph()
    g.add_node(Node("Relu", ("missing",), ("y",), name="dup"))
    g.outputs.append("nowhere")
    problems = find_problems(g)
    text = "\n".join(problems)
    assert "written by both" in text
    assert "'missing', which nothing defines" in text
    assert "graph output 'nowhere' is never produced" in text


def test_verifier_catches_out_of_order_nodes_and_toposort_fixes_them():
    g = small_graph()
    g.nodes.reverse()
    assert any("before it is written" in p for p in find_problems(g))
    g.toposort()
    verify(g)


def test_tensor_type_matching_binds_symbols():
    t = TensorType("float32", ("N", 4))
    bindings = {}
    assert t.matches(np.zeros((2, 4), np.float32), bindings) is None and bindings == {"N": 2}
    assert "symbolic dim 'N'" in t.matches(np.zeros((3, 4), np.float32), bindings)
    assert "axis 1: 4 vs 5" in t.matches(np.zeros((2, 5), np.float32))
    assert "expected dtype float32" in t.matches(np.zeros((2, 4), np.int64))
    assert TensorType("float32", ("N", 4)).specialize({"N": 8}).shape == (8, 4)
    assert TensorType("float32", (2, 3)).nbytes == 24 and not t.is_static


def test_fresh_names_are_unique():
    g = small_graph()
    names = {g.fresh_name("h") for _ in range(5)}
    assert len(names) == 5 and not names & set(g.containers)
    g.add_container("h__99", TensorType("float32", (1,)))
    g._names = iter([99, 100])
    assert g.fresh_name("h") == "h__100"


def test_unused_container_removal_keeps_what_a_branch_reads_from_outside():
    """A value only an If branch reads (an implicit input) is used: dropping it broke the
    compiled affine_grid expansion (KeyError at codegen)."""
    g = Graph("g", {"": 17})
    g.add_input("c", TensorType("bool", ()))
    g.add_parameter("k", np.ones(2, np.float32))
    g.add_container("dead", TensorType("float32", (2,)))
    g.add_container("y", TensorType("float32", (2,)))
    branch = Graph("then", {"": 17})
    branch.add_container("r", TensorType("float32", (2,)))
    branch.add_node(Node("Identity", ("k",), ("r",), name="read_k"))
    branch.outputs.append("r")
    other = Graph("else", {"": 17})
    other.add_container("r2", TensorType("float32", (2,)))
    other.add_node(Node("Neg", ("k",), ("r2",), name="neg_k"))
    other.outputs.append("r2")
    g.add_node(Node("If", ("c",), ("y",), {"then_branch": branch, "else_branch": other}, "if"))
    g.outputs.append("y")
    g.remove_unused_containers()
    assert "k" in g.containers and "dead" not in g.containers
