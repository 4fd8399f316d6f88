"""The explicit settings object every pass receives, and the instrument (hook) protocol.

Debug checks, dumps and tolerances travel in a :class:`PassContext` handed down the pipeline —
never in environment variables or module globals — so two pipelines in one process can run
with different settings, and a test states exactly what it turned on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np


class Instrument:
    """Before/after hooks around every (leaf) pass a :class:`~dcopt.passes.manager.PassManager` runs.

    ``record`` is the :class:`~dcopt.passes.manager.PassRecord` being filled for this run; an
    instrument may append to ``record.checks``. Raising from a hook aborts the pipeline.
    """

    def before_pass(self, pass_, graph, ctx: "PassContext") -> None:
        pass

    def after_pass(self, pass_, result, record, ctx: "PassContext") -> None:
        pass


@dataclass
class PassContext:
    """Settings for one pipeline run.

    verify:             run the IR verifier after every pass (a failure names the pass).
    check_equivalence:  run the graph before and after every modifying pass on the reference
                        executor with the same inputs and compare every output.
    rtol, atol:         tolerances of that comparison (non-float outputs must match exactly).
    feeds:              inputs for the equivalence check; when None they are drawn at random
                        from the input types, symbolic/unknown dims bound to ``dim_size``.
    dim_size:           size given to symbolic dims of random inputs.
    seed:               seed of the random inputs.
    dump_dir:           write the IR (text) before the first pass and after every modifying pass.
    check_contract:     check each pass's in_place/modified promise (cheap; on by default).
    instruments:        extra user hooks, run after the built-in ones.

    Pass-specific knobs (fold-constants' size limits, ...) are constructor arguments of the
    pass (``get_pass("fold-constants", max_elements=...)``), not context fields.
    """

    verify: bool = False
    check_equivalence: bool = False
    rtol: float = 1e-4
    atol: float = 1e-5
    feeds: Mapping[str, np.ndarray] | None = None
    dim_size: int = 2
    seed: int = 0
    dump_dir: Path | str | None = None
    check_contract: bool = True
    instruments: list[Instrument] = field(default_factory=list)
