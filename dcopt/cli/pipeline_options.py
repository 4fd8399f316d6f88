"""Pipeline selection shared by ``dcopt opt``, ``dcopt report`` and ``dcopt compile``.

Exactly one of: ``--passes "fold,cse,fuse"`` (a spec of pass and pipeline names), ``-O LEVEL``
(the named pipelines O0..O3), ``--pipeline my_pipeline.py`` (a user file defining PIPELINE).
"""

from __future__ import annotations

import functools

import click

from dcopt.errors import DcoptError


def parse_dims(dims: tuple[str, ...]) -> dict[str, int]:
    """``--dim SYMBOL=N`` options -> bindings for symbolic dims. InputError on a malformed one, one
    given twice, or a size beyond the limits (``N=99999999999999`` names the memory cap)."""
    from dcopt.errors import InputError
    from dcopt.limits import SizeLimitError, check_dim_value

    bindings = {}
    for d in dims:
        sym, _, value = d.partition("=")
        sym, value = sym.strip(), value.strip()
        if not sym or not value.isascii() or not value.isdigit():
            raise InputError(f"--dim expects SYMBOL=N with N a non-negative integer (e.g. N=1), got '{d}'")
        if sym in bindings:
            raise InputError(f"--dim {sym} is given twice")
        try:
            bindings[sym] = check_dim_value(sym, int(value), what="--dim")
        except SizeLimitError as exc:
            raise InputError(exc.message) from None
    return bindings


def checked_dims(dims: tuple[str, ...], known) -> dict[str, int]:
    """:func:`parse_dims`, and each symbol must be one of ``known`` (the model's)."""
    from dcopt.backends.cpu.specialize import check_dim_names

    bindings = parse_dims(dims)
    check_dim_names(bindings, known)
    return bindings


def pipeline_options(default_level: str = "2"):
    """Decorator adding the three mutually exclusive pipeline options to a click command."""

    def decorate(fn):
        @click.option("--passes", "passes", metavar="SPEC",
                      help='Comma-separated passes/pipelines, e.g. "fold,cse,dce,fuse,plan-memory".')
        @click.option("-O", "level", type=click.Choice(["0", "1", "2", "3"]), default=None,
                      help=f"Optimization level (named pipelines O0..O3; default O{default_level}).")
        @click.option("--pipeline", "pipeline_file", type=click.Path(dir_okay=False),
                      help="A Python file defining PIPELINE (and registering its own passes).")
        @functools.wraps(fn)
        def wrapper(*args, passes, level, pipeline_file, **kwargs):
            chosen = [x for x in (passes, level, pipeline_file) if x is not None]
            if len(chosen) > 1:
                raise DcoptError("give only one of --passes, -O and --pipeline")
            kwargs["pipeline"] = resolve_pipeline(passes, level or (None if chosen else default_level), pipeline_file)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def resolve_pipeline(passes: str | None, level: str | None, pipeline_file: str | None) -> tuple[list, str]:
    """(steps for a PassManager, a label naming the pipeline for reports and manifests). A level
    is only named here: the passes load when a compile needs them, not on a warm hit."""
    if pipeline_file is not None:
        from dcopt.passes.user_files import load_pipeline_file

        steps = load_pipeline_file(pipeline_file)
        return steps, f"file:{pipeline_file}"
    if passes is not None:
        from dcopt.passes.pipelines import parse_spec

        return parse_spec(passes), passes
    name = f"O{level}"
    return ([] if level == "0" else [name]), name
