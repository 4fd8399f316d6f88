"""Elementwise ops, casts and quantization: hand-checked values, result dtypes, opset variants.

Ops are called through the registry (so schema defaults and opset handling are exercised), with
the op module imported directly so the tests do not depend on the catalog listing it.
"""

import math

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto

import dcopt.ops.elementwise  # noqa: F401  (registers the ops)
from dcopt.ops import registry

F32, F16, BF16 = np.float32, np.float16, ml_dtypes.bfloat16


def run(op, *inputs, opset=21, **attrs):
    out = registry.call(registry.lookup(op), list(inputs), attrs, opset)
    return out if len(out) > 1 else out[0]


# --- dtypes and numpy promotion --------------------------------------------------------------

@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Exp", "Gelu", "HardSwish", "Softplus", "Erf", "Round"])
@pytest.mark.parametrize("dtype", [F32, F16, BF16])
def test_unary_ops_keep_the_input_dtype(op, dtype):
    assert run(op, np.array([-1.5, 0.5, 2.0], dtype)).dtype == dtype


def test_scalar_inputs_give_0d_arrays():
    for out in (run("Add", np.array(1, np.int32), np.array(2, np.int32)), run("Less", np.array(1.0, F32), np.array(2.0, F32))):
        assert isinstance(out, np.ndarray) and out.shape == ()
    assert run("Less", np.array(1.0, F32), np.array(2.0, F32)).dtype == bool


def test_comparisons_and_logic_return_bool_and_compare_strings():
    a = np.array(["a", "bc", "d"], dtype=object)
    np.testing.assert_array_equal(run("Equal", a, np.array(["a"], dtype=object)), [True, False, False])
    out = run("GreaterOrEqual", np.array([1, 2, 3], np.uint8), np.array([2], np.uint8))
    assert out.dtype == bool and out.tolist() == [False, True, True]
    assert run("Xor", np.array([True, False]), np.array([True, True])).tolist() == [False, True]


# --- arithmetic ------------------------------------------------------------------------------

def test_integer_div_truncates_toward_zero():
    a, b = np.array([7, -7, 7, -7], np.int32), np.array([2, 2, -2, -2], np.int32)
    out = run("Div", a, b)
    assert out.dtype == np.int32 and out.tolist() == [3, -3, -3, 3]


def test_mod_sign_follows_divisor_unless_fmod():
    a, b = np.array([-4, 7, 5, 4, -7, 8], np.int64), np.array([2, -3, 8, -2, 3, 5], np.int64)
    assert run("Mod", a, b).tolist() == [0, -2, 5, 0, 2, 3]
    assert run("Mod", a, b, fmod=1).tolist() == [0, 1, 5, 0, -1, 3]
    np.testing.assert_allclose(run("Mod", np.array([-4.3], F32), np.array([2.0], F32), fmod=1), [-0.3], rtol=1e-5)


def test_pow_result_has_base_dtype():
    assert run("Pow", np.array([2, 3], np.int64), np.array([0.5, 2.0], F32)).tolist() == [1, 9]
    out = run("Pow", np.array([2.0], F32), np.array([3], np.int64))
    assert out.dtype == F32 and out.tolist() == [8.0]
    assert run("Pow", np.array([2, 1, -1], np.int32), np.array([-1, -2, -1], np.int32)).tolist() == [0, 1, -1]


def test_bitshift_out_of_range_amounts_and_overflow():
    x = np.array([-16, 16, 64, 1], np.int8)
    assert run("BitShift", x, np.array([2, 9, 1, -1], np.int8), direction="RIGHT").tolist() == [-4, 0, 32, 0]
    assert run("BitShift", x, np.array([1, 8, 1, 7], np.int8), direction="LEFT").tolist() == [-32, 0, -128, -128]


def test_variadic_ops_broadcast_all_inputs():
    a, b, c = np.array([1.0, 5.0], F32), np.array([[3.0], [0.0]], F32), np.array(2.0, F32)
    np.testing.assert_array_equal(run("Max", a, b, c), [[3, 5], [2, 5]])
    np.testing.assert_allclose(run("Mean", a, b, c), [[2, 10 / 3], [1, 7 / 3]], rtol=1e-6)
    assert run("Sum", a).tolist() == [1.0, 5.0]


# --- opset variants --------------------------------------------------------------------------

def test_clip_bounds_are_attributes_before_opset_11_and_inputs_after():
    x = np.array([-3.0, 0.5, 3.0], F32)
    np.testing.assert_array_equal(run("Clip", x, opset=6, min=-1.0, max=1.0), [-1, 0.5, 1])
    np.testing.assert_array_equal(run("Clip", x, opset=6), x)  # schema defaults: +-FLT_MAX
    np.testing.assert_array_equal(run("Clip", x, np.array(-1, F32), np.array(1, F32), opset=13), [-1, 0.5, 1])
    np.testing.assert_array_equal(run("Clip", x, None, np.array(0, F32), opset=13), [-3, 0, 0])
    np.testing.assert_array_equal(run("Clip", x, np.array(2, F32), np.array(1, F32), opset=13), [1, 1, 1])
    out = run("Clip", np.array([-128, 5, 127], np.int8), np.array(-3, np.int8), opset=13)
    assert out.dtype == np.int8 and out.tolist() == [-3, 5, 127]


def test_activation_defaults_come_from_the_schema():
    x = np.array([-2.0, 0.0, 2.0], F32)
    np.testing.assert_allclose(run("LeakyRelu", x), [-0.02, 0, 2], rtol=1e-6)
    np.testing.assert_allclose(run("HardSigmoid", x), [0.1, 0.5, 0.9], rtol=1e-6)
    np.testing.assert_allclose(run("Elu", x), [math.expm1(-2), 0, 2], rtol=1e-6)
    np.testing.assert_allclose(run("Shrink", x, bias=0.5, lambd=1.0), [-1.5, 0, 1.5])
    np.testing.assert_allclose(run("ThresholdedRelu", x), [0, 0, 2])
    np.testing.assert_allclose(run("Swish", x, opset=24, alpha=2.0), x / (1 + np.exp(-2 * x)), rtol=1e-6)


def test_gelu_exact_and_tanh_approximation():
    x = np.array([-1.0, 0.0, 1.0], F32)
    exact = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.tolist()]
    np.testing.assert_allclose(run("Gelu", x, opset=20), exact, rtol=1e-6)
    np.testing.assert_allclose(run("Gelu", x, opset=20, approximate="tanh"), exact, rtol=1e-3)


def test_round_half_to_even_and_isinf_directions():
    assert run("Round", np.array([0.5, 1.5, 2.5, -2.5], F32)).tolist() == [0, 2, 2, -2]
    x = np.array([-np.inf, np.inf, 1.0, np.nan], F32)
    assert run("IsInf", x).tolist() == [True, True, False, False]
    assert run("IsInf", x, detect_negative=0).tolist() == [False, True, False, False]
    assert run("IsInf", x, detect_positive=0).tolist() == [True, False, False, False]


def test_identity_passes_a_sequence_through_as_one_output():
    seq = [np.zeros(2, F32), np.ones(3, F32)]
    assert registry.call(registry.lookup("Identity"), [seq], {}, 21)[0] is seq


# --- casts -----------------------------------------------------------------------------------

def test_cast_float8_saturates_unless_told_not_to():
    x = np.array([1000.0, -np.inf, 0.3, np.nan], F32)
    sat = run("Cast", x, to=TensorProto.FLOAT8E4M3FN)
    assert sat.dtype == ml_dtypes.float8_e4m3fn
    np.testing.assert_array_equal(sat.astype(F32), [448, -448, 0.3125, np.nan])
    raw = run("Cast", x, to=TensorProto.FLOAT8E5M2, saturate=0).astype(F32)
    np.testing.assert_array_equal(raw, [1024, -np.inf, 0.3125, np.nan])


def test_cast_rounds_to_nearest_even_and_handles_narrow_ints():
    halfway = np.array([1.00390625, 1.01171875], F32)  # exactly between bfloat16 neighbours
    assert run("Cast", halfway, to=TensorProto.BFLOAT16).astype(F32).tolist() == [1.0, 1.015625]
    out = run("Cast", np.array([-3, 7], F32), to=TensorProto.INT4)
    assert out.dtype == ml_dtypes.int4 and out.astype(np.int8).tolist() == [-3, 7]


def test_cast_between_strings_and_numbers():
    s = run("Cast", np.array(["1.5", "-INF", "NaN", "+2"], dtype=object), to=TensorProto.FLOAT)
    np.testing.assert_array_equal(s, [1.5, -np.inf, np.nan, 2.0])
    assert run("Cast", np.array(["12345678901"], dtype=object), to=TensorProto.INT64).tolist() == [12345678901]
    out = run("Cast", np.array([1.5, -2.0], F32), to=TensorProto.STRING)
    assert out.dtype == object and out.tolist() == ["1.5", "-2.0"]


def test_castlike_and_bitcast():
    assert run("CastLike", np.array([1.7], F32), np.array([0], np.int32), opset=19).dtype == np.int32
    assert run("Cast", np.array([1.5], F32), opset=1, to="FLOAT16").dtype == F16  # Cast-1 names the type
    bits = run("BitCast", np.array(1.0, F32), opset=26, to=TensorProto.INT32)
    assert bits.shape == () and bits.item() == 0x3F800000


# --- quantization ----------------------------------------------------------------------------

def test_quantize_rounds_half_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, 300.0, -10.0], F32)
    out = run("QuantizeLinear", x, np.array(1.0, F32), np.array(0, np.uint8))
    assert out.dtype == np.uint8 and out.tolist() == [0, 2, 2, 255, 0]
    assert run("QuantizeLinear", x, np.array(1.0, F32)).dtype == np.uint8  # default output type
    out = run("QuantizeLinear", x, np.array(1.0, F32), np.array(0, ml_dtypes.int4), axis=0)
    assert out.astype(np.int8).tolist() == [0, 2, 2, 7, -8]


def test_quantize_per_axis_and_blocked_scales():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]], F32)
    per_row = run("QuantizeLinear", x, np.array([1.0, 10.0], F32), np.array([0, 1], np.int8), axis=0)
    assert per_row.tolist() == [[1, 2, 3, 4], [2, 3, 4, 5]]
    scales = np.array([[1.0, 2.0], [10.0, 20.0]], F32)  # blocks of 2 along axis 1
    blocked = run("QuantizeLinear", x, scales, axis=1, block_size=2, output_dtype=TensorProto.INT8)
    assert blocked.dtype == np.int8 and blocked.tolist() == [[1, 2, 2, 2], [1, 2, 2, 2]]
    back = run("DequantizeLinear", blocked, scales, axis=1, block_size=2)
    assert back.dtype == F32 and back.tolist() == [[1, 2, 4, 4], [10, 20, 40, 40]]


def test_dequantize_zero_point_and_output_dtype():
    out = run("DequantizeLinear", np.array([0, 3, 128], np.uint8), np.array(2.0, F16), np.array(128, np.uint8))
    assert out.dtype == F16 and out.tolist() == [-256, -250, 0]
    out = run("DequantizeLinear", np.array([2], np.int8), np.array(0.5, F32), opset=23, output_dtype=TensorProto.FLOAT16)
    assert out.dtype == F16 and out.tolist() == [1.0]


def test_dynamic_quantize_linear():
    y, scale, zero_point = run("DynamicQuantizeLinear", np.array([0.0, 2.0, -1.0, 3.0], F32))
    assert scale.dtype == F32 and zero_point.dtype == np.uint8 and y.dtype == np.uint8
    np.testing.assert_allclose(scale, 4.0 / 255)
    assert zero_point.item() == 64 and y.tolist() == [64, 191, 0, 255]
