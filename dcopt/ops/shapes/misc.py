"""Shape rules of control flow, sequences, optionals, random, string and detection ops (mirrors
:mod:`dcopt.ops.misc`).

Control flow infers its bodies through ``ctx.infer_body`` (which types the body's containers in
place): If merges its branches (a constant condition picks one); Loop and Scan iterate the body's
typing until the carried types stop changing -- dims that change from one iteration to the next
become fresh symbols. Sequences whose elements are known one by one (SequenceConstruct, a Split
with constant sizes, inserts at constant positions) are returned as :class:`SequenceOf`, so that
SequenceAt and ConcatFromSequence downstream stay exact.
"""

from __future__ import annotations

import numpy as np

from dcopt.ir.types import OptionalType, SequenceType, TensorType
from dcopt.ops.shapes import dims
from dcopt.ops.shapes.registry import SequenceOf, ShapeInferenceError, Valued, merge_types, onnx_dtype, shape_rule

_FIXPOINT_ROUNDS = 4


def body_output(result, k: int):
    """A body's k-th output as a rule result (items when the body knows them, with its value if known)."""
    items = result.sequences[k]
    out = SequenceOf(tuple(items), result.types[k].dtype) if items is not None else result.types[k]
    return out if result.values[k] is None else Valued(out, result.values[k])


def _unknown_shape(t):
    if isinstance(t, TensorType):
        return TensorType(t.dtype, None)
    return t


def _iterate(ctx, body, feeds, carried: list, first_output: int):
    """Type ``body`` on ``feeds(carried)`` until the carried types are stable.

    The body's outputs from ``first_output`` on (Loop's condition comes first) feed the carried
    inputs of the next iteration; returns (body result, final carried types)."""
    for _ in range(_FIXPOINT_ROUNDS):
        result = ctx.infer_body(body, feeds(carried))
        outs = result.types[first_output:first_output + len(carried)]
        merged = [merge_types(ctx, k, c, o) for k, (c, o) in enumerate(zip(carried, outs))]
        if merged == carried:
            return result, carried
        carried = merged
    carried = [_unknown_shape(c) for c in carried]
    return ctx.infer_body(body, feeds(carried)), carried


def _stacked(t, steps, axis: int = 0):
    """A per-iteration output type stacked along a new ``axis`` of length ``steps``."""
    if not isinstance(t, TensorType) or t.shape is None:
        return TensorType(t.dtype, None) if t is not None else None
    shape = list(t.shape)
    axis = axis % (len(shape) + 1)
    shape.insert(axis, steps)
    return TensorType(t.dtype, tuple(shape))


@shape_rule("If", data_dependent=True)
def if_(ctx):
    """A constant condition types only the branch it takes (the other may not even be valid for
    these inputs: exported functions guard rank-specific code this way); otherwise both branches
    are typed and merged."""
    cond = ctx.scalar(0)
    if cond is not None:
        chosen = ctx.infer_body(ctx.attrs["then_branch" if cond else "else_branch"], [])
        return [body_output(chosen, k) for k in range(len(chosen.types))]
    then_result = ctx.infer_body(ctx.attrs["then_branch"], [])
    else_result = ctx.infer_body(ctx.attrs["else_branch"], [])
    return [_merge_outputs(ctx, k, then_result, else_result) for k in range(len(then_result.types))]


def _merge_outputs(ctx, k, a, b):
    """Two branches' k-th outputs: sequences of equally many known items merge item by item."""
    items_a, items_b = a.sequences[k], b.sequences[k]
    merged = merge_types(ctx, k, a.types[k], b.types[k])
    if items_a is not None and items_b is not None and len(items_a) == len(items_b) and \
            not isinstance(merged, OptionalType):
        items = tuple(merge_types(ctx, k, x, y, f"i{i}") for i, (x, y) in enumerate(zip(items_a, items_b)))
        return SequenceOf(items, merged.dtype)
    return merged


def _truth(value) -> bool:
    return bool(np.asarray(value).reshape(-1)[0])


@shape_rule("Loop", shape_inputs=(0, 1), data_dependent=True)
def loop(ctx):
    """Scan outputs stack one slice per iteration: their length is the trip count when the
    condition provably stays true -- by induction: the body, given a true condition and no other
    value that changes between iterations, computes a constant true condition."""
    body = ctx.attrs["body"]
    carried = [ctx.type(i) for i in range(2, len(ctx.inputs))]
    fixed = [TensorType("int64", ()), TensorType("bool", ())]
    initially = ctx.scalar(1) if ctx.has(1) else True
    trips = ctx.scalar(0) if ctx.has(0) else None
    if initially is not None and not initially:
        trips = 0  # a false initial condition runs no iteration
    result, carried = _iterate(ctx, body, lambda c: fixed + c, carried, 1)
    if trips and initially:
        true = [None, np.array(True)] + [None] * len(carried)
        proven = ctx.infer_body(body, fixed + carried, true)
        if proven.values[0] is not None and _truth(proven.values[0]):
            result = proven
        else:
            trips = None
            ctx.infer_body(body, fixed + carried)  # leave the body typed without the assumption
    elif trips:
        trips = None
    scans = [_stacked(t, None if trips is None else max(int(trips), 0)) for t in result.types[1 + len(carried):]]
    return [*carried, *scans]


@shape_rule("Scan")
def scan(ctx):
    body = ctx.attrs["body"]
    n_scan = int(ctx.attrs["num_scan_inputs"])
    if ctx.opset < 9:
        return _scan8(ctx, body, n_scan)
    inputs = [ctx.type(i) for i in range(len(ctx.inputs))]
    n_state = len(inputs) - n_scan
    xs = [ctx.shape(i) for i in range(n_state, len(inputs))]
    in_axes = [ctx.axis(a, len(x)) for a, x in zip(ctx.attrs.get("scan_input_axes") or [0] * n_scan, xs)]
    slices = [TensorType(t.dtype, tuple(x[:a] + x[a + 1:])) for t, x, a in zip(inputs[n_state:], xs, in_axes)]
    steps = xs[0][in_axes[0]] if xs else 0
    result, states = _iterate(ctx, body, lambda c: c + slices, inputs[:n_state], 0)
    n_out = len(body.outputs) - n_state
    out_axes = list(ctx.attrs.get("scan_output_axes") or [0] * n_out)
    scans = [_stacked(t, steps, int(a)) for t, a in zip(result.types[n_state:], out_axes)]
    return [*states, *scans]


def _scan8(ctx, body, n_scan):
    """Scan-8: a leading sequence_lens input; every state and scan input has a batch axis 0."""
    inputs = [TensorType(ctx.dtype(i), ctx.shape(i)) for i in range(1, len(ctx.inputs))]
    n_state = len(inputs) - n_scan
    batch, steps = inputs[n_state].shape[:2]
    states = [TensorType(t.dtype, t.shape[1:]) for t in inputs[:n_state]]
    slices = [TensorType(t.dtype, t.shape[2:]) for t in inputs[n_state:]]
    result = ctx.infer_body(body, states + slices)
    outs = [TensorType(t.dtype, (batch, *t.shape)) for t in result.types[:n_state]]
    scans = [TensorType(t.dtype, (batch, steps, *t.shape)) for t in result.types[n_state:]]
    return [*outs, *scans]


@shape_rule("SequenceMap")
def sequence_map(ctx):
    body = ctx.attrs["body"]
    n = len(ctx.inputs)
    per_input = [ctx.sequence(i) if isinstance(ctx.type(i), SequenceType) else None for i in range(n)]
    is_seq = [isinstance(ctx.type(i), SequenceType) for i in range(n)]
    length = len(per_input[0]) if per_input[0] is not None else None
    if length is not None and all(p is not None for p, s in zip(per_input, is_seq) if s):
        outputs = [[] for _ in body.outputs]
        for step in range(length):
            feeds = [per_input[i][step] if is_seq[i] else ctx.type(i) for i in range(n)]
            result = ctx.infer_body(body, feeds)
            for acc, t in zip(outputs, result.types):
                acc.append(t)
        return [SequenceOf(tuple(items), ctx.dtype(0) if not items else items[0].dtype) for items in outputs]
    feeds = [ctx.type(i).elem if is_seq[i] else ctx.type(i) for i in range(n)]
    result = ctx.infer_body(body, feeds)
    return [SequenceType(t) for t in result.types]


# -- sequences --------------------------------------------------------------------------------

def _elem(ctx, i: int) -> TensorType:
    t = ctx.type(i)
    return t.elem if isinstance(t, SequenceType) else t


@shape_rule("SequenceConstruct")
def sequence_construct(ctx):
    return SequenceOf(tuple(ctx.type(i) for i in range(len(ctx.inputs)) if ctx.has(i)), ctx.dtype(0))


@shape_rule("SequenceEmpty")
def sequence_empty(ctx):
    dtype = ctx.attrs.get("dtype")
    return SequenceOf((), "float32" if dtype is None else onnx_dtype(dtype))


@shape_rule("SequenceAt", shape_inputs=(1,))
def sequence_at(ctx):
    items, position = ctx.sequence(0), ctx.scalar(1)
    if items is not None and position is not None:
        if not -len(items) <= position < len(items):
            raise ShapeInferenceError(f"SequenceAt position {position} is outside a sequence of {len(items)}")
        return items[int(position)]
    return _elem(ctx, 0)


def _position(ctx, i: int, default):
    """A constant position input (``default`` when not wired); None when not known."""
    return default if not ctx.has(i) else ctx.scalar(i)


@shape_rule("SequenceInsert", shape_inputs=(2,))
def sequence_insert(ctx):
    items, position = ctx.sequence(0), _position(ctx, 2, "end")
    if items is not None and position is not None:
        items = list(items)
        items.insert(len(items) if position == "end" else int(position), ctx.type(1))
        return SequenceOf(tuple(items), ctx.dtype(0))
    return SequenceType(merge_types(ctx, 0, _elem(ctx, 0), ctx.type(1), "e"))


@shape_rule("SequenceErase", shape_inputs=(1,))
def sequence_erase(ctx):
    items, position = ctx.sequence(0), _position(ctx, 1, -1)
    if items is not None and position is not None:
        items = list(items)
        del items[int(position)]
        return SequenceOf(tuple(items), ctx.dtype(0))
    return ctx.type(0)


@shape_rule("SequenceLength")
def sequence_length(ctx):
    return ctx.tensor("int64", ())


@shape_rule("SplitToSequence", shape_inputs=(1,))
def split_to_sequence(ctx):
    data = ctx.shape(0)
    axis = ctx.axis(ctx.attrs.get("axis", 0), len(data))
    dim = data[axis]
    dtype = ctx.dtype(0)

    def piece(size):
        return TensorType(dtype, (*data[:axis], size, *data[axis + 1:]))

    if not ctx.has(1):
        keep = bool(ctx.attrs.get("keepdims", 1))
        one = piece(1) if keep else TensorType(dtype, data[:axis] + data[axis + 1:])
        return SequenceOf((one,) * dim, dtype) if isinstance(dim, int) else SequenceType(one)
    split = ctx.value(1)
    if split is None:
        return SequenceType(piece(None))
    split = np.asarray(split)
    if split.ndim == 0:
        if not isinstance(dim, int):
            return SequenceType(piece(None))
        size = int(split)
        return SequenceOf(tuple(piece(min(size, dim - start)) for start in range(0, dim, size)), dtype)
    return SequenceOf(tuple(piece(int(s)) for s in split.reshape(-1)), dtype)


@shape_rule("ConcatFromSequence")
def concat_from_sequence(ctx):
    items = ctx.sequence(0)
    elem = _elem(ctx, 0)
    new_axis = bool(ctx.attrs.get("new_axis", 0))
    if items is None or not items:
        if elem.shape is None:
            return TensorType(elem.dtype, None)
        shape = list(elem.shape)
        axis = ctx.axis(ctx.attrs["axis"], len(shape) + new_axis)
        if new_axis:
            shape.insert(axis, None)
        else:
            shape[axis] = None
        return TensorType(elem.dtype, tuple(shape))
    shapes = [t.shape for t in items]
    if any(s is None for s in shapes):
        return TensorType(elem.dtype, None)
    rank = len(shapes[0])
    axis = ctx.axis(ctx.attrs["axis"], rank + new_axis)
    base = [_merge_all(column) for column in zip(*shapes)]
    if new_axis:
        base.insert(axis, len(items))
    else:
        total = 0
        for s in shapes:
            total = dims.add(total, s[axis])
        base[axis] = total
    return TensorType(items[0].dtype, tuple(base))


def _merge_all(column):
    first = column[0]
    return first if all(dims.equal(first, d) for d in column[1:]) else None


# -- optionals --------------------------------------------------------------------------------

@shape_rule("Optional")
def optional(ctx):
    return OptionalType(ctx.type(0) if ctx.has(0) else ctx.attrs["type"])


@shape_rule("OptionalHasElement")
def optional_has_element(ctx):
    return ctx.tensor("bool", ())


@shape_rule("OptionalGetElement")
def optional_get_element(ctx):
    t = ctx.type(0)
    return t.elem if isinstance(t, OptionalType) else t


# -- random -----------------------------------------------------------------------------------

@shape_rule("RandomUniform", "RandomNormal")
def random(ctx):
    return ctx.tensor(onnx_dtype(ctx.attrs.get("dtype", 1)), tuple(int(d) for d in ctx.attrs["shape"]))


@shape_rule("RandomUniformLike", "RandomNormalLike", "Bernoulli")
def random_like(ctx):
    dtype = ctx.attrs.get("dtype")
    return ctx.tensor(ctx.dtype(0) if dtype is None else onnx_dtype(dtype), ctx.shape(0))


# -- strings ----------------------------------------------------------------------------------

@shape_rule("StringConcat")
def string_concat(ctx):
    return ctx.tensor("string", ctx.broadcast(0, 1))


@shape_rule("StringSplit", data_dependent=True)
def string_split(ctx):
    shape = ctx.shape(0)
    return [ctx.tensor("string", (*shape, None)), ctx.tensor("int64", shape)]


@shape_rule("StringNormalizer", data_dependent=True)
def string_normalizer(ctx):
    return ctx.tensor("string", (1, None) if ctx.rank(0) == 2 else (None,))


@shape_rule("RegexFullMatch")
def regex_full_match(ctx):
    return ctx.tensor("bool", ctx.shape(0))


@shape_rule("TfIdfVectorizer")
def tfidf_vectorizer(ctx):
    shape = ctx.shape(0)
    width = max(int(i) for i in ctx.attrs["ngram_indexes"]) + 1
    return ctx.tensor("float32", (width,) if len(shape) == 1 else (shape[0], width))


# -- detection --------------------------------------------------------------------------------

@shape_rule("NonMaxSuppression", data_dependent=True)
def non_max_suppression(ctx):
    return ctx.tensor("int64", (None, 3))
