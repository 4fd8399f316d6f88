"""apply_patches: chains in order, leaves its input alone, validates, diffs, and records history."""

import json

import numpy as np
import pytest

from dcopt.passes import Op, RewriteRule, Var, fuse_to
from dcopt.passes.patches import (HISTORY_KEY, Param, PatchError, PatchOutcome, PatchURIError, PatchValidationError,
                                  StructuralDiff, apply_patches, get_patch, patch, patch_history)
from tests.passes.conftest import graph_from_text

MLP = """
    agraph (float[N, 4] x) => (float[N, 4] y) <float[4, 4] w = {%s}> {
        h = MatMul(x, w)
        a = Relu(h)
        d = Identity(a)
        y = Relu(d)
    }""" % ", ".join(str(v) for v in np.linspace(-1, 1, 16).round(3))


def mlp():
    return graph_from_text(MLP, opset=17)


def test_chain_applies_in_order_and_leaves_the_input_alone():
    graph = mlp()
    before = list(graph.nodes)
    report = apply_patches(graph, ["remove_dropout_identity", "swap_activation?from=Relu&to=Tanh"])
    assert graph.nodes == before and HISTORY_KEY not in graph.metadata
    assert [s.uri for s in report.steps] == ["remove_dropout_identity", "swap_activation?from=Relu&to=Tanh"]
    assert report.graph.op_histogram() == {"MatMul": 1, "Tanh": 2}
    assert report.history == ["remove_dropout_identity", "swap_activation?from=Relu&to=Tanh"]


def test_history_appends_to_what_the_model_had_and_skips_no_ops():
    graph = mlp()
    graph.metadata[HISTORY_KEY] = "fold_batchnorm"
    report = apply_patches(graph, ["fuse_gelu", "remove_dropout_identity", ("swap_activation", {"to": "Silu"})])
    assert not report.steps[0].modified and report.steps[0].validation == "nothing changed"
    assert report.graph.metadata[HISTORY_KEY] == "fold_batchnorm;remove_dropout_identity;swap_activation?to=Silu"
    assert patch_history(report.graph)[-1] == "swap_activation?to=Silu"


def test_every_uri_is_checked_before_anything_runs():
    with pytest.raises(PatchURIError, match="nope"):
        apply_patches(mlp(), ["remove_dropout_identity", "swap_activation?to=nope"])


def test_structural_diff_names_nodes_and_counts():
    report = apply_patches(mlp(), ["remove_dropout_identity", "swap_activation?to=HardSwish"])
    first, second = (s.diff for s in report.steps)
    assert first.removed == ["Identity_2"] and first.rewired == ["Relu_3"] and not first.added
    assert first.nodes_before == 4 and first.nodes_after == 3 and first.ops_delta == {"Identity": -1}
    # opset 17 has HardSwish: each Relu becomes one HardSwish node of the same name
    assert second.rewired == ["Relu_1", "Relu_3"] and second.ops_delta == {"HardSwish": 2, "Relu": -2}
    assert first.flops_before > 0 and first.params_before == first.params_after == 16
    text = "\n".join(report.steps[1].format())
    assert "nodes 3 -> 3 (+0 added, -0 removed, ~2 rewired)" in text and "parameters 16 -> 16 (0)" in text
    json.dumps(report.to_dict(), default=str)  # machine-readable as well


def test_explain_shows_refusals_only_when_asked():
    graph = graph_from_text("""agraph (float[2, 4] x) => (float[2, 4] y, float[2, 4] z) {
        z = Identity(x)
        y = Relu(z) }""")
    report = apply_patches(graph, ["remove_dropout_identity"], explain=True)
    assert "is a graph output" in report.format(explain=True)
    quiet = apply_patches(graph, ["remove_dropout_identity"])
    assert "refused" not in quiet.format() and not quiet.steps[0].outcome.refusals


@pytest.fixture
def liar(clean_registry):
    """An 'exact' patch that changes the function: the numerical validator must catch it."""

    @patch("relu_is_abs", kind="exact")
    def relu_is_abs(graph):
        """Claims Relu == Abs."""
        return RewriteRule("relu->abs", Op("Relu", Var("x")), fuse_to("Abs", "x"))

    return relu_is_abs


def test_a_patch_whose_result_fails_validation_is_rejected(liar):
    graph = graph_from_text("agraph (float[N, 8] x) => (float[N, 8] y) { y = Relu(x) }")
    with pytest.raises(PatchValidationError, match=r"patch 'relu_is_abs' produced a graph that fails validation "
                                                   r"\(numerically equivalent .*\): output 'y' differs"):
        apply_patches(graph, ["relu_is_abs"])
    assert apply_patches(graph, ["relu_is_abs"], validate=False).graph.op_histogram() == {"Abs": 1}


def test_a_broken_patch_is_named_in_the_error(clean_registry):
    @patch("crashes", params=[Param("n", int, 1, "unused")])
    def crashes(graph, *, n):
        raise ZeroDivisionError("boom")

    @patch("returns_junk")
    def returns_junk(graph):
        return 42

    with pytest.raises(PatchError, match=r"patch 'crashes' failed: ZeroDivisionError: boom"):
        apply_patches(mlp(), ["crashes"])
    with pytest.raises(PatchError, match="returned int; expected rewrite rules"):
        apply_patches(mlp(), [get_patch("returns_junk")])


def test_custom_outcome_patches_are_validated_and_recorded(clean_registry):
    @patch("double_weights", kind="idea", params=[Param("factor", float, 2.0, "scale")])
    def double_weights(graph, *, factor):
        """Scales every float weight (a custom, non-rule patch)."""
        from dcopt.passes.patches.edit import rewire_weight

        outcome = PatchOutcome(graph)
        for node in list(graph.nodes):
            if node.op == "MatMul":
                rewire_weight(graph, node, 1, graph.containers[node.inputs[1]].data * factor)
                outcome.applied("scale", node.label)
        return outcome

    graph = mlp()
    report = apply_patches(graph, ["double_weights?factor=3"])
    w = report.graph.nodes[0].inputs[1]
    np.testing.assert_allclose(report.graph.containers[w].data, graph.containers["w"].data * 3)
    assert report.history == ["double_weights?factor=3"] and "structural" in report.steps[0].validation


def test_structural_diff_of_identical_graphs_is_empty():
    graph = mlp()
    assert StructuralDiff.between(graph, graph).empty
