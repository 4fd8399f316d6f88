"""The pass contract (in_place / modified promises), function passes, and the registry."""

import pytest

from dcopt.errors import DcoptError, PassError
from dcopt.ir.graph import Node
from dcopt.passes import (Pass, PassResult, UnknownPassError, available_passes, function_pass, get_pass,
                          register_pass, unregister_pass)
from dcopt.passes.context import PassContext

TEXT = "agraph (float[2] x) => (float[2] y) { t = Neg(x)\n y = Identity(t) }"


# -- function passes --------------------------------------------------------------------------


def test_function_pass_accepts_bool_dict_and_result(parse):
    g = parse(TEXT)

    @function_pass("says-bool")
    def says_bool(graph, ctx):
        return False

    @function_pass("says-dict")
    def says_dict(graph, ctx):
        return {"changed": 0, "seen": 0}

    @function_pass("says-result")
    def says_result(graph, ctx):
        return PassResult(graph, False, {"x": 1})

    assert says_bool(g).modified is False
    assert says_dict(g).stats == {"changed": 0, "seen": 0} and not says_dict(g).modified
    assert says_result(g).stats == {"x": 1}
    assert says_bool.name == "says-bool" and says_bool.in_place


def test_function_pass_with_bad_return_type_is_a_pass_error(parse):
    @function_pass("bad")
    def bad(graph, ctx):
        return 3

    with pytest.raises(PassError, match="function pass 'bad' returned int"):
        bad(parse(TEXT))


# -- contract checks --------------------------------------------------------------------------


def test_in_place_pass_that_lies_about_modified_is_caught(parse):
    @function_pass("liar")
    def liar(graph, ctx):
        graph.nodes = graph.nodes[:1]
        return False

    with pytest.raises(PassError, match="pass 'liar' reported modified=False but changed the graph"):
        liar(parse(TEXT))


def test_in_place_pass_returning_another_graph_is_caught(parse):
    @function_pass("copier")
    def copier(graph, ctx):
        return PassResult(graph.copy(), True)

    with pytest.raises(PassError, match="in_place=True but returned a different graph"):
        copier(parse(TEXT))


def test_functional_pass_that_mutates_its_input_is_caught(parse):
    @function_pass("sneaky", in_place=False)
    def sneaky(graph, ctx):
        graph.nodes = [n.replace(name="renamed") for n in graph.nodes]
        return PassResult(graph.copy(), True)

    with pytest.raises(PassError, match="in_place=False but mutated its input graph"):
        sneaky(parse(TEXT))


def test_functional_pass_that_touches_container_data_is_caught(parse):
    g = parse("agraph (float[2] x) => (float[2] y) <float[2] w = {1.0, 2.0}> { y = Add(x, w) }")

    @function_pass("data-writer", in_place=False)
    def data_writer(graph, ctx):
        graph.containers["w"].data = graph.containers["w"].data * 2
        return PassResult(graph.copy(), True)

    with pytest.raises(PassError, match="containers changed"):
        data_writer(g)


def test_well_behaved_functional_pass_leaves_input_alone(parse):
    g = parse(TEXT)
    before = list(g.nodes)

    @function_pass("functional", in_place=False)
    def functional(graph, ctx):
        new = graph.copy()
        new.nodes = [Node("Neg", ("x",), ("y",))]
        new.containers.pop("t")
        return PassResult(new, True)

    result = functional(g)
    assert result.graph is not g and g.nodes == before and len(result.graph.nodes) == 1


def test_contract_check_can_be_turned_off(parse):
    @function_pass("liar2")
    def liar(graph, ctx):
        graph.nodes = graph.nodes[:1]
        return False

    assert liar(parse(TEXT), PassContext(check_contract=False)).modified is False


# -- registry ---------------------------------------------------------------------------------


def test_builtin_passes_are_registered_with_aliases():
    names = available_passes()
    assert {"fold-constants", "remove-noops", "cse", "dce"} <= set(names)
    assert "fold" in names["fold-constants"]
    assert get_pass("fold").name == "fold-constants"


def test_user_pass_registered_by_name_without_touching_dcopt(parse):
    @register_pass(aliases=("neg2",))
    @function_pass("user-double-neg")
    def double_neg(graph, ctx):
        """Replace Neg by Neg(Neg(Neg(x))) — silly but observable."""
        return False

    try:
        assert get_pass("user-double-neg") is double_neg
        assert get_pass("neg2") is double_neg
        assert "user-double-neg" in available_passes()
        assert double_neg.description.startswith("Replace Neg")
        with pytest.raises(ValueError, match="already registered"):
            register_pass(double_neg)
    finally:
        unregister_pass("user-double-neg")
    assert "user-double-neg" not in available_passes()
    with pytest.raises(UnknownPassError):
        get_pass("neg2")


def test_class_passes_take_options_through_get_pass():
    p = get_pass("fold-constants", max_elements=10)
    assert p.max_elements == 10
    with pytest.raises(TypeError, match="takes no options"):
        register_pass(function_pass("optless")(lambda g, c: False))
        try:
            get_pass("optless", x=1)
        finally:
            unregister_pass("optless")


def test_unknown_pass_error_lists_valid_names_and_suggests():
    with pytest.raises(UnknownPassError) as info:
        get_pass("csee")
    message = str(info.value)
    assert "unknown pass 'csee'" in message and "did you mean 'cse'" in message
    assert "fold-constants (fold)" in message and "dce" in message
    assert isinstance(info.value, DcoptError) and isinstance(info.value, LookupError)


def test_pass_subclass_contract():
    class Counter(Pass):
        name = "counter"

        def run(self, graph, ctx):
            return PassResult(graph, False, {"nodes": len(graph.nodes)})

    assert repr(Counter()) == "<pass counter>"
