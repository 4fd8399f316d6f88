"""Elementwise, casting and quantization ops compile natively: each runs three ways (reference,
lowered IR on the reference executor, compiled kernels) on ordinary and edge values, for every
kernel dtype ONNX allows it, and never falls back to its numpy reference.

One model per test holds one node per dtype (outputs named by dtype, so a mismatch says which),
to keep the compile count -- the cost of these tests -- low.
"""

from __future__ import annotations

import math

import numpy as np
import onnx.defs
import pytest
from onnx import TensorProto, helper

from dcopt.backends.cpu.scalar_code import KERNEL_DTYPES
from dcopt.ir import dtypes as dt
from dcopt.ir.tasklet import parse_tasklet, run_numpy
from dcopt.ops.elementwise import ALL, ELEMENTWISE_OPS, FLOATS, INTS, TABLE, TASKLET_OPS
from dcopt.passes.expand import rules
from dcopt.passes.expansions.conversions import exact_conversions
from dcopt.passes.expansions.elementwise import define_elementwise
from dcopt.testing import EDGE_VALUES_F32, assert_close, run_three_ways
from tests.conftest import make_model

#: The ops the family must compile natively (the brief's list).
FAMILY = {
    "Abs", "Neg", "Relu", "LeakyRelu", "PRelu", "ThresholdedRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Softplus", "Softsign", "Mish", "Gelu", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "Sin",
    "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Ceil", "Floor", "Round", "Sign",
    "Not", "IsNaN", "IsInf", "Clip", "Cast", "CastLike", "Add", "Sub", "Mul", "Div", "Pow", "Mod", "BitShift",
    "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "And", "Or", "Xor", "Equal", "Less", "LessOrEqual",
    "Greater", "GreaterOrEqual", "Max", "Min", "Sum", "Mean", "Where", "Identity", "Dropout", "Shrink", "Swish",
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
}
OPSET = {"Swish": 24}
#: attribute sets each op is run with (besides the schema defaults)
ATTRS = {"Gelu": [{"approximate": "none"}, {"approximate": "tanh"}], "Mod": [{"fmod": 0}, {"fmod": 1}],
         "BitShift": [{"direction": "LEFT"}, {"direction": "RIGHT"}],
         "IsInf": [{}, {"detect_negative": 0}, {"detect_positive": 0}], "LeakyRelu": [{"alpha": 0.3}],
         "Elu": [{"alpha": 0.7}], "Celu": [{"alpha": 1.5}], "Shrink": [{"bias": 1.5, "lambd": 2.0}],
         "ThresholdedRelu": [{"alpha": 0.5}], "HardSigmoid": [{"alpha": 0.3, "beta": 0.4}], "Swish": [{"alpha": 0.8}]}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernels")


def numpy_dtype(name: str) -> np.dtype:
    return dt.to_numpy(name)


def schema_dtypes(op: str, index: int = 0, opset: int = 21) -> set[str]:
    """Kernel dtypes ONNX allows for input ``index`` of ``op``."""
    schema = onnx.defs.get_schema(op, opset)
    formal = schema.inputs[min(index, len(schema.inputs) - 1)]
    allowed = next(c.allowed_type_strs for c in schema.type_constraints if c.type_param_str == formal.type_str)
    names = set()
    for text in allowed:
        proto = {"float": "FLOAT", "double": "DOUBLE", "float16": "FLOAT16"}.get(text[7:-1], text[7:-1].upper())
        try:
            names.add(dt.from_onnx(getattr(TensorProto, proto)))
        except (AttributeError, Exception):  # element types dcopt does not carry (complex)
            continue
    return names & KERNEL_DTYPES


def values(dtype: str, seed: int = 0) -> np.ndarray:
    """Ordinary and edge values of ``dtype``: for floats randn x100, randn, and the float32 edges
    (NaN, +-inf, +-0, 1e30, subnormals, exp's overflow ends); for ints the type's ends, 0, +-1,
    shift-width neighbours and random values."""
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return np.array([True, False, True, True, False, False])
    if dtype in FLOATS:
        v = np.concatenate([rng.standard_normal(12) * 100, rng.standard_normal(8), EDGE_VALUES_F32])
        with np.errstate(all="ignore"):
            return v.astype(np.float32).astype(numpy_dtype(dtype))
    info = np.iinfo(dtype)
    picks = [0, 1, 2, 3, 7, 8, 9, 63, 64, 65, -1, -2, -7, -8, info.min, info.max, info.min + 1, info.max - 1]
    picks += [int(v) for v in rng.integers(0, 2 ** 62, 10)]
    return np.array([p % 2 ** 64 if dtype == "uint64" else p for p in picks
                     if info.min <= p <= info.max or dtype == "uint64" and p >= info.min], dtype)


def tolerance(dtypes) -> tuple[float, float]:
    """fp32's rtol 1e-4; half types compute in float32 in a kernel and round once, where the
    reference rounds every step."""
    if "bfloat16" in dtypes:
        return 2e-2, 1e-2
    if "float16" in dtypes:
        return 4e-3, 1e-3
    return 1e-4, 1e-6


def one_node_per_dtype(op: str, inputs_of, dtypes, attrs=None, opset=21, out_dtype=None, domain=""):
    """A model with one ``op`` node per dtype (inputs from ``inputs_of(dtype)``) and its feeds."""
    nodes, ins, outs, feeds = [], [], [], {}
    for d in dtypes:
        arrays = inputs_of(d)
        names = [f"{d}_x{i}" for i in range(len(arrays))]
        nodes.append(helper.make_node(op, names, [f"{d}_y"], domain=domain, **(attrs or {})))
        for n, a in zip(names, arrays):
            ins.append((n, dt.to_onnx(dt.from_numpy(a.dtype)), list(a.shape)))
            feeds[n] = a
        shape = list(np.broadcast_shapes(*(a.shape for a in arrays)))
        outs.append((f"{d}_y", dt.to_onnx(out_dtype(d, arrays) if out_dtype else d), shape))
    model = make_model(nodes, ins, outs, opset=opset)
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    return model, feeds


def check_native(model, feeds, cache, dtypes=("float32",), **tol):
    """Three ways, no fallback; the model's loosest tolerance first (one node per dtype), then every
    output again at its own dtype's tolerance (fp32: rtol 1e-4; integers and bools: exact)."""
    rtol, atol = tolerance(dtypes)
    ref, low, got, manifest = run_three_ways(model, feeds, rtol=tol.get("rtol", rtol), atol=tol.get("atol", atol),
                                             cache_dir=cache)
    assert "fallback" not in manifest["steps"], manifest.get("not_native")
    for name, expected in ref.items():
        rtol, atol = tolerance((dt.from_numpy(np.asarray(expected).dtype),))
        assert_close(low[name], expected, tol.get("rtol", rtol), tol.get("atol", atol), f"{name} (lowered IR)")
        assert_close(got[name], expected, tol.get("rtol", rtol), tol.get("atol", atol), f"{name} (compiled)")
    return ref, got


# ------------------------------------------------------------------------------ the table

def test_the_family_is_defined_and_has_expansions():
    table = rules()
    assert FAMILY - {"DynamicQuantizeLinear", "Dropout"} <= ELEMENTWISE_OPS
    assert not FAMILY - {op for domain, op in table if domain == ""}


@pytest.mark.parametrize("op", sorted(TASKLET_OPS))
def test_table_dtypes_cover_what_onnx_allows(op):
    """Every kernel dtype the op's schema allows expands (Where: its value inputs)."""
    entry = TABLE[("", op)]
    index, conn = (1, "b") if op == "Where" else (0, "a")
    assert schema_dtypes(op, index, OPSET.get(op, 21)) <= set(entry.allowed(conn))


def _table_inputs(op: str, dtype: str):
    entry = TABLE[("", op)]
    v = values(dtype)
    if op == "Where":
        cond = np.array([True, False, True, False, True, False])
        return [cond.reshape(-1, 1), np.resize(v, 6).reshape(1, -1), np.resize(v[::-1], 6).reshape(1, -1)]
    if op == "Pow" and dtype in INTS:
        return [v.reshape(-1, 1), np.array([0, 1, 2, 3, 63, 64] + ([-1, -2] if dtype[0] == "i" else []), dtype)]
    if op == "PRelu":  # the slope broadcasts to x (unidirectionally)
        return [np.resize(v, 24).reshape(4, 6), np.resize(v[::-1], 6)]
    if op == "BitShift":
        shifts = [0, 1, 3, 7, 8, 15, 16, 31, 32, 63, 64, 65] + ([-1, -8] if dtype[0] == "i" else [])
        return [v.reshape(-1, 1), np.array(shifts, dtype)]
    arity = 3 if entry.variadic else len(onnx.defs.get_schema(op, OPSET.get(op, 21)).inputs)
    if arity == 1:
        return [v]
    if arity == 2:  # every pair of values
        return [v[:24].reshape(-1, 1), v[:24].reshape(1, -1)]
    return [v[:12].reshape(-1, 1, 1), v[:12].reshape(1, -1, 1), v[:6].reshape(1, 1, -1)]


@pytest.mark.parametrize("op,attrs", [(op, a) for op in sorted(TASKLET_OPS) for a in ATTRS.get(op, [{}])])
def test_table_op_three_ways_on_edge_values(op, attrs, cache):
    entry = TABLE[("", op)]
    dtypes = sorted(schema_dtypes(op, 1 if op == "Where" else 0, OPSET.get(op, 21)), key=ALL.index)

    def result(d, arrays):
        return "bool" if entry.result == "bool" else dt.from_numpy(arrays["abc".index(entry.result)].dtype)

    model, feeds = one_node_per_dtype(op, lambda d: _table_inputs(op, d), dtypes, attrs, OPSET.get(op, 21), result)
    check_native(model, feeds, cache, dtypes)


@pytest.mark.parametrize("base,exponents", [("int32", ("int8", "int64", "uint8", "float32")),
                                            ("int64", ("int32", "uint64", "float64")),
                                            ("int64", ("int16", "uint16", "float16")),
                                            ("float32", ("int64", "uint32", "float16", "float64")),
                                            ("float32", ("int8", "int32", "uint8", "uint16")),
                                            ("float16", ("int64", "float32", "float64"))])
def test_pow_of_mixed_dtypes(base, exponents, cache):
    """The result has the base's dtype whatever the exponent's; integer powers wrap; negative
    integer exponents take numpy's float64 path (0 -> inf -> the integer numpy converts inf to)."""
    x = np.array([0, 1, -1, 2, -2, 3, 5, -7, 10], base)
    exps = {"int8": [0, 1, 2, 3, -1, -2, 7], "int16": [0, 1, 3, -1, -2, 9], "uint16": [0, 1, 2, 11], "int32": [0, 1, 2, 3, -1, -3, 40],
            "int64": [0, 1, 2, 3, -1, -2, 70], "uint8": [0, 1, 2, 3, 9], "uint32": [0, 1, 2, 7],
            "uint64": [0, 1, 2, 5, 64], "float16": [0.5, -1.5, 2.0, 0.0], "float32": [0.5, -1.5, 2.0, 0.0, 3.3],
            "float64": [0.5, -1.5, 2.0, 0.0, -0.25]}
    model, feeds = one_node_per_dtype("Pow", lambda e: [x.reshape(-1, 1), np.array(exps[e], e)], exponents,
                                      out_dtype=lambda e, arrays: base)
    check_native(model, feeds, cache, (base, *exponents))


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_variadic_ops_broadcast_any_number_of_inputs(op, cache):
    """One, two and four inputs of different ranks; integer inputs wrap (the type's ends)."""
    rng = np.random.default_rng(0)
    shapes = [(3, 1, 4), (1, 5, 1), (4,), (5, 4)]
    nodes, ins, outs, feeds = [], [], [], {}
    for d in sorted(schema_dtypes(op) & {"float32", "float64", "float16", "int8", "uint64"}, key=ALL.index):
        for arity in (1, 2, 4):
            names = [f"{d}_{arity}_{k}" for k in range(arity)]
            for name, shape in zip(names, shapes):
                if d in INTS:
                    info = np.iinfo(d)
                    feeds[name] = rng.integers(info.min, info.max, shape, dtype=d, endpoint=True)
                else:
                    feeds[name] = (rng.standard_normal(shape) * 100).astype(d)
                ins.append((name, dt.to_onnx(d), list(shape)))
            nodes.append(helper.make_node(op, names, [f"{d}_{arity}_y"]))
            outs.append((f"{d}_{arity}_y", dt.to_onnx(d), list(np.broadcast_shapes(*shapes[:arity]))))
    check_native(make_model(nodes, ins, outs), feeds, cache, ("float16",))


def test_edge_values_of_the_transcendental_activations(cache):
    """Numerically delicate points, with the exact values they must have."""
    x = np.array([100.0, -100.0, 88.5, -88.5, 1e30, -1e30, 1e-40, 0.0, np.nan, np.inf, -np.inf], np.float32)
    ops = ["Softplus", "Exp", "Sigmoid", "Tanh", "Mish", "Erf", "Gelu", "Swish", "Softsign", "Elu", "Selu"]
    nodes = [helper.make_node(op, ["x"], [op]) for op in ops]
    model = make_model(nodes, [("x", TensorProto.FLOAT, [len(x)])], [(op, TensorProto.FLOAT, [len(x)]) for op in ops],
                       opset=24)
    ref, got = check_native(model, {"x": x}, cache)
    assert got["Softplus"][0] == 100.0 and got["Softplus"][1] == ref["Softplus"][1] > 0  # e**-100: subnormal
    assert got["Softplus"][9] == np.inf and got["Softplus"][10] == 0.0
    assert got["Exp"][0] == np.inf and got["Exp"][1] == ref["Exp"][1] > 0 and got["Exp"][10] == 0.0
    assert got["Sigmoid"][1] == ref["Sigmoid"][1] and got["Sigmoid"][0] == 1.0
    assert got["Tanh"][6] == 1e-40 * np.float32(1) and np.isnan(got["Tanh"][8])



def test_scalar_operands_are_loaded_once_at_the_kernel_entry(cache):
    """A scalar parameter read inside a loop beside two streamed inputs kept the loop scalar (LLVM
    must assume a store may change it): a Mish kernel took 23 ms instead of 3.7 ms. The renderer
    loads such fixed elements once, before the loops; results stay exact on edge values."""
    import dcopt

    x = np.concatenate([EDGE_VALUES_F32, np.linspace(-30, 30, 64, dtype=np.float32)]).astype(np.float32)
    nodes = [helper.make_node("Mul", ["x", "k"], ["s"]), helper.make_node("Mish", ["s"], ["m"]),
             helper.make_node("Add", ["m", "z"], ["y"])]
    model = make_model(nodes, [("x", TensorProto.FLOAT, [len(x)]), ("z", TensorProto.FLOAT, [len(x)])],
                       [("y", TensorProto.FLOAT, [len(x)])], opset=22, initializers={"k": np.float32(1.5)})
    check_native(model, {"x": x, "z": x[::-1].copy()}, cache)
    source = (dcopt.compile(model, cache_dir=cache)._current.directory / "kernels.py").read_text()
    head, _, loop = source.partition("for o0 in range(")
    assert "H0 = A" in head.rsplit("def k_", 1)[-1], source  # loaded before the loop ...
    assert "= H0" in loop and "[0]" not in loop.split("\n\n")[0], source  # ... and read from the register

# ------------------------------------------------------------------------------ hand-written rules

def test_clip_with_attribute_constant_and_run_time_bounds(cache):
    x = (np.random.default_rng(0).standard_normal(12) * 3).astype(np.float32)
    x[:3] = [np.nan, np.inf, -np.inf]
    xi = np.array([-128, -5, 0, 5, 127, 100], np.int8)
    lo, hi = np.array(-1.5, np.float32), np.array(2.0, np.float32)
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["run_time"]),
             helper.make_node("Clip", ["x", "c_lo", "c_hi"], ["constant"]),
             helper.make_node("Clip", ["x", "", "hi"], ["upper_only"]),
             helper.make_node("Clip", ["x", "c_hi", "c_lo"], ["min_above_max"]),
             helper.make_node("Clip", ["xi", "i_lo"], ["ints"])]
    f32 = [12]
    model = make_model(nodes, [("x", TensorProto.FLOAT, f32), ("lo", TensorProto.FLOAT, []), ("hi", TensorProto.FLOAT, []),
                               ("xi", TensorProto.INT8, [6])],
                       [(n, TensorProto.FLOAT, f32) for n in ("run_time", "constant", "upper_only", "min_above_max")]
                       + [("ints", TensorProto.INT8, [6])],
                       {"c_lo": np.array(-1.5, np.float32), "c_hi": np.array(2.0, np.float32),
                        "i_lo": np.array(-3, np.int8)})
    ref, got = check_native(model, {"x": x, "lo": lo, "hi": hi, "xi": xi}, cache)
    assert (got["min_above_max"][3:] == -1.5).all()  # min 2 > max -1.5: all max and got["ints"].tolist() == [-3, -3, 0, 5, 127, 100]
    old = make_model([helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.5)], [("x", TensorProto.FLOAT, f32)],
                     [("y", TensorProto.FLOAT, f32)], opset=6)
    check_native(old, {"x": x}, cache)


def _cast_inputs(source: str) -> np.ndarray:
    v = values(source)
    if source in FLOATS:  # conversion edges: integer ranges, half-type midpoints, past the largest half
        edges = np.array([127.7, 128.0, -129.0, 255.9, 256.0, 65535.0, 65536.0, 2.0 ** 31, -2.0 ** 31, 2.0 ** 32,
                          2.0 ** 63, -2.0 ** 63, 2.0 ** 64, 1e19, -1e19, -3e9, -2.5, 2.5, -0.5, 65519.0, 65520.0,
                          1 + 2 ** -11 + 2 ** -40, 1 + 2 ** -11 - 2 ** -40, 1 + 2 ** -8 + 2 ** -40, 1 + 2 ** -8 - 2 ** -40,
                          65519.99, 3.3961775292304086e38, 2.0 ** -25 + 2 ** -60])
        with np.errstate(all="ignore"):
            v = np.concatenate([v, edges.astype(numpy_dtype(source))])
    return v


@pytest.mark.parametrize("source", sorted(KERNEL_DTYPES, key=ALL.index))
def test_cast_and_castlike_to_every_kernel_dtype(source, cache):
    """Bit-exact against numpy's astype: NaN, infinities and out-of-range floats into integers,
    float64 -> float16/bfloat16 rounded once. numpy itself converts out-of-range floats to uint32
    differently in its vector and scalar loops, so those get in-range values only."""
    x = _cast_inputs(source)
    wide = x.astype(np.float64)
    in_range = x if source not in FLOATS else np.where(np.isfinite(wide) & (wide > -2.0 ** 31) & (wide < 2.0 ** 32), x, 7)
    nodes, outs, inits = [], [], {}
    for target in sorted(KERNEL_DTYPES, key=ALL.index):
        feed = "x_u32" if target == "uint32" else "x"
        nodes.append(helper.make_node("Cast", [feed], [f"cast_{target}"], to=dt.to_onnx(target)))
        nodes.append(helper.make_node("CastLike", [feed, f"like_{target}"], [f"castlike_{target}"]))
        inits[f"like_{target}"] = np.zeros(1, numpy_dtype(target))
        outs += [(f"cast_{target}", dt.to_onnx(target), [len(x)]), (f"castlike_{target}", dt.to_onnx(target), [len(x)])]
    kind = dt.to_onnx(source)
    model = make_model(nodes, [("x", kind, [len(x)]), ("x_u32", kind, [len(x)])], outs, inits)
    check_native(model, {"x": x, "x_u32": in_range.astype(x.dtype)}, cache, rtol=0, atol=0)


@pytest.mark.parametrize("source", ["float16", "bfloat16", "float32", "float64"])
def test_exact_conversions_mean_numpys_astype(source):
    """The rewritten conversions, evaluated by numpy, agree with astype (no compile needed: the
    compiled side is pinned by the Cast test)."""
    x = _cast_inputs(source)
    for target in sorted(INTS + ("float16", "bfloat16"), key=ALL.index):
        code = exact_conversions(f"out = as_{target}(a)", {"a": source}, target)
        got = np.asarray(run_numpy(parse_tasklet(code), {"a": x})["out"]).astype(numpy_dtype(target))
        with np.errstate(all="ignore"):
            want = x.astype(numpy_dtype(target))
        keep = slice(None) if target != "uint32" or source in ("float16", "bfloat16") else \
            np.isfinite(x.astype(np.float64)) & (x.astype(np.float64) > -2.0 ** 31)
        np.testing.assert_array_equal(got[keep], want[keep], err_msg=f"{source} -> {target}")


def test_identity_dropout_and_where(cache):
    x = values("float32")
    nodes = [helper.make_node("Identity", ["x"], ["copy"]),
             helper.make_node("Dropout", ["x"], ["dropped", "mask"]),
             helper.make_node("Where", ["c", "x", "zero"], ["picked"])]
    model = make_model(nodes, [("x", TensorProto.FLOAT, [len(x)]), ("c", TensorProto.BOOL, [len(x)])],
                       [("copy", TensorProto.FLOAT, [len(x)]), ("dropped", TensorProto.FLOAT, [len(x)]),
                        ("mask", TensorProto.BOOL, [len(x)]), ("picked", TensorProto.FLOAT, [len(x)])],
                       {"zero": np.array(0.0, np.float32)})
    ref, got = check_native(model, {"x": x, "c": x > 0}, cache)
    assert got["mask"].all()


# ------------------------------------------------------------------------------ quantization

@pytest.mark.parametrize("target", ["uint8", "int8", "uint16", "int16"])
def test_quantize_and_dequantize_per_tensor_axis_and_block(target, cache):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2, 6, 4)) * 50).astype(np.float32)
    x[0, 0, :4] = [np.nan, np.inf, -np.inf, 1e30]
    info = np.iinfo(target)
    zp_axis = rng.integers(max(info.min, -100), min(info.max, 100), 6).astype(target)
    zp_block = rng.integers(max(info.min, -100), min(info.max, 100), (2, 3, 4)).astype(target)
    params = {"s": np.array(0.7, np.float32), "zp": np.array(3, target),
              "s_axis": rng.uniform(0.1, 2, 6).astype(np.float32), "zp_axis": zp_axis,
              "s_block": rng.uniform(0.1, 2, (2, 3, 4)).astype(np.float32), "zp_block": zp_block}
    q = lambda ins, out, **a: helper.make_node("QuantizeLinear", ins, [out], **a)  # noqa: E731
    nodes = [q(["x", "s", "zp"], "per_tensor"), q(["x", "s_axis", "zp_axis"], "per_axis", axis=1),
             q(["x", "s_block", "zp_block"], "blocked", axis=1, block_size=2),
             q(["x", "s"], "no_zero_point", output_dtype=dt.to_onnx(target)),
             helper.make_node("DequantizeLinear", ["per_axis", "s_axis", "zp_axis"], ["back_axis"], axis=1),
             helper.make_node("DequantizeLinear", ["blocked", "s_block", "zp_block"], ["back_block"], axis=1,
                              block_size=2),
             helper.make_node("DequantizeLinear", ["per_tensor", "s"], ["back_no_zp"])]
    shape = [2, 6, 4]
    kind = dt.to_onnx(target)
    model = make_model(nodes, [("x", TensorProto.FLOAT, shape)],
                       [(n, kind, shape) for n in ("per_tensor", "per_axis", "blocked", "no_zero_point")]
                       + [(n, TensorProto.FLOAT, shape) for n in ("back_axis", "back_block", "back_no_zp")],
                       params, opset=21)
    check_native(model, {"x": x}, cache, rtol=0, atol=0)


def test_quantize_half_scales_and_precision(cache):
    x = (np.random.default_rng(2).standard_normal(40) * 30).astype(np.float16)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s16", "zp"], ["q16"]),
             helper.make_node("QuantizeLinear", ["x", "s16", "zp"], ["q32"], precision=TensorProto.FLOAT),
             helper.make_node("DequantizeLinear", ["q16", "s16", "zp"], ["dq16"])]
    model = make_model(nodes, [("x", TensorProto.FLOAT16, [40])],
                       [("q16", TensorProto.INT8, [40]), ("q32", TensorProto.INT8, [40]),
                        ("dq16", TensorProto.FLOAT16, [40])],
                       {"s16": np.array(0.3, np.float16), "zp": np.array(-4, np.int8)}, opset=23)
    check_native(model, {"x": x}, cache, rtol=0, atol=0)


@pytest.mark.parametrize("case", ["mixed", "positive", "with_nan", "empty"])
def test_dynamic_quantize_linear(case, cache):
    x = {"mixed": np.array([0.0, 2.0, -1.0, 3.0, 1e-3, -0.4], np.float32),
         "positive": np.array([0.5, 2.5, 7.0], np.float32),
         "with_nan": np.array([1.0, np.nan, -2.0], np.float32), "empty": np.zeros((0,), np.float32)}[case]
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "scale", "zero_point"])
    model = make_model([node], [("x", TensorProto.FLOAT, [len(x)])],
                       [("y", TensorProto.UINT8, [len(x)]), ("scale", TensorProto.FLOAT, []),
                        ("zero_point", TensorProto.UINT8, [])], opset=21)
    check_native(model, {"x": x}, cache, rtol=0, atol=0)


# ------------------------------------------------------------------------------ a new op, one line

#: The one line (at import, as a user's module would: the frontend learns the domains of the
#: registered ops when it first validates a model).
define_elementwise("Softsign2", "a / (2.0 + abs(a)) if a >= 0 else {alpha} * a", FLOATS, domain="test.dcopt",
                   defaults={"alpha": 0.25})


def test_a_new_elementwise_op_is_one_line(cache):
    x = values("float32")
    model, feeds = one_node_per_dtype("Softsign2", lambda d: [values(d)], ["float32", "float16", "float64"],
                                      domain="test.dcopt")
    ref, got = check_native(model, feeds, cache, ("float16",))
    with np.errstate(all="ignore"):
        expected = np.where(x >= 0, x / (2 + np.abs(x)), 0.25 * x)
    np.testing.assert_allclose(ref["float32_y"], expected, rtol=1e-6)
    assert math.isnan(got["float32_y"][np.isnan(x)][0])
