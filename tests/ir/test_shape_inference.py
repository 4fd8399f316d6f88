"""dcopt's own shape inference (:mod:`dcopt.ir.shape_inference`, rules in :mod:`dcopt.ops.shapes`).

The ground truth is the data: every ONNX node conformance case (its expected outputs' shapes and
dtypes) and reference-executor runs of real models. Before inferring, every type the importer
wrote (ONNX's inference) is forgotten, so only dcopt's rules can produce the types checked here.
"""

from __future__ import annotations

import inspect
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dcopt.frontends.onnx_import import import_model
from dcopt.ir.executor import run_graph
from dcopt.ir.feeds import random_inputs
from dcopt.ir.graph import Graph
from dcopt.ir.shape_inference import infer, infer_types, shape_determining_inputs
from dcopt.ir.types import OptionalType, SequenceType, TensorType
from dcopt.ops.registry import registered_ops
from dcopt.ops.shapes import dims, is_data_dependent, ops_with_rules, shape_inputs
from dcopt.ops.shapes.registry import ShapeInferenceError
from tests.conftest import make_model

DATA_DEPENDENT = "output size depends on the content of a data input"
LOOP_SEQUENCE = "a Loop builds the sequence: its items depend on the iteration"
LOOP_CARRIED = "a loop-carried shape depends on the iteration number (a Slice at [i, i+1))"
IF_ON_DATA = "an If on a data condition whose branches' optional sequences differ"

#: Conformance cases whose outputs cannot be typed exactly from input types and shape-input values.
NOT_INFERABLE = {
    **{f"test_compress_{s}": DATA_DEPENDENT for s in ("0", "1", "bfloat16", "default_axis", "negative_axis")},
    "test_nonzero_example": DATA_DEPENDENT,
    **{f"test_nonmaxsuppression_{s}": DATA_DEPENDENT for s in (
        "center_point_box_format", "flipped_coordinates", "identical_boxes", "iou_threshold_boundary",
        "limit_output_size", "single_box", "suppress_by_IOU", "suppress_by_IOU_and_scores", "two_batches",
        "two_classes")},
    **{f"test_string_split_{s}": DATA_DEPENDENT for s in (
        "basic", "consecutive_delimiters", "empty_string_delimiter", "empty_tensor", "maxsplit", "no_delimiter")},
    **{f"test_strnormalizer_{s}": DATA_DEPENDENT for s in (
        "export_monday_casesensintive_lower", "export_monday_casesensintive_nochangecase",
        "export_monday_casesensintive_upper", "export_monday_empty_output",
        "export_monday_insensintive_upper_twodim", "nostopwords_nochangecase")},
    **{f"test_unique_{s}": DATA_DEPENDENT for s in (
        "bfloat16_sorted_without_axis", "length_1", "not_sorted_without_axis", "sorted_with_axis",
        "sorted_with_axis_3d", "sorted_with_negative_axis", "sorted_without_axis")},
    "test_loop11": LOOP_CARRIED,
    "test_loop13_seq": LOOP_SEQUENCE,
    "test_loop16_seq_none": LOOP_SEQUENCE,
    **{f"test_sequence_map_{s}_expanded": LOOP_SEQUENCE for s in (
        "add_1_sequence_1_tensor", "add_2_sequences", "extract_shapes", "identity_1_sequence_1_tensor",
        "identity_1_sequence", "identity_2_sequences")},
    "test_if_opt": IF_ON_DATA,
}


# ------------------------------------------------------------------------------ helpers

def _import(model) -> Graph:
    """Import a checked model; the frontend's validation is skipped where it can be (each
    conformance model is valid, and validating 1,800 of them would dominate this test's time)."""
    if "validate" in inspect.signature(import_model).parameters:
        return import_model(model, validate=False)
    return import_model(model)


def _forget_types(graph: Graph) -> None:
    """Unknown types for every node output (subgraphs too): only inference may type them."""
    for node in graph.nodes:
        for out in node.outputs:
            if out in graph.containers:
                graph.containers[out].type = TensorType("float32", None)
        for body in node.subgraphs:
            _forget_types(body)


def _node_outputs(graph: Graph) -> list[str]:
    return list(dict.fromkeys(o for n in graph.nodes for o in n.outputs if o))


def _assert_types_match_run(graph: Graph, feeds) -> None:
    values = run_graph(graph, feeds, outputs=_node_outputs(graph))
    wrong = [(name, str(graph.containers[name].type), str(TensorType.of(v))) for name, v in values.items()
             if graph.containers[name].type != TensorType.of(v)]
    assert not wrong, f"{len(wrong)} of {len(values)} containers typed differently from the run: {wrong[:5]}"


def _has_unknowns(t) -> bool:
    return t.shape is None or any(d is None or isinstance(d, str) and d.startswith("?") for d in t.shape)


# ------------------------------------------------------------------------------ coverage

def test_every_reference_op_has_a_shape_rule():
    assert set(ops_with_rules()) == set(registered_ops())


def test_shape_inputs_follow_the_opset():
    assert shape_inputs("Reshape") == (1,)
    assert shape_inputs("Slice", opset=9) == () and shape_inputs("Slice", opset=13) == (1, 2, 3, 4)
    assert shape_inputs("ReduceSum", opset=11) == () and shape_inputs("ReduceSum", opset=13) == (1,)
    assert shape_inputs("ReduceMax", opset=13) == () and shape_inputs("ReduceMax", opset=18) == (1,)
    assert shape_inputs("Pad", opset=18) == (1, 3) and shape_inputs("Resize", opset=13) == (2, 3)
    assert shape_inputs("Add") == () and shape_inputs("NoSuchOp") == ()
    assert is_data_dependent("NonZero") and is_data_dependent("Unique") and not is_data_dependent("Reshape")


# ------------------------------------------------------------------------------ conformance

@pytest.fixture(scope="module")
def conformance_cases():
    from dcopt.tools.conformance import collect_cases

    return collect_cases()


def _case_problems(case) -> list[str]:
    """Why the inferred output types of one case differ from its expected outputs ([] when exact)."""
    from dcopt.tools.conformance import _as_array

    graph = _import(case.model)
    _forget_types(graph)
    inputs, expected = (_as_array(list(d)) for d in case.data_sets[0])
    feeds = {name: v if isinstance(v, list) or v is None else np.asarray(v) for name, v in zip(graph.inputs, inputs)}
    values = {name: v for name, v in feeds.items() if isinstance(v, list)}  # sequences: their items' types
    for name, v in feeds.items():
        if isinstance(v, np.ndarray) and isinstance(graph.containers[name].type, TensorType):
            graph.containers[name].type = TensorType.of(v)
    values.update({name: feeds[name] for name in shape_determining_inputs(graph)
                   if isinstance(feeds.get(name), np.ndarray)})
    report = infer(graph, values=values, strict=True)
    problems = []
    for name, want in zip(graph.outputs, expected):
        got = graph.containers[name].type
        if isinstance(want, list):
            items = report.sequences.get(name)
            wanted = tuple(TensorType.of(np.asarray(a)) for a in want)
            if items != wanted:
                problems.append(f"{name}: items {items} (type {got}), expected {wanted}")
        elif want is None:
            if not isinstance(got, OptionalType):
                problems.append(f"{name}: {got} for an empty optional")
        else:
            got = got.elem if isinstance(got, OptionalType) else got
            if got != TensorType.of(np.asarray(want)):
                problems.append(f"{name}: {got}, expected {TensorType.of(np.asarray(want))}")
    return problems


def _compatible(graph_type, want) -> bool:
    """A less precise type is still right: dtype equal, and every known dim equal."""
    if isinstance(want, list) or want is None:
        return isinstance(graph_type, (SequenceType, OptionalType))
    want = TensorType.of(np.asarray(want))
    got = graph_type.elem if isinstance(graph_type, OptionalType) else graph_type
    if got.dtype != want.dtype or got.shape is None:
        return got.dtype == want.dtype
    return len(got.shape) == len(want.shape) and all(not isinstance(g, int) or g == w
                                                     for g, w in zip(got.shape, want.shape))


def test_conformance_outputs_are_typed_exactly(conformance_cases):
    """Every case of an op dcopt implements: the outputs' inferred types equal the expected outputs'
    shapes and dtypes, the shape inputs made constants with the case's values."""
    from dcopt.ops.registry import lookup

    wrong, exact, checked = {}, [], 0
    for case in conformance_cases:
        if not any(lookup(n.op_type, n.domain) for n in case.model.graph.node):
            continue  # ops without a reference implementation (ai.onnx.ml, training): not dcopt's
        checked += 1
        problems = _case_problems(case)
        if case.name in NOT_INFERABLE:
            if not problems:
                exact.append(case.name)
        elif problems:
            wrong[case.name] = problems
    assert not wrong, f"{len(wrong)} cases typed wrongly: " + "; ".join(f"{k}: {v}" for k, v in list(wrong.items())[:8])
    assert not exact, f"cases listed as not inferable are now exact (remove them from NOT_INFERABLE): {exact}"
    assert checked > 1800


def test_cases_that_cannot_be_exact_are_still_right(conformance_cases):
    """Data-dependent sizes are fresh symbols, never guesses: every known dim agrees with the data."""
    from dcopt.tools.conformance import _as_array

    for case in conformance_cases:
        if case.name not in NOT_INFERABLE:
            continue
        graph = _import(case.model)
        _forget_types(graph)
        inputs, expected = (_as_array(list(d)) for d in case.data_sets[0])
        infer(graph, values={n: v for n, v in zip(graph.inputs, inputs) if isinstance(v, list)})
        for name, want in zip(graph.outputs, expected):
            assert _compatible(graph.containers[name].type, want), (case.name, name, graph.containers[name].type)


# ------------------------------------------------------------------------------ real models

def _typed_from_scratch(path_or_model) -> Graph:
    graph = import_model(path_or_model)
    _forget_types(graph)
    infer_types(graph, strict=True)
    return graph


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
                                  "shufflenet", "squeezenet", "vgg19", "zfnet512"])
def test_light_zoo_types_match_a_reference_run(name):
    from dcopt.testing import light_zoo_path, with_random_weights

    model = with_random_weights(onnx.load(light_zoo_path(name)), seed=0)
    graph = _typed_from_scratch(model)
    _assert_types_match_run(graph, random_inputs(graph, seed=0))


def _benchmark_transformer(kind: str):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from benchmarks import models

    return models.build(kind).path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_benchmark_transformer_types_match_a_reference_run(kind):
    graph = _typed_from_scratch(_benchmark_transformer(kind))
    feeds = {k: np.zeros_like(v) if v.dtype.kind in "iu" else v for k, v in random_inputs(graph, seed=0).items()}
    _assert_types_match_run(graph, feeds)


@pytest.mark.slow
def test_bert_types_in_well_under_a_second():
    graph = import_model(_benchmark_transformer("bert"))
    infer_types(graph)  # rule modules imported, caches warm
    _forget_types(graph)
    start = time.perf_counter()
    infer_types(graph)
    assert time.perf_counter() - start < 1.0


def _export_dynamic(kind: str, path) -> str:
    """A 2-layer transformer exported with symbolic batch and sequence axes."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "bert":
        model = transformers.BertModel(transformers.BertConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, vocab_size=100,
            max_position_embeddings=64))
    else:
        model = transformers.GPT2Model(transformers.GPT2Config(
            n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0))

    class LastHidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args).last_hidden_state

    names = ["input_ids", "attention_mask"] if kind == "bert" else ["input_ids"]
    args = tuple(torch.ones(1, 16, dtype=torch.long) for _ in names)
    torch.onnx.export(LastHidden(model).eval(), args, str(path), opset_version=17, dynamo=False, input_names=names,
                      output_names=["hidden"], dynamic_axes={n: {0: "batch", 1: "seq"} for n in names})
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_symbolic_transformer_is_typed_exactly(kind, tmp_path):
    """Batch and sequence stay symbols through every Shape -> Gather -> Concat -> Reshape chain: no
    container has an unknown dim, and binding the symbols gives the types of a run."""
    from dcopt.testing import transformer_feeds

    path = _export_dynamic(kind, tmp_path / f"{kind}.onnx")
    graph = _typed_from_scratch(path)
    unknown = [(n, str(c.type)) for n, c in graph.containers.items() if _has_unknowns(c.type)]
    assert not unknown, unknown[:5]
    assert graph.containers["hidden"].type == TensorType("float32", ("batch", "seq", 64))
    bound = import_model(path)
    _forget_types(bound)
    infer_types(bound, {"batch": 2, "seq": 16}, strict=True)
    feeds = {k: np.repeat(v, 2, axis=0) for k, v in transformer_feeds(kind, 16).items()}
    _assert_types_match_run(bound, feeds)


def test_lowered_graph_types_are_reproduced(tiny_resnet_path):
    """Loop-level nodes (maps, library calls) and fusion-group bodies are typed as expansion typed them."""
    from dcopt.driver import lower

    lowered = lower(import_model(tiny_resnet_path)).graph
    assert {"dcopt.loop.LibraryCall", "dcopt.FusedGroup"} <= set(lowered.op_histogram())

    def outputs(g):
        for node in g.nodes:
            yield from ((g, o) for o in node.outputs if o)
            for body in node.subgraphs:
                yield from outputs(body)

    expected = {(id(g), o): g.containers[o].type for g, o in outputs(lowered)}
    _forget_types(lowered)
    report = infer(lowered, strict=True)
    assert not report.missing_rules
    assert {(id(g), o): g.containers[o].type for g, o in outputs(lowered)} == expected


# ------------------------------------------------------------------------------ symbolic shapes

def _graph(nodes, inputs, outputs, initializers=(), opset=17):
    graph = import_model(make_model(nodes, inputs, outputs, initializers, opset))
    _forget_types(graph)
    return graph


def _heads_model(opset=17):
    """x[N, S, 768] -> Reshape to [N, S, 12, 64] with the target computed from Shape(x)."""
    n = helper.make_node
    return [
        n("Shape", ["x"], ["shape"]),
        n("Gather", ["shape", "zero"], ["batch"], axis=0),
        n("Gather", ["shape", "one"], ["seq"], axis=0),
        n("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        n("Unsqueeze", ["seq", "axes0"], ["seq1"]),
        n("Div", ["hidden", "heads"], ["head_size"]),
        n("Concat", ["batch1", "seq1", "heads", "head_size"], ["target"], axis=0),
        n("Reshape", ["x", "target"], ["y"]),
        n("Mul", ["batch", "seq"], ["rows"]),
        n("Unsqueeze", ["rows", "axes0"], ["rows1"]),
        n("Concat", ["rows1", "minus_one"], ["flat_target"], axis=0),
        n("Reshape", ["x", "flat_target"], ["flat"]),
    ], {"zero": np.array(0, np.int64), "one": np.array(1, np.int64), "axes0": np.array([0], np.int64),
        "hidden": np.array([768], np.int64), "heads": np.array([12], np.int64),
        "minus_one": np.array([-1], np.int64)}


def test_shape_arithmetic_over_symbols_folds():
    nodes, consts = _heads_model()
    graph = _graph(nodes, [("x", TensorProto.FLOAT, ["N", "S", 768])],
                   [("y", TensorProto.FLOAT, None), ("flat", TensorProto.FLOAT, None)], consts)
    report = infer(graph, strict=True)
    assert graph.containers["y"].type == TensorType("float32", ("N", "S", 12, 64))
    assert graph.containers["flat"].type == TensorType("float32", ("N*S", 768))
    assert report.symbolic["target"].items == ("N", "S", 12, 64)
    infer_types(graph, {"N": 2, "S": 5})
    assert graph.containers["flat"].type == TensorType("float32", (10, 768))


def test_a_shape_input_that_is_not_constant_gives_fresh_symbols():
    n = helper.make_node
    graph = _graph([n("Reshape", ["x", "shape"], ["y"]), n("Relu", ["y"], ["z"])],
                   [("x", TensorProto.FLOAT, [2, 6]), ("shape", TensorProto.INT64, [3])],
                   [("z", TensorProto.FLOAT, None)])
    infer_types(graph)
    assert graph.containers["y"].type == TensorType("float32", ("?y_0", "?y_1", "?y_2"))
    assert graph.containers["z"].type == graph.containers["y"].type  # one unknown size, one name
    assert shape_determining_inputs(graph) == {"shape"}
    infer_types(graph, values={"shape": np.array([3, -1, 2], np.int64)})
    assert graph.containers["z"].type == TensorType("float32", (3, 2, 2))


def test_shape_determining_inputs_stop_at_shape():
    """Reshape(x, Shape(y)) needs y's type, not its values."""
    n = helper.make_node
    graph = _graph([n("Shape", ["y"], ["s"]), n("Reshape", ["x", "s"], ["z"])],
                   [("x", TensorProto.FLOAT, [6]), ("y", TensorProto.FLOAT, [2, 3])], [("z", TensorProto.FLOAT, None)])
    assert shape_determining_inputs(graph) == set()
    infer_types(graph)
    assert graph.containers["z"].type == TensorType("float32", (2, 3))


def test_data_dependent_sizes_are_fresh_symbols_shared_where_equal():
    n = helper.make_node
    graph = _graph([n("NonZero", ["x"], ["nz"]), n("Unique", ["x"], ["u", "idx", "inv", "counts"])],
                   [("x", TensorProto.FLOAT, [3, 4])],
                   [("nz", TensorProto.INT64, None), ("u", TensorProto.FLOAT, None),
                    ("counts", TensorProto.INT64, None), ("inv", TensorProto.INT64, None)])
    infer_types(graph)
    assert graph.containers["nz"].type == TensorType("int64", (2, "?nz_1"))
    unique = graph.containers["u"].type.shape[0]
    assert unique.startswith("?") and graph.containers["counts"].type.shape == (unique,)
    assert graph.containers["inv"].type == TensorType("int64", (12,))


def test_symbolic_windows_and_prefix_slices():
    n = helper.make_node
    graph = _graph([n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    n("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                    n("Shape", ["x"], ["xs"]), n("Slice", ["xs", "two", "three"], ["len"]),
                    n("Slice", ["table", "zero", "len"], ["prefix"])],
                   [("x", TensorProto.FLOAT, ["N", 3, "H", 8])],
                   [("p", TensorProto.FLOAT, None), ("prefix", TensorProto.FLOAT, None)],
                   {"w": np.zeros((4, 3, 3, 3), np.float32), "table": np.zeros((64, 2), np.float32),
                    "zero": np.array([0], np.int64), "two": np.array([2], np.int64), "three": np.array([3], np.int64)})
    infer_types(graph, strict=True)
    assert graph.containers["c"].type.shape == ("N", 4, "H", 8)  # stride 1: exact over symbols
    assert graph.containers["p"].type.shape[:2] == ("N", 4) and graph.containers["p"].type.shape[3] == 4
    assert graph.containers["p"].type.shape[2].startswith("?")  # floor(H / 2): unknown, not guessed
    assert graph.containers["prefix"].type.shape == ("min(64,H)", 2)
    infer_types(graph, {"N": 1, "H": 100})
    assert graph.containers["prefix"].type.shape == (64, 2) and graph.containers["p"].type.shape == (1, 4, 50, 4)


def test_inconsistent_shapes_name_the_node():
    from dcopt.ir.graph import Node

    graph = Graph()
    graph.add_input("a", TensorType("float32", (2, 3)))
    graph.add_input("b", TensorType("float32", (4,)))
    graph.add_container("c", TensorType("float32", None))
    graph.add_node(Node("Add", ("a", "b"), ("c",), name="the_add"))
    graph.outputs = ["c"]
    with pytest.raises(ShapeInferenceError, match="the_add"):
        infer_types(graph)


# ------------------------------------------------------------------------------ control flow

def _body(name, nodes, inputs, outputs):
    return helper.make_graph(nodes, name, [helper.make_tensor_value_info(*i) for i in inputs],
                             [helper.make_tensor_value_info(*o) for o in outputs])


def test_if_with_a_constant_condition_types_only_its_branch():
    """The untaken branch may not even be valid for these inputs (exported functions guard
    rank-specific code this way): it is not typed."""
    n = helper.make_node
    then = _body("then", [n("Split", ["x"], ["a", "b", "c", "d"], num_outputs=4)], [],
                 [("a", TensorProto.FLOAT, None)])
    other = _body("else", [n("Identity", ["x"], ["e"])], [], [("e", TensorProto.FLOAT, None)])
    graph = _graph([n("Size", ["x"], ["size"]), n("Equal", ["size", "four"], ["is4"]),
                    n("If", ["is4"], ["y"], then_branch=then, else_branch=other)],
                   [("x", TensorProto.FLOAT, [3])], [("y", TensorProto.FLOAT, None)],
                   {"four": np.array(4, np.int64)}, opset=18)
    infer_types(graph, strict=True)
    assert graph.containers["y"].type == TensorType("float32", (3,))


def test_loop_with_a_constant_trip_count_stacks_its_scan_outputs():
    n = helper.make_node
    body = _body("body", [n("Identity", ["cond_in"], ["cond_out"]), n("Add", ["acc_in", "one_f"], ["acc_out"]),
                          n("Unsqueeze", ["acc_out", "axes0"], ["scan"])],
                 [("i", TensorProto.INT64, []), ("cond_in", TensorProto.BOOL, []), ("acc_in", TensorProto.FLOAT, [2])],
                 [("cond_out", TensorProto.BOOL, []), ("acc_out", TensorProto.FLOAT, [2]),
                  ("scan", TensorProto.FLOAT, [1, 2])])
    graph = _graph([n("Loop", ["trips", "", "acc"], ["final", "stacked"], body=body)],
                   [("acc", TensorProto.FLOAT, [2])],
                   [("final", TensorProto.FLOAT, None), ("stacked", TensorProto.FLOAT, None)],
                   {"trips": np.array(5, np.int64), "one_f": np.array(1.0, np.float32),
                    "axes0": np.array([0], np.int64)})
    infer_types(graph)
    assert graph.containers["final"].type == TensorType("float32", (2,))
    assert graph.containers["stacked"].type == TensorType("float32", (5, 1, 2))


def test_loop_whose_carried_shape_grows_gets_a_fresh_dim():
    n = helper.make_node
    body = _body("body", [n("Identity", ["cond_in"], ["cond_out"]),
                          n("Concat", ["acc_in", "extra"], ["acc_out"], axis=0)],
                 [("i", TensorProto.INT64, []), ("cond_in", TensorProto.BOOL, []),
                  ("acc_in", TensorProto.FLOAT, [None])],
                 [("cond_out", TensorProto.BOOL, []), ("acc_out", TensorProto.FLOAT, [None])])
    graph = _graph([n("Loop", ["trips", "", "acc"], ["final"], body=body)],
                   [("acc", TensorProto.FLOAT, [1])], [("final", TensorProto.FLOAT, None)],
                   {"trips": np.array(3, np.int64), "extra": np.zeros(1, np.float32)})
    infer_types(graph)
    assert graph.containers["final"].type == TensorType("float32", ("?final_0",))


# ------------------------------------------------------------------------------ dims

def test_dims_are_canonical_polynomials():
    assert dims.mul("S", "N") == dims.mul("N", "S") == "N*S"
    assert dims.add(dims.mul(2, "N"), 1) == "2*N+1"
    assert dims.sub("N", "N") == 0
    assert dims.div(dims.mul("N", 768), 12) == "64*N"
    assert dims.div("N", 2) is None  # not exact: unknown, never floor-guessed
    assert dims.substitute("2*N+1", {"N": 3}) == 7
    assert dims.equal("N*S", "S*N") is True and dims.equal("N", "N+1") is False and dims.equal("N", "M") is None


def test_broadcasting_symbolic_dims():
    assert dims.broadcast_shapes(("N", 1, 4), (3, 1)) == ("N", 3, 4)
    assert dims.broadcast("N", 1) == "N" and dims.broadcast("N", 5) == 5
    assert dims.broadcast("N", "M") is None
    assert dims.broadcast("seq", dims.minimum("seq", 512)) == "seq"
    with pytest.raises(ValueError):
        dims.broadcast(2, 3)


# ------------------------------------------------------------------------------ dcopt's own ops and the pass

def test_channels_last_variants_are_typed_like_their_onnx_ops(tiny_resnet_path):
    from dcopt.passes.base import get_pass
    from dcopt.passes.manager import PassManager

    graph = PassManager([get_pass("layout", prefer="nhwc", max_overhead=10.0)])(import_model(tiny_resnet_path)).graph
    assert "dcopt.ConvNHWC" in graph.op_histogram()
    expected = {o: graph.containers[o].type for o in _node_outputs(graph)}
    _forget_types(graph)
    infer_types(graph, strict=True)
    assert {o: graph.containers[o].type for o in _node_outputs(graph)} == expected


def test_ops_without_rules_keep_their_types():
    from dcopt.ir.graph import Node

    graph = Graph(opset={"": 17, "custom": 1})
    graph.add_input("x", TensorType("float32", (2, 3)))
    graph.add_container("y", TensorType("float16", (7,)))
    graph.add_container("z", TensorType("float32", None))
    graph.add_node(Node("Mystery", ("x",), ("y",), domain="custom"))
    graph.add_node(Node("Relu", ("y",), ("z",)))
    graph.outputs = ["z"]
    report = infer(graph)
    assert report.missing_rules == {"custom.Mystery": 1}
    assert graph.containers["y"].type == TensorType("float16", (7,))
    assert graph.containers["z"].type == TensorType("float16", (7,))


def test_infer_shapes_pass_types_folded_shape_chains():
    from dcopt.passes.base import get_pass
    from dcopt.passes.manager import PassManager

    nodes, consts = _heads_model()
    graph = _graph(nodes, [("x", TensorProto.FLOAT, [2, 5, 768])], [("y", TensorProto.FLOAT, None)], consts)
    result = PassManager([get_pass("infer-shapes")])(graph)
    assert result.graph.containers["y"].type == TensorType("float32", (2, 5, 12, 64))
    again = PassManager([get_pass("infer-shapes")])(result.graph)
    assert not again.report.records[0].modified  # nothing left to learn: the very same type objects


def test_reinfer_keeps_a_declared_size_inference_cannot_prove():
    from dcopt.frontends.onnx_shapes import reinfer_types

    graph = import_model(make_model([helper.make_node("NonZero", ["x"], ["y"])], [("x", TensorProto.FLOAT, [4])],
                                    [("y", TensorProto.INT64, [1, 3])]))
    reinfer_types(graph)
    assert graph.containers["y"].type == TensorType("int64", (1, 3))
