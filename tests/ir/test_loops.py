"""Loop-level IR: the tasklet and index languages, memlets, map/library semantics, cost, checks."""

import math

import numpy as np
import pytest

from dcopt.ir import serialize
from dcopt.ir.executor import run_graph
from dcopt.ir.graph import Graph
from dcopt.ir.loops import (MAP, find_loop_problems, format_loop_node, loop_flops, loop_spec, make_library_call,
                            make_map, memlet_cost, parse_subset, rename_container, Range)
from dcopt.ir.printer import format_graph
from dcopt.ir.tasklet import TaskletError, parse_index, parse_tasklet, run_numpy, run_scalar
from dcopt.ir.types import TensorType
from dcopt.ir.verify import verify
from dcopt.ops import loops as _semantics  # noqa: F401  (registers the loop ops)
from dcopt.passes.expansions.elementwise import GELU, UNARY


def graph_with(nodes, inputs, outputs, containers=(), params=()):
    """A graph from (name, TensorType) inputs/outputs/transients, parameters and nodes."""
    g = Graph("loops")
    for name, t in inputs:
        g.add_input(name, t)
    for name, data in params:
        g.add_parameter(name, data)
    for name, t in (*containers, *outputs):
        g.add_container(name, t)
    g.outputs = [n for n, _ in outputs]
    for node in nodes:
        g.add_node(node)
    g.opset["dcopt.loop"] = 1
    verify(g)
    for node in g.nodes:
        assert find_loop_problems(g, node) == [], format_loop_node(node)
    return g


F32 = "float32"


def f32(*shape):
    return TensorType(F32, shape)


# ------------------------------------------------------------------------------ the languages

def _scalar(tasklet, value):
    try:
        return run_scalar(tasklet, {"a": value})["out"]
    except ValueError:  # math.log(-1) raises where numpy returns nan
        return math.nan


@pytest.mark.parametrize("code", [*UNARY.values(), *GELU.values()])
def test_vectorized_tasklets_agree_with_scalar_python(code):
    """The numpy translation (np.where, logical ops, variadic min/max) means what the scalar code does."""
    tasklet = parse_tasklet("out = " + code.format(alpha=0.2, beta=0.5, gamma=1.1, bias=0.1, lambd=0.5))
    values = np.array([-3.0, -0.7, -0.2, 0.3, 0.6, 2.5])
    vector = run_numpy(tasklet, {"a": values})["out"]
    scalar = [_scalar(tasklet, v) for v in values.tolist()]
    np.testing.assert_allclose(np.asarray(vector, dtype=float), np.asarray(scalar, dtype=float), rtol=1e-12)


def test_tasklet_structure_and_rejections():
    t = parse_tasklet("d = a - m\nout = d * d if d > 0 and 0 < m <= 3 else exp(-d)")
    assert t.reads == {"a", "m"} and t.writes == ("d", "out")
    assert (t.flops, t.transcendentals) == (7, 1)  # -, *, select, 3 comparisons, negation
    got = run_numpy(t, {"a": np.array([1.0, 3.0, 0.0]), "m": np.array([0.5, 2.0, 1.0])})["out"]
    np.testing.assert_allclose(got, [0.25, 1.0, math.exp(1.0)])
    for bad, why in [("out = a.b", "Attribute"), ("out = open(a)", "call of open"), ("out = [a]", "List"),
                     ("out = 'x'", "not a number"), ("x += 1", "name = expression"), ("out = exp(a, a)", "argument"),
                     ("exp = 1", "cannot assign"), ("out = a is b", "comparisons")]:
        with pytest.raises(TaskletError, match=why):
            parse_tasklet(bad)


def test_index_expressions_bound_and_linearize():
    e = parse_index("2*i2 + i4 - 1")
    assert str(e) == "2 * i2 + i4 - 1" and e.names == {"i2", "i4"}
    assert e.bounds({"i2": (0, 9), "i4": (0, 2)}) == (-1, 19)
    assert e.linear({}, ["i2", "i4"]) == {"i2": 2, "i4": 1, None: -1}
    assert parse_index("(i1 // 4) % 3").linear({}, ["i1"]) is None
    assert parse_index("(i1 // 4) % 3").bounds({"i1": (0, 11)}) == (0, 2)
    assert parse_index("i0 % 7").bounds({"i0": (0, 20)}) == (0, 6)
    assert parse_index("N - 1 - i0").bounds({"N": (5, 5), "i0": (0, 4)}) == (0, 4)
    assert parse_index("min(i0 + 1, 4)").evaluate({"i0": np.arange(6)}).tolist() == [1, 2, 3, 4, 4, 4]
    for bad in ("i0 / 2", "1.5", "a.b", "f(i0)"):
        with pytest.raises(TaskletError):
            parse_index(bad)


def test_subsets_parse_ranges_indices_and_rank0():
    dims = parse_subset("i0, 2*i1 + 1, 0:N, min(i2, 3)")
    assert [str(d) for d in dims] == ["i0", "2 * i1 + 1", "0:N", "min(i2, 3)"] and isinstance(dims[2], Range)
    assert parse_subset("") == ()
    with pytest.raises(TaskletError, match="no step"):
        parse_subset("0:4:2")


# ------------------------------------------------------------------------------ map semantics

def _run(g, **feeds):
    return run_graph(g, feeds)[g.outputs[0]]


def test_stencil_with_outside_value_and_symbolic_size():
    node = make_map("blur", ["i0"], [(0, "N")], "out = (l + c + r) / 3.0",
                    [("l", "x", "i0 - 1", 0.0), ("c", "x", "i0"), ("r", "x", "i0 + 1", 0.0)],
                    [("out", "y", "i0")], [F32], [("N", "x", 0)])
    g = graph_with([node], [("x", f32("N"))], [("y", f32("N"))])
    assert node.inputs == ("x",)
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_allclose(_run(g, x=x), np.convolve(x, np.ones(3) / 3, mode="same"), rtol=1e-6)


def test_transpose_view_and_reversed_write():
    """A permuted subset is a strided view; a reversed out subset takes the scatter fallback."""
    t = make_map("t", ["i0", "i1"], [(0, 3), (0, 2)], "out = a", [("a", "x", "i1, i0")], [("out", "t", "i0, i1")],
                 [F32])
    r = make_map("r", ["i0", "i1"], [(0, 3), (0, 2)], "out = a", [("a", "t", "i0, i1")],
                 [("out", "y", "2 - i0, i1")], [F32])
    g = graph_with([t, r], [("x", f32(2, 3))], [("y", f32(3, 2))], [("t", f32(3, 2))])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(_run(g, x=x), x.T[::-1])


def test_reductions_with_wcr_fast_and_fallback_paths():
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    rows = make_map("rows", ["i0", "i1"], [(0, 4), (0, 6)], "out = a", [("a", "x", "i0, i1")],
                    [("out", "m", "i0, 0", "max")], [F32])
    pairs = make_map("pairs", ["i0", "i1"], [(0, 4), (0, 6)], "out = a * a", [("a", "x", "i0, i1")],
                     [("out", "s", "i1 // 2", "sum")], [F32])
    g = graph_with([rows, pairs], [("x", f32(4, 6))], [("m", f32(4, 1)), ("s", f32(3))])
    got = run_graph(g, {"x": x})
    np.testing.assert_array_equal(got["m"], x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(got["s"], (x * x).reshape(4, 3, 2).sum(axis=(0, 2)), rtol=1e-5)


def test_map_params_in_tasklets_and_integer_wcr_identity():
    count = make_map("count", ["i0", "i1"], [(0, 3), (0, 4)], "out = 1 if i1 <= i0 else 0", [],
                     [("out", "c", "i0", "sum")], ["int64"])
    low = make_map("low", ["i0"], [(0, 3)], "out = -5", [], [("out", "m", "i0", "max")], ["int32"])
    g = graph_with([count, low], [], [("c", TensorType("int64", (3,))), ("m", TensorType("int32", (3,)))])
    got = run_graph(g, {})
    assert got["c"].tolist() == [1, 2, 3] and got["c"].dtype == np.int64 and got["m"].tolist() == [-5] * 3


def test_library_calls_run_numpy_semantics():
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in [(5, 3), (4, 3), (4,)])
    gemm = make_library_call("fc", "gemm", [("A", "a", "0:N, 0:3"), ("B", "b", "0:4, 0:3"), ("C", "c", "0:4")],
                             [("Y", "y", "0:N, 0:4")], [F32], [("N", "a", 0)], alpha=0.5, beta=2.0, transA=0,
                             transB=1)
    g = graph_with([gemm], [("a", f32("N", 3))], [("y", f32("N", 4))], params=[("b", b), ("c", c)])
    np.testing.assert_allclose(_run(g, a=a), 0.5 * a @ b.T + 2 * c, rtol=1e-5)


# ------------------------------------------------------------------------------ cost, checks, printing

def test_memlet_cost_counts_footprints():
    bias = make_map("bias", ["i0", "i1"], [(0, "N"), (0, 16)], "out = a + b",
                    [("a", "x", "i0, i1"), ("b", "c", "0, i1")], [("out", "y", "i0, i1")], [F32], [("N", "x", 0)])
    g = graph_with([bias], [("x", f32("N", 16))], [("y", f32("N", 16))], params=[("c", np.ones((1, 16), np.float32))])
    assert memlet_cost(g, bias) is None  # N unknown
    cost = memlet_cost(g, bias, {"N": 8})
    assert (cost.bytes_read, cost.bytes_written) == (4 * (8 * 16 + 16), 4 * 8 * 16)
    assert loop_flops(g, bias, {"N": 8}) == 8 * 16
    strided = make_map("even", ["i0"], [(0, 4)], "out = a", [("a", "x", "2*i0")], [("out", "y", "i0")], [F32])
    g2 = graph_with([strided], [("x", f32(8))], [("y", f32(4))])
    assert memlet_cost(g2, strided).bytes_read == 16  # four elements, not the 7-wide bounding box
    pool = make_map("pool", ["i0", "i1"], [(0, 3), (0, 3)], "out = a", [("a", "x", "2*i0 + i1 - 1", -math.inf)],
                    [("out", "y", "i0", "max")], [F32])
    g3 = graph_with([pool], [("x", f32(6))], [("y", f32(3))])
    assert memlet_cost(g3, pool).bytes_read == 4 * 6  # window hull clipped to the container
    assert loop_flops(g3, pool) == 9  # no arithmetic in the tasklet, one max per iteration


def test_verifier_names_each_loop_problem():
    def problems(node, inputs, outputs):
        g = Graph("bad")
        for n, t in inputs:
            g.add_input(n, t)
        for n, t in outputs:
            g.add_container(n, t)
        g.outputs = [n for n, _ in outputs]
        g.add_node(node)
        return " ".join(find_loop_problems(g, node))

    oob = make_map("oob", ["i0"], [(0, 4)], "out = a", [("a", "x", "i0 + 1")], [("out", "y", "i0")], [F32])
    assert "out of bounds" in problems(oob, [("x", f32(4))], [("y", f32(4))])
    short = make_map("short", ["i0"], [(0, 3)], "out = a", [("a", "x", "i0")], [("out", "y", "i0")], [F32])
    assert "extent [3]" in problems(short, [("x", f32(4))], [("y", f32(4))])
    race = make_map("race", ["i0", "i1"], [(0, 4), (0, 2)], "out = a", [("a", "x", "i0")], [("out", "y", "i0")], [F32])
    assert "more than once" in problems(race, [("x", f32(4))], [("y", f32(4))])
    wrong = make_map("u", ["i0"], [(0, "N")], "out = a", [("a", "x", "i0")], [("out", "y", "i0")], [F32],
                     [("N", "y", 0)])
    assert "symbol 'N' is bound to axis 0 of 'y'" in problems(wrong, [("x", f32("N"))], [("y", f32("N"))])
    stale = short.replace(inputs=("w",))
    assert "differ from its in-memlet containers" in problems(stale, [("w", f32(4))], [("y", f32(4))])
    silent = make_map("s", ["i0"], [(0, 4)], "t = a", [("a", "x", "i0")], [("out", "y", "i0")], [F32])
    assert "never assigns" in problems(silent, [("x", f32(4))], [("y", f32(4))])


def test_rename_keeps_memlets_and_inputs_in_step():
    node = make_map("m", ["i0"], [(0, "N")], "out = a", [("a", "x", "i0")], [("out", "y", "i0")], [F32],
                    [("N", "x", 0)])
    renamed = rename_container(node, "x", "z")
    spec = loop_spec(renamed)
    assert renamed.inputs == ("z",) and spec.inputs[0].container == "z" and spec.symbols == (("N", "z", 0),)


def test_printing_and_json_round_trip():
    node = make_map("pool", ["i0", "i1"], [(0, 3), (0, 3)], "out = a", [("a", "x", "2*i0 + i1 - 1", -math.inf)],
                    [("out", "y", "i0", "max")], [F32])
    g = graph_with([node], [("x", f32(6))], [("y", f32(3))])
    line = format_loop_node(node)
    assert line == ("%y = map[i0=0:3, i1=0:3] {out = a}  a <- x[2 * i0 + i1 - 1] (outside -inf)  "
                    "out -> y[i0] (wcr max)")
    assert line in format_graph(g)
    back = serialize.loads(serialize.dumps(g))
    assert back.nodes[0].key == node.key and back.nodes[0].op == MAP
    x = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(_run(back, x=x), [1, 3, 5])
