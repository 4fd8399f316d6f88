"""ONNX node conformance cases driven through dcopt's onnx.backend API.

Every case runs. Cases listed in ``conformance_expected_failures.EXPECTED_FAILURES`` are
expected to fail (each with its reason) and are strict xfails: if one starts passing, the test
fails so the list gets updated. Any other failing case fails the suite.
"""

import pytest

import dcopt.backend as backend
from dcopt.tools.conformance import collect_cases, run_case
from tests.conformance_expected_failures import EXPECTED_FAILURES

CASES = collect_cases()
MIN_PASSING = 800


def test_backend_api_shape():
    assert backend.supports_device("CPU") and not backend.supports_device("CUDA")


def test_expected_failures_name_real_cases_and_leave_enough_passing():
    names = {c.name for c in CASES}
    stale = sorted(set(EXPECTED_FAILURES) - names)
    assert not stale, f"expected-failure entries for cases that no longer exist: {stale[:10]}"
    passing = len(names - set(EXPECTED_FAILURES))
    assert passing >= MIN_PASSING, f"only {passing} of {len(names)} cases are expected to pass"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case):
    reason = EXPECTED_FAILURES.get(case.name)
    if reason is not None:
        try:
            run_case(case, backend)
        except Exception:
            pytest.xfail(reason)
        pytest.fail(f"{case.name} now passes; remove it from EXPECTED_FAILURES ({reason})")
    run_case(case, backend)


def test_run_node_wraps_one_node():
    import numpy as np
    from onnx import helper

    node = helper.make_node("Add", ["a", "b"], ["c"])
    (out,) = backend.run_node(node, [np.ones(3, np.float32), np.arange(3, dtype=np.float32)])
    np.testing.assert_array_equal(out, [1, 2, 3])
