"""Resampling expansions (dcopt/passes/expansions/image.py and point_sampling.py) run three ways:
the reference executor, the lowered IR on it, and the compiled kernels -- agreeing at fp32 rtol
1e-4 (copies and integers exactly), with no op left to a fallback step."""

import numpy as np
import pytest

from tests.passes.one_op import rand, run_one_op

F32 = np.float32


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def resize(cache, x, attrs, scales=None, sizes=None, roi=None, opset=19, rtol=1e-4, atol=1e-5):
    inits = {"roi": np.asarray(roi if roi is not None else [], F32),
             "scales": np.asarray(scales if scales is not None else [], F32)}
    if sizes is not None:
        inits["sizes"] = np.asarray(sizes, np.int64)
    exact = str(x.dtype) not in ("float32", "float64", "float16") or attrs.get("mode", "nearest") == "nearest"
    return run_one_op(cache, "Resize", {"x": x}, attrs, initializers=inits, opset=opset,
                      rtol=0 if exact else rtol, atol=0 if exact else atol)


CTMS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
        "tf_half_pixel_for_nn"]


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
@pytest.mark.parametrize("ctm", CTMS)
def test_resize_nearest(cache, ctm, nearest_mode):
    x = rand((1, 2, 4, 5))
    attrs = dict(mode="nearest", coordinate_transformation_mode=ctm, nearest_mode=nearest_mode)
    resize(cache, x, attrs, scales=[1, 1, 1.7, 0.6])
    resize(cache, x, attrs, sizes=[1, 2, 7, 3])


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("ctm", CTMS[:5])
def test_resize_interpolating(cache, ctm, mode):
    x = rand((2, 2, 5, 4))
    resize(cache, x, dict(mode=mode, coordinate_transformation_mode=ctm), scales=[1, 1, 1.6, 2.0])
    resize(cache, x, dict(mode=mode, coordinate_transformation_mode=ctm), sizes=[2, 2, 3, 3])


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
    if dtype != "bool":
        resize(cache, x, dict(mode="linear"), scales=[1, 1, 0.75, 1.5], rtol=1e-3)
        resize(cache, x, dict(mode="cubic", coordinate_transformation_mode="align_corners"), scales=[1, 1, 1.5, 1],
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
