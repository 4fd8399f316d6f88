"""The clamp epilogue's one definition (dcopt.ir.clamp): which tasklets it recognizes, how it
travels in options and build parameters (an older build's ``relu`` flag included), and its
reference semantics on NaN and crossed bounds."""

import numpy as np
import pytest

from dcopt.ir import clamp


@pytest.mark.parametrize("code,expected", [
    ("out = max(a, 0)", (0.0, None)),
    ("out = max(a, 0.0)", (0.0, None)),
    ("out = min(max(a, 0.0), 6.0)", (0.0, 6.0)),
    ("out = min(max(a, (-1.5)), 2.25)", (-1.5, 2.25)),
    ("out = min(a, 3.0)", (None, 3.0)),
    ("out = max(a, (-inf))", (float("-inf"), None)),
    ("out = min(max(a, 0.1), 1e+30)", (float(np.float32(0.1)), float(np.float32(1e30)))),
])
def test_clamp_tasklets_are_recognized(code, expected):
    assert clamp.match_tasklet(code) == expected


@pytest.mark.parametrize("code", ["out = max(a, b)", "out = min(max(a, nan), 1.0)", "out = max(a, 0) + 1",
                                  "out = a + c", "out = max(b, 0)"])
def test_other_tasklets_are_not(code):
    assert clamp.match_tasklet(code) is None


@pytest.mark.parametrize("bounds", [clamp.RELU, (0.0, 6.0), (None, 2.0), (-1.5, 2.25)])
def test_options_and_params_round_trip(bounds):
    options = clamp.to_options(bounds)
    assert options["activation"] == ("relu" if bounds == clamp.RELU else "clip")
    assert clamp.from_options(options) == bounds
    assert clamp.from_params({"clamp": clamp.to_params(bounds)}) == bounds


def test_older_builds_relu_flag_reads_as_relu():
    assert clamp.from_params({"relu": True}) == clamp.RELU
    assert clamp.from_params({"relu": False}) is None and clamp.from_params({}) is None
    with pytest.raises(ValueError, match="unknown kernel activation 'swish'"):
        clamp.from_options({"activation": "swish"})


def test_reference_keeps_nan_and_crossed_bounds_give_hi():
    y = np.array([np.nan, -np.inf, -2.0, 0.5, 7.0, np.inf], np.float32)
    np.testing.assert_array_equal(clamp.apply(y, (0.0, 6.0)), [np.nan, 0, 0, 0.5, 6, 6])
    np.testing.assert_array_equal(clamp.apply(y, (3.0, 1.0)), [np.nan, 1, 1, 1, 1, 1])
    assert clamp.apply(y, None) is y
