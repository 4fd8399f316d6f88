"""How long the fuzz targets run: a few seconds each in CI, longer on demand.

CI runs a fixed, derandomized set of examples per target (the same inputs every run: a red build
is reproducible, never flaky). ``DCOPT_FUZZ_EXAMPLES=20000 pytest tests/fuzz`` explores with fresh
random inputs instead (hypothesis's shrinking then reports the smallest failing input).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_EXPLORE = int(os.environ.get("DCOPT_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(ci_examples: int) -> settings:
    """Settings of one fuzz target: ``ci_examples`` derandomized examples, or the exploration budget."""
    return settings(max_examples=_EXPLORE or ci_examples, derandomize=not _EXPLORE, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much],
                    print_blob=True)
