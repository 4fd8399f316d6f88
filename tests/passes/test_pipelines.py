"""Named pipelines and the comma-separated spec parser."""

import pytest

from dcopt.passes import (PIPELINES, PassManager, UnknownPassError, build_pipeline, function_pass, parse_spec,
                          register_pass, register_pipeline, unregister_pass)
from dcopt.passes import pipelines as pipelines_mod


def test_canonicalize_is_a_fixed_point_pipeline_of_the_cleanup_passes():
    assert PIPELINES["canonicalize"].steps == ("fold-constants", "infer-shapes", "remove-noops", "cse", "dce")
    assert PIPELINES["canonicalize"].fixed_point
    pm = build_pipeline("canonicalize")
    (inner,) = pm.steps
    assert isinstance(inner, PassManager) and inner.fixed_point
    assert [s.name for s in inner.steps] == ["fold-constants", "infer-shapes", "remove-noops", "cse", "dce"]


def test_spec_accepts_aliases_pipelines_and_spaces():
    assert parse_spec("fold, noops ,cse,dce") == ["fold-constants", "remove-noops", "cse", "dce"]
    assert parse_spec("canon,dce") == ["canonicalize", "dce"]
    assert parse_spec(["fold", "dce"]) == ["fold-constants", "dce"]


def test_unknown_name_in_spec_lists_valid_names():
    with pytest.raises(UnknownPassError) as info:
        parse_spec("fold,cse,dec")
    message = str(info.value)
    assert "unknown pass 'dec'" in message and "did you mean 'dce'" in message
    for valid in ("canonicalize (canon)", "cse", "dce", "fold-constants (fold)", "remove-noops"):
        assert valid in message
    assert "'fold,cse,dec'" in message


def test_empty_spec_is_an_error():
    with pytest.raises(UnknownPassError, match="empty pass list"):
        parse_spec(" , ")


def test_spec_runs_in_order_with_settings(parse):
    g = parse("agraph (float[2] x) => (float[2] y) { a = Identity(x)\n d = Neg(a)\n y = Relu(a) }")
    result = build_pipeline("noops,dce", verify=True)(g)
    assert [r.name for r in result.report.records] == ["remove-noops", "dce"]
    assert [n.op for n in g.nodes] == ["Relu"]


def test_user_pipeline_with_user_pass(parse, monkeypatch):
    monkeypatch.setattr(pipelines_mod, "PIPELINES", dict(PIPELINES))
    seen = []

    @register_pass
    @function_pass("user-spy")
    def spy(graph, ctx):
        seen.append(len(graph.nodes))
        return False

    try:
        register_pipeline("tidy", ["user-spy", "dce", "user-spy"])
        g = parse("agraph (float[2] x) => (float[2] y) { d = Neg(x)\n y = Relu(x) }")
        build_pipeline("tidy")(g)
        assert seen == [2, 1]
    finally:
        unregister_pass("user-spy")


def test_self_including_pipeline_is_refused(monkeypatch):
    monkeypatch.setattr(pipelines_mod, "PIPELINES", dict(PIPELINES))
    register_pipeline("loop", ["dce", "loop"])
    with pytest.raises(ValueError, match="includes itself"):
        build_pipeline("loop")


def test_pass_manager_accepts_pipeline_names_and_aliases():
    pm = PassManager(["canon", "fold"])
    assert [s.name for s in pm.steps] == ["canonicalize", "fold-constants"]
    with pytest.raises(UnknownPassError, match="canonicalize"):
        PassManager(["canonicalise"])
