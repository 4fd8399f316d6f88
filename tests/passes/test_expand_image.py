"""Resampling expansions (dcopt/passes/expansions/image.py and point_sampling.py) run three ways:
the reference executor, the lowered IR on it, and the compiled kernels -- agreeing at fp32 rtol
1e-4 (copies and integers exactly), with no op left to a fallback step."""

import numpy as np
import pytest

from tests.passes import one_op_model
from tests.passes.one_op_model import sample as rand

F32 = np.float32


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def run_one_op(cache, op, inputs, attrs, initializers=None, **options):
    """``op`` with attributes ``attrs`` on graph inputs ``inputs`` then ``initializers``, run three ways."""
    return one_op_model.run_one_op(cache, op, inputs, initializers, **options, **attrs)


def resize(cache, x, attrs, scales=None, sizes=None, roi=None, opset=19, rtol=1e-4, atol=1e-5):
    inits = {"roi": np.asarray(roi if roi is not None else [], F32),
             "scales": np.asarray(scales if scales is not None else [], F32)}
    if sizes is not None:
        inits["sizes"] = np.asarray(sizes, np.int64)
    if attrs.get("mode", "nearest") == "nearest":  # a gather: exact
        rtol = atol = 0
    return run_one_op(cache, "Resize", {"x": x}, attrs, initializers=inits, opset=opset, rtol=rtol, atol=atol)


CTMS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
        "tf_half_pixel_for_nn"]


NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


@pytest.mark.parametrize("ctm,nearest_mode", zip(CTMS, NEAREST_MODES * 2))
def test_resize_nearest(cache, ctm, nearest_mode):
    x = rand((1, 2, 4, 5))
    attrs = dict(mode="nearest", coordinate_transformation_mode=ctm, nearest_mode=nearest_mode)
    resize(cache, x, attrs, scales=[1, 1, 1.7, 0.6])
    resize(cache, x, attrs, sizes=[1, 2, 7, 3])


@pytest.mark.parametrize("ctm,mode", [(ctm, "linear") for ctm in CTMS[:5]] + [(ctm, "cubic") for ctm in CTMS[:3]])
def test_resize_interpolating(cache, ctm, mode):
    x = rand((2, 2, 5, 4))
    resize(cache, x, dict(mode=mode, coordinate_transformation_mode=ctm), scales=[1, 1, 1.6, 0.5])


def test_resize_interpolating_sizes(cache):
    resize(cache, rand((2, 2, 5, 4)), dict(mode="linear", coordinate_transformation_mode="align_corners"),
           sizes=[2, 2, 3, 7])


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_antialias_exclude_outside_and_cubic_coefficient(cache, mode):
    x = rand((1, 2, 9, 8))
    resize(cache, x, dict(mode=mode, antialias=1), scales=[1, 1, 0.4, 0.7])
    resize(cache, x, dict(mode=mode, exclude_outside=1, cubic_coeff_a=-0.5), scales=[1, 1, 0.8, 1.5])


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_tf_crop_and_resize_extrapolates(cache, mode):
    x = rand((1, 1, 6, 5))
    resize(cache, x, dict(mode=mode, coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=10.0),
           sizes=[1, 1, 4, 5], roi=[0, 0, -0.3, 0.2, 1, 1, 0.9, 1.4])


def test_resize_axes_keep_aspect_ratio_and_integer_factors(cache):
    x = rand((1, 2, 4, 6))
    resize(cache, x, dict(mode="nearest", axes=[3, 2], keep_aspect_ratio_policy="not_larger"), sizes=[5, 7])
    resize(cache, x, dict(mode="nearest", axes=[2, 3], keep_aspect_ratio_policy="not_smaller"), sizes=[5, 7])
    resize(cache, x, dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
           scales=[1, 1, 2, 3])  # an affine floor: no index table
    resize(cache, x, dict(mode="linear", axes=[3]), scales=[2.5])


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float16", "float64", "bool"])
def test_resize_dtypes(cache, dtype):
    x = rand((1, 3, 4, 4), dtype)
    resize(cache, x, dict(mode="nearest"), scales=[1, 1, 1.5, 2])
    if dtype != "bool":  # scales whose weights make no exact .5 ties (where rint may go either way)
        resize(cache, x, dict(mode="linear"), scales=[1, 1, 0.7, 1.3], rtol=1e-3)
        resize(cache, x, dict(mode="cubic", coordinate_transformation_mode="align_corners"), scales=[1, 1, 1.7, 1],
               rtol=1e-3)


def test_resize_edge_values(cache):
    x = rand((1, 1, 4, 4))
    x[0, 0, 1, 1], x[0, 0, 2, 3], x[0, 0, 3, 0] = np.inf, np.nan, -0.0
    resize(cache, x, dict(mode="linear"), scales=[1, 1, 2, 2])
    resize(cache, x, dict(mode="nearest"), scales=[1, 1, 2, 2])


def test_resize_opset_10_and_upsample(cache):
    x = rand((1, 2, 3, 4))
    run_one_op(cache, "Resize", {"x": x}, dict(mode="linear"), initializers={"s": np.array([1, 1, 2, 1.5], F32)},
               opset=10, atol=1e-6)
    for mode in ("nearest", "linear"):
        run_one_op(cache, "Upsample", {"x": x}, dict(mode=mode), initializers={"s": np.array([1, 1, 2, 2.5], F32)},
                   opset=9, atol=1e-6)
    run_one_op(cache, "Upsample", {"x": x}, dict(mode="bilinear", scales=[1.0, 1.0, 2.0, 3.0]), opset=7)


# ------------------------------------------------------------------------------ regular grids

@pytest.mark.parametrize("shape,axes,dtype", [([3, 7, 2], None, "float32"), ([6, 3], [0, 1], "int8"),
                                               ([5, 12], [-3, -2], "bool"), ([2, 9], [1, 0], "float16")])
def test_center_crop_pad(cache, shape, axes, dtype):
    x = rand((4, 8, 2), dtype)
    attrs = {} if axes is None else dict(axes=axes)
    run_one_op(cache, "CenterCropPad", {"x": x}, attrs, initializers={"s": np.array(shape, np.int64)}, opset=18,
               rtol=0, atol=0)


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("size", [[2, 3, 5, 6], [2, 3, 4, 5, 6]])
def test_affine_grid(cache, size, align):
    nd = len(size) - 2
    theta = rand((2, nd, nd + 1))
    run_one_op(cache, "AffineGrid", {"theta": theta}, dict(align_corners=align),
               initializers={"size": np.array(size, np.int64)}, opset=20)


# ------------------------------------------------------------------------------ data-dependent positions

def grid_points(shape, seed=0, spread=1.3):
    grid = np.random.default_rng(seed).uniform(-spread, spread, shape).astype(F32)
    grid.flat[:4] = [-1.0, 1.0, 0.0, -1.25]  # corners, the centre, a point outside
    return grid


GRID_CASES = [(m, p, (i + j) % 2) for i, m in enumerate(["bilinear", "nearest", "bicubic"])
              for j, p in enumerate(["zeros", "border", "reflection"])]  # each mode with both align_corners


@pytest.mark.parametrize("mode,padding,align", GRID_CASES)
def test_grid_sample(cache, mode, padding, align):
    x = rand((2, 3, 4, 5))
    run_one_op(cache, "GridSample", {"x": x, "grid": grid_points((2, 3, 6, 2))},
               dict(mode=mode, padding_mode=padding, align_corners=align), opset=20, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
def test_grid_sample_volumetric_and_dtypes(cache, mode):
    run_one_op(cache, "GridSample", {"x": rand((1, 2, 3, 4, 5)), "grid": grid_points((1, 2, 3, 2, 3))},
               dict(mode=mode, padding_mode="border"), opset=20, atol=1e-5)
    run_one_op(cache, "GridSample", {"x": rand((1, 2, 4, 4), "float64"), "grid": grid_points((1, 3, 3, 2))},
               dict(mode=mode), opset=20, atol=1e-12)
    run_one_op(cache, "GridSample", {"x": rand((1, 2, 4, 4), "float16"), "grid": grid_points((1, 3, 3, 2))},
               dict(mode=mode, padding_mode="reflection"), opset=20, rtol=1e-3, atol=1e-3)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the reference's inf * 0
def test_grid_sample_edge_values(cache):
    x = rand((1, 1, 4, 4))
    x[0, 0, 0, 0], x[0, 0, 3, 3] = np.inf, np.nan
    grid = grid_points((1, 4, 4, 2), spread=2.5)
    run_one_op(cache, "GridSample", {"x": x, "grid": grid}, dict(mode="bilinear"), opset=20, atol=1e-5)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("ctm", ["half_pixel", "output_half_pixel"])
def test_roi_align(cache, mode, ctm):
    x = rand((2, 3, 6, 7))
    rois = np.array([[0, 0, 5, 4], [1.2, 0.5, 3.3, 5.7], [-2, -1, 9, 8], [4, 4, 4.2, 4.1], [6.8, 5.9, 7.5, 6.2]], F32)
    batch = np.array([0, 1, 1, 0, 1], np.int64)
    run_one_op(cache, "RoiAlign", {"x": x, "rois": rois, "batch": batch},
               dict(mode=mode, coordinate_transformation_mode=ctm, output_height=3, output_width=2,
                    sampling_ratio=2, spatial_scale=0.9), opset=16, atol=1e-6)


@pytest.mark.parametrize("case", ["plain", "mask_bias_groups"])
def test_deform_conv(cache, case):
    x = rand((2, 4, 5, 6))
    offset = rand((2, 2 * 2 * 3 * 2, 5, 2), seed=1) * 0.15  # 2 offset groups, 2x3 taps, out 5x2
    w = rand((6, 2 if case != "plain" else 4, 2, 3), seed=2)
    attrs = dict(kernel_shape=[2, 3], offset_group=2, strides=[1, 2], pads=[1, 0, 0, 0])
    inputs = {"x": x, "w": w, "offset": offset}
    if case != "plain":
        attrs["group"] = 2
        inputs.update(b=rand((6,), seed=3), mask=np.random.default_rng(4).random((2, 12, 5, 2)).astype(F32))
    run_one_op(cache, "DeformConv", inputs, attrs, opset=19, atol=1e-5)


def test_max_roi_pool(cache):
    x = rand((2, 3, 6, 7))
    x[1, 2, 3, 3] = np.nan
    rois = np.array([[0, 0, 0, 5, 4], [1, 1.2, 0.5, 3.3, 5.7], [1, -2, -1, 9, 8], [0, 4, 4, 4.2, 4.1],
                     [1, 6.8, 5.9, 7.5, 6.2], [0, 9, 9, 12, 12], [1, -1.6, 2.5, -0.4, 2.5]], F32)
    run_one_op(cache, "MaxRoiPool", {"x": x, "rois": rois}, dict(pooled_shape=[3, 2], spatial_scale=0.8),
               opset=16, rtol=0, atol=0)
