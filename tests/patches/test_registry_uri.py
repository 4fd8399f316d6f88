"""Registering patches (typed parameters, signatures, names), discovering them (built-ins, user
files, entry points of installed packages) and parsing URIs with errors that list what is valid."""

import sys
from types import SimpleNamespace

import pytest

from dcopt.passes import Op, RewriteRule, Var, fuse_to
from dcopt.passes.match import Predicate
from dcopt.passes.patches import (Param, PatchError, PatchURIError, UnknownPatchError, available_patches,
                                  format_uri, get_patch, load_entry_points, load_patch_file, make_call, parse_uri,
                                  patch, registry)

BUILTINS = {"fold_batchnorm", "fuse_gelu", "fuse_layernorm", "remove_dropout_identity", "fold_transpose_into_matmul",
            "swap_activation", "add_skip_connections", "layernorm_to_rmsnorm", "insert_squeeze_excitation",
            "cast_weights", "prune_attention_heads"}


def test_builtins_are_registered_with_docs_and_kinds():
    patches = available_patches()
    assert BUILTINS <= set(patches)
    for name in BUILTINS:
        p = patches[name]
        assert p.summary and p.kind in ("exact", "approximate", "idea")
        assert all(param.doc for param in p.params), name


# -- parameters -----------------------------------------------------------------------------------


def test_param_types_parse_and_describe():
    ratio = Param("ratio", float, 0.25, check=Predicate(lambda r: 0 < r < 1, "0 < ratio < 1"))
    assert ratio.parse("0.5") == 0.5 and ratio.coerce(0.75) == 0.75
    assert ratio.describe() == "ratio: float = 0.25"
    with pytest.raises(ValueError, match="fails 0 < ratio < 1"):
        ratio.parse("2")
    with pytest.raises(ValueError, match="expected a float, got 'x'"):
        ratio.parse("x")
    ends = Param("ends", list[str], ["Relu"], choices=("Relu", "Concat", "Add"))
    assert ends.parse("Relu,Concat") == ["Relu", "Concat"] and ends.type_name() == "list[enum(Relu|Concat|Add)]"
    with pytest.raises(ValueError, match="did you mean 'Concat'"):
        ends.parse("Relu,Concatt")
    flag = Param("keep", bool, True)
    assert flag.parse("false") is False and flag.parse("YES") is True and flag.format(False) == "false"
    assert Param("n", int).required and Param("n", int).parse(" 7 ") == 7
    assert Param("from", str, "a").py_name == "from_"


def test_param_declarations_are_checked():
    with pytest.raises(TypeError, match="type must be str, int, float, bool or a list"):
        Param("x", dict)
    with pytest.raises(ValueError, match="default 'Tanh' is invalid"):
        Param("to", str, "Tanh", choices=("Relu", "Gelu"))


def test_decorator_checks_the_function_signature(clean_registry):
    with pytest.raises(TypeError, match="does not take declared parameter"):
        @patch("typo_patch", params=[Param("alpha", float, 1.0)])
        def typo(graph, *, alpah):
            return []
    with pytest.raises(ValueError, match="kind must be one of"):
        patch("bad_kind", kind="magic")


def test_registering_a_taken_name_from_elsewhere_fails(clean_registry):
    with pytest.raises(PatchError, match="already registered"):
        @patch("fold_batchnorm")
        def mine(graph):
            return []


def test_a_patch_object_applies_in_place_from_python(clean_registry):
    @patch("leaky", kind="idea", params=[Param("alpha", float, 0.01, "slope")])
    def leaky(graph, *, alpha):
        """Relu -> LeakyRelu."""
        return RewriteRule("relu->leaky", Op("Relu", Var("x")), fuse_to("LeakyRelu", "x", alpha=alpha))

    from tests.passes.conftest import graph_from_text

    graph = graph_from_text("agraph (float[2] x) => (float[2] y) { y = Relu(x) }")
    outcome = leaky(graph, alpha=0.2)
    assert outcome.modified and graph.nodes[0].op == "LeakyRelu" and graph.nodes[0].attrs["alpha"] == 0.2
    with pytest.raises(ValueError, match="expected float"):
        leaky(graph, alpha="steep")


# -- discovery ------------------------------------------------------------------------------------

IDEAS = '''
from dcopt.passes import Op, RewriteRule, Var, fuse_to
from dcopt.passes.patches import Param, patch

@patch("relu_to_{op}", kind="idea", params=[Param("alpha", float, 0.5, "the op's alpha")])
def relu_to_x(graph, *, alpha):
    """Replace Relu by {op}."""
    return RewriteRule("relu->{op}", Op("Relu", Var("x")), fuse_to("{op}", "x", alpha=alpha))
'''


def test_load_patch_file_registers_and_reloads(tmp_path, clean_registry):
    path = tmp_path / "my_ideas.py"
    path.write_text(IDEAS.format(op="Elu"))
    assert load_patch_file(path) == ["relu_to_Elu"]
    assert get_patch("relu_to_Elu").summary == "Replace Relu by Elu."
    assert load_patch_file(path) == ["relu_to_Elu"]  # the same file again replaces, no clash
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('oops')")
    with pytest.raises(PatchError, match="broken.py.*importing it failed: RuntimeError: oops"):
        load_patch_file(bad)
    with pytest.raises(PatchError, match="patch file not found"):
        load_patch_file(tmp_path / "missing.py")


def test_entry_points_register_modules_and_patch_objects(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "plugin_mod.py").write_text(IDEAS.format(op="Celu"))
    monkeypatch.syspath_prepend(str(tmp_path))

    def ep(name, value, load):
        return SimpleNamespace(name=name, value=value, load=load)

    def bad():
        raise ImportError("no such module")

    import importlib
    eps = [ep("mod", "plugin_mod", lambda: importlib.import_module("plugin_mod")), ep("broken", "nope:x", bad)]
    monkeypatch.setattr(registry.importlib.metadata, "entry_points",
                        lambda group: eps if group == registry.ENTRY_POINT_GROUP else [])
    assert load_entry_points() == ["relu_to_Celu"]
    assert any("entry point 'broken'" in e and "no such module" in e for e in registry._ERRORS)
    sys.modules.pop("plugin_mod", None)


def test_entry_point_of_an_installed_distribution_is_discovered(tmp_path, clean_registry):
    """A fake installed package (a dist-info folder on sys.path) with a dcopt.patches entry point."""
    (tmp_path / "fake_dcopt_plugin.py").write_text(IDEAS.format(op="Selu").replace("alpha=alpha", "alpha=alpha, gamma=1.05"))
    dist = tmp_path / "fake_dcopt_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-dcopt-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[dcopt.patches]\nselu = fake_dcopt_plugin\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert "relu_to_Selu" in load_entry_points()
        assert get_patch("relu_to_Selu").kind == "idea"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("fake_dcopt_plugin", None)


# -- URIs -----------------------------------------------------------------------------------------


def test_parse_uri_types_defaults_and_canonical_form():
    call = parse_uri("swap_activation?to=Silu&from=Tanh")
    assert dict(call.args) == {"from": "Tanh", "to": "Silu"} and call.uri == "swap_activation?from=Tanh&to=Silu"
    call = parse_uri(" add_skip_connections?ends=Relu,Concat&scale=0.5 ")
    assert call.args["ends"] == ["Relu", "Concat"] and call.args["min_layers"] == 1
    assert call.uri == "add_skip_connections?ends=Relu,Concat&scale=0.5"
    assert parse_uri("fuse_gelu?bump_opset").args["bump_opset"] is True  # a bare bool flag is true
    assert parse_uri("fold_batchnorm?").uri == "fold_batchnorm"
    assert format_uri("swap_activation", {"to": "a&b;c"}) == "swap_activation?to=a%26b%3Bc"
    assert make_call("prune_attention_heads", {"ratio": 0.5}).uri == "prune_attention_heads?ratio=0.5"


@pytest.mark.parametrize("uri, message", [
    ("fold_batchnrm", r"unknown patch 'fold_batchnrm' \(did you mean 'fold_batchnorm'\?\); available patches: .*"
                      "swap_activation"),
    ("swap_activation?form=Relu", r"has no parameter 'form'; parameters of 'swap_activation': from: enum\(Relu\|"),
    ("prune_attention_heads?ratio=lots", r"expected a float, got 'lots'; parameters of 'prune_attention_heads': "
                                         r"ratio: float = 0.25"),
    ("swap_activation?to=Geluu", r"'Geluu' is not one of .* \(did you mean 'Gelu'\?\)"),
    ("cast_weights?dtype=fp8", r"'fp8' is not one of fp16, bf16"),
    ("insert_squeeze_excitation?ratio=0", r"fails >= 1"),
    ("fuse_gelu?approximate", r"parameter 'approximate' needs a value \(approximate=<enum\(any\|none\|tanh\)>\)"),
    ("fuse_gelu?bump_opset=1&bump_opset=0", "given twice"),
    ("", "empty patch URI"),
])
def test_bad_uris_say_what_is_valid(uri, message):
    with pytest.raises((PatchURIError, UnknownPatchError), match=message):
        parse_uri(uri)


def test_required_parameters_must_be_given(clean_registry):
    @patch("needs_n", params=[Param("n", int, doc="how many")])
    def needs_n(graph, *, n):
        return []

    with pytest.raises(PatchURIError, match=r"missing required parameter\(s\): n; parameters of 'needs_n': "
                                            r"n: int \(required\)"):
        parse_uri("needs_n")
    assert parse_uri("needs_n?n=3").args == {"n": 3}
