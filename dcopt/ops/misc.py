"""Reference semantics of ONNX ops outside the dense-tensor families.

* Control flow (If, Loop, Scan, SequenceMap) runs subgraphs through the ``run_subgraph``
  callback the executor passes in, so subgraph bodies see outer-scope values.
* Sequences are Python lists of arrays and optionals are "the value or None". An op whose
  single output is a sequence returns it wrapped in a tuple (a bare list would read as a list
  of outputs).
* Random ops are deterministic only when given a ``seed`` (numpy's legacy RandomState, as in
  onnx's reference), otherwise they draw fresh values.
* String ops work on numpy object arrays of ``str``.
* NonMaxSuppression is here because it is a per-box greedy loop rather than a tensor op.
"""

from __future__ import annotations

import re

import numpy as np

from dcopt.ir import dtypes
from dcopt.ops.registry import reference
from dcopt.ops.tensor import ints, norm_axis, onnx_dtype, scalar_int

# -- control flow -----------------------------------------------------------------------------


def _truth(value) -> bool:
    return bool(np.asarray(value).reshape(-1)[0])


def _stack(items: list, body, output: str, axis: int = 0) -> np.ndarray:
    """Stack per-iteration scan outputs. With zero iterations the body's declared output type
    gives the dtype (and trailing shape, when static) of the empty result."""
    if items:
        return np.stack(items, axis=axis)
    declared = body.containers[output].type if output in body.containers else None
    dtype = dtypes.to_numpy(declared.dtype) if declared else np.float32
    return np.empty((0,) + (declared.shape if declared and declared.is_static else ()), dtype=dtype)


@reference("If")
def if_(cond, *, then_branch, else_branch, run_subgraph):
    return tuple(run_subgraph(then_branch if _truth(cond) else else_branch, []))


@reference("Loop")
def loop(trip_count=None, cond=None, *carried, body, run_subgraph):
    """Run ``body(i, cond, *carried) -> (cond, *carried, *scan_outputs)`` while both
    the trip count and the condition allow; scan outputs are stacked on a new first axis."""
    trip_count = None if trip_count is None else scalar_int(trip_count)
    keep_going = True if cond is None else _truth(cond)
    carried, scans, i = list(carried), [], 0
    while keep_going and (trip_count is None or i < trip_count):
        out = run_subgraph(body, [np.array(i, dtype=np.int64), np.array(keep_going), *carried])
        keep_going = _truth(out[0])
        carried = list(out[1:1 + len(carried)])
        scans.append(out[1 + len(carried):])
        i += 1
    scan_names = body.outputs[1 + len(carried):]
    return (*carried, *(_stack([s[k] for s in scans], body, name) for k, name in enumerate(scan_names)))


def _scan(body, run_subgraph, states, inputs, in_axes, in_reverse, out_axes, out_reverse):
    """The Scan loop (opset 9 form): iterate over ``inputs`` along their scan axes."""
    steps = inputs[0].shape[in_axes[0]] if inputs else 0
    per_step = []
    for t in range(steps):
        slices = [np.take(x, steps - 1 - t if rev else t, axis=ax) for x, ax, rev in zip(inputs, in_axes, in_reverse)]
        out = run_subgraph(body, [*states, *slices])
        states = list(out[:len(states)])
        per_step.append(out[len(states):])
    outputs = []
    for k, name in enumerate(body.outputs[len(states):]):
        items = [s[k] for s in per_step]
        outputs.append(_stack(items[::-1] if out_reverse[k] else items, body, name, out_axes[k]))
    return states, outputs


def _directions(values, count: int) -> list[int]:
    return list(values) if values is not None else [0] * count


@reference("Scan")
def scan(*inputs, body, num_scan_inputs, directions=None, scan_input_axes=None, scan_input_directions=None,
         scan_output_axes=None, scan_output_directions=None, run_subgraph, opset):
    if opset < 9:  # Scan-8: a leading sequence_lens input and a batch axis 0 on everything
        return _scan8(*inputs, body=body, num_scan_inputs=num_scan_inputs, directions=directions,
                      run_subgraph=run_subgraph)
    n_state = len(inputs) - num_scan_inputs
    states, xs = list(inputs[:n_state]), list(inputs[n_state:])
    n_out = len(body.outputs) - n_state
    in_axes = [norm_axis(a, x.ndim) for a, x in zip(scan_input_axes or [0] * len(xs), xs)]
    out_axes = list(scan_output_axes or [0] * n_out)  # np.stack reads negative axes as ONNX does
    states, outputs = _scan(body, run_subgraph, states, xs, in_axes, _directions(scan_input_directions, len(xs)),
                            out_axes, _directions(scan_output_directions, n_out))
    return (*states, *outputs)


def _scan8(sequence_lens, *inputs, body, num_scan_inputs, directions, run_subgraph):
    n_state = len(inputs) - num_scan_inputs
    batch, steps = inputs[n_state].shape[:2]
    lens = [steps] * batch if sequence_lens is None else ints(sequence_lens)
    reverse = _directions(directions, num_scan_inputs)
    per_batch = []
    for b in range(batch):
        xs = [x[b, :lens[b]] for x in inputs[n_state:]]
        states, outputs = _scan(body, run_subgraph, [s[b] for s in inputs[:n_state]], xs, [0] * len(xs), reverse,
                                [0] * (len(body.outputs) - n_state), [0] * (len(body.outputs) - n_state))
        outputs = [np.pad(o, [(0, steps - o.shape[0])] + [(0, 0)] * (o.ndim - 1)) for o in outputs]
        per_batch.append(states + outputs)
    return tuple(np.stack(vals) for vals in zip(*per_batch))


# -- sequences and optionals ------------------------------------------------------------------


@reference("SequenceConstruct")
def sequence_construct(*inputs):
    return (list(inputs),)


@reference("SequenceEmpty")
def sequence_empty(*, dtype=None):
    return ([],)


@reference("SequenceAt")
def sequence_at(seq, position):
    return seq[scalar_int(position)]


@reference("SequenceInsert")
def sequence_insert(seq, tensor, position=None):
    out = list(seq)
    out.insert(len(out) if position is None else scalar_int(position), tensor)  # list.insert reads -k as ONNX does
    return (out,)


@reference("SequenceErase")
def sequence_erase(seq, position=None):
    out = list(seq)
    del out[-1 if position is None else scalar_int(position)]
    return (out,)


@reference("SequenceLength")
def sequence_length(seq):
    return np.array(len(seq), dtype=np.int64)


@reference("SplitToSequence")
def split_to_sequence(x, split=None, *, axis=0, keepdims=1):
    axis = norm_axis(axis, x.ndim)
    dim = x.shape[axis]
    if split is None:
        parts = np.split(x, dim, axis=axis)
        return ([np.squeeze(p, axis) for p in parts] if not keepdims else parts,)
    split = np.asarray(split)
    if split.ndim == 0:  # chunks of that size, the last one possibly shorter
        bounds = list(range(int(split), dim, int(split)))
    else:
        bounds = list(np.cumsum(ints(split))[:-1])
    return (np.split(x, bounds, axis=axis),)


@reference("ConcatFromSequence")
def concat_from_sequence(seq, *, axis, new_axis=0):
    if new_axis:
        return np.stack(seq, axis=norm_axis(axis, seq[0].ndim + 1))
    return np.concatenate(seq, axis=axis)


@reference("SequenceMap")
def sequence_map(seq, *others, body, run_subgraph):
    """Run ``body`` once per element of ``seq``; sequence inputs are indexed in step, tensors repeat."""
    results = [[] for _ in body.outputs]
    for i in range(len(seq)):
        feeds = [seq[i]] + [o[i] if isinstance(o, list) else o for o in others]
        for acc, value in zip(results, run_subgraph(body, feeds)):
            acc.append(value)
    return tuple(results)


@reference("Optional")
def optional(x=None, *, type=None):
    return (x,)


@reference("OptionalHasElement")
def optional_has_element(x=None):
    return np.array(x is not None)


@reference("OptionalGetElement")
def optional_get_element(x=None):
    if x is None:
        raise ValueError("OptionalGetElement on an empty optional")
    return (x,)


# -- random -----------------------------------------------------------------------------------


def _rng(seed):
    return np.random.RandomState() if seed is None else np.random.RandomState(int(seed))


def _out_dtype(dtype, like=None):
    """The ``dtype`` attribute if set, else the input's dtype (``*Like`` ops)."""
    return onnx_dtype(dtype) if dtype is not None else like.dtype


@reference("RandomUniform")
def random_uniform(*, shape, dtype=1, high=1.0, low=0.0, seed=None):
    return (_rng(seed).rand(*shape) * (high - low) + low).astype(_out_dtype(dtype))


#: Ops whose results change from run to run (Dropout too, in training mode): never folded,
#: evaluated ahead of a run or compared against another runtime's draw.
RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                        "Bernoulli"})


@reference("RandomNormal")
def random_normal(*, shape, dtype=1, mean=0.0, scale=1.0, seed=None):
    return (_rng(seed).randn(*shape) * scale + mean).astype(_out_dtype(dtype))


@reference("RandomUniformLike")
def random_uniform_like(x, *, dtype=None, high=1.0, low=0.0, seed=None):
    return (_rng(seed).rand(*x.shape) * (high - low) + low).astype(_out_dtype(dtype, x))


@reference("RandomNormalLike")
def random_normal_like(x, *, dtype=None, mean=0.0, scale=1.0, seed=None):
    return (_rng(seed).randn(*x.shape) * scale + mean).astype(_out_dtype(dtype, x))


@reference("Bernoulli")
def bernoulli(x, *, dtype=None, seed=None):
    return _rng(seed).binomial(1, p=x).astype(_out_dtype(dtype, x))


# -- strings ----------------------------------------------------------------------------------


def _strings(result, shape) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out[...] = result
    return out


@reference("StringConcat")
def string_concat(x, y):
    shape = np.broadcast_shapes(x.shape, y.shape)
    return _strings(np.frompyfunc(lambda a, b: a + b, 2, 1)(x, y), shape)


@reference("StringSplit")
def string_split(x, *, delimiter=None, maxsplit=None):
    """Split each string; ``Y`` pads the pieces with "" to the longest, ``Z`` counts them."""
    sep = delimiter or None  # empty/absent: split on runs of whitespace
    pieces = [s.split(sep, -1 if maxsplit is None else maxsplit) for s in x.reshape(-1)]
    width = max((len(p) for p in pieces), default=0)
    y = np.full((len(pieces), width), "", dtype=object)
    for row, p in zip(y, pieces):
        row[:len(p)] = p
    return y.reshape(x.shape + (width,)), np.array([len(p) for p in pieces], dtype=np.int64).reshape(x.shape)


@reference("StringNormalizer")
def string_normalizer(x, *, case_change_action="NONE", is_case_sensitive=0, locale=None, stopwords=None):
    """Drop stopwords (elementwise), then change case; an all-dropped input gives [""]."""
    fold = (lambda s: s) if is_case_sensitive else str.lower
    stops = {fold(w) for w in stopwords or ()}
    change = {"LOWER": str.lower, "UPPER": str.upper}.get(case_change_action, lambda s: s)
    kept = [change(s) for s in x.reshape(-1) if fold(s) not in stops] or [""]
    return _strings(kept, (1, len(kept)) if x.ndim == 2 else (len(kept),))


@reference("RegexFullMatch")
def regex_full_match(x, *, pattern):
    regex = re.compile(pattern)
    return np.array([regex.fullmatch(s) is not None for s in x.reshape(-1)], dtype=bool).reshape(x.shape)


@reference("TfIdfVectorizer")
def tfidf_vectorizer(x, *, mode, min_gram_length, max_gram_length, max_skip_count, ngram_counts, ngram_indexes,
                     pool_int64s=None, pool_strings=None, weights=None):
    """Count the pool's n-grams (tokens ``skip + 1`` apart) in each row of ``x``, then weight them.

    The pool lists n-grams grouped by length; ``ngram_counts[n-1]`` is where the n-grams start.
    """
    pool = list(pool_strings if pool_strings is not None else pool_int64s)
    bounds = list(ngram_counts) + [len(pool)]
    ids = {}  # n-gram tuple -> its position i in the pool (indexes ngram_indexes and weights)
    for n, (begin, end) in enumerate(zip(bounds, bounds[1:]), 1):
        for j in range(begin, end, n):
            ids[tuple(pool[j:j + n])] = len(ids)
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    counts = np.zeros((rows.shape[0], len(ids)))
    for r, row in enumerate(rows.tolist()):
        for n in range(min_gram_length, max_gram_length + 1):
            for step in range(1, max_skip_count + 2 if n > 1 else 2):  # skips are moot for unigrams
                for start in range(len(row) - (n - 1) * step):
                    i = ids.get(tuple(row[start:start + (n - 1) * step + 1:step]))
                    if i is not None:
                        counts[r, i] += 1
    if mode == "IDF":
        counts = np.minimum(counts, 1)
    if mode != "TF" and weights is not None:
        counts = counts * np.asarray(weights)
    out = np.zeros((rows.shape[0], max(ngram_indexes) + 1), dtype=np.float32)
    out[:, list(ngram_indexes)] = counts
    return out.reshape(-1) if x.ndim == 1 else out


# -- detection --------------------------------------------------------------------------------


def _corners(boxes: np.ndarray, center_point_box: int) -> np.ndarray:
    """Boxes -> [y1, x1, y2, x2] with y1 <= y2, x1 <= x2."""
    if center_point_box:
        xc, yc, w, h = boxes.T
        return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1)
    y1, x1, y2, x2 = boxes.T
    return np.stack([np.minimum(y1, y2), np.minimum(x1, x2), np.maximum(y1, y2), np.maximum(x1, x2)], axis=1)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    top_left = np.maximum(box[:2], others[:, :2])
    bottom_right = np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    union = area(box) + area(others) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@reference("NonMaxSuppression")
def non_max_suppression(boxes, scores, max_output_boxes_per_class=None, iou_threshold=None, score_threshold=None, *,
                        center_point_box=0):
    """Greedy per-(batch, class) suppression; rows of ``[batch, class, box]`` in selection order."""
    limit = 0 if max_output_boxes_per_class is None else scalar_int(max_output_boxes_per_class)
    iou_max = 0.0 if iou_threshold is None else float(np.asarray(iou_threshold).reshape(-1)[0])
    selected = []
    for b in range(scores.shape[0]):
        corners = _corners(boxes[b].astype(np.float64), center_point_box)
        for c in range(scores.shape[1]):
            s = scores[b, c]
            candidates = np.argsort(-s, kind="stable")
            if score_threshold is not None:
                candidates = candidates[s[candidates] > float(np.asarray(score_threshold).reshape(-1)[0])]
            keep = []
            for i in candidates:
                if len(keep) >= limit:
                    break
                if not keep or np.all(_iou(corners[i], corners[keep]) <= iou_max):
                    keep.append(i)
            selected += [(b, c, i) for i in keep]
    return np.array(selected, dtype=np.int64).reshape(-1, 3)
