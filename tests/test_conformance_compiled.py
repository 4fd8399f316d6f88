"""ONNX node conformance through ``dcopt.compile(...).run``: generated code, the path users get.

Every case compiles (one build cache for the module, in a temporary directory) and runs against
ONNX's expected outputs with the case's own tolerances. Two lists in
``conformance_compiled_expected.py`` keep the result honest, and both are strict:

* ``EXPECTED_FAILURES``: cases the compiled path fails, each with its reason. A listed case that
  starts passing fails the test, so the list shrinks as ops are fixed;
* ``NOT_NATIVE``: passing cases that run some op as a *dynamic* step (sizes that depend on input
  values: NonZero, Unique, ...) or a *fallback* step (numpy reference), named per op and kind. A
  case that gains a not-native step, or loses one, fails until the list says so.

Regenerate both with ``python -m dcopt.tools.conformance --compiled --write-expected
tests/conformance_compiled_expected.py`` (and read the diff: every new entry is a regression).

Every case costs a compile (~0.4 s), so the default run -- CI's -- takes a stratified sample: the
first :data:`PER_OP` cases of every op, and every case on the failure list. ``DCOPT_CONFORMANCE=full
python -m pytest tests/test_conformance_compiled.py`` runs all of them (about 12 minutes on 2 cores),
as the conformance tool does.
"""

import os
from collections import defaultdict

import pytest

from dcopt.tools.conformance import _CompiledBackend, case_op, collect_cases, not_native_reason, run_case
from tests.conformance_compiled_expected import EXPECTED_FAILURES, NOT_NATIVE

ALL_CASES = collect_cases()
#: Cases per op in the default (sampled) run.
PER_OP = 4


def _sample(cases):
    if os.environ.get("DCOPT_CONFORMANCE") == "full":
        return cases
    seen: dict[str, int] = defaultdict(int)
    chosen = []
    for case in cases:
        op = case_op(case)
        seen[op] += 1
        if seen[op] <= PER_OP or case.name in EXPECTED_FAILURES:
            chosen.append(case)
    return chosen


CASES = _sample(ALL_CASES)
#: Floors that only move up: how many cases pass, and pass with every op native.
MIN_PASSING = 1854
MIN_NATIVE = 1554

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _CompiledBackend(str(tmp_path_factory.mktemp("conformance-builds")))


def test_expected_lists_name_real_cases_and_leave_enough_passing():
    names = {c.name for c in ALL_CASES}
    stale = sorted((set(EXPECTED_FAILURES) | set(NOT_NATIVE)) - names)
    assert not stale, f"entries for cases that no longer exist: {stale[:10]}"
    assert not set(EXPECTED_FAILURES) & set(NOT_NATIVE), "a case is listed as failing and as passing"
    passing = len(names - set(EXPECTED_FAILURES))
    assert passing >= MIN_PASSING, f"only {passing} of {len(names)} cases are expected to pass"
    assert passing - len(NOT_NATIVE) >= MIN_NATIVE, f"only {passing - len(NOT_NATIVE)} cases run all-native"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_compiled_case(case, compiled):
    reason = EXPECTED_FAILURES.get(case.name)
    if reason is not None:
        try:
            run_case(case, compiled)
        except Exception:
            pytest.xfail(reason)
        pytest.fail(f"{case.name} now passes compiled; remove it from EXPECTED_FAILURES ({reason})")
    run_case(case, compiled)
    found = not_native_reason(compiled.last.not_native)
    expected = NOT_NATIVE.get(case.name, "")
    assert found == expected, (f"{case.name}: not-native steps are [{found}], the list says [{expected}]; "
                               "a new entry is a regression, a missing one is progress: update NOT_NATIVE")
