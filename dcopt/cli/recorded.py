"""``@recorded(kind)``: make a command a recorded run (:mod:`dcopt.runs.record`).

One decorator line per command: it adds ``--no-record`` and runs the command's body inside
:func:`~dcopt.runs.record.record_run` with the command's options (as click parsed them) and its
model; the body logs what it produced through :func:`~dcopt.runs.record.current_run`.
"""

from __future__ import annotations

import functools
import sys

import click


def recorded(kind: str, model_param: str | None = "model"):
    def decorate(fn):
        @click.option("--no-record", is_flag=True, help="Do not record this command as a run (dcopt runs ls); "
                                                        "DCOPT_NO_RECORD=1 does the same.")
        @functools.wraps(fn)
        def wrapper(*args, no_record, **kwargs):
            from dcopt.runs.record import record_run

            ctx = click.get_current_context()
            options = {k: v for k, v in ctx.params.items() if k != "no_record"}
            model = kwargs.get(model_param) if model_param else None
            with record_run(kind, list(sys.argv), options, model=model, record=not no_record):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
