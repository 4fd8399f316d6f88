"""Fuzz target: the patch-URI parser. Any text is a checked PatchCall or a DcoptError listing what
is valid; a call that parses reads back the same from its canonical URI."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from dcopt.errors import DcoptError
from dcopt.passes.patches import available_patches, make_call, parse_uri
from tests.fuzz.budget import fuzz_settings

PATCHES = available_patches()
NAMES = sorted(PATCHES)
PARAMS = sorted({p.name for patch in PATCHES.values() for p in patch.params})
VALUES = st.one_of(
    st.sampled_from(["", "0", "1", "-1", "true", "false", "Relu", "Relu,Gelu", ",", "nan", "inf", "1e3", "0.25",
                     "1" * 40, "0." + "1" * 40, "1_000", "١", "%00", "%ff", "%", "%2", "a=b", "fp16", "every"]),
    st.integers().map(str), st.floats().map(repr), st.text(max_size=12),
    st.text(max_size=12).map(lambda t: quote(t, safe="")))


@st.composite
def uris(draw) -> str:
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(max_size=60))
    name = draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=10)))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.one_of(st.sampled_from(PARAMS), st.text(max_size=6)))
        parts.append(key if draw(st.integers(0, 6)) == 0 else f"{key}={draw(VALUES)}")
    sep = draw(st.sampled_from(["?", "?", "", "??", " ? "]))
    return name + (sep + "&".join(parts) if parts or draw(st.booleans()) else "")


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)


@fuzz_settings(ci_examples=300)
@given(uris())
def test_parse_uri(text):
    try:
        call = parse_uri(text)
    except DcoptError:
        return
    again = parse_uri(call.uri)
    assert again.patch is call.patch
    assert all(_same(again.args[k], v) for k, v in call.args.items()), (call.uri, call.args, again.args)


PY_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                      st.lists(st.one_of(st.text(max_size=4), st.integers(), st.floats()), max_size=3),
                      st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@fuzz_settings(ci_examples=150)
@given(st.sampled_from(NAMES), st.dictionaries(st.one_of(st.sampled_from(PARAMS), st.text(max_size=5)), PY_VALUES,
                                               max_size=3))
def test_make_call(name, given_args):
    try:
        call = make_call(name, given_args)
    except DcoptError:
        return
    assert parse_uri(call.uri).args == call.args
