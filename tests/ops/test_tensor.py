"""Reference semantics of tensor/shape, indexing, signal and misc ops, with hand-checked values.

Each op is called through the registry (so schema defaults and opset handling are exercised);
ops whose inputs were attributes in older opsets are checked in both forms. Control flow is
checked through whole models so subgraph execution and outer-scope capture are covered.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

import dcopt.backend as backend
import dcopt.ops.indexing  # noqa: F401  (registers ops; also listed in catalog.OP_MODULES)
import dcopt.ops.misc  # noqa: F401
import dcopt.ops.signal  # noqa: F401
import dcopt.ops.tensor  # noqa: F401
from dcopt.ops import catalog, registry
from tests.conftest import make_model


def run(op, *inputs, opset=18, **attrs):
    """Outputs of ``op`` (a tuple); ``None`` marks an omitted optional input."""
    opdef = registry.lookup(op)
    assert opdef is not None, f"{op} is not registered"
    return registry.call(opdef, list(inputs), attrs, opset)


def run1(op, *inputs, **kw):
    (out,) = run(op, *inputs, **kw)[:1]
    return out


def i64(*values):
    return np.array(values, dtype=np.int64)


def check(actual, expected, dtype=None):
    expected = np.asarray(expected, dtype=dtype)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


ARANGE = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


def test_op_modules_are_in_catalog():
    for module in ("dcopt.ops.tensor", "dcopt.ops.indexing", "dcopt.ops.signal", "dcopt.ops.misc"):
        assert module in catalog.OP_MODULES


# -- shapes ------------------------------------------------------------------------------------


def test_shape_and_size():
    check(run1("Shape", ARANGE), i64(2, 3, 4))
    check(run1("Shape", ARANGE, start=-2, opset=15), i64(3, 4))
    check(run1("Shape", ARANGE, start=1, end=-1, opset=15), i64(3))
    check(run1("Shape", ARANGE, start=-9, end=9, opset=15), i64(2, 3, 4))  # clamped
    check(run1("Size", ARANGE), np.array(24, np.int64))


def test_reshape_zero_and_minus_one():
    check(run1("Reshape", ARANGE, i64(0, -1)), ARANGE.reshape(2, 12))
    assert run1("Reshape", ARANGE, i64(-1, 0, 2)).shape == (4, 3, 2)
    x = np.zeros((0, 3), np.float32)
    assert run1("Reshape", x, i64(0, 3), allowzero=0, opset=14).shape == (0, 3)  # 0 copies dim 0
    assert run1("Reshape", x, i64(3, 0), allowzero=1, opset=14).shape == (3, 0)  # 0 is literal


@pytest.mark.parametrize("axis,shape", [(0, (1, 24)), (1, (2, 12)), (3, (24, 1)), (-1, (6, 4)), (-3, (1, 24))])
def test_flatten(axis, shape):
    assert run1("Flatten", ARANGE, axis=axis, opset=13).shape == shape


def test_squeeze_unsqueeze_attribute_and_input_forms():
    x = np.zeros((1, 3, 1, 2), np.float32)
    assert run1("Squeeze", x, opset=11).shape == (3, 2)
    assert run1("Squeeze", x, axes=(0,), opset=11).shape == (3, 1, 2)
    assert run1("Squeeze", x, i64(-2), opset=13).shape == (1, 3, 2)
    assert run1("Unsqueeze", x, axes=(0, -1), opset=11).shape == (1, 1, 3, 1, 2, 1)
    assert run1("Unsqueeze", ARANGE, i64(4, 0), opset=13).shape == (1, 2, 3, 4, 1)


def test_transpose_and_concat():
    check(run1("Transpose", ARANGE), ARANGE.T)
    assert run1("Transpose", ARANGE, perm=(1, 2, 0)).shape == (3, 4, 2)
    check(run1("Concat", i64(1, 2), i64(3), i64(), axis=0), i64(1, 2, 3))
    assert run1("Concat", ARANGE, ARANGE[:, :1], axis=-2).shape == (2, 4, 4)


def test_split_forms():
    x = np.arange(7, dtype=np.float32)
    a, b = run("Split", x, split=(3, 4), opset=11)
    check(a, [0, 1, 2], np.float32), check(b, [3, 4, 5, 6], np.float32)
    parts = run("Split", x, i64(2, 0, 5), opset=13)
    assert [p.shape for p in parts] == [(2,), (0,), (5,)]
    parts = run("Split", x, num_outputs=3, opset=18)  # uneven: ceil(7/3)=3, last is smaller
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5], [6]]
    parts = registry.call(registry.lookup("Split"), [np.arange(6)], {}, 13, n_outputs=3)  # as many as wired
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]


def test_slice_clamping_and_negative_steps():
    x = np.arange(10)

    def sl(*args):
        return run1("Slice", x, *(None if v is None else i64(*v) for v in args)).tolist()

    assert sl((2,), (5,)) == [2, 3, 4]
    assert sl((-3,), (100,)) == [7, 8, 9]
    assert sl((-100,), (2,)) == [0, 1]
    assert sl((100,), (-100,), (0,), (-1,)) == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]  # end clamps to -1
    assert sl((-1,), (-11,), None, (-3,)) == [9, 6, 3, 0]
    assert sl((-100,), (5,), (0,), (-1,)) == []  # start clamps to 0, nothing lies below 5
    assert sl((1,), (8,), (-1,), (3,)) == [1, 4, 7]
    assert run1("Slice", x, starts=(1,), ends=(3,), opset=9).tolist() == [1, 2]
    y = run1("Slice", ARANGE, i64(0, 3), i64(1, 0), i64(0, -1), i64(1, -2))
    check(y, [[[3, 1], [7, 5], [11, 9]]], np.float32)


def test_expand_tile():
    check(run1("Expand", np.array([[1], [2]], np.int32), i64(2, 1, 3)), [[[1, 1, 1], [2, 2, 2]]] * 2, np.int32)
    check(run1("Tile", np.array([[1, 2]]), i64(2, 2)), [[1, 2, 1, 2]] * 2, np.int64)


def test_pad_modes():
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    check(run1("Pad", x, i64(0, 1, 1, 0), np.array(9, np.float32), opset=11), [[9, 1, 2, 3], [9, 4, 5, 6], [9, 9, 9, 9]],
          np.float32)
    check(run1("Pad", x, i64(0, 2, 0, 0), mode="reflect", opset=11), [[3, 2, 1, 2, 3], [6, 5, 4, 5, 6]], np.float32)
    check(run1("Pad", x, i64(0, 0, 0, 2), mode="edge", opset=11), [[1, 2, 3, 3, 3], [4, 5, 6, 6, 6]], np.float32)
    check(run1("Pad", x, i64(0, 2, 0, 1), mode="wrap", opset=19), [[2, 3, 1, 2, 3, 1], [5, 6, 4, 5, 6, 4]], np.float32)
    check(run1("Pad", x, i64(0, -1, 1, 0), opset=11), [[2, 3], [5, 6], [0, 0]], np.float32)  # negative crops
    check(run1("Pad", x, i64(1, 1), None, i64(-1), opset=18), [[0, 1, 2, 3, 0], [0, 4, 5, 6, 0]], np.float32)
    check(run1("Pad", x, pads=(1, 0, 0, 0), value=7.0, opset=10), [[7, 7, 7], [1, 2, 3], [4, 5, 6]], np.float32)


def test_center_crop_pad():
    x = np.arange(5, dtype=np.float32)
    check(run1("CenterCropPad", x, i64(3)), [1, 2, 3], np.float32)
    check(run1("CenterCropPad", x, i64(8)), [0, 0, 1, 2, 3, 4, 0, 0], np.float32)  # 1 zero before, 2 after
    check(run1("CenterCropPad", np.ones((3, 4), np.float32), i64(1), axes=(-1,)), [[1]] * 3, np.float32)


def test_depth_space_round_trip():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 2, 2)
    dcr = run1("DepthToSpace", x, blocksize=2)
    check(dcr[0, 0], [[0, 4, 1, 5], [8, 12, 9, 13], [2, 6, 3, 7], [10, 14, 11, 15]], np.float32)
    crd = run1("DepthToSpace", x, blocksize=2, mode="CRD")
    check(crd[0, 0], [[0, 4, 1, 5], [8, 12, 9, 13], [2, 6, 3, 7], [10, 14, 11, 15]], np.float32)  # C/bs^2 == 1
    check(run1("SpaceToDepth", dcr, blocksize=2), x)


def test_reverse_sequence():
    x = np.arange(8).reshape(4, 2)  # [time, batch]
    check(run1("ReverseSequence", x, i64(3, 1)), [[4, 1], [2, 3], [0, 5], [6, 7]], np.int64)
    check(run1("ReverseSequence", x.T.copy(), i64(3, 1), batch_axis=0, time_axis=1), [[4, 2, 0, 6], [1, 3, 5, 7]],
          np.int64)


# -- constants ---------------------------------------------------------------------------------


def test_constant_forms():
    check(run1("Constant", value_float=1.5), np.array(1.5, np.float32))
    check(run1("Constant", value_ints=(1, 2)), i64(1, 2))
    check(run1("Constant", value_int=3), np.array(3, np.int64))
    assert run1("Constant", value_strings=("a", "b")).tolist() == ["a", "b"]
    check(run1("Constant", value=np.ones(2, np.float16)), np.ones(2, np.float16))


def test_generators():
    check(run1("ConstantOfShape", i64(2)), np.zeros(2, np.float32))
    check(run1("ConstantOfShape", i64(1, 2), value=np.array([7], np.int32)), [[7, 7]], np.int32)
    check(run1("Range", np.array(10, np.int32), np.array(3, np.int32), np.array(-3, np.int32)), [10, 7, 4], np.int32)
    check(run1("Range", np.float32(0.5), np.float32(1.6), np.float32(0.5)), [0.5, 1.0, 1.5], np.float32)
    check(run1("Range", np.int64(5), np.int64(1), np.int64(1)), i64())
    check(run1("EyeLike", np.zeros((2, 3), np.int32), k=1), [[0, 1, 0], [0, 0, 1]], np.int32)
    check(run1("EyeLike", np.zeros((2, 2), np.int32), dtype=TP.FLOAT), np.eye(2, dtype=np.float32))
    x = np.ones((3, 3), np.float32)
    check(run1("Trilu", x), np.triu(x))
    check(run1("Trilu", x, np.int64(-1), upper=0), [[0, 0, 0], [1, 0, 0], [1, 1, 0]], np.float32)
    check(run1("Det", np.array([[[2, 1], [1, 3]], [[0, 1], [1, 0]]], np.float32)), [5, -1], np.float32)
    check(run1("Det", np.array([[2, 1], [1, 3]], np.float16)), np.float16(5))


# -- indexing ----------------------------------------------------------------------------------


def test_gathers():
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float32)
    check(run1("Gather", x, i64(-1, 0), axis=1), [[3, 1], [6, 4]], np.float32)
    check(run1("Gather", x, np.int64(1)), [4, 5, 6], np.float32)
    check(run1("GatherElements", x, i64(2, -3, 0, 1).reshape(2, 2), axis=1), [[3, 1], [4, 5]], np.float32)
    check(run1("GatherND", x, i64(1, -1, 0, 0).reshape(2, 2)), [6, 1], np.float32)
    check(run1("GatherND", x, i64(1, 0).reshape(2, 1)), [[4, 5, 6], [1, 2, 3]], np.float32)
    check(run1("GatherND", x, i64(2, 0).reshape(2, 1), batch_dims=1), [3, 4], np.float32)


def test_scatters():
    x = np.zeros((2, 3), np.float32)
    upd = np.array([[1, 2], [3, 4]], np.float32)
    idx = i64(0, -1, 2, 2).reshape(2, 2)
    check(run1("ScatterElements", x, idx, upd, axis=1), [[1, 0, 2], [0, 0, 4]], np.float32)
    check(run1("ScatterElements", x, idx, upd, axis=1, reduction="add"), [[1, 0, 2], [0, 0, 7]], np.float32)
    check(run1("Scatter", x, idx, upd, axis=1, opset=10), [[1, 0, 2], [0, 0, 4]], np.float32)
    nd_idx = i64(1, 0, 1).reshape(3, 1)
    rows = np.array([[1, 1, 1], [2, 2, 2], [3, 3, 3]], np.float32)
    check(run1("ScatterND", x, nd_idx[:2], rows[:2]), [[2, 2, 2], [1, 1, 1]], np.float32)
    check(run1("ScatterND", x + 1, nd_idx, rows, reduction="mul"), [[2, 2, 2], [3, 3, 3]], np.float32)
    check(run1("ScatterND", x, i64(0, 1, 0, 1).reshape(2, 2), np.array([5, 2], np.float32), reduction="max"),
          [[0, 5, 0], [0, 0, 0]], np.float32)
    assert not x.any()  # inputs untouched


def test_tensor_scatter_linear_and_circular():
    cache = np.zeros((2, 1, 4, 1), np.float32)
    update = np.array([1, 2, 3, 4], np.float32).reshape(2, 1, 2, 1)
    out = run1("TensorScatter", cache, update, i64(1, 3), mode="circular", opset=24)
    check(out[:, 0, :, 0], [[0, 1, 2, 0], [4, 0, 0, 3]], np.float32)
    out = run1("TensorScatter", cache, update, opset=24)
    check(out[:, 0, :, 0], [[1, 2, 0, 0], [3, 4, 0, 0]], np.float32)


def test_one_hot_nonzero_compress():
    out = run1("OneHot", i64(0, -1, 5), np.float32(3), np.array([0, 9], np.int32), axis=0)
    check(out, [[9, 0, 0], [0, 0, 0], [0, 9, 0]], np.int32)
    check(run1("NonZero", np.array([[0, 2], [3, 0]])), [[0, 1], [1, 0]], np.int64)
    check(run1("Compress", np.arange(6).reshape(2, 3), np.array([0, 1]), axis=0), [[3, 4, 5]], np.int64)
    check(run1("Compress", np.arange(6).reshape(2, 3), np.array([0, 1, 1])), [1, 2], np.int64)


def test_top_k_ties_keep_index_order():
    x = np.array([[1, 3, 3, 2], [5, 5, 5, 0]], np.float32)
    values, indices = run("TopK", x, i64(3))
    check(values, [[3, 3, 2], [5, 5, 5]], np.float32)
    check(indices, [[1, 2, 3], [0, 1, 2]], np.int64)
    values, indices = run("TopK", x, k=2, largest=0, opset=9)
    check(values, [[1, 2], [0, 5]], np.float32)
    check(indices, [[0, 3], [3, 0]], np.int64)
    _, indices = run("TopK", np.array([3, 1, 3], np.uint8), i64(2))
    check(indices, [0, 2], np.int64)


def test_unique():
    x = np.array([2, 1, 1, 3, 4, 3], np.float32)
    y, first, inverse, counts = run("Unique", x)
    check(y, [1, 2, 3, 4], np.float32), check(first, [1, 0, 3, 4], np.int64)
    check(inverse, [1, 0, 0, 2, 3, 2], np.int64), check(counts, [2, 1, 2, 1], np.int64)
    y, first, inverse, counts = run("Unique", x, sorted=0)
    check(y, [2, 1, 3, 4], np.float32), check(first, [0, 1, 3, 4], np.int64)
    check(inverse, [0, 1, 1, 2, 3, 2], np.int64), check(counts, [1, 2, 2, 1], np.int64)
    m = np.array([[1, 0], [0, 1], [1, 0]], np.int32)
    y, first, inverse, counts = run("Unique", m, axis=0)
    check(y, [[0, 1], [1, 0]], np.int32), check(inverse, [1, 0, 1], np.int64), check(counts, [1, 2], np.int64)


# -- signal ------------------------------------------------------------------------------------


def test_windows():
    check(run1("HannWindow", np.int64(4)), [0, 0.5, 1, 0.5], np.float32)
    check(run1("HannWindow", np.int64(3), periodic=0), [0, 1, 0], np.float32)
    check(run1("HammingWindow", np.int64(2), output_datatype=TP.DOUBLE), [4 / 46, 1], np.float64)
    check(run1("BlackmanWindow", np.int64(3), periodic=0), [0, 1, 0], np.float32)


def test_dft_forms():
    x = np.array([1, 2, 3, 4], np.float32).reshape(1, 4, 1)
    spectrum = run1("DFT", x, opset=17)  # axis attribute defaults to 1
    check(spectrum[0], [[10, 0], [-2, 2], [-2, 0], [-2, -2]], np.float32)
    check(run1("DFT", x, None, np.int64(1), onesided=1, opset=20)[0], [[10, 0], [-2, 2], [-2, 0]], np.float32)
    check(run1("DFT", spectrum, inverse=1, opset=17)[0], [[1, 0], [2, 0], [3, 0], [4, 0]], np.float32)
    check(run1("DFT", x, np.int64(2), opset=17)[0], [[3, 0], [-1, 0]], np.float32)  # truncated


def test_stft_frames():
    signal = np.array([1, 1, 0, 0, 1, 1], np.float32).reshape(1, 6, 1)
    out = run1("STFT", signal, np.int64(2), None, np.int64(2), opset=17)
    assert out.shape == (1, 3, 2, 2)  # 3 frames, onesided 2-point DFT has 2 bins
    check(out[0, :, :, 0], [[2, 0], [0, 0], [2, 0]], np.float32)


def test_mel_weight_matrix_shape():
    out = run1("MelWeightMatrix", np.int64(4), np.int64(16), np.int64(8000), np.float32(0), np.float32(4000), opset=17)
    assert out.shape == (9, 4) and out.dtype == np.float32 and out.max() == 1


# -- strings -----------------------------------------------------------------------------------


def strings(*values):
    return np.array(values, dtype=object)


def test_string_ops():
    out = run1("StringConcat", strings("a", "b").reshape(2, 1), strings("x", "y"), opset=20)
    assert out.tolist() == [["ax", "ay"], ["bx", "by"]]
    y, z = run("StringSplit", strings("a  b", "", "c"), opset=20)
    assert y.tolist() == [["a", "b"], ["", ""], ["c", ""]] and z.tolist() == [2, 0, 1]
    y, z = run("StringSplit", strings("a,,b,c"), delimiter=",", maxsplit=2, opset=20)
    assert y.tolist() == [["a", "", "b,c"]] and z.tolist() == [3]
    out = run1("StringNormalizer", strings("The", "cat", "THE"), case_change_action="UPPER", stopwords=("the",), opset=10)
    assert out.tolist() == ["CAT"]
    out = run1("StringNormalizer", strings("x").reshape(1, 1), stopwords=("X",), opset=10)
    assert out.tolist() == [[""]]
    out = run1("RegexFullMatch", strings("ab1", "ab", "1ab"), pattern=r"[a-z]+\d", opset=20)
    check(out, [True, False, False], bool)


def test_tfidf_vectorizer():
    x = np.array([1, 2, 1, 2, 3], np.int32)
    out = run1("TfIdfVectorizer", x, mode="TF", min_gram_length=1, max_gram_length=2, max_skip_count=1,
               ngram_counts=(0, 2), ngram_indexes=(0, 1, 2, 3), pool_int64s=(1, 3, 1, 2, 1, 3), opset=9)
    # unigrams 1, 3; bigram (1,2) adjacent twice; (1,3) with one skip once (1 _ 3)
    check(out, [2, 1, 2, 1], np.float32)


# -- sequences, optionals, random, NMS ---------------------------------------------------------


def test_sequence_ops():
    a, b = np.zeros(2, np.float32), np.ones(3, np.float32)
    (seq,) = run("SequenceConstruct", a, b)
    assert len(seq) == 2
    (seq2,) = run("SequenceInsert", seq, a, np.int64(0))
    assert [s.shape for s in seq2] == [(2,), (2,), (3,)] and len(seq) == 2
    (seq_neg,) = run("SequenceInsert", seq, np.ones(4), np.int64(-1))  # before the last element
    assert [s.shape for s in seq_neg] == [(2,), (4,), (3,)]
    (seq3,) = run("SequenceErase", seq2)
    assert [s.shape for s in seq3] == [(2,), (2,)]
    check(run1("SequenceLength", seq3), np.array(2, np.int64))
    check(run1("SequenceAt", seq, np.int64(-1)), b)
    check(run1("ConcatFromSequence", seq, axis=0), np.r_[a, b])
    check(run1("ConcatFromSequence", [a, a], axis=-1, new_axis=1), np.zeros((2, 2), np.float32))
    (parts,) = run("SplitToSequence", np.arange(5), np.int64(2))
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3], [4]]
    (parts,) = run("SplitToSequence", np.arange(4).reshape(2, 2), axis=1, keepdims=0)
    assert [p.tolist() for p in parts] == [[0, 2], [1, 3]]
    assert run("SequenceEmpty") == ([],)


def test_optionals():
    x = np.ones(2)
    check(run1("OptionalHasElement", x), np.array(True))
    check(run1("OptionalHasElement", None), np.array(False))
    assert run("Optional") == (None,)
    check(run1("OptionalGetElement", x), x)


def test_random_ops_seeded_and_typed():
    a = run1("RandomUniform", shape=(2, 3), seed=1.0, low=2.0, high=3.0)
    b = run1("RandomUniform", shape=(2, 3), seed=1.0, low=2.0, high=3.0)
    assert a.dtype == np.float32 and a.shape == (2, 3) and (a == b).all() and (a >= 2).all() and (a < 3).all()
    assert run1("RandomNormalLike", np.zeros((4,), np.float64)).dtype == np.float64
    assert run1("RandomUniformLike", np.zeros(2, np.float32), dtype=TP.DOUBLE).dtype == np.float64
    out = run1("Bernoulli", np.array([0.0, 1.0, 0.0], np.float32))
    check(out, [0, 1, 0], np.float32)


def test_non_max_suppression():
    boxes = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 10, 1, 11], [1, 1, 0, 0]]], np.float32)
    scores = np.array([[[0.9, 0.8, 0.7, 0.95]]], np.float32)
    out = run1("NonMaxSuppression", boxes, scores, i64(3), np.array([0.5], np.float32))
    check(out, [[0, 0, 3], [0, 0, 2]], np.int64)  # box 3 is box 0 flipped; 1 overlaps 3
    out = run1("NonMaxSuppression", boxes, scores, i64(5), np.array([0.5], np.float32), np.array([0.85], np.float32))
    check(out, [[0, 0, 3]], np.int64)
    check(run1("NonMaxSuppression", boxes, scores), np.zeros((0, 3), np.int64))


# -- control flow (whole models, through the executor) -----------------------------------------

vi = helper.make_tensor_value_info
node = helper.make_node


def test_if_picks_branch_and_sees_outer_scope():
    then = helper.make_graph([node("Add", ["a", "a"], ["t"])], "then", [], [vi("t", TP.FLOAT, [2])])
    other = helper.make_graph([node("Neg", ["a"], ["e"])], "else", [], [vi("e", TP.FLOAT, [2])])
    model = make_model([node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                       [("c", TP.BOOL, []), ("a", TP.FLOAT, [2])], [("y", TP.FLOAT, [2])], opset=11)
    rep = backend.prepare(model)
    a = np.array([1, 2], np.float32)
    check(rep.run([np.array(True), a])[0], [2, 4], np.float32)
    check(rep.run([np.array(False), a])[0], [-1, -2], np.float32)


def _loop_model():
    body = helper.make_graph(
        [node("Cast", ["i"], ["fi"], to=TP.FLOAT), node("Add", ["v", "fi"], ["v2"]), node("Less", ["v2", "limit"], ["c2"]),
         node("Identity", ["v2"], ["scan"])],
        "body", [vi("i", TP.INT64, []), vi("c", TP.BOOL, []), vi("v", TP.FLOAT, [])],
        [vi("c2", TP.BOOL, []), vi("v2", TP.FLOAT, []), vi("scan", TP.FLOAT, [])])
    return make_model([node("Loop", ["M", "cond", "v0"], ["v", "scans"], body=body)],
                      [("M", TP.INT64, []), ("cond", TP.BOOL, []), ("v0", TP.FLOAT, [])],
                      [("v", TP.FLOAT, []), ("scans", TP.FLOAT, [None])], {"limit": np.float32(5)}, opset=11)


def test_loop_trip_count_and_condition():
    rep = backend.prepare(_loop_model())
    v, scans = rep.run([np.int64(10), np.array(True), np.float32(0)])
    check(v, np.float32(6))  # 0+0, +1, +2, +3 = 6 >= 5 stops
    check(scans, [0, 1, 3, 6], np.float32)
    v, scans = rep.run([np.int64(2), np.array(True), np.float32(0)])
    check(scans, [0, 1], np.float32)
    v, scans = rep.run([np.int64(2), np.array(False), np.float32(7)])  # never runs
    check(v, np.float32(7))
    check(scans, np.zeros(0, np.float32))  # typed from the body's declared scan output


def _scan_body():
    return helper.make_graph([node("Add", ["s", "x"], ["s2"]), node("Identity", ["s2"], ["out"])], "body",
                             [vi("s", TP.FLOAT, [2]), vi("x", TP.FLOAT, [2])],
                             [vi("s2", TP.FLOAT, [2]), vi("out", TP.FLOAT, [2])])


def test_scan9_axes_and_directions():
    x = np.array([[1, 2, 3], [10, 20, 30]], np.float32)  # scan along axis 1
    model = make_model([node("Scan", ["s0", "x"], ["s", "ys"], body=_scan_body(), num_scan_inputs=1,
                             scan_input_axes=[1], scan_input_directions=[1], scan_output_axes=[-1])],
                       [("s0", TP.FLOAT, [2]), ("x", TP.FLOAT, [2, 3])], [("s", TP.FLOAT, [2]), ("ys", TP.FLOAT, [2, 3])],
                       opset=11)
    s, ys = backend.prepare(model).run([np.zeros(2, np.float32), x])
    check(s, [6, 60], np.float32)
    check(ys, [[3, 5, 6], [30, 50, 60]], np.float32)  # reversed input: 3, 3+2, 3+2+1


def test_scan8_batched():
    x = np.array([[[1, 1], [2, 2]], [[3, 3], [4, 4]]], np.float32)  # [batch, time, 2]
    model = make_model([node("Scan", ["", "s0", "x"], ["s", "ys"], body=_scan_body(), num_scan_inputs=1)],
                       [("s0", TP.FLOAT, [2, 2]), ("x", TP.FLOAT, [2, 2, 2])],
                       [("s", TP.FLOAT, [2, 2]), ("ys", TP.FLOAT, [2, 2, 2])], opset=8)
    s, ys = backend.prepare(model).run([np.zeros((2, 2), np.float32), x])
    check(s, [[3, 3], [7, 7]], np.float32)
    check(ys, [[[1, 1], [3, 3]], [[3, 3], [7, 7]]], np.float32)


class _Body:
    """Stands in for a subgraph: SequenceMap only reads its output list."""

    outputs = ["shape", "sum"]


def test_sequence_map_runs_body_per_element():
    # Sequence-typed graph inputs do not import yet, so drive the op with a stand-in subgraph runner.
    def run_subgraph(graph, feeds):
        return [np.array(feeds[0].shape, np.int64), feeds[0] + feeds[1]]

    shapes, sums = registry.call(registry.lookup("SequenceMap"), [[np.zeros(2), np.zeros(3)], np.float64(1)],
                                 {"body": _Body()}, 17, run_subgraph)
    assert [s.tolist() for s in shapes] == [[2], [3]] and [s.tolist() for s in sums] == [[1, 1], [1, 1, 1]]
