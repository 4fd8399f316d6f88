"""Pooling expansions (dcopt/passes/expansions/pooling.py) run three ways: the reference executor,
the lowered IR on it, and the compiled kernels -- agreeing at fp32 rtol 1e-4 (indices exactly),
with no op left to a fallback step."""

import numpy as np
import pytest
from onnx import TensorProto, helper

from dcopt.testing import run_three_ways
from tests.conftest import make_model
from tests.passes.one_op_model import run_one_op, sample as rand


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def run(cache, op, x, attrs, n_out=1, extra_inputs=(), initializers=None, opset=19, rtol=1e-4, atol=1e-6):
    """``op`` on ``x`` (plus graph inputs ``extra_inputs``, then ``initializers``) run three ways; a
    second output is MaxPool's int64 Indices."""
    return run_one_op(cache, op, {"x": x, **dict(extra_inputs)}, initializers, n_out=n_out, opset=opset, rtol=rtol,
                      atol=atol, out_dtypes=[x.dtype, np.int64][:n_out], **attrs)


WINDOWS = [
    dict(kernel_shape=[3, 3], strides=[2, 2]),
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    dict(kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 0, 1, 0]),
    dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(kernel_shape=[2, 3], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[3, 3], auto_pad="VALID", strides=[1, 2]),
]


@pytest.mark.parametrize("attrs", WINDOWS)
def test_max_pool_with_indices(cache, attrs):
    x = rand((2, 3, 7, 8))
    run(cache, "MaxPool", x, attrs, n_out=2)


@pytest.mark.parametrize("storage_order", [0, 1])
def test_max_pool_indices_storage_order_and_edges(cache, storage_order):
    """Ties keep the first tap, NaN stops the search, padding taps can win on -inf windows."""
    x = rand((1, 2, 5, 6))
    x[0, 0, 1, :3] = 70.0
    x[0, 1, 2, 2] = np.nan
    x[0, 1, 3:, 4:] = -np.inf
    run(cache, "MaxPool", x, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], storage_order=storage_order), n_out=2)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "float16", "float64"])
def test_max_pool_dtypes(cache, dtype):
    x = rand((2, 2, 6, 5), dtype)
    run(cache, "MaxPool", x, dict(kernel_shape=[2, 3], pads=[1, 1, 0, 1], strides=[2, 1]), n_out=2, rtol=0, atol=0)
    run(cache, "MaxPool", x, dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), rtol=0, atol=0)


@pytest.mark.parametrize("nd", [1, 3])
def test_max_pool_1d_3d(cache, nd):
    x = rand((2, 3) + (6,) * nd)
    run(cache, "MaxPool", x, dict(kernel_shape=[3] * nd, strides=[2] * nd, pads=[1] * (2 * nd)), n_out=2)


@pytest.mark.parametrize("attrs,include", zip(WINDOWS, [0, 1] * 4))
def test_average_pool(cache, attrs, include):
    run(cache, "AveragePool", rand((2, 3, 7, 8)), dict(attrs, count_include_pad=include))


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_average_pool_dtypes(cache, dtype):
    x = rand((2, 2, 6, 5), dtype)
    tol = 1e-3 if dtype == "float16" else 1e-12
    run(cache, "AveragePool", x, dict(kernel_shape=[3, 2], pads=[1, 0, 1, 1]), rtol=tol, atol=0)


def test_average_pool_edge_values_and_3d(cache):
    x = rand((1, 2, 4, 5, 3))
    x[0, 0, 1, 1, 1] = np.inf
    x[0, 1, 2, 2, 2] = np.nan
    run(cache, "AveragePool", x, dict(kernel_shape=[2, 3, 2], dilations=[1, 2, 1], pads=[1, 1, 0, 0, 1, 1]))


@pytest.mark.parametrize("attrs,p", zip(WINDOWS[:5], [1, 2, 3, 2, 3]))
def test_lp_pool(cache, attrs, p):
    run(cache, "LpPool", rand((2, 3, 7, 8)), dict(attrs, p=p), opset=18)


@pytest.mark.parametrize("shape,p", [((2, 3, 5, 4), 2), ((1, 2, 7), 1), ((2, 1, 3, 2, 4), 3)])
def test_global_lp_pool(cache, shape, p):
    run(cache, "GlobalLpPool", rand(shape), dict(p=p))


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_max_unpool(cache, dtype):
    values = rand((2, 3, 2, 3), dtype)
    indices = np.random.default_rng(1).permutation(2 * 3 * 4 * 6)[:36].reshape(2, 3, 2, 3).astype(np.int64)
    run(cache, "MaxUnpool", values, dict(kernel_shape=[2, 2], strides=[2, 2]), extra_inputs={"idx": indices},
        rtol=0, atol=0)


def test_max_unpool_output_shape_duplicates_and_negative_indices(cache):
    """The last write of a repeated index wins; negative flat indices wrap like numpy's."""
    values = rand((1, 2, 2, 2))
    indices = np.array([3, 3, -1, 0, 5, 30, 31, -10], np.int64).reshape(1, 2, 2, 2)
    # Straight through run_three_ways: the output's shape follows from the output_shape initializer,
    # which the import's shape inference leaves unknown (the driver's infer-shapes pass knows it).
    model = make_model([helper.make_node("MaxUnpool", ["x", "idx", "shape"], ["y"], kernel_shape=[2, 2],
                                         strides=[2, 2])],
                       [("x", TensorProto.FLOAT, [1, 2, 2, 2]), ("idx", TensorProto.INT64, [1, 2, 2, 2])],
                       [("y", TensorProto.FLOAT, None)], {"shape": np.array([1, 2, 5, 6], np.int64)}, opset=19)
    *_, manifest = run_three_ways(model, {"x": values, "idx": indices}, rtol=0, atol=0, cache_dir=cache)
    assert "fallback" not in manifest["steps"], manifest


# ------------------------------------------------------------------------------ transposed windows

def run_conv_transpose(cache, x_shape, w_shape, attrs, bias=True, dtype="float32", rtol=1e-4):
    x, w = rand(x_shape, dtype, 1), rand(w_shape, dtype, 2)
    inits = {"w": w, **({"b": rand((w_shape[1] * attrs.get("group", 1),), dtype, 3)} if bias else {})}
    return run(cache, "ConvTranspose", x, attrs, initializers=inits, rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("attrs", [
    dict(strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(strides=[2, 2]),
    dict(strides=[3, 2], output_padding=[1, 0], pads=[0, 1, 2, 0]),
    dict(dilations=[2, 2], strides=[2, 1]),
    dict(dilations=[3, 1], strides=[2, 2], pads=[2, 0, 1, 1]),
    dict(strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(strides=[2, 2], output_shape=[10, 9]),
    dict(group=2, strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(),
])
def test_conv_transpose_2d(cache, attrs):
    run_conv_transpose(cache, (2, 4, 5, 4), (4, 3, 4, 3), attrs)


@pytest.mark.parametrize("nd", [1, 3])
def test_conv_transpose_1d_3d(cache, nd):
    run_conv_transpose(cache, (1, 2) + (4,) * nd, (2, 3) + (3,) * nd, dict(strides=[2] * nd, pads=[1] * (2 * nd)),
                       bias=nd == 1)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_conv_transpose_dtypes(cache, dtype):
    run_conv_transpose(cache, (1, 3, 4, 5), (3, 2, 3, 3), dict(strides=[2, 2]), dtype=dtype,
                       rtol=2e-3 if dtype == "float16" else 1e-6)


def test_conv_transpose_masked_terms_do_not_leak_nan(cache):
    """Infinities at the input's border must not meet the zero weights of taps that do not reach."""
    x = rand((1, 2, 4, 4), seed=4)
    x[0, 0, 0, 0], x[0, 1, 3, 3] = np.inf, np.nan
    run(cache, "ConvTranspose", x, dict(strides=[2, 2], pads=[1, 1, 1, 1]), initializers={"w": rand((2, 2, 3, 3))},
        atol=1e-5)


@pytest.mark.parametrize("attrs,image,block", [
    (dict(), [5, 5], [1, 5]),
    (dict(strides=[2, 2]), [5, 5], [3, 3]),
    (dict(pads=[0, 1, 0, 1]), [5, 5], [1, 5]),
    (dict(dilations=[2, 2], strides=[2, 1]), [6, 6], [2, 2]),
    (dict(strides=[2, 3], pads=[1, 0, 2, 1]), [7, 8], [3, 2]),
])
def test_col2im(cache, attrs, image, block):
    from dcopt.ops.nn import _geometry

    nd = len(image)
    blocks, _, _ = _geometry(image, block, attrs.get("strides", [1] * nd), attrs.get("dilations", [1] * nd),
                             "NOTSET", attrs.get("pads", [0] * 2 * nd))
    x = rand((2, 3 * int(np.prod(block)), int(np.prod(blocks))))
    run(cache, "Col2Im", x, attrs, initializers={"image": np.array(image, np.int64),
                                                 "block": np.array(block, np.int64)}, opset=18)


def test_col2im_3d_ints(cache):
    x = rand((1, 2 * 8, 27), "int32")
    run(cache, "Col2Im", x, dict(), initializers={"image": np.array([4, 4, 4], np.int64),
                                                  "block": np.array([2, 2, 2], np.int64)}, opset=18, rtol=0, atol=0)


@pytest.mark.parametrize("shape, attrs", [
    ((1, 3, 9, 11), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    ((1, 2, 6, 7), dict(kernel_shape=[3, 2], pads=[2, 0, 1, 1], strides=[2, 1])),
    ((1, 2, 2, 2), dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),  # no interior: nothing peeled
])
def test_padded_windows_peel_their_borders(cache, shape, attrs):
    """Generated code splits a padded window's output rows/columns into border and interior
    segments (map_windows.WindowLevels._outer_levels); interior loads carry no clamp, and every segment agrees
    with the reference, NaN/inf/-inf at the borders included."""
    import dcopt

    x = rand(shape) * 100
    x[0, 0, 0, 0], x[0, 0, -1, -1], x[0, -1, 0, -1] = np.nan, np.inf, -np.inf
    model = make_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], [("x", TensorProto.FLOAT, list(shape))],
                       [("y", TensorProto.FLOAT, None)], opset=19)
    run_three_ways(model, {"x": x}, cache_dir=cache)
    source = (dcopt.compile(model, cache_dir=cache)._current.directory / "kernels.py").read_text()
    blocks = source.split("for o2 in range(")[1:]  # each column segment up to the next one
    if shape[-1] > 2:
        assert len(blocks) >= 2, source  # interior plus one or two borders
        assert any("A0[" in b and "min(max(o2" not in b for b in blocks), source  # the interior columns
    else:
        assert len(blocks) == 1 and "min(max(o2" in blocks[0], source


@pytest.mark.parametrize("op, attrs, written_out", [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), True),  # ResNet's stem pool
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), True),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2]), False),  # unpadded: the loop vectorizes
    ("MaxPool", dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1]), False),  # taps do not overlap
])
def test_overlapping_strided_window_is_written_out(cache, op, attrs, written_out):
    """A padded 3-wide window moving by 2 along the vectorized columns is written out tap by tap
    (map_windows.WindowLevels._unrolled_param: its loads form one interleaved group, not gathers), and a max
    keeps NaN through a single select instead of a flag; other windows keep the loop. Checked
    three ways with NaN, +-inf and 3e38 (at first, middle and last taps) and on the source."""
    import dcopt

    shape = (1, 3, 9, 40)  # 20 output columns: the vector loop runs
    x = rand(shape) * 100
    x[0, 0, 4, 0], x[0, 0, 4, 9], x[0, 0, 6, 38] = np.nan, np.nan, np.nan  # a border, an even and an odd tap
    x[0, 1, 2, 5], x[0, 1, 7, 30] = np.inf, -np.inf
    x[0, 2, :, 20:] = -np.inf  # whole windows of -inf
    x[0, 2, 3, 11] = 3e38
    model = make_model([helper.make_node(op, ["x"], ["y"], **attrs)], [("x", TensorProto.FLOAT, list(shape))],
                       [("y", TensorProto.FLOAT, None)], opset=19)
    run_three_ways(model, {"x": x}, cache_dir=cache)
    source = (dcopt.compile(model, cache_dir=cache)._current.directory / "kernels.py").read_text()
    assert ("2 * o2 + 0" in source) == written_out, source  # one load per tap, literal offsets
    if op == "MaxPool":
        assert ("_nan" not in source) == written_out, source


@pytest.mark.parametrize("op, attrs, shape, flat", [
    ("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), (1, 4, 13, 13), True),  # Inception's 13x13 pools
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0), (1, 3, 14, 14), True),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1), (1, 3, 9, 12), True),
    ("MaxPool", dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]), (1, 2, 12, 12), True),
    ("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), (1, 2, 6, 6), False),  # too few flat iterations
    ("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), (1, 2, 5, 40), False),  # wide rows vectorize
    ("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]), (1, 2, 14, 14), False),
])
def test_short_rowed_window_interior_runs_as_one_flat_loop(cache, op, attrs, shape, flat):
    """A padded stride-1 window over planes with short rows runs its interior as one loop over
    the flattened plane (map_windows.WindowLevels._flat_plan), then the border rows and columns as before;
    NaN, +-inf and 3e38 at interior points, at border columns (whose flat positions are computed
    from wrapped neighbours, then rewritten) and in the corners agree three ways."""
    import dcopt

    x = rand(shape) * 100
    h, w = shape[2:]
    x[0, 0, 0, 0], x[0, 0, h // 2, 0], x[0, 0, h // 2, w - 1] = np.nan, np.inf, -np.inf
    x[0, 1, h // 2, w // 2], x[0, 1, 1, w - 2] = np.nan, 3e38
    x[0, -1, h - 1, :] = -np.inf
    model = make_model([helper.make_node(op, ["x"], ["y"], **attrs)], [("x", TensorProto.FLOAT, list(shape))],
                       [("y", TensorProto.FLOAT, None)], opset=19)
    run_three_ways(model, {"x": x}, cache_dir=cache)
    source = (dcopt.compile(model, cache_dir=cache)._current.directory / "kernels.py").read_text()
    assert ("for q in range(" in source) == flat, source


def _random_windows(n: int, seed: int = 7):
    """``n`` seeded window geometries biased to the generated code's special forms: stride 1 (flat
    plane loops) and column strides 2-3 (written-out taps), pads, dilations, ceil mode."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        op = str(rng.choice(["MaxPool", "AveragePool"]))
        k = [int(rng.integers(1, 6)), int(rng.integers(1, 6))]
        s = [1, 1] if rng.random() < 0.6 else [int(rng.integers(1, 3)), int(rng.integers(2, 4))]
        d = [int(rng.integers(1, 3)), int(rng.integers(1, 3))] if op == "MaxPool" and rng.random() < 0.3 else [1, 1]
        pads = [int(rng.integers(0, min(k[i % 2], 3))) for i in range(4)]
        shape = (1, int(rng.integers(1, 4)), int(rng.integers(max(k[0] * d[0], 5), 30)),
                 int(rng.integers(max(k[1] * d[1], 5), 40)))
        attrs = dict(kernel_shape=k, strides=s, pads=pads, **({"dilations": d} if d != [1, 1] else {}))
        if op == "AveragePool":
            attrs["count_include_pad"] = int(rng.integers(0, 2))
        if rng.random() < 0.2:
            attrs["ceil_mode"] = 1
        cases.append((op, attrs, shape))
    return cases


@pytest.mark.parametrize("op, attrs, shape", _random_windows(16))
def test_random_window_geometries(cache, op, attrs, shape):
    """Seeded random pools through the generated kernels' forms (flat interiors, written-out
    strided taps, peeled borders) agree three ways; NaN and +-inf land at random positions (3e38
    only for max: an average's overflow to inf and back to NaN depends on the summation order)."""
    import zlib

    rng = np.random.default_rng(zlib.crc32(repr((op, attrs, shape)).encode()))  # per case, same every run
    x = rand(shape)
    specials = [np.nan, np.inf, -np.inf] + ([3e38] if op == "MaxPool" else [])
    for value in rng.choice(specials, 4):
        x[0, rng.integers(0, shape[1]), rng.integers(0, shape[2]), rng.integers(0, shape[3])] = value
    model = make_model([helper.make_node(op, ["x"], ["y"], **attrs)], [("x", TensorProto.FLOAT, list(shape))],
                       [("y", TensorProto.FLOAT, None)], opset=19)
    run_three_ways(model, {"x": x}, cache_dir=cache)
