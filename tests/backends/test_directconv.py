"""Generated direct conv kernels (:mod:`dcopt.backends.cpu.directconv`) against the reference
conv, on the pool with 1 and 2 threads, through every code path: remainder pixel tiles, a
remainder channel group, partial 16-channel blocks (masked stores), strides, dilations,
padding, groups, 7x7 windows (the per-kernel-row loop), fused bias and ReLU; and compiled
models whose convs take these kernels, against onnxruntime."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from dcopt.backends.cpu import compiler, directconv, library, parallel
from dcopt.backends.cpu.gemm import bind_conv
from dcopt.ops.nn import conv
from tests.backends.conftest import ATOL, RTOL

pytestmark = pytest.mark.skipif(not directconv.supported(), reason="generated conv kernels need AVX-512")

#: (cin, cout, hw, k, stride, pad, dilation, group)
CASES = [
    (8, 16, 9, 3, 1, 1, 1, 1),      # one block, 9 = tile + remainder
    (5, 40, 11, 3, 2, 1, 1, 1),     # partial last block (40 = 2.5 blocks), stride 2
    (16, 80, 14, 3, 1, 1, 1, 1),    # 5 blocks: remainder group
    (3, 24, 23, 7, 2, 3, 1, 1),     # 7x7 stem-like: per-row reduction loop
    (12, 20, 10, 3, 1, 2, 2, 1),    # dilation 2
    (8, 32, 12, 3, 1, 1, 1, 2),     # two groups
    (200, 48, 7, 1, 1, 0, 1, 1),    # 1x1 with enough channels to be generated
    (32, 64, 14, 1, 2, 0, 1, 1),    # 1x1 stride 2, read in place (no padded copy)
    (6, 18, 8, 5, 1, 0, 1, 1),      # 5x5 unpadded, 18 channels
    (5, 20, 60, 3, 1, 1, 1, 1),     # rows >= 16: transposed stores, 60 = 3x16 + 12, partial block
    (3, 36, 121, 3, 2, 1, 1, 1),    # big plane, stride 2, 36 channels
]


def _run_plan(x, w, b, plan, threads):
    """Bind and run one conv step the way the runtime does; returns the output."""
    n, cin, h, wd = x.shape
    s = plan.shape
    engine, _ = compiler.compile_llvm(directconv.module_ir({plan.name: plan.functions()}))
    fn = parallel.CONV_PROTO(engine.get_function_address(plan.name))
    packed = directconv.pack_grouped(w, plan)
    bias = directconv.pack_bias(b, plan) if plan.bias else None
    out = np.full((n, plan.group * s.cout, s.oh, s.ow), np.nan, np.float32)
    scratch = np.zeros(n * cin * s.hp * s.wp + 1, np.float32)
    parallel.set_threads(threads)
    try:
        step = bind_conv(x, packed, out, {**plan.params(), "group": plan.group, "pads": list(plan.pads)}, scratch,
                         lambda name: fn, bias)
        step()
        step()  # twice: the padded copy and the outputs must not depend on leftovers
    finally:
        parallel.set_threads(1)
    return out


@pytest.mark.parametrize("case", CASES, ids=[f"c{c[0]}-{c[1]}_hw{c[2]}_k{c[3]}s{c[4]}p{c[5]}d{c[6]}g{c[7]}"
                                              for c in CASES])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_matches_reference_conv(case, threads):
    cin, cout, hw, k, stride, pad, dil, group = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((2, cin, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    oh = (hw + 2 * pad - dil * (k - 1) - 1) // stride + 1
    plan = directconv.plan(x.shape, w.shape, (2, cout, oh, oh), (k, k), (stride, stride), (pad, pad), (dil, dil), group)
    assert plan is not None
    ref = conv(x, w, group=group, strides=(stride, stride), pads=(pad,) * 4, dilations=(dil, dil),
               kernel_shape=(k, k))
    for bias, relu in itertools.product([False, True], [False, True]):
        p = plan.with_epilogue(bias, (0.0, None) if relu else None)
        want = ref + (b.reshape(1, -1, 1, 1) if bias else 0)
        want = np.maximum(want, 0) if relu else want
        np.testing.assert_allclose(_run_plan(x, w, b, p, threads), want, rtol=RTOL, atol=ATOL,
                                   err_msg=f"bias={bias} relu={relu}")


def test_tiling_limits_and_coverage():
    for cin, cout, ow in [(3, 64, 112), (256, 256, 14), (64, 192, 56), (512, 2048, 7), (16, 40, 5)]:
        shape = directconv.ConvShape(cin, cout, 3, 3, 1, 1, 1, 1, ow + 2, ow + 2, ow, ow)
        t = directconv.choose_tiling(shape)
        assert 1 <= t.cv <= directconv.MAX_VECTORS and t.px * t.cv <= directconv.MAX_ACCUMULATORS
        assert t.px <= max(ow, directconv.LANES) and t.groups * t.cv + t.cv_rem == shape.blocks
        assert t.transpose == (ow >= directconv.LANES)  # 3x3 windows on rows of 16+ pixels


def test_plan_declines_depthwise_and_narrow_pointwise():
    assert directconv.plan((1, 32, 8, 8), (32, 1, 3, 3), (1, 32, 8, 8), (3, 3), (1, 1), (1, 1), (1, 1), 32) is None
    assert directconv.plan((1, 64, 8, 8), (128, 64, 1, 1), (1, 128, 8, 8), (1, 1), (1, 1), (0, 0), (1, 1), 1) is None
    wide = directconv.plan((1, 256, 8, 8), (128, 256, 1, 1), (1, 128, 8, 8), (1, 1), (1, 1), (0, 0), (1, 1), 1)
    assert wide is not None and not wide.padded


def test_kernel_names_follow_everything_that_changes_the_code():
    plan = directconv.plan((1, 16, 9, 9), (32, 16, 3, 3), (1, 32, 9, 9), (3, 3), (1, 1), (1, 1), (1, 1), 1)
    relu, relu6 = (0.0, None), (0.0, 6.0)
    names = {plan.name, plan.with_epilogue(True, None).name, plan.with_epilogue(False, relu).name,
             plan.with_epilogue(True, relu).name, plan.with_epilogue(True, relu6).name}
    assert len(names) == 5
    other = directconv.plan((1, 16, 9, 9), (32, 16, 3, 3), (1, 32, 5, 5), (3, 3), (2, 2), (1, 1), (1, 1), 1)
    assert other.name not in names
    assert directconv.DirectPlan.from_params({**plan.params(), "group": 1, "pads": [1, 1]}) == plan


def test_padded_copy_is_exact():
    """The zero-padded input copy the kernels read: border zero, interior the image."""
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) + 1
    xp = np.full((2, 6 * 7), np.nan, np.float32)
    library.pad_planes(x, xp, 1, 2, 7)
    grid = xp.reshape(2, 6, 7)
    np.testing.assert_array_equal(grid[:, 1:4, 2:6], x)
    grid[:, 1:4, 2:6] = 0
    assert not grid.any()


def _conv_model(cin, cout, hw, k, stride, pad, group, relu):
    rng = np.random.default_rng(cin + cout + k)
    w = (rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride] * 2,
                              pads=[pad] * 4, group=group)]
    nodes += [helper.make_node("Relu", ["c"], ["y"])] if relu else [helper.make_node("Sigmoid", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cin, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("relu", [True, False], ids=["conv+relu fused", "conv then sigmoid"])
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_models_match_onnxruntime(relu, threads, tmp_path):
    import onnxruntime as ort

    import dcopt

    model = _conv_model(24, 40, 13, 3, 2, 1, 2, relu)
    x = np.random.default_rng(0).standard_normal((3, 24, 13, 13)).astype(np.float32)
    sess = dcopt.compile(model, threads=threads, cache_dir=tmp_path, dims={"N": 3})
    steps = sess._current.program.steps
    assert [s.params.get("impl") for s in steps if s.kind == "conv"] == ["direct"]
    assert sum(s.kind == "kernel" for s in steps) == (0 if relu else 1)  # ReLU went into the kernel
    assert sess._current.manifest["native_key"] and (sess._current.directory / "kernels.ll").is_file()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, rtol=RTOL, atol=ATOL)
    again = dcopt.load(sess.save(tmp_path / "model.dcopt"), threads=threads, cache_dir=tmp_path)  # kernels.ll travels
    np.testing.assert_allclose(again.run(None, {"x": x})[0], want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cin, cout, hw, group", [(16, 40, 16, 1), (48, 24, 13, 3), (64, 96, 7, 1), (3, 20, 9, 1)])
def test_pointwise_convs_match_onnxruntime(cin, cout, hw, group, threads, tmp_path):
    """1x1 convs: pixel-vector kernel (rows stored whole; 13x13 reads past its last row into the
    arena's slack), grouped ones per group, and 7x7 planes that take another path."""
    import onnxruntime as ort

    import dcopt

    model = _conv_model(cin, cout, hw, 1, 1, 0, group, True)
    x = np.random.default_rng(1).standard_normal((2, cin, hw, hw)).astype(np.float32)
    sess = dcopt.compile(model, threads=threads, cache_dir=tmp_path, dims={"N": 2})
    impls = [s.params.get("impl") for s in sess._current.program.steps if s.kind == "conv"]
    assert impls == (["pointwise"] if directconv.pointwise_fits(hw * hw) else [None])
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("op", ["Add", "Sum"])
@pytest.mark.parametrize("order", ["shortcut first", "conv first", "late operand"])
def test_residual_add_fuses_into_pointwise_conv(op, order, tmp_path):
    """ResNet's block end: 1x1 conv + shortcut, then Relu. The conv lowered second absorbs the
    add (whichever comes first in the graph); an operand computed only after the conv (here a
    Sigmoid placed after it) is not ready, so the add stays an elementwise step."""
    import onnxruntime as ort

    import dcopt

    rng = np.random.default_rng(4)
    w = (rng.standard_normal((32, 16, 1, 1)) / 4).astype(np.float32)
    ws = (rng.standard_normal((32, 16, 1, 1)) / 4).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 1])
    shortcut = helper.make_node("Conv", ["x", "ws"], ["s"], kernel_shape=[1, 1])
    if order == "late operand":
        shortcut = helper.make_node("Sigmoid", ["x2"], ["s"])
    nodes = ([shortcut, conv] if order == "shortcut first" else [conv, shortcut]) + [
        helper.make_node(op, ["c", "s"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 16, 16]),
              helper.make_tensor_value_info("x2", TensorProto.FLOAT, [1, 32, 16, 16])]
    graph = helper.make_graph(nodes, "res", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (ws, "ws"), (b, "b"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    sess = dcopt.compile(model, threads=2, cache_dir=tmp_path, pipeline="O0")
    steps = sess._current.program.steps
    fused = [s.params.get("residual") for s in steps if s.kind == "conv"]
    assert fused == ([False] if order == "late operand" else [False, True])
    assert (sum(s.kind == "kernel" for s in steps) > 0) == (order == "late operand")
    feeds = {"x": rng.standard_normal((1, 16, 16, 16)).astype(np.float32),
             "x2": rng.standard_normal((1, 32, 16, 16)).astype(np.float32)}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(sess.run(None, feeds)[0], want, rtol=RTOL, atol=ATOL)


def _clamped_model(kind, clip):
    """One product (a 3x3 direct conv, a 1x1 pointwise conv, a GEMM, a one-row GEMM) followed by
    a Clip with constant bounds (``clip``: (lo, hi), None for an open side) or a Relu."""
    rng = np.random.default_rng(7)
    if kind in ("direct", "pointwise"):
        k = 3 if kind == "direct" else 1
        cin, cout, hw = 24, 40, 14
        w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        node = helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], pads=[k // 2] * 4)
        x_shape = [1, cin, hw, hw]
    else:
        m = 1 if kind == "matvec" else 12
        w = (rng.standard_normal((40, 24)) / np.sqrt(24)).astype(np.float32)
        node = helper.make_node("Gemm", ["x", "w", "b"], ["c"], transB=1)
        x_shape = [m, 24]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.standard_normal(40).astype(np.float32) * 10, "b")]
    if clip == "relu":
        nodes = [node, helper.make_node("Relu", ["c"], ["y"])]
    else:
        names = []
        for side, value in zip(("lo", "hi"), clip):
            if value is not None:
                inits.append(numpy_helper.from_array(np.asarray(value, np.float32), side))
            names.append(side if value is not None else "")
        nodes = [node, helper.make_node("Clip", ["c", *names], ["y"])]
    graph = helper.make_graph(nodes, "clamped", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), x_shape


@pytest.mark.parametrize("kind", ["direct", "pointwise", "generated", "matvec"])
@pytest.mark.parametrize("clip", [(0.0, 6.0), (-150.0, 250.0), (None, 100.0), (3.0, 1.0), "relu"],
                         ids=["relu6", "clip", "upper-only", "crossed", "relu"])
def test_clamps_run_inside_every_generated_kernel(kind, clip, tmp_path):
    """The Clip/Relu map is absorbed (no kernel step left) and the result matches onnxruntime on
    large magnitudes, NaN and +-Inf, which the clamp must keep (NaN) or saturate (Inf)."""
    import onnxruntime as ort

    import dcopt

    if not directconv.supported():
        pytest.skip("the generated kernels need AVX-512")
    model, x_shape = _clamped_model(kind, clip)
    x = (np.random.default_rng(1).standard_normal(x_shape) * 1e2).astype(np.float32)
    flat = x.reshape(-1)
    flat[[0, 5, 9]] = np.nan, np.inf, -np.inf
    sess = dcopt.compile(model, cache_dir=tmp_path)
    steps = sess._current.program.steps
    assert not [s for s in steps if s.kind == "kernel"], [s.label for s in steps]
    step_kind = {"direct": "conv", "pointwise": "conv", "generated": "gemm", "matvec": "matvec"}[kind]
    (product,) = [s for s in steps if s.kind in ("conv", "gemm", "matvec")]
    assert product.kind == step_kind and (step_kind != "conv" or product.params["impl"] == kind)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = sess.run(None, {"x": x})[0]
    if clip != "relu" and None in clip:  # onnxruntime clips to the type's lowest/max where a bound is
        big = np.finfo(np.float32).max    # absent; ONNX's reference (and dcopt) leave that side open
        want = np.where(np.abs(want) == big, np.sign(want) * np.inf, want).astype(np.float32)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    if kind == "matvec":  # one row: the NaN reached every output, so check the magnitudes again without it
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        got, finite = sess.run(None, {"x": x})[0], np.ones(want.shape, bool)
    assert finite.sum() > want.size // 2
    np.testing.assert_allclose(got[finite], want[finite], rtol=RTOL, atol=1e-5 * float(np.abs(want[finite]).max()))


def test_long_reductions_accumulate_in_blocks(tmp_path):
    """512 channels x 3x3 = 4,608 products per output: summed in blocks of ~256 then added to a
    running total, the compiled conv stays within 8e-7 of the float64 result relative to the
    output's magnitude (same-sign inputs, the worst case for one long chain, which gave 2.0e-6)."""
    import dcopt
    from dcopt.ops.nn import conv

    if not directconv.supported():
        pytest.skip("the generated kernels need AVX-512")
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 512, 3, 3)) / np.sqrt(512 * 9)).astype(np.float32)
    x = np.abs(rng.standard_normal((1, 512, 14, 14))).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)], "c",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    session = dcopt.compile(model, cache_dir=tmp_path)
    assert [s.params["impl"] for s in session._current.program.steps if s.kind == "conv"] == ["direct"]
    truth = conv(x.astype(np.float64), w.astype(np.float64), pads=[1] * 4)
    error = np.abs(session.run(None, {"x": x})[0] - truth).max() / np.abs(truth).max()
    assert error < 8e-7, error
