"""Attention-family expansions (dcopt/passes/expansions/attention.py) run three ways: the
reference executor, the lowered IR on it, and the compiled kernels -- agreeing at fp32 rtol 1e-4
(half types to their own rounding) with no op left to a fallback step.

ONNX Attention cases cover 3-D and 4-D inputs, grouped-query heads, float/bool/short masks,
causal and windowed attention, softcap, KV caches with present outputs, padded KV lengths,
every qk_matmul_output mode, softmax_precision, fully masked rows, NaN and -inf inputs.
"""

import numpy as np
import pytest
from onnx import TensorProto, helper

from dcopt.testing import run_three_ways
from tests.conftest import make_model
from tests.passes.one_op_model import assert_loops_verify, elem, run_one_op

RTOL = {"float16": 2e-3, "bfloat16": 1e-2, "float32": 1e-4, "float64": 1e-9}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def normal(shape, dtype="float32", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def attention(cache, q, k, v, *, extra=None, outputs=("y",), opset=24, rtol=None, **attrs):
    """ONNX Attention on graph inputs q, k, v and ``extra`` (name -> array, in input order after
    them; None omits that optional input); ``outputs`` names the wired outputs ("" skips one).
    Returns the compiled outputs (checked against the reference) by name."""
    inputs = {"q": q, "k": k, "v": v, **{n: a for n, a in (extra or {}).items() if a is not None}}
    order = ["q", "k", "v", *[n if a is not None else "" for n, a in (extra or {}).items()]]
    while order[-1] == "":
        order.pop()
    rtol = rtol or RTOL[str(q.dtype)]
    node = helper.make_node("Attention", order, list(outputs), **attrs)
    model = make_model([node], [(n, elem(a.dtype), list(a.shape)) for n, a in inputs.items()],
                       [(o, elem(q.dtype), None) for o in outputs if o], opset=opset)
    _, _, got, manifest = run_three_ways(model, inputs, rtol=rtol, atol=rtol * 1e-2, cache_dir=cache)
    assert "fallback" not in manifest["steps"], manifest.get("not_native")
    assert_loops_verify(model)
    return got


FOUR_D = [((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 8)),  # plain
          ((2, 6, 4, 8), (2, 2, 6, 8), (2, 2, 6, 5)),  # grouped-query heads, V head size differs
          ((1, 4, 3, 8), (1, 1, 5, 8), (1, 1, 5, 8))]  # one KV head for all


@pytest.mark.parametrize("shapes,attrs", [(FOUR_D[0], {}), (FOUR_D[1], {"is_causal": 1, "softcap": 2.0, "scale": 0.3}),
                                          (FOUR_D[2], {"is_causal": 1, "left_window_size": 1}),
                                          (FOUR_D[1], {"right_window_size": 1, "left_window_size": 2})])
def test_onnx_attention_4d(cache, shapes, attrs):
    q, k, v = (normal(s, seed=i) for i, s in enumerate(shapes))
    attention(cache, q, k, v, opset=25 if "left_window_size" in attrs else 24, **attrs)


def test_onnx_attention_float32_is_gemms(cache):
    """float32 scores and the product with V are GEMM library calls around one softmax kernel."""
    q, k, v = normal((2, 3, 4, 8)), normal((2, 3, 6, 8), seed=1), normal((2, 3, 6, 8), seed=2)
    model = make_model([helper.make_node("Attention", ["q", "k", "v"], ["y"])],
                       [(n, TensorProto.FLOAT, list(a.shape)) for n, a in zip("qkv", (q, k, v))],
                       [("y", TensorProto.FLOAT, None)], opset=23)
    _, _, _, manifest = run_three_ways(model, {"q": q, "k": k, "v": v}, cache_dir=cache)
    assert manifest["steps"].get("matmul", 0) + manifest["steps"].get("gemm", 0) == 2, manifest["steps"]


@pytest.mark.parametrize("heads", [(3, 3), (6, 2)])
def test_onnx_attention_3d_with_cache(cache, heads):
    """3-D inputs split into heads, past key/value concatenated, present outputs and a mask
    covering past and new keys."""
    hq, hkv = heads
    q, k, v = normal((2, 4, hq * 8)), normal((2, 3, hkv * 8), seed=1), normal((2, 3, hkv * 4), seed=2)
    extra = {"mask": normal((4, 5), seed=3), "past_k": normal((2, hkv, 2, 8), seed=4),
             "past_v": normal((2, hkv, 2, 4), seed=5)}
    got = attention(cache, q, k, v, extra=extra, outputs=("y", "pk", "pv"), q_num_heads=hq, kv_num_heads=hkv,
                    is_causal=1)
    assert got["pk"].shape == (2, hkv, 5, 8)


@pytest.mark.parametrize("mask_shape,dtype", [((6,), "bool"), ((3, 4, 6), "float32"), ((2, 3, 1, 3), "bool")])
def test_onnx_attention_masks(cache, mask_shape, dtype):
    """Masks broadcast from the right; one shorter than the keys leaves the rest masked out."""
    q, k, v = normal((2, 3, 4, 8)), normal((2, 3, 6, 8), seed=1), normal((2, 3, 6, 8), seed=2)
    rng = np.random.default_rng(7)
    mask = rng.random(mask_shape) < 0.7 if dtype == "bool" else rng.standard_normal(mask_shape).astype(dtype)
    attention(cache, q, k, v, extra={"mask": mask})


def test_onnx_attention_fully_masked_rows_and_neg_inf(cache):
    """A row whose mask allows no key gives zeros (never NaN); -inf mask entries drop keys."""
    q, k, v = normal((1, 2, 3, 8)), normal((1, 2, 4, 8), seed=1), normal((1, 2, 4, 8), seed=2)
    mask = np.zeros((3, 4), np.float32)
    mask[0] = -np.inf
    mask[1, :2] = -np.inf
    y = attention(cache, q, k, v, extra={"mask": mask})["y"]
    assert not np.isnan(y).any() and (y[:, :, 0] == 0).all()
    bool_mask = np.ones((3, 4), bool)
    bool_mask[2] = False
    got = attention(cache, q, k, v, extra={"mask": bool_mask}, outputs=("y", "", "", "qk"), qk_matmul_output_mode=3)
    assert (got["y"][:, :, 2] == 0).all() and (got["qk"][:, :, 2] == 0).all()


def test_onnx_attention_nan_propagates(cache):
    q, k, v = normal((1, 1, 3, 4)), normal((1, 1, 5, 4), seed=1), normal((1, 1, 5, 4), seed=2)
    q[0, 0, 1, 2] = np.nan
    y = attention(cache, q, k, v)["y"]
    assert np.isnan(y[0, 0, 1]).all() and not np.isnan(y[0, 0, [0, 2]]).any()


@pytest.mark.parametrize("mode", [0, 2])
def test_onnx_attention_qk_output(cache, mode):
    q, k, v = normal((2, 4, 3, 8)), normal((2, 2, 5, 8), seed=1), normal((2, 2, 5, 8), seed=2)
    extra = {"mask": normal((3, 5), seed=3)}
    got = attention(cache, q, k, v, extra=extra, outputs=("y", "", "", "qk"), softcap=3.0, qk_matmul_output_mode=mode)
    assert got["qk"].shape == (2, 4, 3, 5)


def test_onnx_attention_padded_kv(cache):
    """nonpad_kv_seqlen masks each batch entry's padding keys and aligns the causal frontier."""
    q, k, v = normal((3, 2, 2, 8)), normal((3, 2, 6, 8), seed=1), normal((3, 2, 6, 8), seed=2)
    extra = {"mask": None, "past_k": None, "past_v": None, "nonpad": np.array([6, 3, 1], np.int64)}
    attention(cache, q, k, v, extra=extra, is_causal=1)


@pytest.mark.parametrize("dtype", ["float16", "float64", "bfloat16"])
def test_onnx_attention_other_dtypes(cache, dtype):
    import ml_dtypes  # noqa: F401

    q, k, v = (normal(s, seed=i).astype(dtype) for i, s in enumerate(FOUR_D[1]))
    attention(cache, q, k, v, extra={"mask": normal((4, 6), seed=3).astype(dtype)}, is_causal=1, softcap=4.0)


def test_onnx_attention_softmax_precision(cache):
    q, k, v = (normal(s, seed=i).astype("float16") for i, s in enumerate(FOUR_D[0]))
    attention(cache, q, k, v, outputs=("y", "", "", "qk"), softmax_precision=1, qk_matmul_output_mode=3)
    q, k, v = (normal(s, seed=i) for i, s in enumerate(FOUR_D[0]))
    attention(cache, q, k, v, softmax_precision=11)


@pytest.mark.parametrize("dtype,mask", [("float32", False), ("float32", True), ("float64", True)])
def test_dcopt_attention(cache, dtype, mask):
    """dcopt's own Attention: float32 is two GEMM calls (float64 runs as maps)."""
    et = elem(dtype)
    names = ["q", "k", "v"] + (["m"] if mask else [])
    node = helper.make_node("Attention", names, ["y"], domain="dcopt", scale=0.25, has_mask=int(mask),
                            zero_nan_probs=1)
    inputs = [helper.make_tensor_value_info(n, et, [2, 3, 4, 8]) for n in "qkv"]
    if mask:
        inputs.append(helper.make_tensor_value_info("m", et, [1, 1, 1, 4]))
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", et, [2, 3, 4, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("dcopt", 1)])
    model.ir_version = 8
    feeds = {n: normal((2, 3, 4, 8), dtype, seed=i) for i, n in enumerate("qkv")}
    if mask:
        feeds["m"] = np.array([0, -np.inf, 0, 0], dtype).reshape(1, 1, 1, 4)
    _, _, _, manifest = run_three_ways(model, feeds, rtol=RTOL[dtype], cache_dir=cache)
    assert "fallback" not in manifest["steps"]
    if dtype == "float32":
        assert manifest["steps"].get("matmul", 0) + manifest["steps"].get("gemm", 0) == 2, manifest["steps"]


@pytest.mark.parametrize("dtype,shapes", [("float32", FOUR_D[1]), ("float16", FOUR_D[0]), ("float64", FOUR_D[0])])
def test_flex_attention(cache, dtype, shapes):
    q, k, v = (normal(s, dtype, seed=i) for i, s in enumerate(shapes))
    et = elem(dtype)
    node = helper.make_node("FlexAttention", ["q", "k", "v"], ["y"], domain="ai.onnx.preview", scale=0.2)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, et, list(a.shape))
                                            for n, a in zip("qkv", (q, k, v))], [helper.make_tensor_value_info("y", et, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26),
                                                    helper.make_opsetid("ai.onnx.preview", 1)])
    model.ir_version = 11
    _, _, _, manifest = run_three_ways(model, {"q": q, "k": k, "v": v}, rtol=RTOL[dtype], cache_dir=cache)
    assert "fallback" not in manifest["steps"]


@pytest.mark.parametrize("interleaved,rotary_dim,positions", [(0, 0, True), (1, 4, True), (1, 0, False),
                                                                 (0, 4, False)])
def test_rotary_embedding(cache, interleaved, rotary_dim, positions):
    half = (rotary_dim or 8) // 2
    x = normal((2, 3, 5, 8))
    if positions:
        params = {"cos": normal((16, half), seed=1), "sin": normal((16, half), seed=2)}
        inputs = {"x": x, "pos": np.array([[0, 3, 7, 15, 2], [1, 1, 4, 9, 0]], np.int64)}
        order = ["x", "cos", "sin", "pos"]
    else:
        params = {}
        inputs = {"x": x, "cos": normal((2, 5, half), seed=1), "sin": normal((2, 5, half), seed=2)}
        order = ["x", "cos", "sin"]
    run_one_op(cache, "RotaryEmbedding", inputs, params, [np.float32], opset=23, order=order,
               interleaved=interleaved, rotary_embedding_dim=rotary_dim)


def test_rotary_embedding_3d_float16(cache):
    x = normal((2, 5, 16), "float16")
    inputs = {"x": x, "cos": normal((2, 5, 2), "float16", 1), "sin": normal((2, 5, 2), "float16", 2)}
    run_one_op(cache, "RotaryEmbedding", inputs, None, [np.float16], opset=23, rtol=2e-3, atol=1e-3, num_heads=2,
               rotary_embedding_dim=4)


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
def test_swiglu(cache, dtype):
    a, c = normal((3, 7), dtype) * 4, normal((3, 7), dtype, seed=1)
    a[0, :3] = [np.inf, -np.inf, np.nan]
    run_one_op(cache, "SwiGLU", {"a": a, "c": c}, None, [a.dtype], opset=28, rtol=RTOL[dtype], alpha=0.7)


@pytest.mark.parametrize("mode,indices", [("linear", [0, 2]), ("circular", [3, 1]), ("linear", None)])
def test_tensor_scatter(cache, mode, indices):
    past, update = normal((2, 3, 5, 4)), normal((2, 3, 2, 4), seed=1)
    inputs = {"past": past, "update": update}
    if indices is not None:
        inputs["idx"] = np.array(indices, np.int64)
    (y,) = run_one_op(cache, "TensorScatter", inputs, None, [np.float32], opset=24, mode=mode)
    assert (y != past).any()


@pytest.mark.parametrize("q_shape,kv_shape", [((2, 3, 0, 8), (2, 3, 6, 8)), ((0, 2, 3, 8), (0, 2, 4, 8))])
def test_onnx_attention_empty(cache, q_shape, kv_shape):
    """No query rows, or an empty batch: empty outputs, no GEMM call on empty operands."""
    y = attention(cache, normal(q_shape), normal(kv_shape, seed=1), normal(kv_shape, seed=2), is_causal=1)["y"]
    assert y.shape == q_shape


def _mod_graph(name, nodes, initializers):
    from onnx import numpy_helper

    return helper.make_graph(nodes, name, [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["B", "H", "L", "S"])],
                             [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", "H", "L", "S"])],
                             [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])


@pytest.mark.parametrize("shapes", [FOUR_D[0], FOUR_D[1]])
def test_flex_attention_mods(cache, shapes):
    """score_mod (a causal mask built from the scores' shape: Shape, Gather, Range, Reshape fold
    to constants) and prob_mod subgraphs are inlined as loops, with grouped-query heads too."""
    causal = _mod_graph("causal", [
        helper.make_node("Shape", ["s"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["rows"], axis=0),
        helper.make_node("Gather", ["shape", "three"], ["cols"], axis=0),
        helper.make_node("Range", ["zero", "rows", "one"], ["r"]),
        helper.make_node("Reshape", ["r", "rshape"], ["ri"]),
        helper.make_node("Range", ["zero", "cols", "one"], ["c"]),
        helper.make_node("Reshape", ["c", "cshape"], ["ci"]),
        helper.make_node("GreaterOrEqual", ["ri", "ci"], ["keep"]),
        helper.make_node("Where", ["keep", "s", "ninf"], ["out"])],
        {"two": np.array(2), "three": np.array(3), "zero": np.array(0), "one": np.array(1),
         "rshape": np.array([1, 1, -1, 1]), "cshape": np.array([1, 1, 1, -1]), "ninf": np.array(-np.inf, np.float32)})
    halve = _mod_graph("halve", [helper.make_node("Mul", ["s", "half"], ["out"])], {"half": np.array(0.5, np.float32)})
    q, k, v = (normal(s, seed=i) for i, s in enumerate(shapes))
    node = helper.make_node("FlexAttention", ["q", "k", "v"], ["y"], domain="ai.onnx.preview", score_mod=causal,
                            prob_mod=halve)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape))
                                            for n, a in zip("qkv", (q, k, v))], [helper.make_tensor_value_info("y", 1, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26),
                                                    helper.make_opsetid("ai.onnx.preview", 1)])
    model.ir_version = 11
    _, _, _, manifest = run_three_ways(model, {"q": q, "k": k, "v": v}, cache_dir=cache)
    assert "fallback" not in manifest["steps"], manifest.get("not_native")
