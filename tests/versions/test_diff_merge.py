"""dcopt.versions.diff and dcopt.versions.merge on tiny models."""

import numpy as np
import pytest

from dcopt.errors import ArgumentError
from dcopt.versions.diff import diff_models
from dcopt.versions.errors import MergeConflict
from dcopt.versions.merge import merge_models
from dcopt.versions.params import ModelFile
from tests.versions.models import load_params, low_rank_update, mlp, sparse_update, weights


def test_weights_only_diff_reports_stats_and_rank():
    base = weights()
    d = diff_models(ModelFile(mlp(base), "a"), ModelFile(mlp(sparse_update(low_rank_update(base))), "b"))
    assert d.model == "weights" and "kernels are reused" in d.compilation()
    changes = {p.name: p for p in d.params}
    assert set(changes) == {"w1", "w2"} and d.params_same == 2
    assert changes["w1"].rank == 2 and changes["w1"].rank_exact and changes["w1"].frac_changed > 0.9
    assert changes["w2"].frac_changed == pytest.approx(5 / (64 * 16)) and changes["w2"].max_abs == pytest.approx(0.5)
    assert "rank 2" in "\n".join(d.lines())


def test_structural_diff_names_nodes_attributes_and_parameters():
    base = weights()
    changed = {**base, "b1": np.zeros(32, np.float32), "extra": np.ones(3, np.float32)}
    d = diff_models(ModelFile(mlp(base), "a"), ModelFile(mlp(changed, act="Sigmoid"), "b"))
    assert d.model == "structure"
    assert [(n.kind, n.name, n.details) for n in d.nodes] == [("changed", "act", ["op Relu -> Sigmoid"])]
    kinds = {p.name: p.kind for p in d.params}
    assert kinds == {"b1": "shape"}  # mlp() writes only w1, b1, w2, steps: 'extra' is not an initializer
    assert "! b1  float32[64] -> float32[32]" in "\n".join(d.lines())


def test_merge_takes_one_sided_changes_and_applies_strategies_to_both_sided():
    base = weights()
    ours = sparse_update(base, "w2")
    theirs = low_rank_update(base, "w1")
    files = [ModelFile(mlp(p), n) for p, n in ((base, "base"), (ours, "ours"), (theirs, "theirs"))]
    result = merge_models(*files)  # no conflicts: no strategy needed
    got = load_params(result.data)
    np.testing.assert_array_equal(got["w2"], ours["w2"])
    np.testing.assert_array_equal(got["w1"], theirs["w1"])
    assert result.counts == {"unchanged": 2, "ours": 1, "theirs": 1}

    both = {**theirs, "w2": base["w2"] + 0.25}
    files[2] = ModelFile(mlp(both), "theirs")
    with pytest.raises(MergeConflict, match="parameter 'w2'.*changed differently on both sides"):
        merge_models(*files)
    avg = load_params(merge_models(*files, "average").data)
    np.testing.assert_allclose(avg["w2"], (ours["w2"] + both["w2"]) / 2, rtol=1e-6, atol=1e-8)
    weighted = load_params(merge_models(*files, "weighted", (3, 1)).data)
    np.testing.assert_allclose(weighted["w2"], 0.75 * ours["w2"] + 0.25 * both["w2"], rtol=1e-6, atol=1e-8)
    task = load_params(merge_models(*files, "task-arithmetic", (0.5, 0.5)).data)
    np.testing.assert_allclose(task["w1"], base["w1"] + 0.5 * (theirs["w1"] - base["w1"]), rtol=1e-5, atol=1e-7)
    assert load_params(merge_models(*files, "theirs").data)["w2"].tobytes() == both["w2"].tobytes()


def test_ties_trims_elects_sign_and_averages_agreeing_entries():
    from dcopt.versions.merge import _ties

    base = np.zeros(4)
    ours = np.array([1.0, -2.0, 0.1, 3.0])
    theirs = np.array([3.0, 1.0, -0.1, 0.0])
    out = _ties(base, ours, theirs, None, 1.0)
    # element 0: both +, mean 2; element 1: sum -1 -> sign -, only ours agrees: -2; 2: tie sum 0 -> 0; 3: ours only
    np.testing.assert_allclose(out, [2.0, -2.0, 0.0, 3.0])
    trimmed = _ties(base, ours, theirs, None, 0.5)  # keeps each side's 2 largest: ours 0,-2,0,3 theirs 3,1,0,0
    np.testing.assert_allclose(trimmed, [3.0, -2.0, 0.0, 3.0])


def test_structural_conflict_is_listed_and_integers_need_a_side():
    base = weights()
    files = [ModelFile(mlp(base), "base"), ModelFile(mlp(base, act="Sigmoid"), "ours"),
             ModelFile(mlp(base, act="Tanh"), "theirs")]
    with pytest.raises(MergeConflict) as info:
        merge_models(*files, "average")
    text = str(info.value)
    assert "ours: node act: op Relu -> Sigmoid" in text and "theirs: node act: op Relu -> Tanh" in text
    ints = [ModelFile(mlp({**base, "steps": np.array(s, np.int64)}), n)
            for s, n in (([3, -7], "b"), ([4, -7], "o"), ([5, -7], "t"))]
    with pytest.raises(MergeConflict, match="parameter 'steps'.*needs floating point"):
        merge_models(*ints, "average")
    np.testing.assert_array_equal(load_params(merge_models(*ints, "ours").data)["steps"], [4, -7])
    with pytest.raises(ArgumentError, match="unknown merge strategy 'median'"):
        merge_models(*ints, "median")
