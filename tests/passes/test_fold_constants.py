"""fold-constants: constant subgraphs, shape arithmetic from static types, and what must not fold."""

import numpy as np

from dcopt.passes import get_pass, run_passes
from dcopt.passes.equivalence import assert_equivalent


def fold(graph, **options):
    return get_pass("fold-constants", **options)(graph)


def ops(graph):
    return [n.op for n in graph.nodes]


def test_constant_subgraph_becomes_a_parameter(parse):
    g = parse("""agraph (float[2] x) => (float[2] y) <float[2] a = {1.0, 2.0}, float[2] b = {3.0, 4.0}> {
        s = Add(a, b)
        t = Mul(s, s)
        y = Add(x, t)
    }""")
    before = g.copy()
    result = fold(g)
    assert result.modified and result.stats["folded"] == 2
    assert ops(g) == ["Add"]
    np.testing.assert_array_equal(g.containers["t"].data, [16.0, 36.0])
    assert str(g.containers["t"].type) == "float32[2]"
    assert_equivalent(before, g)


def test_static_dims_picked_from_a_symbolic_shape_fold(parse):
    """``x.shape[-1] // 2`` of a ``[N, S, 64]`` tensor is 32 whatever N and S are (a rotary
    embedding's half): the Gather and Slice picking static dims fold, the one picking S does not."""
    g = parse("""agraph (float[N, S, 64] x) => (float[N, S, 32] y, int64[1] s) <int64 last = {-1}, int64 two = {2},
              int64[1] zero = {0}, int64[1] one = {1}, int64[1] end = {3}, int64[1] mid = {1}, int64[1] start2 = {2}> {
        shp = Shape(x)
        d = Gather(shp, last)
        half = Div(d, two)
        halfu = Unsqueeze(half, zero)
        y = Slice(x, zero, halfu, start2)
        tail = Slice(shp, start2, end)
        s = Slice(shp, mid, start2)
    }""")
    before = g.copy()
    fold(g)
    assert ops(g) == ["Shape", "Slice", "Slice"]  # Shape stays for the symbolic pick; its static picks folded
    np.testing.assert_array_equal(g.containers["halfu"].data, [32])
    np.testing.assert_array_equal(g.containers["tail"].data, [64])
    assert g.containers["s"].data is None  # S: known only at run time
    x = np.random.default_rng(0).standard_normal((2, 5, 64)).astype(np.float32)
    assert_equivalent(before, g, feeds={"x": x})


def test_constant_nodes_become_parameters(parse):
    g = parse("""agraph (float[2] x) => (float[2] y) {
        c = Constant<value = float[2] {5.0, 6.0}>()
        k = Constant<value_int = 3>()
        y = Mul(x, c)
    }""")
    fold(g)
    assert ops(g) == ["Mul"]
    np.testing.assert_array_equal(g.containers["c"].data, [5.0, 6.0])
    assert g.containers["k"].data.dtype == np.int64


def test_shape_chain_collapses_to_a_constant_reshape(parse):
    g = parse("""agraph (float[2, 3, 4] x) => (float[2, 12] y) <int64 zero = {0}, int64[1] minus1 = {-1}> {
        s = Shape(x)
        d0 = Gather(s, zero)
        axes = Constant<value = int64[1] {0}>()
        d0u = Unsqueeze(d0, axes)
        shp = Concat<axis = 0>(d0u, minus1)
        y = Reshape(x, shp)
    }""")
    before = g.copy()
    result = fold(g)
    assert ops(g) == ["Reshape"]
    assert result.stats["from_static_shapes"] == 1
    np.testing.assert_array_equal(g.containers["shp"].data, [2, -1])
    assert_equivalent(before, g)


def test_shape_of_symbolic_dims_does_not_fold_but_static_tail_does(parse):
    g = parse("""agraph (float[N, 3, 4] x) => (int64[3] s, int64[2] tail, int64 n) {
        s = Shape(x)
        tail = Shape<start = 1>(x)
        n = Size(x)
    }""", opset=15)
    fold(g)
    assert ops(g) == ["Shape", "Size"]
    np.testing.assert_array_equal(g.containers["tail"].data, [3, 4])


def test_size_of_static_type_folds(parse):
    g = parse("agraph (float[2, 5] x) => (int64 n) { n = Size(x) }")
    fold(g)
    assert g.nodes == [] and int(g.containers["n"].data) == 10


def test_constant_of_shape_weights_fold_even_when_large(parse):
    # the light-zoo pattern: a weight written as ConstantOfShape of a constant shape
    g = parse("""agraph (float[2, 1024] x) => (float[2, 2048] y) <int64[2] shp = {1024, 2048}> {
        w = ConstantOfShape<value = float[1] {0.02}>(shp)
        y = MatMul(x, w)
    }""")
    fold(g, max_elements=1000)
    assert ops(g) == ["MatMul"] and g.containers["w"].data.shape == (1024, 2048)


def test_constant_of_shape_above_the_fill_limit_is_refused(parse):
    g = parse("""agraph (float[2, 64] x) => (float[2, 64] y) <int64[2] shp = {64, 64}> {
        w = ConstantOfShape<value = float[1] {0.5}>(shp)
        y = MatMul(x, w)
    }""")
    result = fold(g, max_fill_elements=100)
    assert ops(g) == ["ConstantOfShape", "MatMul"] and not result.modified
    assert "max_fill_elements=100" in result.refusals[0][1]


def test_expand_blowing_up_size_is_refused_with_a_reason(parse):
    g = parse("""agraph (float[64, 64] x) => (float[64, 64] y) <float one = {1.5}, int64[2] shp = {64, 64}> {
        big = Expand(one, shp)
        y = Add(x, big)
    }""")
    result = fold(g, max_elements=1000)
    assert ops(g) == ["Expand", "Add"]
    (label, reason), = result.refusals
    assert "4096 elements" in reason and "max_elements=1000" in reason


def test_large_result_of_large_inputs_still_folds(parse):
    # growth, not size alone, is the problem: Transpose of a big constant is as big as its input
    g = parse("""agraph (float[2, 40] x) => (float[2, 30] y) <int64[2] shp = {30, 40}> {
        w = ConstantOfShape<value = float[1] {1.0}>(shp)
        wt = Transpose(w)
        y = MatMul(x, wt)
    }""")
    fold(g, max_elements=100)
    assert ops(g) == ["MatMul"]


def test_random_ops_never_fold(parse):
    g = parse("""agraph (float[2] x) => (float[2] y) {
        r = RandomNormal<shape = [2]>()
        y = Add(x, r)
    }""")
    result = fold(g)
    assert ops(g) == ["RandomNormal", "Add"] and not result.modified
    assert "nondeterministic" in result.refusals[0][1]


def test_training_mode_dropout_on_constants_does_not_fold(parse):
    g = parse("""agraph (float[4] x) => (float[4] y) <float[4] c = {1.0, 2.0, 3.0, 4.0}, bool t = {1}> {
        d = Dropout(c, , t)
        y = Add(x, d)
    }""")
    result = fold(g)
    assert ops(g) == ["Dropout", "Add"] and "nondeterministic" in result.refusals[0][1]


def test_no_change_reports_unmodified(parse):
    g = parse("agraph (float[2] x) => (float[2] y) { y = Relu(x) }")
    result = fold(g)
    assert not result.modified and result.refusals == []


def test_fold_then_dce_removes_the_inputs_of_folded_nodes(parse):
    g = parse("""agraph (float[2] x) => (float[2] y) <float[2] a = {1.0, 2.0}> {
        b = Neg(a)
        y = Add(x, b)
    }""")
    run_passes(g, ["fold", "dce"], verify=True)
    assert "a" not in g.containers and "b" in g.parameters
